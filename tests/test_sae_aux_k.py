"""The AuxK loss of TopK-style SAEs: against its definition, who it trains, and where it is allowed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import saerad.sae.train as train_module
from saerad.sae import TrainConfig, build_sae, make_config, train_sae
from saerad.sae.aux_k import aux_k_loss

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread


def _tokens(n: int = 64, d: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32) * 2 + 1)


def _matryoshka():
    return build_sae(make_config("matryoshka", 8, 4, k=2, prefixes=(4, 32)))


def test_aux_k_matches_a_per_sample_transcription_and_trains_only_dead_features():
    torch.manual_seed(0)
    sae = _matryoshka()
    x = _tokens()
    terms, x_hat, _ = sae.forward_with_losses(x, 0.0)
    dead = torch.zeros(32, dtype=torch.bool)
    dead[[1, 5, 6, 9, 20, 31]] = True
    loss = aux_k_loss(sae, x, x_hat, dead, k_aux=3, coefficient=0.5)

    expected = 0.0
    weights = {name: value.detach() for name, value in sae.named_parameters()}
    dead_indices = torch.nonzero(dead).flatten().tolist()
    for row in range(len(x)):
        residual = (x[row] - x_hat[row]).detach()
        pre = {i: float(torch.relu(x[row] @ weights["W_enc"][:, i] + weights["b_enc"][i])) for i in dead_indices}
        top = sorted(pre, key=pre.get, reverse=True)[:3]
        reconstruction = sum(pre[i] * weights["W_dec"][i] for i in top)
        expected += float((residual - reconstruction).pow(2).sum())
    assert float(loss.detach()) == pytest.approx(0.5 * expected / len(x), rel=1e-5)

    grad_enc, grad_dec, grad_bias = torch.autograd.grad(loss, [sae.W_enc, sae.W_dec, sae.b_enc])
    assert torch.count_nonzero(grad_enc[:, ~dead]) == 0 and torch.count_nonzero(grad_dec[~dead]) == 0
    assert torch.count_nonzero(grad_bias[~dead]) == 0
    assert torch.count_nonzero(grad_dec[dead]) > 0


def test_aux_k_is_zero_without_dead_features_and_caps_k_at_their_number():
    sae = _matryoshka()
    x = _tokens()
    _, x_hat, _ = sae.forward_with_losses(x, 0.0)
    none = aux_k_loss(sae, x, x_hat, torch.zeros(32, dtype=torch.bool), k_aux=4, coefficient=1.0)
    assert float(none.detach()) == 0.0 and not none.requires_grad
    one = torch.zeros(32, dtype=torch.bool)
    one[7] = True
    assert torch.isfinite(aux_k_loss(sae, x, x_hat, one, k_aux=16, coefficient=1.0))


def test_training_with_aux_k_logs_the_term_after_one_epoch(tmp_path, monkeypatch):
    tokens = _tokens(256).numpy()  # batch 32: 8 batches per epoch
    original = train_module.build_sae

    def build_with_losers(config):
        sae = original(config)
        with torch.no_grad():
            sae.W_enc[:, 16:] *= 0.01  # positive but small pre-activations: never among the batch's largest
        return sae

    monkeypatch.setattr(train_module, "build_sae", build_with_losers)
    config = make_config("matryoshka", 8, 4, k=2, prefixes=(4, 32))
    train_config = TrainConfig(steps=16, batch_size=32, lr=1e-2, l1_coefficient=0.0, log_every=1, aux_k=4)
    result = train_sae(tokens, config, train_config, tmp_path, progress=False)
    term = result.history.set_index("step")["dead_feature_loss"]
    assert (term.loc[:7] == 0).all()
    assert (term.loc[8:] >= 0).all() and (term.loc[8:] > 0).any()
    # the logged total includes the term
    history = result.history
    np.testing.assert_allclose(history["total"], history["reconstruction"] + history["dead_feature_loss"], rtol=1e-5)


def test_each_dead_feature_loss_is_refused_where_it_does_not_apply(tmp_path):
    tokens = _tokens(64).numpy()
    with pytest.raises(ValueError, match="aux_k is for the TopK families"):
        train_sae(tokens, make_config("sae_rad", 8, 4), TrainConfig(steps=2, batch_size=32, lr=1e-3, l1_coefficient=1.0,
                                                                    aux_k=4), tmp_path, progress=False)
    with pytest.raises(ValueError, match="ghost_grads is for the L1-penalised families"):
        train_sae(tokens, make_config("matryoshka", 8, 4, k=2, prefixes=(4, 32)),
                  TrainConfig(steps=2, batch_size=32, lr=1e-3, l1_coefficient=0.0, ghost_grads=True), tmp_path,
                  progress=False)
    with pytest.raises(ValueError, match="choose one"):
        TrainConfig(steps=2, batch_size=32, lr=1e-3, l1_coefficient=0.0, ghost_grads=True, aux_k=4)
    with pytest.raises(ValueError, match="aux_k must be"):
        TrainConfig(steps=2, batch_size=32, lr=1e-3, l1_coefficient=0.0, aux_k=-1)
