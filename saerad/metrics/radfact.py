"""RadFact: logical precision and recall of a report by LLM entailment (Bannur et al. 2024).

The protocol, as the paper uses it (Section 5.1, Appendix G):

1. **Phrase splitting.**  An LLM rewrites each report (candidate and reference)
   into a list of atomic phrases, returned as a JSON list.  A reply that cannot
   be parsed falls back to the report's sentences and is tallied as a failure.
2. **Entailment, both ways.**  For every candidate phrase ONE call asks whether
   it is entailed by ALL the reference phrases together (precision direction);
   for every reference phrase one call asks whether it is entailed by all the
   candidate phrases (recall direction).  The reply is a JSON object
   ``{"status": "entailed" | "not_entailed", "evidence": [...]}``; a failed
   call or an unparseable reply counts as *not entailed* and is tallied.
3. **Scores.**  Logical precision = share of candidate phrases entailed by the
   reference, logical recall = share of reference phrases entailed by the
   candidate, per study.  Over a test set the paper reports mean precision and
   mean recall in %, and F1 as the harmonic mean of those two means (Table 2's
   F1 column is exactly ``2PR/(P+R)`` of its P and R columns).

All requests go through ``client.complete_many`` of :mod:`saerad.llm`, so the
on-disk cache, bounded concurrency and token/cost accounting come from that
layer; identical prompts (the same reference scored for several systems) are
sent once.  :func:`radfact_prompts` builds the prompts without sending them, for
a cost dry-run with ``saerad.llm.estimate_cost``.

Offline approximation.  :func:`offline_radfact_responder` answers both prompt
kinds deterministically, for ``make_client("offline", responder=...)``, so the
demo runs exactly the same prompt path with no network: phrases are sentences,
and a phrase is entailed iff its SynthCXR findings (``sentence_findings``:
(finding, present) pairs) are all among the findings of the premise phrases;
phrases that carry no finding are judged by normalised-text equality.  The
responder recovers the phrases by parsing the prompt, whose delimiters
(``<report>``, ``<premises>`` with ``[n]`` numbered lines, ``<hypothesis>``) are
defined here.
"""

from __future__ import annotations

import json
import re
import threading
import warnings
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from saerad.llm import Prompt
from saerad.text import split_sentences as _shared_split_sentences

OFFLINE_MODEL = "radfact-offline-v1"

SPLIT_MAX_TOKENS = 1024
ENTAIL_MAX_TOKENS = 256

SPLIT_SYSTEM = (
    "You help evaluate chest X-ray reports. You rewrite a report as a list of short, self-contained "
    "phrases, each stating exactly one observation."
)

SPLIT_TEMPLATE = """Rewrite the chest X-ray report below as a list of atomic phrases.

Rules:
- Each phrase states one observation: one finding, the absence of one finding, or one device, and can be understood without the others.
- Keep the report's own words where possible, including side, size, location, change since a prior study and any uncertainty.
- Split statements that combine observations ("No effusion or pneumothorax." becomes "No pleural effusion." and "No pneumothorax.").
- Add nothing that the report does not say; leave out phrases with no clinical content.

Reply with a JSON list of strings and nothing else.

<report>
{report}
</report>"""

ENTAIL_SYSTEM = (
    "You help evaluate chest X-ray reports. You decide whether a statement about a chest X-ray follows "
    "logically from a set of reference statements about the same X-ray."
)

ENTAIL_TEMPLATE = """Reference statements about a chest X-ray, one per numbered line:
<premises>
{premises}
</premises>

Statement to check:
<hypothesis>
{hypothesis}
</hypothesis>

Is the statement entailed by the reference statements taken together? It is entailed only if the reference statements make it true. A finding the reference statements do not mention is not entailed; a statement that contradicts them is not entailed; a paraphrase or a less specific version of a reported observation is entailed.

Reply with one JSON object and nothing else, in this form:
{{"status": "entailed" or "not_entailed", "evidence": [numbers of the reference statements that support it]}}"""

