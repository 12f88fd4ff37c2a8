"""Schedules, resumable training, the divergence guard, and a behavioural check that SAEs learn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

import saerad.sae.train as train_module
from conftest import assert_sae_resume_is_bit_identical
from saerad.sae import (
    CheckpointMismatch, TrainConfig, TrainingDiverged, evaluate_sae, load_sae, make_config, train_sae,
)
from saerad.sae.models import GatedSAE
from saerad.sae.schedule import l1_coefficient, learning_rate
from saerad.sae.train import BatchOrder

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread


# -- schedules ------------------------------------------------------------------


def test_learning_rate_schedule_key_steps():
    total, peak = 1000, 2e-3  # warm-up 1 % = 10 steps, decay 20 % = 200 steps
    lr = lambda step: learning_rate(step, total, peak, 0.01, 0.2)  # noqa: E731
    assert lr(0) == pytest.approx(peak / 10)
    assert lr(4) == pytest.approx(peak * 5 / 10)
    assert lr(9) == pytest.approx(peak)  # end of warm-up
    assert lr(10) == lr(500) == lr(799) == pytest.approx(peak)
    assert lr(800) == pytest.approx(peak)  # first decay step
    assert lr(900) == pytest.approx(peak / 2)
    assert lr(999) == pytest.approx(peak / 200)  # last step: one decrement above zero
    decay = [lr(s) for s in range(800, 1000)]
    assert all(a > b for a, b in zip(decay, decay[1:]))
    with pytest.raises(ValueError):
        lr(1000)


def test_l1_warmup_key_steps():
    total, peak = 1000, 8e-3  # warm-up 5 % = 50 steps
    assert l1_coefficient(0, total, peak, 0.05) == pytest.approx(peak / 50)
    assert l1_coefficient(24, total, peak, 0.05) == pytest.approx(peak / 2)
    assert l1_coefficient(49, total, peak, 0.05) == pytest.approx(peak)
    assert l1_coefficient(50, total, peak, 0.05) == l1_coefficient(999, total, peak, 0.05) == peak
    assert l1_coefficient(0, total, peak, 0.0) == peak  # no warm-up


def test_paper_schedule_lengths():
    # Appendix B.1: 200,000 steps -> 2,000 warm-up steps, 40,000 decay steps, 10,000 lambda warm-up steps.
    assert learning_rate(1999, 200_000, 5e-5, 0.01, 0.2) == pytest.approx(5e-5)
    assert learning_rate(1998, 200_000, 5e-5, 0.01, 0.2) < 5e-5
    assert learning_rate(160_000, 200_000, 5e-5, 0.01, 0.2) == pytest.approx(5e-5)
    assert learning_rate(160_001, 200_000, 5e-5, 0.01, 0.2) < 5e-5
    assert l1_coefficient(9_999, 200_000, 8e-3, 0.05) == pytest.approx(8e-3)
    assert l1_coefficient(9_998, 200_000, 8e-3, 0.05) < 8e-3


def test_batch_order_is_a_function_of_seed_and_step():
    order, again = BatchOrder(100, 30, seed=4), BatchOrder(100, 30, seed=4)
    first_epoch = np.concatenate([order.indices(s) for s in range(3)])
    assert len(set(first_epoch)) == 90  # no repeats within an epoch
    assert np.array_equal(again.indices(7), order.indices(7))  # no dependence on history
    assert np.array_equal(again.indices(1), BatchOrder(100, 30, seed=4).indices(1))
    assert not np.array_equal(BatchOrder(100, 30, seed=5).indices(0), order.indices(0))


# -- resumable training ------------------------------------------------------------


def _tokens(n: int = 256, d: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32) * 2


SMALL = make_config("sae_rad", 8, 4)
SHORT = TrainConfig(steps=12, batch_size=32, lr=1e-2, l1_coefficient=1e-2, checkpoint_every=4, log_every=3)


def test_resume_after_crash_is_bit_identical(tmp_path, monkeypatch):
    reference = assert_sae_resume_is_bit_identical(monkeypatch, tmp_path, _tokens(), SMALL, SHORT, crash_after=2)
    assert list(reference.history["step"]) == [0, 3, 6, 9, 11]


HELD_OUT_COLUMNS = ["held_out_l0", "held_out_explained_variance"]


def test_held_out_curves_measure_unseen_tokens_without_changing_training(tmp_path, monkeypatch):
    tokens, held_out = _tokens(), _tokens(64, seed=1)
    plain = train_sae(tokens, SMALL, SHORT, tmp_path / "plain", progress=False)
    assert plain.history[HELD_OUT_COLUMNS].isna().all().all()
    watched = assert_sae_resume_is_bit_identical(monkeypatch, tmp_path / "watched", tokens, SMALL, SHORT,
                                                 crash_after=1, held_out=held_out)
    for key, value in plain.sae.state_dict().items():  # measuring the held-out tokens does not disturb training
        assert torch.equal(value, watched.sae.state_dict()[key]), key
    pd.testing.assert_frame_equal(plain.history.drop(columns=HELD_OUT_COLUMNS),
                                  watched.history.drop(columns=HELD_OUT_COLUMNS))
    assert watched.history[HELD_OUT_COLUMNS].notna().all().all()
    final = evaluate_sae(watched.sae, held_out)  # the last row is logged after the last update
    assert watched.history["held_out_l0"].iloc[-1] == final["l0"]
    assert watched.history["held_out_explained_variance"].iloc[-1] == final["explained_variance"]


def test_held_out_tokens_are_part_of_the_run_identity(tmp_path):
    tokens = _tokens()
    train_sae(tokens, SMALL, SHORT, tmp_path, progress=False, held_out=_tokens(64, seed=1))
    with pytest.raises(CheckpointMismatch, match=r"held_out: checkpoint 64x8:float32:\w+ vs requested 64x8"):
        train_sae(tokens, SMALL, SHORT, tmp_path, progress=False, held_out=_tokens(64, seed=2))
    with pytest.raises(CheckpointMismatch, match=r"held_out: checkpoint 64x8:float32:\w+ vs requested None"):
        train_sae(tokens, SMALL, SHORT, tmp_path, progress=False)
    for bad, message in ((np.zeros((0, 8), np.float32), r"held_out tokens must have shape \[m > 0, 8\]"),
                         (np.zeros((4, 7), np.float32), r"got \(4, 7\)"),
                         (np.full((4, 8), np.nan, np.float32), "held_out tokens contain NaN")):
        with pytest.raises(ValueError, match=message):
            train_sae(tokens, SMALL, SHORT, tmp_path / "bad", progress=False, held_out=bad)
    assert not (tmp_path / "bad").exists()  # refused before anything is written


def test_outputs_and_rerun_of_a_finished_run(tmp_path):
    tokens = _tokens()
    first = train_sae(tokens, SMALL, SHORT, tmp_path, progress=False)
    for name in ("checkpoint.pt", "cfg.json", "sae_weights.safetensors", "history.csv"):
        assert (tmp_path / name).exists(), name
    assert list(first.history.columns) == ["step", "lr", "l1_coefficient", "reconstruction", "sparsity",
                                           "auxiliary", "total", "dead_feature_loss", "l0", "mse", "mse_per_element",
                                           "explained_variance", *HELD_OUT_COLUMNS, "silent_for_an_epoch",
                                           "resampled_so_far"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "history.csv"), first.history, check_dtype=False)
    loaded = load_sae(tmp_path)
    again = train_sae(tokens, SMALL, SHORT, tmp_path, progress=False)  # finished checkpoint: no new steps
    for key, value in first.sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
        assert torch.equal(again.sae.state_dict()[key], value)


def test_checkpoint_of_other_configs_is_an_error_unless_overwrite(tmp_path):
    tokens = _tokens()
    train_sae(tokens, SMALL, SHORT, tmp_path, progress=False)
    other = TrainConfig(**{**SHORT.to_dict(), "lr": 5e-3})
    with pytest.raises(CheckpointMismatch, match=r"train_config\.lr: checkpoint 0\.01 vs requested 0\.005"):
        train_sae(tokens, SMALL, other, tmp_path, progress=False)
    with pytest.raises(CheckpointMismatch, match="data"):
        train_sae(_tokens(seed=1), SMALL, SHORT, tmp_path, progress=False)
    result = train_sae(tokens, SMALL, other, tmp_path, progress=False, overwrite=True)
    assert result.history["lr"].max() == pytest.approx(5e-3)
    # checkpoint_every does not change the weights, so it may differ on resume
    train_sae(tokens, SMALL, TrainConfig(**{**other.to_dict(), "checkpoint_every": 5}), tmp_path, progress=False)


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real_forward = GatedSAE.forward_with_losses
    calls = []

    def poisoned(self, x, l1):
        terms, x_hat, h = real_forward(self, x, l1)
        calls.append(1)
        if len(calls) == 7:  # step 6
            terms["sparsity"] = terms["sparsity"] * float("nan")
            terms["total"] = terms["reconstruction"] + terms["sparsity"] + terms["auxiliary"]
        return terms, x_hat, h

    monkeypatch.setattr(GatedSAE, "forward_with_losses", poisoned)
    with pytest.raises(TrainingDiverged, match="step 6: sparsity is nan") as caught:
        train_sae(_tokens(), SMALL, SHORT, tmp_path, progress=False)
    assert caught.value.step == 6 and caught.value.term == "sparsity"
    checkpoint = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert checkpoint["step"] == 4
    assert all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    assert not (tmp_path / "sae_weights.safetensors").exists()


# -- the SAE actually learns a sparse dictionary -------------------------------------


def sparse_dictionary_data(n: int = 4096, d: int = 32, atoms: int = 64, active: int = 3, seed: int = 0):
    """x = sum of ``active`` of ``atoms`` random unit directions with magnitudes in [1, 2]."""
    rng = np.random.default_rng(seed)
    dictionary = rng.normal(size=(atoms, d))
    dictionary /= np.linalg.norm(dictionary, axis=1, keepdims=True)
    chosen = np.argsort(rng.random((n, atoms)), axis=1)[:, :active]
    codes = np.zeros((n, atoms))
    np.put_along_axis(codes, chosen, rng.uniform(1.0, 2.0, size=(n, active)), axis=1)
    return (codes @ dictionary).astype(np.float32), dictionary


@pytest.mark.parametrize("name, l1", [("sae_rad", 0.5), ("conerly", 0.4)])
def test_learns_synthetic_sparse_dictionary(tmp_path, name, l1):
    tokens, dictionary = sparse_dictionary_data()
    config = make_config(name, 32, 4)
    result = train_sae(tokens, config, TrainConfig(steps=1000, batch_size=128, lr=1e-2, l1_coefficient=l1,
                                                   checkpoint_every=10_000, log_every=100), tmp_path, progress=False)
    metrics = evaluate_sae(result.sae, tokens)
    assert metrics["explained_variance"] > 0.9
    assert metrics["l0"] < 10  # three atoms per sample, 128 features available
    # the learnt concept directions recover the true atoms
    directions = result.sae.concept_directions().numpy()
    best_match = np.abs(dictionary @ directions.T).max(axis=1)
    assert np.median(best_match) > 0.95


def test_silent_for_an_epoch_counts_features_dead_over_the_data_when_weights_stay_put(tmp_path):
    # lr 0: the weights never move, and 256 tokens / batch 32 = 8 batches hold every token once per epoch,
    # so "fired on none of the last epoch's batches" must equal evaluate_sae's dead count exactly.
    tokens = _tokens()
    sae = train_module.build_sae(SMALL)
    config = TrainConfig(steps=20, batch_size=32, lr=0.0, l1_coefficient=1e-2, log_every=1)
    with torch.no_grad():  # close half the gates for good so that some features are dead
        sae.b_gate[: SMALL.d_sae // 2] = -1e3
    original_build = train_module.build_sae
    try:
        train_module.build_sae = lambda config: sae
        history = train_sae(tokens, SMALL, config, tmp_path, progress=False).history
    finally:
        train_module.build_sae = original_build
    dead = evaluate_sae(sae, tokens)["dead_features"]
    assert dead >= SMALL.d_sae // 2
    assert history["silent_for_an_epoch"].iloc[:7].isna().all()  # less than one epoch seen
    assert (history["silent_for_an_epoch"].iloc[7:] == dead).all()
