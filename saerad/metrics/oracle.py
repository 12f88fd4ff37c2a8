"""Exact logical precision / recall on SynthCXR, from the facts behind every sentence.

On SynthCXR the facts of every report sentence are known
(``synthcxr-report-facts.jsonl.gz``: per study, sentences with ``text`` and
``facts`` = (finding, present, certainty, ...)).  Generated SAE-Rad sentences
are verbatim corpus sentences (the composer copies statements of feature
descriptions, which are corpus sentences) and the nearest-neighbour baseline
copies training reports, so the facts of a sentence can be looked up by its
normalised text.  Text that is not in the corpus, or whose facts depend on the
study it was written for ("Support devices as described above."), has no
facts: it is counted and reported, never guessed.

Two oracles, both at sentence level like RadFact's phrases:

``reference``
    What RadFact approximates.  A candidate sentence is entailed iff every one
    of its facts is stated in the reference report (a present finding stated
    present, an absent finding stated absent); symmetrically for recall.  A
    sentence with no facts ("No acute cardiopulmonary process.") is judged by
    normalised-text equality with a sentence of the other side.
``truth``
    Against the image's TRUE planted findings (``ground_truth.csv``; study level
    = present in any frontal image).  A candidate sentence is entailed iff each
    fact agrees with the truth (a finding stated absent only needs to be truly
    absent).  Sentences with no facts cannot be checked and are left out of
    precision (counted).  Recall is the share of the truly present findings
    that the candidate states present.  Appendix G's point: a reference report
    scores ~1 precision here but its recall shows what it omits, and a correct
    candidate that mentions an omitted finding loses precision under RadFact.

Hedged facts ("may reflect atelectasis") count as stated present by default
(``uncertain="present"``); ``uncertain="drop"`` leaves them out.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from saerad.io import read_jsonl
from saerad.metrics.radfact import normalise_text, precision_recall_f1, split_sentences
from saerad.synthcxr.catalogue import FINDINGS

Facts = frozenset  # frozenset[tuple[str, bool]]

# Nuisance items SynthCXR reports may mention, and how ground_truth.csv encodes them.
_NUISANCE_TRUTH = {
    "piercing": lambda column: pd.to_numeric(column, errors="coerce").fillna(0) > 0,
    "scoliosis": lambda column: column.fillna("none").astype(str).str.lower() != "none",
}


@dataclass
class SentenceFacts:
    """Facts of SynthCXR sentences, looked up by normalised text.

    Attributes
    ----------
    by_study
        ``study_id -> {normalised text -> facts}``: exact facts of the sentences
        of each study's own report.
    by_text
        ``normalised text -> facts`` over the whole corpus, or None where the
        same text carries different facts in different studies (ambiguous).
    misses
        Tally of failed lookups: ``"unknown"`` (text not in the corpus) and
        ``"ambiguous"``.
    """

    by_study: dict[int, dict[str, Facts]]
    by_text: dict[str, Facts | None]
    misses: Counter = field(default_factory=Counter)

    @classmethod
    def from_synthcxr(cls, facts_path: str | Path, uncertain: str = "present") -> "SentenceFacts":
        """Read ``synthcxr-report-facts.jsonl.gz`` (or an uncompressed ``.jsonl``)."""
        if uncertain not in ("present", "drop"):
            raise ValueError(f"SentenceFacts: uncertain must be 'present' or 'drop', got {uncertain!r}")
        path = Path(facts_path)
        if not path.exists():
            raise FileNotFoundError(f"SentenceFacts: facts file {path} does not exist")
        by_study: dict[int, dict[str, Facts]] = {}
        seen: dict[str, set] = {}
        for number, record in read_jsonl(path, ("study_id", "sentences")):
            try:
                study_id = int(record["study_id"])
                parsed = [(normalise_text(s["text"]), _facts(s["facts"], uncertain)) for s in record["sentences"]]
            except (KeyError, TypeError, ValueError) as error:
                raise ValueError(f"{path}:{number}: not a study record with study_id and sentences "
                                 f"[{{text, facts: [{{finding, present, certainty}}]}}] ({error!r})") from error
            own = by_study.setdefault(study_id, {})
            for text, facts in parsed:
                own[text] = facts
                seen.setdefault(text, set()).add(facts)
        by_text = {text: next(iter(variants)) if len(variants) == 1 else None for text, variants in seen.items()}
        return cls(by_study=by_study, by_text=by_text)

    def lookup(self, text: str, study_id: int | None = None) -> Facts | None:
        """Facts of ``text`` (the study's own sentence first), or None when unknown or ambiguous."""
        key = normalise_text(text)
        if study_id is not None:
            own = self.by_study.get(int(study_id), {})
            if key in own:
                return own[key]
        if key not in self.by_text:
            self.misses["unknown"] += 1
            return None
        facts = self.by_text[key]
        if facts is None:
            self.misses["ambiguous"] += 1
        return facts


def _facts(items: Sequence[Mapping], uncertain: str) -> Facts:
    return frozenset(
        (str(item["finding"]), bool(item["present"]))
        for item in items
        if uncertain == "present" or item.get("certainty", "definite") != "uncertain"
    )


def study_truth(ground_truth_path: str | Path, include_nuisance: bool = True) -> dict[int, Facts]:
    """Planted findings per study: ``study_id -> {(finding, present)}`` for every finding.

    A finding is present in a study if it is planted in any of its frontal
    images (``view_position`` PA/AP; the file lists frontal images only).  The
    16 catalogue findings plus the nuisance items reports may mention
    (piercing, scoliosis) are covered, each either present or absent;
    ``include_nuisance=False`` keeps the 16 findings only (facts about the
    nuisance items then cannot be checked).
    """
    path = Path(ground_truth_path)
    if not path.exists():
        raise FileNotFoundError(f"study_truth: ground-truth file {path} does not exist")
    table = pd.read_csv(path)
    needed = ["study_id", *FINDINGS]
    missing = [c for c in needed if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing} (expected study_id and one 0/1 column per finding)")
    if "view_position" in table.columns:
        table = table[table["view_position"].astype(str).str.upper().isin(["PA", "AP"])]
    present = pd.DataFrame({"study_id": table["study_id"].astype(int)})
    for finding in FINDINGS:
        present[finding] = pd.to_numeric(table[finding], errors="coerce").fillna(0) > 0
    for item, decode in _NUISANCE_TRUTH.items():
        if include_nuisance and item in table.columns:
            present[item] = decode(table[item])
    per_study = present.groupby("study_id").any()
    return {int(study): frozenset((name, bool(flag)) for name, flag in row.items())
            for study, row in per_study.iterrows()}


# ---------------------------------------------------------------------------
# Per-study scores


def _sentence_entailed(facts: Facts, text: str, other_facts: Facts, other_texts: set[str]) -> bool:
    if facts:
        return facts <= other_facts
    return normalise_text(text) in other_texts


def oracle_study_against_reference(
    candidate: Sequence[tuple[str, Facts | None]],
    reference: Sequence[tuple[str, Facts | None]],
) -> dict:
    """Exact logical precision / recall of one study against its reference report's facts.

    ``candidate`` and ``reference`` are (sentence, facts) pairs; facts None =
    unknown, left out of the scores and counted.
    """
    known_candidate = [(t, f) for t, f in candidate if f is not None]
    known_reference = [(t, f) for t, f in reference if f is not None]
    candidate_facts = frozenset().union(*(f for _, f in known_candidate)) if known_candidate else frozenset()
    reference_facts = frozenset().union(*(f for _, f in known_reference)) if known_reference else frozenset()
    candidate_texts = {normalise_text(t) for t, _ in known_candidate}
    reference_texts = {normalise_text(t) for t, _ in known_reference}
    precision_flags = [_sentence_entailed(f, t, reference_facts, reference_texts) for t, f in known_candidate]
    recall_flags = [_sentence_entailed(f, t, candidate_facts, candidate_texts) for t, f in known_reference]
    return {
        **precision_recall_f1(precision_flags, recall_flags),
        "n_candidate_sentences": len(known_candidate), "n_reference_sentences": len(known_reference),
        "n_candidate_entailed": int(sum(precision_flags)), "n_reference_entailed": int(sum(recall_flags)),
        "n_candidate_unknown": len(candidate) - len(known_candidate),
        "n_reference_unknown": len(reference) - len(known_reference),
    }


def oracle_study_against_truth(candidate: Sequence[tuple[str, Facts | None]], truth: Facts) -> dict:
    """Exact logical precision / recall of one study against the image's planted findings.

    A fact about an item the truth does not cover cannot be checked, so a
    sentence carrying one is left out of precision like a fact-less sentence.
    """
    covered = {finding for finding, _ in truth}
    truly_present = sorted(finding for finding, present in truth if present)
    known = [(t, f) for t, f in candidate if f is not None]
    checkable = [f for _, f in known if f and all(finding in covered for finding, _ in f)]
    precision_flags = [f <= truth for f in checkable]
    stated_present = {finding for f in checkable for finding, present in f if present}
    recall_flags = [finding in stated_present for finding in truly_present]
    return {
        **precision_recall_f1(precision_flags, recall_flags),
        "n_candidate_sentences": len(checkable), "n_reference_sentences": len(truly_present),
        "n_candidate_entailed": int(sum(precision_flags)), "n_reference_entailed": int(sum(recall_flags)),
        "n_candidate_unknown": len(candidate) - len(known),
        "n_candidate_unverifiable": len(known) - len(checkable),
    }


def _sentences(report: str | Sequence[str], name: str, position: int) -> list[str]:
    """A report's sentences: split a string, or take a list of sentences as given."""
    if isinstance(report, str):
        return split_sentences(report)
    if isinstance(report, (list, tuple)) and all(isinstance(s, str) for s in report):
        return [s for s in report if s.strip()]
    raise ValueError(f"oracle_radfact: {name}[{position}] is {report!r}, expected a report string "
                     "or a list of sentence strings")


def oracle_radfact(
    candidates: Sequence[str],
    facts: SentenceFacts,
    references: Sequence[str] | None = None,
    truth: Mapping[int, Facts] | None = None,
    study_ids: Sequence[int] | None = None,
    own_reports: bool = False,
) -> pd.DataFrame:
    """Oracle RadFact per study, against reference reports or against the planted truth.

    Parameters
    ----------
    candidates
        Candidate reports, each a string (split into sentences like RadFact's
        offline splitter does; ``''`` = no report) or a list of sentences
        (e.g. the ``sentences[].text`` of ``generated.jsonl``).
    facts
        Sentence facts from :meth:`SentenceFacts.from_synthcxr`.
    references
        Reference reports (strings or sentence lists), same order: the
        ``reference`` oracle.
    truth
        ``study_id -> facts`` from :func:`study_truth`: the ``truth`` oracle.
        Give exactly one of ``references`` and ``truth``.
    study_ids
        Study of each row; required with ``truth``, and with ``references``
        used to look the reference sentences up among that study's own
        sentences first (exact facts even for context-dependent text).
    own_reports
        The candidates are the studies' own reports (e.g. scoring reference
        reports against the truth): look their sentences up among the study's
        own sentences first too.  Leave False for generated reports, whose
        sentences come from other studies.

    Returns
    -------
    DataFrame
        One row per study: ``study_id`` (if given), ``precision``, ``recall``,
        ``f1`` (NaN where a side has nothing to score) and the counts of
        scored, entailed, unknown (and, for truth, unverifiable) sentences.
    """
    if (references is None) == (truth is None):
        raise ValueError("oracle_radfact: give exactly one of references= and truth=")
    if study_ids is not None and len(study_ids) != len(candidates):
        raise ValueError(f"oracle_radfact: {len(candidates)} candidates but {len(study_ids)} study_ids")
    if references is not None and len(references) != len(candidates):
        raise ValueError(f"oracle_radfact: {len(candidates)} candidates but {len(references)} references")
    if truth is not None and study_ids is None:
        raise ValueError("oracle_radfact: study_ids are required with truth=")
    rows = []
    for position, candidate in enumerate(candidates):
        study = None if study_ids is None else int(study_ids[position])
        # A generated sentence is not the study's own: look it up corpus-wide unless told otherwise.
        own = study if own_reports else None
        candidate_facts = [(s, facts.lookup(s, own)) for s in _sentences(candidate, "candidates", position)]
        if truth is not None:
            if study not in truth:
                raise ValueError(f"oracle_radfact: study {study} has no ground truth")
            row = oracle_study_against_truth(candidate_facts, truth[study])
        else:
            reference_sentences = _sentences(references[position], "references", position)
            reference_facts = [(s, facts.lookup(s, study)) for s in reference_sentences]
            row = oracle_study_against_reference(candidate_facts, reference_facts)
        rows.append(({"study_id": study} if study is not None else {}) | row)
    return pd.DataFrame(rows)


def compare_to_oracle(
    approximation: pd.DataFrame,
    oracle: pd.DataFrame,
    metrics: Sequence[str] = ("precision", "recall", "f1"),
) -> pd.DataFrame:
    """How close per-study scores of an approximation (e.g. offline RadFact) are to the oracle.

    Rows are matched by position (same study order).  Returns one row per
    metric: ``n`` (studies where both are defined), ``mean_approximation``,
    ``mean_oracle``, ``mean_abs_difference``, ``pearson_r`` (NaN when fewer
    than 3 studies or a constant column) and ``exact_share`` (share of studies
    with identical scores).
    """
    if len(approximation) != len(oracle):
        raise ValueError(f"compare_to_oracle: {len(approximation)} approximation rows but {len(oracle)} oracle rows")
    rows = []
    for metric in metrics:
        for name, table in (("approximation", approximation), ("oracle", oracle)):
            if metric not in table.columns:
                raise ValueError(f"compare_to_oracle: {name} table has no {metric!r} column")
        a = approximation[metric].to_numpy(dtype=float)
        b = oracle[metric].to_numpy(dtype=float)
        both = np.isfinite(a) & np.isfinite(b)
        a, b = a[both], b[both]
        pearson = float("nan")
        if len(a) >= 3 and np.std(a) > 0 and np.std(b) > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                pearson = float(np.corrcoef(a, b)[0, 1])
        rows.append({
            "metric": metric, "n": int(both.sum()),
            "mean_approximation": float(a.mean()) if len(a) else float("nan"),
            "mean_oracle": float(b.mean()) if len(b) else float("nan"),
            "mean_abs_difference": float(np.abs(a - b).mean()) if len(a) else float("nan"),
            "pearson_r": pearson,
            "exact_share": float(np.mean(np.isclose(a, b))) if len(a) else float("nan"),
        })
    return pd.DataFrame(rows)
