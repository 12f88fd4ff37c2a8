"""The SAE chapter's dead-feature variants: token subsets, layer-normed tokens, dictionary sizes."""

from __future__ import annotations

import numpy as np
import pytest

from saerad import sae_experiments as experiments


def _tokens(n: int = 40, d: int = 16) -> np.ndarray:
    return np.abs(np.random.default_rng(0).normal(size=(n, d))).astype(np.float32) + 1.0


def test_subsample_rows_is_seeded_without_replacement_and_keeps_order():
    tokens = np.arange(40, dtype=np.float32)[:, None] * np.ones((1, 3), dtype=np.float32)
    half = experiments.subsample_rows(tokens, 0.5, seed=3)
    assert half.shape == (20, 3)
    assert len(np.unique(half[:, 0])) == 20 and np.all(np.diff(half[:, 0]) > 0)
    assert np.array_equal(half, experiments.subsample_rows(tokens, 0.5, seed=3))
    assert not np.array_equal(half, experiments.subsample_rows(tokens, 0.5, seed=4))
    assert np.array_equal(experiments.subsample_rows(tokens, 1.0, seed=0), tokens)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="fraction"):
            experiments.subsample_rows(tokens, bad, seed=0)


def test_layer_normed_tokens_have_zero_mean_unit_spread_and_norm_sqrt_d():
    tokens = _tokens()
    normed = experiments.layer_normed(tokens)
    assert normed.dtype == np.float32 and normed.shape == tokens.shape
    np.testing.assert_allclose(normed.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(normed, axis=1), np.sqrt(tokens.shape[1]), rtol=1e-5)
    assert (normed < 0).any()  # non-negative tokens come out signed
    # invariant to a per-token shift and positive scale, as a LayerNorm is
    np.testing.assert_allclose(experiments.layer_normed(3.0 * tokens + 2.0), normed, atol=1e-5)


def test_dead_feature_runs_change_one_thing_each():
    train, test = _tokens(40), _tokens(10)
    runs, too_small = experiments.dead_feature_runs(train, test, [0.25, 0.5], 8.0, expansion_factor=4,
                                                    l1_coefficient=3.0, seed=0, batch_size=8)
    assert too_small == []
    assert [run.name for run, *_ in runs] == ["sae_rad_tokens_0.25", "sae_rad_tokens_0.5", "sae_rad_layer_normed"]
    (quarter, _, quarter_train, quarter_test), _, (normed, _, normed_train, normed_test) = runs
    assert len(quarter_train) == 10 and quarter_test is test and quarter.l1_coefficient == 3.0
    assert normed.l1_coefficient == 8.0 and len(normed_train) == 40
    np.testing.assert_allclose(normed_test, experiments.layer_normed(test))
    assert experiments.dead_feature_runs(train, test, [], None, 4, 3.0, 0, batch_size=8) == ([], [])


def test_a_share_smaller_than_one_batch_is_left_out_not_trained():
    runs, too_small = experiments.dead_feature_runs(_tokens(40), _tokens(10), [0.25, 0.5], None, 4, 3.0, 0,
                                                    batch_size=16)
    assert too_small == [0.25]
    assert [run.name for run, *_ in runs] == ["sae_rad_tokens_0.5"]


def test_dictionary_size_runs_skip_the_main_size_and_keep_its_coefficient():
    runs = experiments.dictionary_size_runs([2, 1, 8, 2], main_expansion_factor=8, l1_coefficient=3.0)
    assert [(run.name, run.expansion_factor, run.l1_coefficient, run.preset) for run in runs] == [
        ("sae_rad_x1", 1, 3.0, "sae_rad"), ("sae_rad_x2", 2, 3.0, "sae_rad")]
    assert experiments.dictionary_size_runs([], 8, 3.0) == []
    assert all(experiments.is_dictionary_size_run(run.name) for run in runs)
    assert not any(map(experiments.is_dictionary_size_run, ["sae_rad_main", "x8", "sae_rad_x", "sae_rad_x2_dense"]))
    for bad in ([0], [1.5], [-2]):
        with pytest.raises(ValueError, match="whole multiples"):
            experiments.dictionary_size_runs(bad, 8, 3.0)
