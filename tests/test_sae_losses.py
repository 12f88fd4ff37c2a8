"""Each SAE's loss terms against a direct transcription of the paper's equations.

The transcriptions below use the paper's notation (column vectors, W_gate of
shape m x n, W_dec of shape n x m) and loop over samples, so they share no
code or layout trick with saerad.sae.models.
"""

from __future__ import annotations

import pytest
import torch

from saerad.sae import PRESETS, SWITCHES, SAEConfig, build_sae, make_config
from saerad.sae.train import optimisation_step

D_IN, EXPANSION, BATCH = 6, 4, 5
L1 = 0.37


def _variants() -> list[tuple[str, dict]]:
    """Every preset, plus each single-switch flip of sae_rad, gated and conerly."""
    cases = [(name, {}) for name in ("sae_rad", "gated", "conerly", "vanilla")]
    for base in ("sae_rad", "gated"):
        cases += [(base, {switch: not PRESETS[base][switch]}) for switch in SWITCHES]
    cases += [("conerly", {switch: not PRESETS["conerly"][switch]}) for switch in SWITCHES[:3]]
    return cases


VARIANTS = _variants()
IDS = [name + "".join(f"-{k}={v}" for k, v in flips.items()) for name, flips in VARIANTS]


def _perturbed(config: SAEConfig, seed: int = 1):
    """The SAE with every parameter moved off its initial value (biases, r_mag, norms all non-trivial)."""
    sae = build_sae(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in sae.parameters():
            parameter.add_(0.3 * torch.randn(parameter.shape, generator=generator))
    return sae


def _inputs(seed: int = 2) -> torch.Tensor:
    return torch.randn(BATCH, D_IN, generator=torch.Generator().manual_seed(seed)) * 2.0


def _transcribed_losses(sae, X: torch.Tensor, lam: float) -> dict[str, torch.Tensor]:
    """Eqs. 1-9 written out literally, one sample at a time."""
    cfg = sae.config
    W_gate = sae.W_enc.T  # m x n: the paper's W_gate (gated) or W_enc (standard); rows are features
    W_dec = sae.W_dec.T  # n x m: columns are features
    b_dec = sae.b_dec
    column_norms = torch.linalg.norm(W_dec, dim=0)
    reconstruction, sparsity, auxiliary = [], [], []
    for x in X:
        x_in = x - b_dec if cfg.centre_input else x  # Eqs. 1/4 vs 6/8
        if cfg.architecture == "gated":
            W_mag = torch.exp(sae.r_mag)[:, None] * W_gate  # W_mag_ij = exp(r_i) W_gate_ij
            pi_gate = W_gate @ x_in + sae.b_gate
            h = (pi_gate > 0).float() * torch.relu(W_mag @ x_in + sae.b_mag)  # Eqs. 4, 8
            RA = torch.relu(pi_gate)
            penalised = RA
        else:
            h = torch.relu(W_gate @ x_in + sae.b_enc)  # Eqs. 1, 6
            penalised = h
        x_hat = W_dec @ h + b_dec  # Eq. 2
        reconstruction.append(torch.sum((x - x_hat) ** 2))
        if cfg.decoder_norm_in_sparsity:
            sparsity.append(lam * sum(penalised[i] * column_norms[i] for i in range(cfg.d_sae)))  # Eqs. 7, 9
        else:
            sparsity.append(lam * torch.sum(torch.abs(penalised)))  # Eqs. 3, 5
        if cfg.architecture == "gated":
            auxiliary.append(torch.sum((x - (W_dec @ RA + b_dec)) ** 2))  # Eqs. 5, 9 (same value either way)
        else:
            auxiliary.append(torch.tensor(0.0))
    terms = {name: torch.stack(values).mean() for name, values in
             (("reconstruction", reconstruction), ("sparsity", sparsity), ("auxiliary", auxiliary))}
    terms["total"] = terms["reconstruction"] + terms["sparsity"] + terms["auxiliary"]
    return terms


@pytest.mark.parametrize("name, flips", VARIANTS, ids=IDS)
def test_loss_terms_match_equations(name, flips):
    sae = _perturbed(make_config(name, D_IN, EXPANSION, **flips))
    X = _inputs()
    ours = sae.loss_terms(X, L1)
    expected = _transcribed_losses(sae, X, L1)
    assert set(ours) == {"reconstruction", "sparsity", "auxiliary", "total"}
    for term in expected:
        torch.testing.assert_close(ours[term], expected[term], rtol=1e-5, atol=1e-5, msg=f"term {term}")
    # forward/encode/decode agree with the fused loss pass
    x_hat, h = sae(X)
    torch.testing.assert_close(sae.decode(sae.encode(X)), x_hat)
    torch.testing.assert_close(((X - x_hat) ** 2).sum(1).mean(), ours["reconstruction"])
    assert h.shape == (BATCH, D_IN * EXPANSION)


@pytest.mark.parametrize("name, flips", VARIANTS, ids=IDS)
def test_feature_activations_and_concept_directions(name, flips):
    sae = _perturbed(make_config(name, D_IN, EXPANSION, **flips))
    X = _inputs()
    norms = torch.linalg.norm(sae.W_dec.T, dim=0)
    torch.testing.assert_close(sae.feature_activations(X), sae.encode(X) * norms)
    directions = sae.concept_directions()
    assert directions.shape == (D_IN * EXPANSION, D_IN)  # [d_sae, d_in]
    torch.testing.assert_close(directions, (sae.W_dec.T / norms).T)


def _auxiliary_gradients(config: SAEConfig) -> dict[str, torch.Tensor | None]:
    sae = _perturbed(config)
    sae.loss_terms(_inputs(), L1)["auxiliary"].backward()
    return {name: parameter.grad for name, parameter in sae.named_parameters()}


@pytest.mark.parametrize("name, flips", [(n, f) for n, f in VARIANTS if PRESETS[n]["architecture"] == "gated"],
                         ids=[i for i, (n, _) in zip(IDS, VARIANTS) if PRESETS[n]["architecture"] == "gated"])
def test_auxiliary_gradient_into_decoder_only_without_stop_gradient(name, flips):
    config = make_config(name, D_IN, EXPANSION, **flips)
    grads = _auxiliary_gradients(config)
    if config.aux_stop_gradient:  # Eq. 5: frozen decoder copy
        assert grads["W_dec"] is None or torch.count_nonzero(grads["W_dec"]) == 0
    else:  # Eq. 9: the decoder learns from L_aux too
        assert grads["W_dec"] is not None and torch.count_nonzero(grads["W_dec"]) > 0
        assert torch.count_nonzero(grads["b_dec"]) > 0
    # The stop-gradient cuts the decoder only: the gate learns the same from L_aux either way.
    other = _auxiliary_gradients(SAEConfig(**{**config.__dict__, "aux_stop_gradient": not config.aux_stop_gradient}))
    torch.testing.assert_close(grads["W_enc"], other["W_enc"])
    torch.testing.assert_close(grads["b_gate"], other["b_gate"])


def test_gated_preset_aux_leaves_decoder_grad_zero_and_sae_rad_does_not():
    assert torch.count_nonzero(_auxiliary_gradients(make_config("sae_rad", D_IN, EXPANSION))["W_dec"]) > 0
    gated = _auxiliary_gradients(make_config("gated", D_IN, EXPANSION))["W_dec"]
    assert gated is None or torch.count_nonzero(gated) == 0


@pytest.mark.parametrize("name, flips", VARIANTS, ids=IDS)
def test_unit_norm_decoder_after_training_steps(name, flips):
    config = make_config(name, D_IN, EXPANSION, **flips)
    sae = _perturbed(config)
    optimizer = torch.optim.Adam(sae.parameters(), lr=0.05)
    for _ in range(3):
        optimisation_step(sae, optimizer, _inputs(), L1)
    norms = sae.W_dec.detach().norm(dim=1)
    if config.unit_norm_decoder:
        torch.testing.assert_close(norms, torch.ones_like(norms), rtol=0, atol=1e-6)
    else:  # free norms really move
        assert (norms - 1).abs().max() > 1e-2


def test_decoder_gradient_projection_removes_radial_part():
    sae = build_sae(make_config("gated", D_IN, EXPANSION))
    sae.loss_terms(_inputs(), L1)["total"].backward()
    sae.project_decoder_gradient()
    radial = (sae.W_dec.grad * sae.W_dec.detach()).sum(dim=1)
    torch.testing.assert_close(radial, torch.zeros_like(radial), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["sae_rad", "gated", "conerly", "vanilla"])
def test_initialisation_as_in_appendix_b3(name):
    sae = build_sae(make_config(name, D_IN, EXPANSION, seed=3))
    for bias in ("b_dec", "b_gate", "b_mag", "r_mag", "b_enc"):
        if hasattr(sae, bias):
            assert torch.count_nonzero(getattr(sae, bias)) == 0, bias
    column_norms = sae.W_enc.detach().norm(dim=0)  # one unit direction per feature
    torch.testing.assert_close(column_norms, torch.ones_like(column_norms))
    assert torch.equal(sae.W_dec, sae.W_enc.T)  # W_dec = W_gate^T in the paper's layout
    same = build_sae(make_config(name, D_IN, EXPANSION, seed=3))
    other = build_sae(make_config(name, D_IN, EXPANSION, seed=4))
    assert torch.equal(sae.W_enc, same.W_enc) and not torch.equal(sae.W_enc, other.W_enc)


def test_topk_keeps_k_features_and_has_no_penalty():
    sae = _perturbed(make_config("topk", D_IN, EXPANSION, k=3))
    X = _inputs()
    h = sae.encode(X)
    assert ((h > 0).sum(dim=1) <= 3).all()
    dense = torch.relu((X - sae.b_dec) @ sae.W_enc + sae.b_enc)
    torch.testing.assert_close(h.max(dim=1).values, dense.max(dim=1).values)
    terms = sae.loss_terms(X, L1)
    assert terms["sparsity"] == 0 and terms["auxiliary"] == 0
    torch.testing.assert_close(terms["total"], ((X - sae.decode(h)) ** 2).sum(1).mean())


def test_config_round_trip_and_presets():
    config = make_config("sae_rad", 16, 8, centre_input=True, seed=5)
    assert config.d_sae == 128 and config.preset_name() is None
    assert SAEConfig.from_dict(config.to_dict()) == config
    assert make_config("gated", 16, 8).preset_name() == "gated"
    assert make_config("sae_rad", 16, 8).to_dict()["architecture"] == "gated"
    with pytest.raises(KeyError, match="known presets"):
        make_config("nope", 16, 8)
    with pytest.raises(ValueError, match="aux_stop_gradient"):
        make_config("conerly", 16, 8, aux_stop_gradient=True)
    with pytest.raises(ValueError, match="k"):
        make_config("topk", 16, 8)
    with pytest.raises(ValueError, match="unknown"):
        SAEConfig.from_dict({**config.to_dict(), "typo": 1})