_PREMISES = re.compile(r"<premises>\n(.*?)\n?</premises>", re.S)
_PREMISE_LINE = re.compile(r"^\[(\d+)\] (.*)$")
_HYPOTHESIS = re.compile(r"<hypothesis>\n(.*?)\n</hypothesis>", re.S)
_REPORT = re.compile(r"<report>\n(.*?)\n</report>", re.S)
_FENCE = re.compile(r"```[a-zA-Z]*")


# ---------------------------------------------------------------------------
# Text helpers


def one_line(text: str) -> str:
    """Collapse all whitespace (newlines included) to single spaces, stripped."""
    return " ".join(str(text).split())


def split_sentences(text: str) -> list[str]:
    """A report's sentences, split by the same rules as annotation and report composition.

    (:func:`saerad.text.split_sentences`: decimals such as ``4.5 cm`` and
    abbreviations such as ``e.g.`` do not end a sentence.)
    """
    return _shared_split_sentences(one_line(text))


def normalise_text(text: str) -> str:
    """Lowercase, single-spaced, without surrounding punctuation: the key for text equality."""
    return one_line(text).lower().strip(" .;:,!?")


# ---------------------------------------------------------------------------
# Prompts


def phrase_split_prompt(report: str, key: str = "") -> Prompt:
    """The prompt asking for a report's atomic phrases."""
    return Prompt(user=SPLIT_TEMPLATE.format(report=one_line(report)), system=SPLIT_SYSTEM,
                  max_tokens=SPLIT_MAX_TOKENS, temperature=0.0, key=key)


def entailment_prompt(hypothesis: str, premises: Sequence[str], key: str = "") -> Prompt:
    """The prompt asking whether ``hypothesis`` is entailed by all ``premises`` together."""
    lines = "\n".join(f"[{number}] {one_line(premise)}" for number, premise in enumerate(premises, start=1))
    return Prompt(user=ENTAIL_TEMPLATE.format(premises=lines, hypothesis=one_line(hypothesis)),
                  system=ENTAIL_SYSTEM, max_tokens=ENTAIL_MAX_TOKENS, temperature=0.0, key=key)


# ---------------------------------------------------------------------------
# Reply parsing


def _json_values(text: str) -> Iterable[object]:
    """Every JSON value that starts at a ``[`` or ``{`` in ``text`` (code fences removed), in order."""
    text = _FENCE.sub("", text)
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        yield value


def parse_phrases(reply: str | None) -> list[str] | None:
    """Phrases from a phrase-splitting reply, or None if it holds no usable JSON list.

    Accepts a bare list of strings or an object with a ``"phrases"`` list, with
    code fences and text around it.  An empty list is not usable (a non-empty
    report always has at least one phrase).
    """
    if not isinstance(reply, str):
        return None
    for value in _json_values(reply):
        if isinstance(value, dict) and isinstance(value.get("phrases"), list):
            value = value["phrases"]
        if isinstance(value, list):
            if not value or not all(isinstance(item, str) for item in value):
                return None
            phrases = [one_line(item) for item in value if one_line(item)]
            return phrases or None
    return None


def parse_entailment(reply: str | None) -> bool | None:
    """True / False from an entailment reply, or None if it cannot be read."""
    if not isinstance(reply, str):
        return None
    for value in _json_values(reply):
        if isinstance(value, dict) and "status" in value:
            status = str(value["status"]).strip().lower().replace("-", "_").replace(" ", "_")
            if status == "entailed":
                return True
            if status in ("not_entailed", "notentailed"):
                return False
            return None
    return None


# ---------------------------------------------------------------------------
# The protocol


@dataclass
class _StudyPlan:
    candidate: str
    reference: str
    candidate_phrases: list[str]
    reference_phrases: list[str]
    split_failures: int


def _check_inputs(candidates: Sequence[str], references: Sequence[str]) -> None:
    if len(candidates) != len(references):
        raise ValueError(f"radfact: {len(candidates)} candidates but {len(references)} references")
    for name, texts in (("candidates", candidates), ("references", references)):
        for position, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"radfact: {name}[{position}] is {type(text).__name__} {text!r}, expected a string "
                                 "(use '' for a study with no report)")


