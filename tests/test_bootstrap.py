"""Bootstrap confidence intervals over studies (saerad.metrics.bootstrap)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from saerad.metrics.bootstrap import (
    bootstrap_ci,
    f1_of_means,
    paired_difference,
    resample_indices,
    summarise,
)


def _bernoulli(n: int, p: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(float)


def test_mean_of_binary_values_ci_contains_truth_and_shrinks_like_root_n():
    truth = 0.3
    small = _bernoulli(200, truth, seed=1)
    large = _bernoulli(3200, truth, seed=2)
    value_small, low_small, high_small = bootstrap_ci(small, n_resamples=2000, seed=0)
    value_large, low_large, high_large = bootstrap_ci(large, n_resamples=2000, seed=0)
    assert value_small == pytest.approx(small.mean())
    assert low_small < truth < high_small
    assert low_large < truth < high_large
    assert low_small <= value_small <= high_small
    # 16x the studies -> about a quarter of the width.
    ratio = (high_small - low_small) / (high_large - low_large)
    assert 3.0 < ratio < 5.3
    # And the width matches the normal approximation 2 * 1.96 * sqrt(p(1-p)/n).
    expected = 2 * 1.96 * np.sqrt(small.mean() * (1 - small.mean()) / len(small))
    assert (high_small - low_small) == pytest.approx(expected, rel=0.15)


def test_callable_statistic_matches_vectorised_mean_path():
    values = np.random.default_rng(3).normal(size=50)
    fast = bootstrap_ci(values, n_resamples=300, seed=7)
    slow = bootstrap_ci(lambda idx: float(values[idx].mean()), n_studies=50, n_resamples=300, seed=7)
    assert fast == pytest.approx(slow)


def test_determinism_by_seed():
    values = np.random.default_rng(4).random(80)
    assert bootstrap_ci(values, seed=11) == bootstrap_ci(values, seed=11)
    assert bootstrap_ci(values, seed=11) != bootstrap_ci(values, seed=12)
    assert np.array_equal(resample_indices(80, 10, seed=5), resample_indices(80, 10, seed=5))


def test_nan_studies_are_skipped_like_the_point_estimate():
    values = np.array([1.0, np.nan, 0.0, 1.0, np.nan, 1.0])
    value, low, high = bootstrap_ci(values, n_resamples=500, seed=0)
    assert value == pytest.approx(0.75)
    assert 0.0 <= low <= value <= high <= 1.0


def test_paired_difference_of_identical_systems_is_exactly_zero():
    values = np.random.default_rng(5).random(60)
    result = paired_difference(values, values.copy(), n_resamples=500, seed=0)
    assert result.difference == 0.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)
    assert result.p_value == 1.0


def test_paired_difference_detects_a_real_gap_and_uses_shared_indices():
    rng = np.random.default_rng(6)
    base = rng.random(100)
    better = base + 0.1 + rng.normal(scale=0.01, size=100)
    result = paired_difference(better, base, n_resamples=1000, seed=0)
    assert result.difference == pytest.approx(np.mean(better - base))
    assert result.ci_low > 0.08 and result.ci_high < 0.12
    assert result.p_value < 0.01
    # Shared indices: the paired interval is much narrower than the unpaired spread of either system.
    _, low_a, high_a = bootstrap_ci(better, n_resamples=1000, seed=0)
    assert (result.ci_high - result.ci_low) < 0.2 * (high_a - low_a)
    reverse = paired_difference(base, better, n_resamples=1000, seed=0)
    assert reverse.difference == pytest.approx(-result.difference)
    assert reverse.p_value == result.p_value


def test_f1_of_means_is_the_harmonic_mean_of_mean_precision_and_recall():
    precision = np.array([0.5, 0.3, np.nan, 0.4])
    recall = np.array([0.2, 0.4, 0.3, 0.5])
    statistic = f1_of_means(precision, recall)
    p, r = 0.4, 0.35
    value, low, high = bootstrap_ci(statistic, n_studies=4, n_resamples=200, seed=0)
    assert value == pytest.approx(2 * p * r / (p + r))
    assert low <= value <= high


def test_summarise_produces_table1_rows():
    table = pd.DataFrame({
        "system": ["a"] * 4 + ["b"] * 4,
        "study_id": [1, 2, 3, 4] * 2,
        "bleu": [0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.5, 0.5],
        "note": ["x"] * 8,
    })
    summary = summarise(table, n_resamples=200, seed=0, scale=100)
    assert list(summary.columns) == ["system", "metric", "value", "ci_low", "ci_high", "source"]
    assert list(summary.metric) == ["bleu", "bleu"]
    a = summary.set_index("system").loc["a"]
    assert a.value == pytest.approx(25.0)
    assert a.ci_low < 25.0 < a.ci_high
    b = summary.set_index("system").loc["b"]
    assert (b.value, b.ci_low, b.ci_high) == pytest.approx((50.0, 50.0, 50.0))
    assert set(summary.source) == {"measured"}


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="n_studies"):
        bootstrap_ci(lambda idx: 0.0)
    with pytest.raises(ValueError, match="length n_studies=3"):
        bootstrap_ci([1.0, 2.0], n_studies=3)
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=1.5)
    with pytest.raises(ValueError, match="'system'"):
        summarise(pd.DataFrame({"x": [1.0]}))
