"""Resampling dead features: who is touched, how, and that training with it stays resumable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import saerad.sae.train as train_module
from conftest import assert_sae_resume_is_bit_identical
from saerad.sae import TrainConfig, build_sae, evaluate_sae, make_config, train_sae
from saerad.sae.resampling import reconstruction_residuals, resample_dead_features
from saerad.sae.train import make_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread


def _tokens(n: int = 256, d: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32) * 2 + 1)


def _model_with_dead_half(preset: str):
    config = make_config(preset, 8, 4)
    sae = build_sae(config)
    bias = sae.b_gate if preset == "sae_rad" else sae.b_enc
    with torch.no_grad():
        bias[: config.d_sae // 2] = -1e3  # these can never open on the data below
    return sae


def _adam_with_state(sae, data):
    optimizer = make_optimizer(sae, 1e-3)
    optimizer.zero_grad()
    sae.loss_terms(data, 1e-2)["total"].backward()
    optimizer.step()
    return optimizer


@pytest.mark.parametrize("preset", ["sae_rad", "conerly"])
def test_resampling_restarts_exactly_the_dead_features(preset):
    data = _tokens()
    sae = _model_with_dead_half(preset)
    optimizer = _adam_with_state(sae, data)
    dead = evaluate_sae(sae, data.numpy())
    fired = (sae.encode(data) > 0).any(dim=0)
    assert not fired[: sae.config.d_sae // 2].any()
    before = {name: value.detach().clone() for name, value in sae.named_parameters()}
    residuals = reconstruction_residuals(sae, data)

    count = resample_dead_features(sae, optimizer, data, ~fired, seed=0, step=10)

    assert count == dead["dead_features"] == int((~fired).sum())
    dead_idx, live_idx = torch.nonzero(~fired).flatten(), torch.nonzero(fired).flatten()
    # live features untouched
    assert torch.equal(sae.W_enc[:, live_idx], before["W_enc"][:, live_idx])
    assert torch.equal(sae.W_dec[live_idx], before["W_dec"][live_idx])
    assert torch.equal(sae.b_dec, before["b_dec"])
    # every restarted feature opens on some token (at least the one it was drawn from)
    assert (sae.encode(data)[:, dead_idx] > 0).any(dim=0).all()
    assert evaluate_sae(sae, data.numpy())["dead_features"] == 0
    # its decoder direction is the residual of one of the tokens, at the live features' mean norm
    new_directions = sae.W_dec[dead_idx] / sae.W_dec[dead_idx].norm(dim=1, keepdim=True)
    residual_directions = residuals / residuals.norm(dim=1, keepdim=True)
    assert torch.allclose((new_directions @ residual_directions.T).max(dim=1).values, torch.ones(len(dead_idx)), atol=1e-5)
    live_norm = before["W_dec"][live_idx].norm(dim=1).mean()
    assert torch.allclose(sae.W_dec[dead_idx].norm(dim=1), live_norm.expand(len(dead_idx)), rtol=1e-5)
    # and its encoder row is the same direction, shorter (0.2 of the live rows' mean norm)
    encoder_rows = sae.W_enc[:, dead_idx].T
    assert torch.allclose(encoder_rows / encoder_rows.norm(dim=1, keepdim=True), new_directions, atol=1e-5)
    assert torch.allclose(encoder_rows.norm(dim=1), 0.2 * before["W_enc"][:, live_idx].norm(dim=0).mean().expand(len(dead_idx)),
                          rtol=1e-5)
    # Adam's moments restart for the touched entries only
    state = optimizer.state[sae.W_dec]
    assert torch.count_nonzero(state["exp_avg_sq"][dead_idx]) == 0
    assert torch.count_nonzero(state["exp_avg_sq"][live_idx]) > 0


def test_resampling_is_a_function_of_seed_and_step():
    data = _tokens()
    results = []
    for seed, step in [(0, 10), (0, 10), (0, 11)]:
        sae = _model_with_dead_half("sae_rad")
        optimizer = _adam_with_state(sae, data)
        dead = ~(sae.encode(data) > 0).any(dim=0)
        resample_dead_features(sae, optimizer, data, dead, seed=seed, step=step)
        results.append(sae.W_dec.detach().clone())
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], results[2])


def test_nothing_to_resample_leaves_the_model_alone():
    data = _tokens()
    sae = build_sae(make_config("sae_rad", 8, 4))
    optimizer = _adam_with_state(sae, data)
    before = {name: value.detach().clone() for name, value in sae.named_parameters()}
    assert resample_dead_features(sae, optimizer, data, torch.zeros(32, dtype=torch.bool), seed=0, step=1) == 0
    for name, value in sae.named_parameters():
        assert torch.equal(value, before[name]), name


def _patch_build_with_dead_half(monkeypatch):
    original = train_module.build_sae

    def build(config):
        sae = original(config)
        with torch.no_grad():
            sae.b_gate[: config.d_sae // 2] = -1e3
        return sae

    monkeypatch.setattr(train_module, "build_sae", build)


def test_training_with_resampling_ends_with_no_dead_features(tmp_path, monkeypatch):
    # lr 0: only resampling can change the weights. 256 tokens / batch 32 = 8 batches per epoch.
    tokens = _tokens().numpy()
    _patch_build_with_dead_half(monkeypatch)
    config = make_config("sae_rad", 8, 4)
    plain = TrainConfig(steps=20, batch_size=32, lr=0.0, l1_coefficient=1e-2, log_every=1)
    without = train_sae(tokens, config, plain, tmp_path / "without", progress=False)
    assert evaluate_sae(without.sae, tokens)["dead_features"] == 16
    assert (without.history["resampled_so_far"] == 0).all()

    resampling = TrainConfig(**{**plain.to_dict(), "resample_dead_every": 8, "resample_dead_until": 1.0})
    with_resampling = train_sae(tokens, config, resampling, tmp_path / "with", progress=False)
    assert evaluate_sae(with_resampling.sae, tokens)["dead_features"] == 0
    history = with_resampling.history.set_index("step")["resampled_so_far"]
    assert history.loc[6] == 0 and history.loc[7] == 16 and history.loc[19] == 16  # once, after the first epoch


def test_resampling_window_shorter_than_an_epoch_is_refused(tmp_path):
    config = TrainConfig(steps=20, batch_size=32, lr=1e-3, l1_coefficient=1e-2, resample_dead_every=4)
    with pytest.raises(ValueError, match="shorter than one epoch"):
        train_sae(_tokens().numpy(), make_config("sae_rad", 8, 4), config, tmp_path, progress=False)
    with pytest.raises(ValueError, match="resample_dead_until"):
        TrainConfig(steps=20, batch_size=32, lr=1e-3, l1_coefficient=1e-2, resample_dead_until=1.5)


def test_resume_with_resampling_is_bit_identical(tmp_path, monkeypatch):
    _patch_build_with_dead_half(monkeypatch)
    train_config = TrainConfig(steps=24, batch_size=32, lr=1e-2, l1_coefficient=1e-2, checkpoint_every=4, log_every=3,
                               resample_dead_every=8, resample_dead_until=1.0)
    # killed after step 12: one resampling to go
    reference = assert_sae_resume_is_bit_identical(monkeypatch, tmp_path, _tokens().numpy(), make_config("sae_rad", 8, 4),
                                                   train_config, crash_after=3)
    assert reference.history["resampled_so_far"].iloc[-1] >= 16


@pytest.mark.parametrize("preset", ["sae_rad", "conerly"])
def test_gate_geometry_tells_a_closed_bias_from_a_direction_that_turned_away(preset):
    from saerad.sae.metrics import gate_geometry

    data = _tokens()
    sae = build_sae(make_config(preset, 8, 4))
    bias = sae.b_gate if preset == "sae_rad" else sae.b_enc
    shifted = (data - data.min()).numpy()  # all non-negative, so a non-positive direction never opens
    mean = torch.from_numpy(shifted).mean(dim=0)
    with torch.no_grad():
        sae.W_enc[:, 0] = mean / mean.norm()  # faces the tokens...
        bias[0] = -1e3  # ...but closed by its bias
        sae.W_enc[:, 1] = -mean / mean.norm()  # every component non-positive: turned away from every token
    geometry = gate_geometry(sae, shifted)
    assert geometry["fired"].tolist() == (sae.encode(torch.from_numpy(shifted)) > 0).sum(dim=0).tolist()
    assert geometry.loc[0, "fired"] == 0 and geometry.loc[0, "opening_bias"] == -1e3
    assert geometry.loc[0, "best_projection"] > 0
    assert geometry.loc[1, "fired"] == 0 and geometry.loc[1, "best_projection"] <= 0
    x = torch.from_numpy(shifted)
    unit = sae.W_enc / sae.W_enc.norm(dim=0, keepdim=True)
    expected = (sae.encoder_input(x) @ unit).max(dim=0).values.detach().double().numpy()
    np.testing.assert_allclose(geometry["best_projection"], expected, rtol=1e-5, atol=1e-6)


def test_resampling_settings_enter_the_run_identity_only_when_resampling(tmp_path):
    tokens = _tokens().numpy()
    config = make_config("sae_rad", 8, 4)
    plain = TrainConfig(steps=8, batch_size=32, lr=1e-2, l1_coefficient=1e-2)
    train_sae(tokens, config, plain, tmp_path, progress=False)
    # a different (unused) window with resampling off is the same run: resumes, no error
    train_sae(tokens, config, TrainConfig(**{**plain.to_dict(), "resample_dead_until": 0.9}), tmp_path, progress=False)
    with pytest.raises(train_module.CheckpointMismatch, match="resample_dead_every"):
        train_sae(tokens, config, TrainConfig(**{**plain.to_dict(), "resample_dead_every": 8}), tmp_path, progress=False)