def _entailment_prompts(plan: _StudyPlan, study: int) -> tuple[list[Prompt], list[Prompt]]:
    """(precision-direction prompts, recall-direction prompts) of one study; none against an empty side."""
    precision = [entailment_prompt(phrase, plan.reference_phrases, key=f"radfact-p-{study}-{j}")
                 for j, phrase in enumerate(plan.candidate_phrases)] if plan.reference_phrases else []
    recall = [entailment_prompt(phrase, plan.candidate_phrases, key=f"radfact-r-{study}-{j}")
              for j, phrase in enumerate(plan.reference_phrases)] if plan.candidate_phrases else []
    return precision, recall


def _identity(prompt: Prompt) -> tuple:
    """What makes two prompts the same request (the caller's ``key`` does not)."""
    return (prompt.system, prompt.user, prompt.max_tokens, prompt.temperature)


def _unique(prompts: Iterable[Prompt]) -> list[Prompt]:
    seen: dict[tuple, Prompt] = {}
    for prompt in prompts:
        seen.setdefault(_identity(prompt), prompt)
    return list(seen.values())


def radfact_prompts(candidates: Sequence[str], references: Sequence[str]) -> list[Prompt]:
    """Every prompt a RadFact run would send, deduplicated, without sending any (for a cost dry-run).

    The entailment prompts depend on the phrases the LLM will return, which are
    not known before the run; they are built here from the reports' sentences
    instead, so the count and length are an estimate (LLM phrases are usually
    somewhat more numerous and shorter than sentences).
    """
    _check_inputs(candidates, references)
    texts = sorted({text for text in (*candidates, *references) if one_line(text)})
    prompts = [phrase_split_prompt(text, key=f"radfact-split-{n}") for n, text in enumerate(texts)]
    for study, (candidate, reference) in enumerate(zip(candidates, references)):
        plan = _StudyPlan(candidate, reference, split_sentences(candidate), split_sentences(reference), 0)
        precision, recall = _entailment_prompts(plan, study)
        prompts += precision + recall
    return _unique(prompts)


def radfact(
    candidates: Sequence[str],
    references: Sequence[str],
    client,
    progress: bool = True,
    details: bool = False,
) -> pd.DataFrame:
    """RadFact logical precision / recall / F1 of each candidate report against its reference.

    Parameters
    ----------
    candidates, references
        One generated report and one reference report per study, same order.
        ``''`` stands for a study with no report (no phrases).
    client
        A :mod:`saerad.llm` client (``complete_many``); e.g. an offline one from
        :func:`make_offline_radfact_client`.
    progress
        Show the LLM layer's progress bars.
    details
        Also return the phrases and per-phrase judgements (list columns).

    Returns
    -------
    DataFrame
        One row per study (same order): ``precision``, ``recall``, ``f1`` (in
        [0, 1]; NaN when a side has no phrases -- precision needs candidate
        phrases, recall reference phrases), ``n_candidate_phrases``,
        ``n_reference_phrases``, ``n_candidate_entailed``,
        ``n_reference_entailed``, ``split_failures`` (phrase splits that fell
        back to sentences), ``entailment_failures`` (calls counted as not
        entailed because they failed or could not be read) and ``failures``
        (their sum).
    """
    _check_inputs(candidates, references)

    # Stage 1: phrase splitting, once per distinct report text.
    texts = sorted({text for text in (*candidates, *references) if one_line(text)})
    split_prompts = [phrase_split_prompt(text, key=f"radfact-split-{n}") for n, text in enumerate(texts)]
    split_replies = client.complete_many(split_prompts, progress=progress) if split_prompts else []
    phrases_of: dict[str, tuple[list[str], bool]] = {"": ([], False)}
    for text, completion in zip(texts, split_replies):
        phrases = parse_phrases(completion.text)
        phrases_of[text] = (phrases, False) if phrases is not None else (split_sentences(text), True)

    plans = []
    for candidate, reference in zip(candidates, references):
        candidate_phrases, candidate_failed = phrases_of[candidate if one_line(candidate) else ""]
        reference_phrases, reference_failed = phrases_of[reference if one_line(reference) else ""]
        plans.append(_StudyPlan(candidate, reference, candidate_phrases, reference_phrases,
                                int(candidate_failed) + int(reference_failed)))

    # Stage 2: entailment in both directions, every distinct prompt sent once.
    per_study = [_entailment_prompts(plan, study) for study, plan in enumerate(plans)]
    unique = _unique(prompt for precision, recall in per_study for prompt in (*precision, *recall))
    replies = client.complete_many(unique, progress=progress) if unique else []
    verdict = {_identity(prompt): parse_entailment(completion.text) for prompt, completion in zip(unique, replies)}

    rows = []
    for plan, (precision_prompts, recall_prompts) in zip(plans, per_study):
        candidate_verdicts = [verdict[_identity(p)] for p in precision_prompts]
        reference_verdicts = [verdict[_identity(p)] for p in recall_prompts]
        # A side judged against an empty other side has nothing entailed and needs no call.
        candidate_entailed = [v is True for v in candidate_verdicts] or [False] * len(plan.candidate_phrases)
        reference_entailed = [v is True for v in reference_verdicts] or [False] * len(plan.reference_phrases)
        failed_calls = sum(v is None for v in (*candidate_verdicts, *reference_verdicts))
        row = {
            **precision_recall_f1(candidate_entailed, reference_entailed),
            "n_candidate_phrases": len(plan.candidate_phrases), "n_reference_phrases": len(plan.reference_phrases),
            "n_candidate_entailed": int(sum(candidate_entailed)), "n_reference_entailed": int(sum(reference_entailed)),
            "split_failures": plan.split_failures, "entailment_failures": failed_calls,
            "failures": plan.split_failures + failed_calls,
        }
        if details:
            row.update(candidate_phrases=plan.candidate_phrases, reference_phrases=plan.reference_phrases,
                       candidate_entailed=candidate_entailed, reference_entailed=reference_entailed)
        rows.append(row)
    return pd.DataFrame(rows)


