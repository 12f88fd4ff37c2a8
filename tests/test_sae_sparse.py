"""The gathered (live-columns-only) path gives the dense path's results, and training stays resumable on it."""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
import torch

import saerad.sae.models as models_module
import saerad.sae.train as train_module
from saerad.sae import TrainConfig, make_config, train_sae
from saerad.sae.models import build_sae
from saerad.sae.sparse import live_columns
from saerad.sae.train import make_optimizer, optimisation_step

from conftest import crash_after_checkpoints, trained_like_sae
from saerad.checkpoints import write_checkpoint

DENSE, GATHERED = 0.0, 2.0  # gather_below values forcing each path
D_IN, EXPANSION, BATCH = 16, 16, 48


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread


def _sparse_sae(name: str, overrides: dict | None = None):
    """An SAE whose features fire rarely (negative biases), so a batch leaves many columns closed."""
    sae = trained_like_sae(name, D_IN, EXPANSION, seed=2, noise_seed=3, noise=0.3, overrides=overrides)
    with torch.no_grad():
        (sae.b_gate if hasattr(sae, "b_gate") else sae.b_enc).sub_(5.0)
    return sae


def _inputs(seed: int = 4) -> torch.Tensor:
    return torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(seed)) * 2.0


def _run(sae, gather_below: float, x: torch.Tensor):
    sae = copy.deepcopy(sae)
    sae.gather_below = gather_below
    terms, x_hat, h = sae.forward_with_losses(x, 0.3)
    terms["total"].backward()
    return sae, terms, x_hat, h


CASES = [("sae_rad", {}), ("gated", {}), ("conerly", {}), ("vanilla", {}),
         ("sae_rad", {"centre_input": True}), ("gated", {"aux_stop_gradient": False})]


@pytest.mark.parametrize("name, overrides", CASES, ids=[f"{n}{o}" for n, o in CASES])
def test_gathered_losses_outputs_and_gradients_equal_dense(name, overrides):
    sae, x = _sparse_sae(name, overrides), _inputs()
    dense, dense_terms, dense_x_hat, dense_h = _run(sae, DENSE, x)
    gathered, terms, x_hat, h = _run(sae, GATHERED, x)
    live = (dense_h > 0).any(dim=0).float().mean()
    assert 0.1 < live < 0.9  # the gathered path really drops columns here
    for key, value in dense_terms.items():
        torch.testing.assert_close(terms[key], value, rtol=1e-5, atol=1e-5, msg=key)
    torch.testing.assert_close(x_hat, dense_x_hat, rtol=1e-5, atol=1e-5)
    assert torch.equal(h, dense_h)  # the encoder product is shared, so features are bit-identical
    gradients = dict(gathered.named_parameters())
    for parameter_name, parameter in dense.named_parameters():
        reference, got = parameter.grad, gradients[parameter_name].grad
        assert got is not None and got.shape == reference.shape, parameter_name
        torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-5, msg=parameter_name)
    # columns closed for the whole batch get exact zeros (as on the dense path), not just small numbers
    with torch.no_grad():
        bias = sae.b_gate if hasattr(sae, "b_gate") else sae.b_enc
        closed = ~(sae.encoder_input(x) @ sae.W_enc + bias > 0).any(dim=0)
    assert closed.any()
    for parameter_name in ("W_dec", "b_gate" if hasattr(sae, "b_gate") else "b_enc"):
        assert torch.all(gradients[parameter_name].grad[closed] == 0), parameter_name
    assert torch.all(gradients["W_enc"].grad[:, closed] == 0)


