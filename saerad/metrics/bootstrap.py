"""Percentile bootstrap confidence intervals over studies.

Every report metric in the book is a statistic of a set of test studies (a mean
of per-study scores, or a corpus-level score such as the F1 of mean precision
and mean recall).  Its uncertainty comes from which studies happened to be in
the test split, so the resampling unit is the study: each resample draws
``n_studies`` study indices with replacement and recomputes the statistic on
them.

Statistics are given either as a callable ``statistic(indices) -> float``
(``indices`` an integer array of resampled study positions, which may repeat)
or, for the common case of a mean of per-study values, as the 1-D array of
those values: the mean path is vectorised over all resamples at once.
Per-study values may be NaN (a study where the score is undefined, e.g.
precision of an empty report); means skip them, as the point estimate does.

Paired comparisons use the SAME resampled indices for both systems, so the
difference's interval reflects only the systems' disagreement, not the
sampling of studies twice.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Sequence, Union

import numpy as np
import pandas as pd

Statistic = Union[Callable[[np.ndarray], float], Sequence[float], np.ndarray]


@dataclass(frozen=True)
class PairedDifference:
    """Result of :func:`paired_difference` (``a - b``)."""

    difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n_resamples: int


def resample_indices(n_studies: int, n_resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Study indices of every bootstrap resample, shape ``[n_resamples, n_studies]``.

    The same ``(n_studies, n_resamples, seed)`` always gives the same matrix,
    which is what makes paired comparisons (and re-runs) line up.
    """
    if int(n_studies) < 1:
        raise ValueError(f"bootstrap: n_studies must be >= 1, got {n_studies}")
    if int(n_resamples) < 1:
        raise ValueError(f"bootstrap: n_resamples must be >= 1, got {n_resamples}")
    rng = np.random.default_rng(seed)
    return rng.integers(0, int(n_studies), size=(int(n_resamples), int(n_studies)))


def _per_study_values(statistic: Statistic, n_studies: int) -> np.ndarray | None:
    """The per-study array when ``statistic`` is given as values, else None."""
    if callable(statistic):
        return None
    values = np.asarray(statistic, dtype=float)
    if values.ndim != 1 or len(values) != n_studies:
        raise ValueError(
            f"bootstrap: per-study values must be a 1-D array of length n_studies={n_studies}, "
            f"got shape {values.shape}"
        )
    return values