def precision_recall_f1(candidate_entailed: Sequence[bool], reference_entailed: Sequence[bool]) -> dict[str, float]:
    """One study's ``precision`` (share of candidate items entailed by the reference), ``recall`` (share of
    reference items entailed by the candidate) and their harmonic mean ``f1``; NaN where a side is empty."""
    precision, recall = _share(candidate_entailed), _share(reference_entailed)
    return {"precision": precision, "recall": recall, "f1": _f1(precision, recall)}


def _share(flags: Sequence[bool]) -> float:
    return float(np.mean(flags)) if len(flags) else float("nan")


def _f1(precision: float, recall: float) -> float:
    if not (np.isfinite(precision) and np.isfinite(recall)):
        return float("nan")
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def radfact_means(table: pd.DataFrame) -> dict[str, float]:
    """Aggregate per-study RadFact scores the way the paper reports them (in %).

    ``precision`` and ``recall`` are means over the studies where each is
    defined; ``f1`` is the harmonic mean of those two means (as in the paper's
    Table 2); ``f1_per_study_mean`` is the mean of per-study F1 for reference.
    """
    for column in ("precision", "recall", "f1"):
        if column not in table.columns:
            raise ValueError(f"radfact_means: table has no {column!r} column (columns: {list(table.columns)})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        precision = float(np.nanmean(table["precision"].to_numpy(dtype=float)))
        recall = float(np.nanmean(table["recall"].to_numpy(dtype=float)))
        f1_per_study = float(np.nanmean(table["f1"].to_numpy(dtype=float)))
    result = {
        "precision": 100 * precision, "recall": 100 * recall, "f1": 100 * _f1(precision, recall),
        "f1_per_study_mean": 100 * f1_per_study, "n_studies": int(len(table)),
        "n_precision_defined": int(table["precision"].notna().sum()),
        "n_recall_defined": int(table["recall"].notna().sum()),
    }
    if "failures" in table.columns:
        result["failures"] = int(table["failures"].sum())
    return result


def radfact_summary(
    table: pd.DataFrame,
    system_column: str = "system",
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> pd.DataFrame:
    """RadFact precision, recall and F1 (in %) with bootstrap intervals, per system.

    Like :func:`saerad.metrics.bootstrap.summarise` (rows ``system, metric,
    value, ci_low, ci_high, source``; metrics ``radfact_precision``,
    ``radfact_recall``, ``radfact_f1``), except that F1 is the harmonic mean of
    mean precision and mean recall as in the paper, resampled jointly.
    """
    from saerad.metrics.bootstrap import bootstrap_ci, f1_of_means

    for column in (system_column, "precision", "recall"):
        if column not in table.columns:
            raise ValueError(f"radfact_summary: table has no {column!r} column (columns: {list(table.columns)})")
    rows = []
    for system, group in table.groupby(system_column, sort=False):
        precision = group["precision"].to_numpy(dtype=float, copy=True)
        recall = group["recall"].to_numpy(dtype=float, copy=True)
        for metric, statistic in (("radfact_precision", precision), ("radfact_recall", recall),
                                  ("radfact_f1", f1_of_means(precision, recall))):
            value, low, high = bootstrap_ci(statistic, n_studies=len(group), n_resamples=n_resamples,
                                            seed=seed, level=level)
            rows.append({"system": system, "metric": metric, "value": 100 * value, "ci_low": 100 * low,
                         "ci_high": 100 * high, "source": "measured"})
    return pd.DataFrame(rows, columns=["system", "metric", "value", "ci_low", "ci_high", "source"])


# ---------------------------------------------------------------------------
# Offline approximation


def sentence_split_responder(prompt: Prompt) -> str:
    """Offline phrase splitter: the report's sentences, as the JSON list the protocol asks for."""
    match = _REPORT.search(prompt.user)
    if match is None:
        raise ValueError("sentence_split_responder: prompt has no <report> block")
    return json.dumps(split_sentences(match.group(1)))


def read_entailment_prompt(prompt: Prompt) -> tuple[str, list[str]]:
    """(hypothesis, premises) recovered from a prompt built by :func:`entailment_prompt`."""
    hypothesis = _HYPOTHESIS.search(prompt.user)
    premises = _PREMISES.search(prompt.user)
    if hypothesis is None or premises is None:
        raise ValueError("read_entailment_prompt: prompt has no <hypothesis> or <premises> block")
    lines = []
    for line in premises.group(1).splitlines():
        match = _PREMISE_LINE.match(line)
        if match is None:
            raise ValueError(f"read_entailment_prompt: premise line {line!r} is not '[n] text'")
        lines.append(match.group(2))
    return hypothesis.group(1), lines


def entailment_reply(judge: Callable[[str, Sequence[str]], tuple[bool, list[int]]], prompt: Prompt) -> str:
    """An offline judge's answer to an entailment prompt, in the JSON the protocol asks an LLM for."""
    hypothesis, premises = read_entailment_prompt(prompt)
    entailed, evidence = judge(hypothesis, premises)
    return json.dumps({"status": "entailed" if entailed else "not_entailed", "evidence": evidence})


class FindingsEntailmentJudge:
    """Offline entailment: findings of the hypothesis must all be among the findings of the premises.

    Parameters
    ----------
    findings_of
        ``text -> set[(finding, present)]``; default
        :func:`saerad.metrics.chexpert_rules.sentence_findings`.
    """

    def __init__(self, findings_of: Callable[[str], set] | None = None):
        if findings_of is None:
            from saerad.metrics.chexpert_rules import sentence_findings as findings_of
        self._findings_of = findings_of
        self._memo: dict[str, frozenset] = {}
        self._lock = threading.Lock()

    def findings(self, text: str) -> frozenset:
        with self._lock:
            known = self._memo.get(text)
        if known is None:
            known = frozenset(self._findings_of(text))
            with self._lock:
                self._memo[text] = known
        return known

    def judge(self, hypothesis: str, premises: Sequence[str]) -> tuple[bool, list[int]]:
        """(entailed, 1-based numbers of the supporting premises)."""
        wanted = self.findings(hypothesis)
        if wanted:
            stated = [self.findings(premise) for premise in premises]
            available = frozenset().union(*stated) if stated else frozenset()
            evidence = [n for n, facts in enumerate(stated, start=1) if facts & wanted]
            return wanted <= available, evidence
        key = normalise_text(hypothesis)
        evidence = [n for n, premise in enumerate(premises, start=1) if normalise_text(premise) == key]
        return bool(evidence), evidence

    def __call__(self, prompt: Prompt) -> str:
        return entailment_reply(self.judge, prompt)


class WordOverlapEntailmentJudge:
    """A deliberately naive offline judge: entailed when one premise holds most of the hypothesis's words.

    It stands for the cheap lexical approximations of entailment (word
    overlap, embedding similarity) and is there to be measured against the
    oracle, not to be used: it does not read negation or laterality as
    meaning, so "No pleural effusion." and "Small left pleural effusion."
    share most of their words.

    Parameters
    ----------
    threshold
        Share of the hypothesis's content words (stop words removed) that one
        premise must contain.
    """

    STOP_WORDS = frozenset("a an the is are was were be of in on at to and or with without there this that as by "
                           "for from it its seen noted".split())

    def __init__(self, threshold: float = 0.6):
        if not 0 < threshold <= 1:
            raise ValueError(f"WordOverlapEntailmentJudge: threshold must be in (0, 1], got {threshold}")
        self.threshold = threshold

    def words(self, text: str) -> set[str]:
        return {word for word in normalise_text(text).split() if word not in self.STOP_WORDS}

    def judge(self, hypothesis: str, premises: Sequence[str]) -> tuple[bool, list[int]]:
        """(entailed, 1-based numbers of the premises that pass the threshold)."""
        wanted = self.words(hypothesis)
        if not wanted:
            return False, []
        evidence = [n for n, premise in enumerate(premises, start=1)
                    if len(wanted & self.words(premise)) / len(wanted) >= self.threshold]
        return bool(evidence), evidence

    def __call__(self, prompt: Prompt) -> str:
        return entailment_reply(self.judge, prompt)


OFFLINE_JUDGES = ("findings", "word_overlap")


def offline_radfact_responder(findings_of: Callable[[str], set] | None = None,
                              judge: str = "findings", threshold: float = 0.6) -> Callable[[Prompt], str]:
    """One responder answering both RadFact prompt kinds offline.

    Phrases are the report's sentences; entailment is decided by
    :class:`FindingsEntailmentJudge` (``judge="findings"``, the default) or
    :class:`WordOverlapEntailmentJudge` (``"word_overlap"``, with its word-overlap ``threshold``).
    """
    if judge not in OFFLINE_JUDGES:
        raise ValueError(f"offline RadFact judge must be one of {OFFLINE_JUDGES}, got {judge!r}")
    if judge == "word_overlap":
        entail = WordOverlapEntailmentJudge(threshold)
        version = f"{OFFLINE_MODEL}:word_overlap:{entail.threshold}"
    else:
        entail = FindingsEntailmentJudge(findings_of)
        # The LLM layer puts this into the cache key: replies of another labeler are never reused.
        labeler = entail._findings_of
        version = f"{OFFLINE_MODEL}:{getattr(labeler, '__module__', '?')}.{getattr(labeler, '__qualname__', '?')}"

    def respond(prompt: Prompt) -> str:
        if "<report>" in prompt.user:
            return sentence_split_responder(prompt)
        if "<hypothesis>" in prompt.user:
            return entail(prompt)
        raise ValueError("offline RadFact responder: prompt is neither a phrase split nor an entailment question")

    respond.version = version
    return respond


def make_offline_radfact_client(cache_dir=None, findings_of: Callable[[str], set] | None = None,
                                judge: str = "findings", threshold: float = 0.6, **options):
    """An offline :mod:`saerad.llm` client answering RadFact prompts with one of the judges above.

    ``threshold`` is the word-overlap judge's (ignored by the findings judge).
    """
    from saerad.llm import make_client

    return make_client("offline", model=OFFLINE_MODEL, cache_dir=cache_dir,
                       responder=offline_radfact_responder(findings_of, judge=judge, threshold=threshold), **options)