def test_adam_steps_match_and_every_parameter_keeps_its_adam_state():
    sae = _sparse_sae("sae_rad")
    after = {}
    for gather_below in (DENSE, GATHERED):
        model = copy.deepcopy(sae)
        model.gather_below = gather_below
        optimizer = make_optimizer(model, 1e-2)
        for step in range(3):
            optimisation_step(model, optimizer, _inputs(seed=step), 0.3)
        after[gather_below] = (model, optimizer)
    (dense, dense_optimizer), (gathered, gathered_optimizer) = after[DENSE], after[GATHERED]
    for (name, reference), (_, got) in zip(dense.named_parameters(), gathered.named_parameters()):
        torch.testing.assert_close(got, reference, rtol=1e-4, atol=1e-5, msg=name)
    # Adam state exists for every parameter on both paths (gradients are zeros, not None, for closed rows)
    assert len(gathered_optimizer.state) == len(dense_optimizer.state) == len(list(sae.parameters()))


@pytest.mark.parametrize("name, overrides", [("sae_rad", {}), ("topk", {"k": 3})])
def test_gathered_decode_equals_dense(name, overrides):
    sae = _sparse_sae(name, overrides) if name != "topk" else build_sae(make_config("topk", D_IN, EXPANSION, k=3))
    h = torch.relu(torch.randn(BATCH, D_IN * EXPANSION, generator=torch.Generator().manual_seed(9)) - 2.5)
    assert (h > 0).any(dim=0).float().mean() < 0.9
    results = {}
    for gather_below in (DENSE, GATHERED):
        sae.gather_below = gather_below
        sae.zero_grad()
        x_hat = sae.decode(h)  # h needs no gradient: the gathered product is used
        (x_hat ** 2).sum().backward()
        results[gather_below] = (x_hat.detach(), sae.W_dec.grad.clone(), sae.b_dec.grad.clone())
    for dense, gathered in zip(results[DENSE], results[GATHERED]):
        torch.testing.assert_close(gathered, dense, rtol=1e-5, atol=1e-5)
    # where h needs a gradient, decode stays dense: d x̂ / d h is not zero where h is
    h.requires_grad_(True)
    (sae.decode(h) ** 2).sum().backward()
    expected = 2 * (h.detach() @ sae.W_dec.detach() + sae.b_dec.detach()) @ sae.W_dec.detach().T
    torch.testing.assert_close(h.grad, expected, rtol=1e-4, atol=1e-4)


def test_live_columns_threshold():
    mask = torch.zeros(4, 10, dtype=torch.bool)
    mask[0, 2] = mask[3, 7] = mask[1, 7] = True
    assert torch.equal(live_columns(mask, 0.5), torch.tensor([2, 7]))
    assert live_columns(mask, 0.2) is None  # 2 of 10 live: not below 0.2
    assert live_columns(mask, 0.0) is None  # 0 means never gather
    assert live_columns(torch.zeros(3, 5, dtype=torch.bool), 1.0).numel() == 0  # nothing fires at all
    assert torch.equal(live_columns(torch.ones(2, 3, dtype=torch.bool), 2.0), torch.arange(3))


def test_training_resume_is_bit_identical_on_the_gathered_path(tmp_path, monkeypatch):
    """A crash and resume gives the uninterrupted run's weights when every step takes the gathered path."""
    monkeypatch.setattr(models_module, "GATHER_BELOW", GATHERED)
    rng = np.random.default_rng(0)
    tokens = (rng.normal(size=(256, 8)) * 2).astype(np.float32)
    config = make_config("sae_rad", 8, 4)
    short = TrainConfig(steps=12, batch_size=32, lr=1e-2, l1_coefficient=1e-2, checkpoint_every=4, log_every=3)
    reference = train_sae(tokens, config, short, tmp_path / "uninterrupted", progress=False)
    assert reference.sae.gather_below == GATHERED

    written = crash_after_checkpoints(monkeypatch, train_module, 1, error=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        train_sae(tokens, config, short, tmp_path / "resumed", progress=False)
    monkeypatch.setattr(train_module, "_write_checkpoint", write_checkpoint)
    resumed = train_sae(tokens, config, short, tmp_path / "resumed", progress=False)
    assert written == [4]
    for key, value in reference.sae.state_dict().items():
        assert torch.equal(resumed.sae.state_dict()[key], value), key
    pd.testing.assert_frame_equal(reference.history, resumed.history)
