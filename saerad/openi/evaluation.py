"""How well the report-reading tools read real reports: the rule labeler against Open-i's MeSH terms.

The reference is what the Indiana University indexers wrote down by hand for
each report (its MeSH major terms, mapped to CheXpert by
:mod:`saerad.openi.mesh`); the candidate is a labeler run on the report's
findings and impression. MeSH terms name only what a report affirms, so
the comparison is binary: an observation is *stated* by the labeler when it
labels it positive or uncertain (1 or -1, the convention of
:func:`saerad.metrics.chexpert_rules.sentence_findings`), and by the
reference when a term maps to it. Reports that were never indexed are left
out.

Intervals are percentile bootstraps over reports with the resampled indices
of :func:`saerad.metrics.bootstrap.resample_indices`, shared by every
observation and by both labelers, so a before/after difference is paired.
"""

from __future__ import annotations

import warnings
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from saerad.metrics.bootstrap import resample_indices
from saerad.mimic.loader import CHEXPERT_OBSERVATIONS
from saerad.openi.mesh import mesh_labels
from saerad.openi.reports import report_text, split_terms

#: Observations with fewer reference reports than this are shown but left out of the macro average.
MIN_SUPPORT = 20
MACRO_LABEL = "macro average"

LabelFunction = Callable[[str], Mapping[str, float]]


def indexed_reports(reports: pd.DataFrame) -> pd.DataFrame:
    """The reports that were indexed, with their ``text`` (findings + impression) and MeSH labels.

    Parameters
    ----------
    reports
        :func:`saerad.openi.reports.read_reports`'s table.

    Returns
    -------
    DataFrame
        One row per indexed, readable report: ``report_id, study_id, text,
        mesh_major`` and one boolean column per CheXpert observation (the reference).
    """
    rows = []
    for row in reports.itertuples(index=False):
        if isinstance(row.problem, str):
            continue
        labels = mesh_labels(split_terms(row.mesh_major))
        if labels is None:
            continue
        rows.append({"report_id": row.report_id, "study_id": row.study_id,
                     "text": report_text(row.findings, row.impression), "mesh_major": row.mesh_major,
                     **{o: labels[o] == 1.0 for o in CHEXPERT_OBSERVATIONS}})
    return pd.DataFrame(rows, columns=["report_id", "study_id", "text", "mesh_major", *CHEXPERT_OBSERVATIONS])


def stated_labels(texts, label_function: LabelFunction, uncertain_as_stated: bool = True) -> pd.DataFrame:
    """Boolean table: does the labeler state each observation for each text.

    ``uncertain_as_stated``: a hedged mention (-1) counts as stated (the book's convention), or not.
    """
    stated_values = (1.0, -1.0) if uncertain_as_stated else (1.0,)
    rows = []
    for text in texts:
        labels = label_function(text)
        rows.append({o: labels.get(o) in stated_values for o in CHEXPERT_OBSERVATIONS})
    return pd.DataFrame(rows, columns=list(CHEXPERT_OBSERVATIONS)).astype(bool)


