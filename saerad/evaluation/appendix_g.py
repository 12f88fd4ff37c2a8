"""Appendix G measured on SynthCXR: what RadFact's reference report costs a correct candidate."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from saerad.evaluation.scoring import ScoringSet, SystemScores

GAP_COLUMNS = ["system", "judge", "metric", "n", "mean_approximation", "mean_oracle", "mean_abs_difference",
               "pearson_r", "exact_share"]



def appendix_g(scores: Sequence[SystemScores], sets: Mapping[str, ScoringSet], facts, truth,
               n_resamples: int = 1000, seed: int = 0) -> dict[str, pd.DataFrame]:
    """RadFact's reference problem, measured where the truth is known.

    Parameters
    ----------
    scores, sets
        Scored systems (each with its ``oracle`` table, i.e. scored with ``facts``).
    facts, truth
        :class:`saerad.metrics.oracle.SentenceFacts` and
        :func:`saerad.metrics.oracle.study_truth` of the SynthCXR data.

    Returns
    -------
    dict of DataFrame
        ``scores``: oracle precision / recall / F1 (in %, with CIs) of each
        system against the reference report and against the planted truth,
        and of the reference reports themselves against the truth.
        ``sentences``: every generated sentence with known facts, judged both
        ways: how many are true of the image but not entailed by the reference
        (penalised although correct) and the reverse.
        ``approximation_gap``: the RadFact judge against the reference oracle
        (:func:`saerad.metrics.oracle.compare_to_oracle`), per system.
    """
    from saerad.metrics.oracle import compare_to_oracle, oracle_radfact
    from saerad.metrics.radfact import radfact_summary

    summaries, crosstab, gaps = [], [], []
    for system in scores:
        frame = sets[system.label].frame
        ids = sets[system.label].study_ids
        versus_truth = oracle_radfact(frame["report"].tolist(), facts, truth=truth, study_ids=ids)
        for against, table in (("reference report", system.oracle), ("planted truth", versus_truth)):
            summary = radfact_summary(table.assign(system=system.label), n_resamples=n_resamples, seed=seed)
            summaries.append(summary.assign(judged_against=against, n_studies=len(table)))
        crosstab.append(_sentence_crosstab(system.label, frame, facts, truth))
        if system.radfact is not None:
            gap = compare_to_oracle(system.radfact, system.oracle)
            gaps.append(gap.assign(system=system.label, judge=system.radfact_method))
    first = next(iter(sets.values())).frame
    reference_vs_truth = oracle_radfact(first["reference"].tolist(), facts, truth=truth, study_ids=first["study_id"],
                                        own_reports=True)
    summary = radfact_summary(reference_vs_truth.assign(system="reference reports"), n_resamples=n_resamples, seed=seed)
    summaries.append(summary.assign(judged_against="planted truth", n_studies=len(reference_vs_truth)))
    table = pd.concat(summaries, ignore_index=True)
    table["metric"] = table["metric"].map({"radfact_precision": "precision", "radfact_recall": "recall",
                                           "radfact_f1": "F1"})
    table = table[["system", "judged_against", "metric", "value", "ci_low", "ci_high", "n_studies"]]
    gap_table = pd.concat(gaps, ignore_index=True)[GAP_COLUMNS] if gaps else pd.DataFrame(columns=GAP_COLUMNS)
    return {"scores": table, "sentences": pd.DataFrame(crosstab), "approximation_gap": gap_table}


SENTENCE_VERDICTS = ("true_and_entailed", "true_not_entailed", "false_but_entailed", "false_not_entailed")


def judged_sentences(frame: pd.DataFrame, facts, truth) -> pd.DataFrame:
    """Every generated sentence judged twice: true of the image? entailed by the reference?

    Parameters
    ----------
    frame
        A :class:`ScoringSet`'s frame (``study_id``, ``report``, ``reference``).
    facts, truth
        As in :func:`appendix_g`.

    Returns
    -------
    DataFrame
        ``study_id, sentence, reference, verdict``: one of
        :data:`SENTENCE_VERDICTS`, ``"no known facts"`` (the text is not in the
        corpus) or ``"not checkable"`` (no facts, or facts about an item the
        truth does not cover).
    """
    from saerad.metrics.radfact import split_sentences

    rows = []
    for study, report, reference in zip(frame["study_id"], frame["report"], frame["reference"]):
        study_truth = truth[int(study)]
        covered = {finding for finding, _ in study_truth}
        stated = [facts.lookup(s, int(study)) for s in split_sentences(reference)]
        reference_facts = frozenset().union(*(f for f in stated if f is not None))
        for sentence in split_sentences(report):
            sentence_facts = facts.lookup(sentence)
            if sentence_facts is None:
                verdict = "no known facts"
            elif not sentence_facts or not all(finding in covered for finding, _ in sentence_facts):
                verdict = "not checkable"
            else:
                true, entailed = sentence_facts <= study_truth, sentence_facts <= reference_facts
                verdict = SENTENCE_VERDICTS[2 * (not true) + (not entailed)]
            rows.append({"study_id": study, "sentence": sentence, "reference": reference, "verdict": verdict})
    return pd.DataFrame(rows, columns=["study_id", "sentence", "reference", "verdict"])


def _sentence_crosstab(label: str, frame: pd.DataFrame, facts, truth) -> dict:
    """Generated sentences with facts: entailed by the reference? true of the image?"""
    verdicts = judged_sentences(frame, facts, truth)["verdict"].value_counts()
    counts = {verdict: int(verdicts.get(verdict, 0)) for verdict in SENTENCE_VERDICTS}
    judged = sum(counts.values())
    true_total = counts["true_and_entailed"] + counts["true_not_entailed"]
    return {"system": label, "sentences_judged": judged, **counts,
            "share_of_true_sentences_penalised": counts["true_not_entailed"] / true_total if true_total else np.nan,
            "sentences_without_known_facts": int(verdicts.get("no known facts", 0)),
            "sentences_not_checkable": int(verdicts.get("not checkable", 0))}


def judge_against_oracle(scores: Sequence[SystemScores], sets: Mapping[str, ScoringSet], client,
                         judge: str) -> pd.DataFrame:
    """Score every system with another RadFact judge and compare it, study by study, with the oracle.

    Parameters
    ----------
    scores, sets
        Scored systems with their ``oracle`` tables (scored with SynthCXR facts).
    client
        A :mod:`saerad.llm` client answering RadFact prompts (an LLM, or
        ``make_offline_radfact_client(judge="word_overlap")``).
    judge
        Its name in the returned table.

    Returns
    -------
    DataFrame
        The columns of ``appendix_g(...)["approximation_gap"]``.
    """
    from saerad.metrics.oracle import compare_to_oracle
    from saerad.metrics.radfact import radfact

    gaps = []
    for system in scores:
        if system.oracle is None:
            raise ValueError(f"judge_against_oracle: {system.label!r} was scored without SynthCXR facts (no oracle)")
        frame = sets[system.label].frame
        table = radfact(frame["report"].tolist(), frame["reference"].tolist(), client, progress=False)
        gaps.append(compare_to_oracle(table, system.oracle).assign(system=system.label, judge=judge))
    return pd.concat(gaps, ignore_index=True)[GAP_COLUMNS]