def _nanmean_rows(matrix: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN resample is NaN, dropped later
        return np.nanmean(matrix, axis=-1)


def _replicates(statistic: Statistic, indices: np.ndarray) -> tuple[float, np.ndarray]:
    """(statistic on all studies, statistic on each resample)."""
    n_studies = indices.shape[1]
    values = _per_study_values(statistic, n_studies)
    if values is not None:
        point = float(_nanmean_rows(values[None, :])[0])
        return point, _nanmean_rows(values[indices])
    point = float(statistic(np.arange(n_studies)))
    return point, np.array([float(statistic(row)) for row in indices])


def _percentile_interval(replicates: np.ndarray, level: float) -> tuple[float, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap: level must be in (0, 1), got {level}")
    finite = replicates[np.isfinite(replicates)]
    if len(finite) == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_ci(
    statistic: Statistic,
    n_studies: int | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Percentile bootstrap interval of a statistic over studies.

    Parameters
    ----------
    statistic
        Either a callable taking an integer array of study indices (length
        ``n_studies``, with repeats) and returning a float, or a 1-D array of
        per-study values whose (NaN-skipping) mean is the statistic (fast path).
    n_studies
        Number of studies; may be omitted when ``statistic`` is an array.
    n_resamples, seed, level
        Number of resamples, the seed of the index draw, and the coverage.

    Returns
    -------
    tuple
        ``(value on all studies, ci_low, ci_high)``.  Resamples on which the
        statistic is not finite are left out of the percentiles; if none is
        finite the interval is ``(nan, nan)``.
    """
    if n_studies is None:
        if callable(statistic):
            raise ValueError("bootstrap_ci: n_studies is required when statistic is a callable")
        n_studies = len(np.asarray(statistic))
    indices = resample_indices(n_studies, n_resamples, seed)
    point, replicates = _replicates(statistic, indices)
    low, high = _percentile_interval(replicates, level)
    return point, low, high


def paired_difference(
    statistic_a: Statistic,
    statistic_b: Statistic,
    n_studies: int | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> PairedDifference:
    """Bootstrap the difference ``a - b`` of two systems scored on the same studies.

    Both statistics are evaluated on the SAME resampled indices.  The two-sided
    p-value is twice the share of resampled differences lying on the other side
    of zero from the observed difference (ties with zero count as the other
    side, which is conservative), capped at 1.

    Parameters are as in :func:`bootstrap_ci`; each statistic may be a callable
    or an array of per-study values (in the same study order for both).
    """
    if n_studies is None:
        given = statistic_a if not callable(statistic_a) else statistic_b
        if callable(given):
            raise ValueError("paired_difference: n_studies is required when both statistics are callables")
        n_studies = len(np.asarray(given))
    indices = resample_indices(n_studies, n_resamples, seed)
    point_a, replicates_a = _replicates(statistic_a, indices)
    point_b, replicates_b = _replicates(statistic_b, indices)
    difference = point_a - point_b
    differences = replicates_a - replicates_b
    low, high = _percentile_interval(differences, level)
    finite = differences[np.isfinite(differences)]
    if len(finite) == 0 or not np.isfinite(difference):
        p_value = float("nan")
    elif difference >= 0:
        p_value = min(1.0, 2.0 * float(np.mean(finite <= 0)))
    else:
        p_value = min(1.0, 2.0 * float(np.mean(finite >= 0)))
    return PairedDifference(float(difference), low, high, p_value, int(n_resamples))


def f1_of_means(precision: np.ndarray, recall: np.ndarray) -> Callable[[np.ndarray], float]:
    """Statistic: harmonic mean of the (NaN-skipping) mean precision and mean recall.

    This is how RadFact's F1 is aggregated in the paper (Table 2: F1 = 2PR/(P+R)
    of the reported mean P and R), so its interval must resample P and R
    together rather than average per-study F1s.
    """
    precision = np.asarray(precision, dtype=float)
    recall = np.asarray(recall, dtype=float)
    if precision.shape != recall.shape:
        raise ValueError(f"f1_of_means: precision {precision.shape} and recall {recall.shape} differ in shape")

    def statistic(indices: np.ndarray) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(np.nanmean(precision[indices]))
            r = float(np.nanmean(recall[indices]))
        return 2 * p * r / (p + r) if p + r > 0 else (0.0 if np.isfinite(p + r) else float("nan"))

    return statistic


def summarise(
    table: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    system_column: str = "system",
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    scale: float = 1.0,
) -> pd.DataFrame:
    """Mean and bootstrap interval of every metric for every system.

    Parameters
    ----------
    table
        One row per (system, study) with a ``system_column`` column and one
        numeric column per metric (per-study scores; NaN = undefined for that
        study).  Any other non-numeric column (study ids, configs) is ignored.
    metrics
        Metric columns to summarise; default: every numeric column other than
        ones named ``study_id``/``subject_id``.
    scale
        Multiplier applied to value and interval (100 to report percentages).

    Returns
    -------
    DataFrame
        Rows ``system, metric, value, ci_low, ci_high, source`` with
        ``source = "measured"`` -- the format of
        ``artifacts/<profile>/metrics/table1.csv``.  Each system is resampled
        over its own studies with the same seed.
    """
    if system_column not in table.columns:
        raise ValueError(f"summarise: table has no {system_column!r} column (columns: {list(table.columns)})")
    if metrics is None:
        metrics = [
            column for column in table.columns
            if column not in (system_column, "study_id", "subject_id") and pd.api.types.is_numeric_dtype(table[column])
        ]
    missing = [m for m in metrics if m not in table.columns]
    if missing:
        raise ValueError(f"summarise: metric columns {missing} not in table (columns: {list(table.columns)})")
    rows = []
    for system, group in table.groupby(system_column, sort=False):
        for metric in metrics:
            values = pd.to_numeric(group[metric], errors="coerce").to_numpy(dtype=float, copy=True)
            value, low, high = bootstrap_ci(values, n_resamples=n_resamples, seed=seed, level=level)
            rows.append({
                "system": system, "metric": metric,
                "value": value * scale, "ci_low": low * scale, "ci_high": high * scale, "source": "measured",
            })
    return pd.DataFrame(rows, columns=["system", "metric", "value", "ci_low", "ci_high", "source"])
