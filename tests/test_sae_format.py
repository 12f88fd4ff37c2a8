"""SAELens on-disk format: cfg.json fields, weight names and shapes, exact round trip."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import trained_like_sae
from saerad.sae import load_sae, make_config, save_sae
from saerad.sae.models import build_sae

D_IN, EXPANSION = 8, 4
GATED_WEIGHTS = {"W_enc": (D_IN, D_IN * EXPANSION), "W_dec": (D_IN * EXPANSION, D_IN), "b_dec": (D_IN,),
                 "b_gate": (D_IN * EXPANSION,), "b_mag": (D_IN * EXPANSION,), "r_mag": (D_IN * EXPANSION,)}
STANDARD_WEIGHTS = {"W_enc": (D_IN, D_IN * EXPANSION), "W_dec": (D_IN * EXPANSION, D_IN), "b_dec": (D_IN,),
                    "b_enc": (D_IN * EXPANSION,)}
CASES = [("sae_rad", {}), ("gated", {}), ("conerly", {}), ("vanilla", {}), ("topk", {"k": 4}),
         ("sae_rad", {"centre_input": True, "aux_stop_gradient": True})]


def _trained_like(name: str, overrides: dict):
    return trained_like_sae(name, D_IN, EXPANSION, seed=7, noise_seed=0, noise=0.2, overrides=overrides)


@pytest.mark.parametrize("name, overrides", CASES, ids=[f"{n}{o}" for n, o in CASES])
def test_round_trip_is_exact(tmp_path, name, overrides):
    sae = _trained_like(name, overrides)
    save_sae(sae, tmp_path)
    loaded = load_sae(tmp_path)
    assert loaded.config == sae.config and type(loaded) is type(sae)
    for key, value in sae.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = torch.randn(32, D_IN, generator=torch.Generator().manual_seed(1)) * 3
    with torch.no_grad():
        assert torch.equal(loaded.feature_activations(x), sae.feature_activations(x))
        assert torch.equal(loaded(x)[0], sae(x)[0])


@pytest.mark.parametrize("name, overrides", CASES, ids=[f"{n}{o}" for n, o in CASES])
def test_cfg_json_and_weight_names(tmp_path, name, overrides):
    sae = _trained_like(name, overrides)
    save_sae(sae, tmp_path, model_name="demo-encoder")
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    expected_architecture = {"sae_rad": "gated", "gated": "gated", "conerly": "standard",
                             "vanilla": "standard", "topk": "topk"}[name]
    assert cfg["architecture"] == expected_architecture
    assert cfg["apply_b_dec_to_input"] is sae.config.centre_input
    assert (cfg["d_in"], cfg["d_sae"]) == (D_IN, D_IN * EXPANSION)
    assert cfg["dtype"] == "float32" and cfg["device"] == "cpu"
    assert cfg["normalize_activations"] == "none"
    assert cfg["hook_name"] == "rad_dino.pooler_output" and cfg["model_name"] == "demo-encoder"
    assert cfg["context_size"] == 1
    assert cfg["saerad"] == sae.config.to_dict()
    weights = load_file(str(tmp_path / "sae_weights.safetensors"))
    expected = GATED_WEIGHTS if expected_architecture == "gated" else STANDARD_WEIGHTS
    assert {k: tuple(v.shape) for k, v in weights.items()} == expected
    assert all(v.dtype == torch.float32 for v in weights.values())
    if name == "topk":
        assert cfg["k"] == 4


def test_sae_rad_cfg_does_not_centre_input(tmp_path):
    save_sae(build_sae(make_config("sae_rad", D_IN, EXPANSION)), tmp_path)
    assert json.loads((tmp_path / "cfg.json").read_text())["apply_b_dec_to_input"] is False


def test_saelens_forward_formula_matches_ours(tmp_path):
    """SAELens's gated encode, written from its documented formula, on our exported weights."""
    sae = _trained_like("sae_rad", {})
    save_sae(sae, tmp_path)
    w = load_file(str(tmp_path / "sae_weights.safetensors"))
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    x = torch.randn(16, D_IN, generator=torch.Generator().manual_seed(3)) * 3
    sae_in = x - w["b_dec"] * cfg["apply_b_dec_to_input"]
    active = (sae_in @ w["W_enc"] + w["b_gate"] > 0).float()
    magnitude = torch.relu(sae_in @ (w["W_enc"] * w["r_mag"].exp()) + w["b_mag"])
    h = active * magnitude
    with torch.no_grad():
        torch.testing.assert_close(h, sae.encode(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(h @ w["W_dec"] + w["b_dec"], sae(x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["sae_rad", "gated", "conerly", "vanilla"])
def test_loads_saelens_config_without_our_key(tmp_path, name):
    sae = _trained_like(name, {})
    save_sae(sae, tmp_path)
    cfg = json.loads((tmp_path / "cfg.json").read_text())
    del cfg["saerad"]
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    loaded = load_sae(tmp_path)
    assert loaded.config.preset_name() == name
    x = torch.randn(8, D_IN)
    with torch.no_grad():
        assert torch.equal(loaded.encode(x), sae.encode(x))
