"""Spatial attribution for a DINOv2 ViT: the per-patch split through the last block's attention is exact
(patch contributions + remainder = the pooled pre-activation), the frozen-LayerNorm reconstruction is the
model's pooler_output, a planted attention focus gives its patch the largest contribution, and the
patch-token SAE is the SAE applied to each layer-normed patch token."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from conftest import sae_with_biases, save_tiny_dinov2
from saerad.features.spatial import SpatialAttributionError, spatial_attribution
from saerad.features.spatial_vit import (
    REMAINDER_TERMS,
    attention_attribution,
    last_block_terms,
    patch_heatmaps,
    remainder_parts,
)
from saerad.sae import build_sae, make_config

WIDTH = 32  # the tiny ViT's hidden size (d_in of the SAE)
PRESETS = ["sae_rad", "gated", "conerly", "vanilla", "topk", "matryoshka"]


def perturb(model, seed: int, scale: float = 0.3):
    """Move every bias, layer scale and norm weight off its initial value, so none of them can hide an error."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias") or "lambda" in name or "norm" in name or "register" in name:
                parameter.add_(scale * torch.randn(parameter.shape, generator=generator))
    return model


def tiny_dinov2(layers: int = 2, heads: int = 4, registers: int = 0, seed: int = 0):
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    options = dict(image_size=32, patch_size=8, hidden_size=WIDTH, num_hidden_layers=layers,
                   num_attention_heads=heads, mlp_ratio=2, layerscale_value=0.5)
    if registers:
        from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

        return perturb(Dinov2WithRegistersModel(Dinov2WithRegistersConfig(num_register_tokens=registers,
                                                                          **options)).eval(), seed)
    return perturb(Dinov2Model(Dinov2Config(**options)).eval(), seed)


@pytest.fixture(scope="module")
def vit():
    torch.set_num_threads(1)
    return tiny_dinov2()


@pytest.fixture(scope="module")
def pixels():
    # 32 × 48: a 4 × 6 patch grid (position embeddings interpolated), so rows and columns cannot be swapped.
    return torch.randn(3, 3, 32, 48, generator=torch.Generator().manual_seed(1))


def tiny_sae(preset: str, seed: int = 0, width: int = WIDTH):
    """An SAE with every bias non-zero, so a wrongly split bias or offset would show."""
    return sae_with_biases(preset, width, seed)


def sae_preactivation(sae, x: torch.Tensor, path: str) -> torch.Tensor:
    """The SAE's own pre-activation of inputs ``x`` (float32, the SAE's code)."""
    with torch.no_grad():
        if sae.config.architecture == "gated":
            gate, magnitude = sae.pre_activations(x)
            return magnitude if path == "magnitude" else gate
        return sae.encoder_input(x) @ sae.W_enc + sae.b_enc


def pooler(model, pixels):
    with torch.no_grad():
        return model(pixel_values=pixels).pooler_output


