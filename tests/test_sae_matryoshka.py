"""Matryoshka BatchTopK: the batch rule, the nested losses, the inference threshold, training and the file format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import trained_like_sae
from saerad.sae import SAEConfig, TrainConfig, evaluate_sae, load_sae, make_config, save_sae, train_sae

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: tiny models, one thread

D_IN, EXPANSION, BATCH = 6, 4, 5
PREFIXES = (2, 8, 24)


def _sae(k: int = 3, seed: int = 1):
    return trained_like_sae("matryoshka", D_IN, EXPANSION, seed=0, noise_seed=seed, noise=0.3,
                            overrides={"k": k, "prefixes": PREFIXES})


def _inputs(seed: int = 2) -> torch.Tensor:
    return torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(seed)) * 2.0


def test_batch_top_k_keeps_the_k_times_batch_largest_values_of_the_whole_batch():
    sae, x = _sae(k=3), _inputs()
    sae.train()
    h = sae.encode(x)
    pre = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    assert int((h > 0).sum()) == 3 * BATCH  # the budget is shared: rows may differ in count
    kept = h[h > 0]
    dropped = pre[(h == 0) & (pre > 0)]
    assert kept.min() >= dropped.max()
    torch.testing.assert_close(h[h > 0], pre[h > 0])


def test_loss_is_the_mean_of_the_nested_reconstructions():
    sae, x = _sae(), _inputs()
    sae.train()
    terms, x_hat, h = sae.forward_with_losses(x, 0.0)
    # transcription: each prefix of features reconstructs x alone, one sample at a time
    per_prefix = []
    for size in PREFIXES:
        errors = [torch.sum((x[j] - (sae.W_dec[:size].T @ h[j, :size] + sae.b_dec)) ** 2) for j in range(BATCH)]
        per_prefix.append(torch.stack(errors).mean())
    torch.testing.assert_close(terms["reconstruction"], torch.stack(per_prefix).mean())
    torch.testing.assert_close(terms["total"], terms["reconstruction"])
    assert terms["sparsity"] == 0 and terms["auxiliary"] == 0
    torch.testing.assert_close(x_hat, h @ sae.W_dec + sae.b_dec)
    # the first prefix's features get gradient from every term, the last ones only from the full dictionary
    terms["total"].backward()
    assert sae.W_dec.grad[: PREFIXES[0]].abs().sum() > 0


def test_inference_uses_the_running_threshold_of_training_batches():
    sae, x = _sae(), _inputs()
    assert torch.equal(sae.threshold, torch.full((sae.config.d_sae,), -1.0))  # not estimated yet
    sae.train()
    _, _, h = sae.forward_with_losses(x, 0.0)
    first = float(h.detach()[h > 0].min())
    assert torch.allclose(sae.threshold, torch.full_like(sae.threshold, first))  # first batch: set outright
    _, _, h2 = sae.forward_with_losses(_inputs(seed=3), 0.0)
    expected = 0.99 * first + 0.01 * float(h2.detach()[h2 > 0].min())
    assert torch.allclose(sae.threshold, torch.full_like(sae.threshold, expected))
    sae.eval()
    pre = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    torch.testing.assert_close(sae.encode(x), pre * (pre > expected))


def test_config_validation_names_the_problem():
    with pytest.raises(ValueError, match="prefixes increasing"):
        make_config("matryoshka", D_IN, EXPANSION, k=3, prefixes=(8, 2, 24))
    with pytest.raises(ValueError, match="prefixes increasing"):
        make_config("matryoshka", D_IN, EXPANSION, k=3, prefixes=(2, 8))  # must end at d_sae = 24
    with pytest.raises(ValueError, match="needs 1 <= k"):
        make_config("matryoshka", D_IN, EXPANSION, prefixes=PREFIXES)
    with pytest.raises(ValueError, match="only used by the matryoshka"):
        make_config("sae_rad", D_IN, EXPANSION, prefixes=PREFIXES)
    config = make_config("matryoshka", D_IN, EXPANSION, k=3, prefixes=[2, 8, 24])  # lists (JSON) become tuples
    assert config.prefixes == PREFIXES and SAEConfig.from_dict(config.to_dict()) == config


def test_save_load_round_trip_keeps_the_threshold(tmp_path):
    sae, x = _sae(), _inputs()
    sae.train()
    sae.forward_with_losses(x, 0.0)
    sae.eval()
    save_sae(sae, tmp_path)
    loaded = load_sae(tmp_path)
    assert type(loaded).__name__ == "MatryoshkaSAE" and loaded.config == sae.config
    assert torch.equal(loaded.threshold, sae.threshold)
    loaded.eval()
    torch.testing.assert_close(loaded.encode(x), sae.encode(x))
    import json
    assert json.loads((tmp_path / "cfg.json").read_text())["architecture"] == "jumprelu"


def test_learns_a_sparse_dictionary_with_the_general_atoms_first(tmp_path):
    # Two-level world: every sample has one of 4 "general" atoms (shared by many samples) plus one of 16 rare
    # "specific" atoms. The first prefix (4 features) can only help with the general ones, so it should learn them.
    rng = np.random.default_rng(0)
    general, specific = rng.normal(size=(4, 16)), rng.normal(size=(16, 16))
    general /= np.linalg.norm(general, axis=1, keepdims=True)
    specific /= np.linalg.norm(specific, axis=1, keepdims=True)
    n = 3000
    tokens = (general[rng.integers(0, 4, n)] * rng.uniform(2, 3, (n, 1))
              + specific[rng.integers(0, 16, n)] * rng.uniform(0.5, 1, (n, 1))).astype(np.float32)
    config = make_config("matryoshka", 16, 4, k=2, prefixes=(4, 16, 64))
    result = train_sae(tokens, config, TrainConfig(steps=1500, batch_size=128, lr=5e-3, l1_coefficient=0.0,
                                                   checkpoint_every=10_000, log_every=100), tmp_path, progress=False)
    metrics = evaluate_sae(result.sae, tokens)
    assert metrics["explained_variance"] > 0.8
    first = result.sae.concept_directions()[:4].numpy()
    # b_dec takes the mean, so the first prefix holds the general atoms relative to their mean...
    centred = general - general.mean(axis=0)
    centred /= np.linalg.norm(centred, axis=1, keepdims=True)
    assert np.median(np.abs(centred @ first.T).max(axis=1)) > 0.8
    # ...and none of the specific ones
    assert np.median(np.abs(specific @ first.T).max(axis=1)) < 0.6
