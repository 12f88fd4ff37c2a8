"""Ghost gradients: the loss against its definition, who it trains, and that training with it stays resumable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import saerad.sae.train as train_module
from conftest import assert_sae_resume_is_bit_identical
from saerad.sae import CheckpointMismatch, TrainConfig, build_sae, make_config, train_sae
from saerad.sae.ghost_grads import ghost_gradient_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread


def _tokens(n: int = 256, d: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32) * 2 + 1)


def _with_dead_half(sae):
    with torch.no_grad():
        sae.opening_bias[: sae.config.d_sae // 2] = -50.0  # closed on every token below
    return sae


def _transcription(sae, x, x_hat, reconstruction, dead):
    """The definition written out in float64, without the max shift the implementation uses to keep exp() finite."""
    residual = (x - x_hat).detach().double()
    pre = x.double() @ sae.W_enc.double()[:, dead] + sae.opening_bias.double()[dead]
    ghost = torch.exp(pre) @ sae.W_dec.double()[dead]
    ghost = ghost * (residual.norm(dim=1, keepdim=True) / (2 * ghost.norm(dim=1, keepdim=True))).detach()
    loss = (residual - ghost).pow(2).sum(dim=1).mean()
    return loss * (reconstruction.detach().double() / loss.detach())


@pytest.mark.parametrize("preset", ["sae_rad", "conerly"])
def test_ghost_loss_matches_its_definition_and_trains_only_dead_features(preset):
    torch.manual_seed(0)
    sae = _with_dead_half(build_sae(make_config(preset, 8, 4)))
    x = _tokens(64)
    terms, x_hat, h = sae.forward_with_losses(x, 1e-2)
    dead = ~(h > 0).any(dim=0)
    assert dead[:16].all() and not dead[16:].all()

    loss = ghost_gradient_loss(sae, x, x_hat, terms["reconstruction"], dead)
    # scaled to weigh as much as the reconstruction term
    assert torch.allclose(loss, terms["reconstruction"].detach(), rtol=1e-5)
    gradients = torch.autograd.grad(loss, [sae.W_enc, sae.W_dec, sae.opening_bias])
    sae.zero_grad()
    reference = torch.autograd.grad(_transcription(sae, x, x_hat, terms["reconstruction"], dead),
                                    [sae.W_enc, sae.W_dec, sae.opening_bias])
    for ours, theirs in zip(gradients, reference):
        assert torch.allclose(ours, theirs.float(), rtol=1e-3, atol=1e-5)
    grad_enc, grad_dec, grad_bias = gradients
    live = ~dead
    assert torch.count_nonzero(grad_enc[:, live]) == 0
    assert torch.count_nonzero(grad_dec[live]) == 0
    assert torch.count_nonzero(grad_bias[live]) == 0
    assert torch.count_nonzero(grad_dec[dead]) > 0 and torch.count_nonzero(grad_enc[:, dead]) > 0


def test_features_far_below_opening_still_get_a_gradient():
    # Without the shift, exp(-200) underflows to 0 in float32 and the gradient would vanish.
    sae = build_sae(make_config("sae_rad", 8, 4))
    with torch.no_grad():
        sae.b_gate[:] = -200.0
    x = _tokens(32)
    terms, x_hat, _ = sae.forward_with_losses(x, 1e-2)
    loss = ghost_gradient_loss(sae, x, x_hat, terms["reconstruction"], torch.ones(32, dtype=torch.bool))
    assert torch.isfinite(loss)
    grad_dec, = torch.autograd.grad(loss, [sae.W_dec])
    assert torch.isfinite(grad_dec).all() and grad_dec.abs().sum() > 0


def test_no_dead_feature_gives_a_zero_loss():
    sae = build_sae(make_config("sae_rad", 8, 4))
    x = _tokens(16)
    terms, x_hat, _ = sae.forward_with_losses(x, 1e-2)
    loss = ghost_gradient_loss(sae, x, x_hat, terms["reconstruction"], torch.zeros(32, dtype=torch.bool))
    assert float(loss) == 0.0 and not loss.requires_grad


def _patch_build_with_dead_half(monkeypatch):
    original = train_module.build_sae
    monkeypatch.setattr(train_module, "build_sae", lambda config: _with_dead_half(original(config)))


def test_ghost_gradients_start_after_one_epoch_and_move_only_dead_features(tmp_path, monkeypatch):
    tokens = _tokens().numpy()  # 256 tokens / batch 32: 8 batches per epoch
    _patch_build_with_dead_half(monkeypatch)
    config = make_config("sae_rad", 8, 4)
    plain = TrainConfig(steps=16, batch_size=32, lr=1e-2, l1_coefficient=1e-2, log_every=1)
    without = train_sae(tokens, config, plain, tmp_path / "without", progress=False)
    ghost = train_sae(tokens, config, TrainConfig(**{**plain.to_dict(), "ghost_grads": True}), tmp_path / "with",
                      progress=False)

    assert (without.history["dead_feature_loss"] == 0).all()
    by_step = ghost.history.set_index("step")["dead_feature_loss"]
    assert (by_step.loc[:7] == 0).all() and (by_step.loc[8:] > 0).all()
    # Before any ghost step the two runs are identical; afterwards the dead features' decoder rows have moved.
    dead = slice(0, 16)
    initial = build_sae(config).W_dec.detach()
    assert torch.equal(without.sae.W_dec[dead], initial[dead])
    assert not torch.equal(ghost.sae.W_dec[dead], initial[dead])


def test_resume_with_ghost_gradients_is_bit_identical(tmp_path, monkeypatch):
    _patch_build_with_dead_half(monkeypatch)
    train_config = TrainConfig(steps=24, batch_size=32, lr=1e-2, l1_coefficient=1e-2, checkpoint_every=4,
                               log_every=3, ghost_grads=True)
    # killed after step 12, with ghost gradients running since step 8
    reference = assert_sae_resume_is_bit_identical(monkeypatch, tmp_path, _tokens().numpy(), make_config("sae_rad", 8, 4),
                                                   train_config, crash_after=3)
    assert (reference.history["dead_feature_loss"] > 0).any()


def test_ghost_setting_is_part_of_the_run_identity(tmp_path):
    tokens = _tokens().numpy()
    config = make_config("sae_rad", 8, 4)
    plain = TrainConfig(steps=4, batch_size=32, lr=1e-2, l1_coefficient=1e-2)
    train_sae(tokens, config, plain, tmp_path, progress=False)
    with pytest.raises(CheckpointMismatch):
        train_sae(tokens, config, TrainConfig(**{**plain.to_dict(), "ghost_grads": True}), tmp_path, progress=False)