@pytest.mark.parametrize("preset", PRESETS)
def test_patch_contributions_plus_remainder_are_the_pooled_preactivation(vit, pixels, preset):
    sae = tiny_sae(preset)
    paths = ["magnitude", "gate"] if sae.config.architecture == "gated" else ["encoder"]
    features = [0, 5, 127, 5]
    for path in paths:
        result = spatial_attribution(vit, sae, pixels, features, token_scale=0.7, path=path)
        assert result.method == "attention" and result.path == path
        assert result.position_maps.shape == (3, 4, 4, 6) and result.remainder.shape == (3, 4)
        assert result.heatmaps.shape == (3, 4, 32, 48)
        total = result.contributions.sum(axis=(-2, -1)) + result.remainder
        # pooled is computed from the model's float32 pooler_output; the split from the float64 recomputation.
        np.testing.assert_allclose(total, result.pooled, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(result.position_maps.mean(axis=(-2, -1)) + result.remainder, result.pooled,
                                   rtol=1e-6, atol=1e-6)
        expected = sae_preactivation(sae, 0.7 * pooler(vit, pixels), path)[:, features].double().numpy()
        np.testing.assert_allclose(result.pooled, expected, rtol=1e-5, atol=1e-5)


def test_frozen_layernorm_reconstruction_is_the_pooler_output(vit, pixels):
    terms = last_block_terms(vit, pixels)
    token = pooler(vit, pixels).double()
    np.testing.assert_allclose(terms.reconstruction.numpy(), token.numpy(), rtol=1e-6, atol=1e-6)
    assert terms.token.dtype == torch.float64 and torch.equal(terms.token, token)
    # The terms: patches on a 4 × 6 grid, every non-patch part present (registers zero without registers).
    assert terms.patch_terms.shape == (3, 4, 6, WIDTH) and terms.grid == (4, 6)
    assert set(terms.parts) == set(REMAINDER_TERMS)
    assert torch.count_nonzero(terms.parts["register_attention"]) == 0
    for name in ("cls_attention", "residual", "mlp", "biases"):
        assert terms.parts[name].abs().max() > 1e-3
    total = terms.patch_terms.sum(dim=(1, 2)) + terms.remainder
    np.testing.assert_allclose(total.numpy(), terms.reconstruction.numpy(), rtol=1e-12, atol=1e-12)
    # Frozen σ: recomputing the final LayerNorm with the stored σ on the un-normalised CLS output gives the token.
    assert terms.sigma.shape == (3,) and (terms.sigma > 0).all()


def test_attention_weights_are_the_eager_models_and_sdpa_gives_the_same_maps(vit, pixels):
    eager = copy.deepcopy(vit)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        outputs = eager(pixel_values=pixels, output_attentions=True)
    np.testing.assert_allclose(outputs.pooler_output.numpy(), pooler(vit, pixels).numpy(), rtol=1e-5, atol=1e-6)
    terms = last_block_terms(vit, pixels)
    heads = outputs.attentions[-1][:, :, 0, :].double()  # [batch, heads, T]: the CLS query's weights
    assert terms.attention.shape == heads.shape == (3, 4, 25)
    np.testing.assert_allclose(terms.attention.numpy(), heads.numpy(), atol=1e-6)
    sae = tiny_sae("sae_rad")
    by_sdpa = spatial_attribution(vit, sae, pixels, [1, 2])
    by_eager = spatial_attribution(eager, sae, pixels, [1, 2])
    np.testing.assert_allclose(by_eager.position_maps, by_sdpa.position_maps, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(by_eager.remainder, by_sdpa.remainder, rtol=1e-5, atol=1e-6)


def test_remainder_parts_sum_to_the_remainder(vit, pixels):
    sae = tiny_sae("gated")
    terms = last_block_terms(vit, pixels)
    result = attention_attribution(vit, sae, pixels, [3, 9], token_scale=1.3, terms=terms)
    parts = remainder_parts(terms, sae, [3, 9], token_scale=1.3)
    assert list(parts) == list(REMAINDER_TERMS)
    np.testing.assert_allclose(sum(parts.values()), result.remainder, rtol=1e-12, atol=1e-12)
    # Given terms, the encoder pass is skipped and the result is the same.
    again = attention_attribution(vit, sae, pixels, [3, 9], token_scale=1.3)
    np.testing.assert_array_equal(again.position_maps, result.position_maps)


def planted_vit(focus_strength: float = 40.0):
    """One block whose CLS query attends to the patch with bright pixels, and whose value path copies hidden unit 0.

    The patch embedding puts a patch's mean brightness on hidden unit 0; the keys read unit 0 (the query is a
    constant through its bias), so the brightest patch wins the softmax in every head; values and output
    projection are identities, so the CLS token reads that patch's unit 0.
    """
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(3)
    config = Dinov2Config(image_size=32, patch_size=8, hidden_size=WIDTH, num_hidden_layers=1,
                          num_attention_heads=4, mlp_ratio=2, layerscale_value=1.0)
    model = Dinov2Model(config).eval()
    block = model.encoder.layer[-1]
    attention = block.attention.attention
    with torch.no_grad():
        model.embeddings.position_embeddings.zero_()
        model.embeddings.cls_token.zero_()
        projection = model.embeddings.patch_embeddings.projection
        projection.weight.mul_(0.01)
        projection.weight[0] = 1.0 / (3 * 8 * 8)  # unit 0 = the patch's mean brightness
        projection.bias.zero_()
        attention.query.weight.zero_()
        attention.query.bias.fill_(1.0)
        attention.key.weight.zero_()
        attention.key.weight[:, 0] = focus_strength  # every head's key is unit 0 of the normed token
        attention.key.bias.zero_()
        attention.value.weight.copy_(torch.eye(WIDTH))
        attention.value.bias.zero_()
        block.attention.output.dense.weight.copy_(torch.eye(WIDTH))
        block.attention.output.dense.bias.zero_()
        block.layer_scale2.lambda1.fill_(0.01)  # a small MLP term
    return model


def unit_sae():
    """A gated SAE whose feature 0 reads hidden unit 0 (the planted unit), with no bias."""
    sae = build_sae(make_config("sae_rad", WIDTH, 2))
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.W_enc[0, 0] = 1.0
        sae.W_enc[1:, 1] = 1.0 / np.sqrt(WIDTH - 1)
    return sae.eval()


def test_a_planted_attention_focus_gives_its_patch_the_largest_contribution():
    model = planted_vit()
    pixels = torch.zeros(2, 3, 32, 48)
    planted = [(1, 4), (3, 0)]  # (row, column) of the bright patch in each image, on the 4 × 6 grid
    for image, (row, column) in enumerate(planted):
        pixels[image, :, row * 8:(row + 1) * 8, column * 8:(column + 1) * 8] = 3.0
    terms = last_block_terms(model, pixels)
    for image, (row, column) in enumerate(planted):
        # The CLS query's weight on the planted patch (token 1 + row-major patch index), in every head.
        assert (terms.attention[image, :, 1 + row * 6 + column] > 0.9).all()
    result = spatial_attribution(model, unit_sae(), pixels, [0])
    for image, (row, column) in enumerate(planted):
        contributions = result.contributions[image, 0]
        assert np.unravel_index(np.argmax(contributions), contributions.shape) == (row, column)
        others = np.delete(contributions.ravel(), row * 6 + column)
        assert contributions[row, column] > 10 * np.abs(others).max()
        pixel = np.unravel_index(np.argmax(result.heatmaps[image, 0]), (32, 48))
        assert (pixel[0] // 8, pixel[1] // 8) == (row, column)
    np.testing.assert_allclose(result.contributions.sum(axis=(-2, -1)) + result.remainder, result.pooled,
                               rtol=1e-6, atol=1e-6)


def test_patch_token_method_is_the_sae_on_each_layer_normed_patch_token(vit, pixels):
    for preset in ("sae_rad", "topk"):
        sae = tiny_sae(preset)
        path = "gate" if preset == "sae_rad" else None
        result = spatial_attribution(vit, sae, pixels, [2, 7, 100], token_scale=0.7, path=path,
                                     method="patch_tokens")
        assert result.method == "patch_tokens" and result.remainder is None
        assert result.position_maps.shape == (3, 3, 4, 6) and result.heatmaps.shape == (3, 3, 32, 48)
        with torch.no_grad():
            patches = vit(pixel_values=pixels).last_hidden_state[:, 1:]  # final layer-normed patch tokens
        expected = sae_preactivation(sae, 0.7 * patches.reshape(-1, WIDTH), result.path)[:, [2, 7, 100]]
        expected = expected.reshape(3, 4, 6, 3).permute(0, 3, 1, 2).double().numpy()
        np.testing.assert_allclose(result.position_maps, expected, rtol=1e-5, atol=1e-5)
        # pooled is still the CLS token's pre-activation, which these maps do not decompose.
        np.testing.assert_allclose(result.pooled, sae_preactivation(sae, 0.7 * pooler(vit, pixels), result.path)[
            :, [2, 7, 100]].double().numpy(), rtol=1e-5, atol=1e-5)


def test_a_model_with_registers_puts_them_in_the_remainder():
    model = tiny_dinov2(registers=2, seed=4)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    terms = last_block_terms(model, pixels)
    assert terms.n_registers == 2 and terms.patch_terms.shape == (2, 4, 4, WIDTH)
    assert terms.attention.shape == (2, 4, 1 + 2 + 16)
    assert terms.parts["register_attention"].abs().max() > 1e-4
    np.testing.assert_allclose(terms.reconstruction.numpy(), pooler(model, pixels).double().numpy(),
                               rtol=1e-6, atol=1e-6)
    sae = tiny_sae("sae_rad")
    result = spatial_attribution(model, sae, pixels, [0, 1])
    np.testing.assert_allclose(result.contributions.sum(axis=(-2, -1)) + result.remainder, result.pooled,
                               rtol=1e-6, atol=1e-6)
    tokens = spatial_attribution(model, sae, pixels, [0, 1], method="patch_tokens")
    with torch.no_grad():
        patches = model(pixel_values=pixels).last_hidden_state[:, 3:]  # after CLS and the two registers
    expected = sae_preactivation(sae, patches.reshape(-1, WIDTH), "magnitude")[:, [0, 1]]
    np.testing.assert_allclose(tokens.position_maps, expected.reshape(2, 4, 4, 2).permute(0, 3, 1, 2).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_a_class_token_encoder_gets_maps_on_its_preprocessed_pixels(tmp_path):
    from PIL import Image

    from saerad.encode.encoder import ClassTokenEncoder

    encoder = ClassTokenEncoder(save_tiny_dinov2(tmp_path / "vit", image_size=32, hidden_size=WIDTH))
    pictures = [Image.fromarray(np.random.default_rng(k).integers(0, 255, (40, 40), dtype=np.uint8)) for k in range(2)]
    pixel_values = encoder.preprocess(pictures)
    result = spatial_attribution(encoder, tiny_sae("sae_rad"), pixel_values, [4], token_scale=2.0)
    assert result.position_maps.shape == (2, 1, 4, 4) and result.heatmaps.shape == (2, 1, 32, 32)
    np.testing.assert_allclose(result.contributions.sum(axis=(-2, -1)) + result.remainder, result.pooled,
                               rtol=1e-6, atol=1e-6)
    tokens = encoder.encode_pixels(pixel_values)
    expected = sae_preactivation(tiny_sae("sae_rad"), 2.0 * torch.from_numpy(tokens), "magnitude")[:, [4]]
    np.testing.assert_allclose(result.pooled, expected.double().numpy(), rtol=1e-5, atol=1e-5)


def test_heatmaps_cover_pixels_the_patches_do_not_reach():
    maps = np.arange(12, dtype=float).reshape(1, 3, 4)
    up = patch_heatmaps(maps, (27, 35), (8, 8))  # 3 × 4 patches cover 24 × 32 of 27 × 35 pixels
    assert up.shape == (1, 27, 35)
    np.testing.assert_allclose(up[0, 24:, :32], np.repeat(up[0, 23:24, :32], 3, axis=0))
    np.testing.assert_allclose(up[0, :24, 32:], np.repeat(up[0, :24, 31:32], 3, axis=1))
    model = tiny_dinov2(layers=1, seed=6)
    pixels = torch.randn(1, 3, 27, 35, generator=torch.Generator().manual_seed(6))
    result = spatial_attribution(model, tiny_sae("vanilla"), pixels, [0])
    assert result.position_maps.shape == (1, 1, 3, 4) and result.heatmaps.shape == (1, 1, 27, 35)
    np.testing.assert_allclose(result.contributions.sum(axis=(-2, -1)) + result.remainder, result.pooled,
                               rtol=1e-6, atol=1e-6)


def test_bad_inputs_and_unsupported_encoders_name_what_was_expected(vit, pixels):
    from transformers import ViTConfig, ViTModel

    sae = tiny_sae("sae_rad")
    with pytest.raises(ValueError, match="method for a DINOv2 ViT"):
        spatial_attribution(vit, sae, pixels, [0], method="mean")
    with pytest.raises(ValueError, match=r"\[batch, channels, height, width\]"):
        spatial_attribution(vit, sae, pixels[0], [0])
    with pytest.raises(ValueError, match="token_scale"):
        spatial_attribution(vit, sae, pixels, [0], token_scale=-1.0)
    with pytest.raises(ValueError, match="d_sae=128"):
        spatial_attribution(vit, sae, pixels, [128])
    with pytest.raises(SpatialAttributionError, match="d_in=16"):
        spatial_attribution(vit, tiny_sae("sae_rad", width=16), pixels, [0])
    with pytest.raises(SpatialAttributionError, match="d_in=16"):
        spatial_attribution(vit, tiny_sae("sae_rad", width=16), pixels, [0], method="patch_tokens")
    training = copy.deepcopy(vit).train()
    with pytest.raises(SpatialAttributionError, match="eval"):
        spatial_attribution(training, sae, pixels, [0])
    other = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=WIDTH, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=WIDTH)).eval()
    with pytest.raises(SpatialAttributionError, match="ViTModel is neither"):
        spatial_attribution(other, sae, torch.zeros(1, 3, 32, 32), [0])