def _scores(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        precision = np.where(tp + fp > 0, tp / (tp + fp), np.nan)
        recall = np.where(tp + fn > 0, tp / (tp + fn), np.nan)
        f1 = np.where(2 * tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
    return precision, recall, f1


def resample_weights(n_reports: int, n_resamples: int, seed: int) -> np.ndarray:
    """How often each report is drawn in each resample, ``[n_resamples, n_reports]`` (from ``resample_indices``)."""
    indices = resample_indices(n_reports, n_resamples, seed)
    return np.stack([np.bincount(row, minlength=n_reports) for row in indices]).astype(np.float64)


def _interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    finite = replicates[np.isfinite(replicates)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    low, high = np.quantile(finite, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(low), float(high)


def agreement_table(reference: pd.DataFrame, stated: pd.DataFrame, n_resamples: int = 1000, seed: int = 0,
                    min_support: int = MIN_SUPPORT, weights: np.ndarray | None = None) -> pd.DataFrame:
    """Per-observation precision, recall and F1 of ``stated`` against ``reference``, with 95 % intervals.

    Parameters
    ----------
    reference, stated
        Boolean tables, one row per report (same order), one column per observation.
    n_resamples, seed
        Bootstrap resamples over reports and their seed.
    min_support
        Observations with at least this many reference reports enter the macro average.
    weights
        Precomputed :func:`resample_weights` (to pair two labelers); drawn from ``seed`` when None.

    Returns
    -------
    DataFrame
        One row per observation, then the macro-average row: ``observation,
        support`` (reference reports), ``stated`` (labeler reports), ``tp``,
        ``precision, precision_low, precision_high``, the same for ``recall``
        and ``f1``, and ``in_macro``.
    """
    if len(reference) != len(stated):
        raise ValueError(f"reference has {len(reference)} reports, stated {len(stated)}: they must be the same reports")
    if len(reference) == 0:
        raise ValueError("no indexed report to compare against")
    observations = list(CHEXPERT_OBSERVATIONS)
    truth = reference[observations].to_numpy(dtype=np.float64)
    guess = stated[observations].to_numpy(dtype=np.float64)
    tp, fp, fn = truth * guess, (1 - truth) * guess, truth * (1 - guess)
    weights = resample_weights(len(truth), n_resamples, seed) if weights is None else weights
    point = _scores(tp.sum(0), fp.sum(0), fn.sum(0))
    replicated = _scores(weights @ tp, weights @ fp, weights @ fn)  # [n_resamples, observations]
    support = truth.sum(0).astype(int)
    in_macro = support >= min_support
    rows = []
    for j, observation in enumerate(observations):
        row = {"observation": observation, "support": int(support[j]), "stated": int(guess[:, j].sum()),
               "tp": int(tp[:, j].sum())}
        for name, value, replicates in zip(("precision", "recall", "f1"), point, replicated):
            low, high = _interval(replicates[:, j])
            row.update({name: float(value[j]), f"{name}_low": low, f"{name}_high": high})
        row["in_macro"] = bool(in_macro[j])
        rows.append(row)
    macro = {"observation": MACRO_LABEL, "support": int(support[in_macro].sum()),
             "stated": int(guess[:, in_macro].sum()), "tp": int(tp[:, in_macro].sum()), "in_macro": False}
    for name, value, replicates in zip(("precision", "recall", "f1"), point, replicated):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            macro[name] = float(np.nanmean(value[in_macro])) if in_macro.any() else float("nan")
            low, high = _interval(np.nanmean(replicates[:, in_macro], axis=1)) if in_macro.any() else (np.nan, np.nan)
        macro.update({f"{name}_low": low, f"{name}_high": high})
    rows.append(macro)
    return pd.DataFrame(rows)


def macro_f1_difference(reference: pd.DataFrame, stated_after: pd.DataFrame, stated_before: pd.DataFrame,
                        n_resamples: int = 1000, seed: int = 0, min_support: int = MIN_SUPPORT) -> dict[str, float]:
    """Paired bootstrap of macro-F1 (after - before) over the same resampled reports.

    Returns ``difference, ci_low, ci_high`` and ``share_not_better``: the share of resamples in which the
    difference is <= 0 (small when the improvement is not an accident of which reports were drawn).
    """
    observations = list(CHEXPERT_OBSERVATIONS)
    truth = reference[observations].to_numpy(dtype=np.float64)
    keep = truth.sum(0) >= min_support
    weights = resample_weights(len(truth), n_resamples, seed)

    def macro(stated: pd.DataFrame) -> tuple[float, np.ndarray]:
        guess = stated[observations].to_numpy(dtype=np.float64)
        tp, fp, fn = truth * guess, (1 - truth) * guess, truth * (1 - guess)
        f1 = _scores(tp.sum(0), fp.sum(0), fn.sum(0))[2]
        f1_replicates = _scores(weights @ tp, weights @ fp, weights @ fn)[2]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(np.nanmean(f1[keep])), np.nanmean(f1_replicates[:, keep], axis=1)

    after, after_replicates = macro(stated_after)
    before, before_replicates = macro(stated_before)
    differences = after_replicates - before_replicates
    low, high = _interval(differences)
    return {"difference": after - before, "ci_low": low, "ci_high": high,
            "share_not_better": float(np.mean(differences[np.isfinite(differences)] <= 0))}


def confusion_examples(reports: pd.DataFrame, reference: pd.DataFrame, stated: pd.DataFrame, observation: str,
                       kind: str) -> pd.DataFrame:
    """Reports where the labeler and the reference disagree on ``observation``.

    ``kind`` is ``"false positive"`` (stated, not in the reference) or ``"false negative"`` (the reverse).
    """
    if kind not in ("false positive", "false negative"):
        raise ValueError(f"kind must be 'false positive' or 'false negative', got {kind!r}")
    truth, guess = reference[observation].to_numpy(bool), stated[observation].to_numpy(bool)
    mask = guess & ~truth if kind == "false positive" else truth & ~guess
    return reports.loc[mask]
