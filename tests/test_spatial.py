"""Spatial attribution of SAE features: the position maps average exactly to the pooled pre-activation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from saerad.features.spatial import (
    SpatialAttributionError,
    affine_preactivation,
    spatial_attribution,
    upsample_maps,
)
from saerad.sae import build_sae, make_config
from conftest import sae_with_biases

WIDTH = 16  # the tiny encoder's token width (d_in of the SAE)


@pytest.fixture(scope="module")
def tiny_resnet():
    """A randomly initialised ResNet whose 64 × 96 input gives a 2 × 3 last feature map."""
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 8, 8, WIDTH], depths=[1, 1, 1, 1],
                          layer_type="basic", downsample_in_first_stage=False)
    return ResNetModel(config).eval()


@pytest.fixture(scope="module")
def pixels():
    return torch.randn(3, 3, 64, 96, generator=torch.Generator().manual_seed(1))


def tiny_sae(preset: str, seed: int = 0):
    """An SAE with every bias non-zero, so a wrongly split bias or offset would show."""
    return sae_with_biases(preset, WIDTH, seed)


def scaled_token(model, pixels, scale):
    with torch.no_grad():
        return model(pixel_values=pixels).pooler_output.flatten(1) * scale


@pytest.mark.parametrize("preset", ["sae_rad", "gated"])
@pytest.mark.parametrize("path", ["magnitude", "gate"])
def test_gated_position_maps_average_to_the_pooled_preactivation(tiny_resnet, pixels, preset, path):
    sae = tiny_sae(preset)
    features = [0, 5, 63, 5]
    scale = 0.7
    result = spatial_attribution(tiny_resnet, sae, pixels, features, token_scale=scale, path=path)
    assert result.position_maps.shape == (3, 4, 2, 3)
    # The maps are float64 from the float32 feature map; pooled comes from the float32 pooled token, so the two
    # agree to float32 rounding of the token (~1e-7 relative), not to float64 precision.
    np.testing.assert_allclose(result.position_maps.mean(axis=(-2, -1)), result.pooled, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(result.contributions.sum(axis=(-2, -1)), result.pooled, rtol=1e-6, atol=1e-6)
    # ... and it is the pre-activation the SAE itself computes on the scaled token (float32).
    with torch.no_grad():
        gate, magnitude = sae.pre_activations(scaled_token(tiny_resnet, pixels, scale))
    expected = (magnitude if path == "magnitude" else gate)[:, features].double().numpy()
    np.testing.assert_allclose(result.pooled, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("preset", ["conerly", "vanilla", "topk"])
def test_relu_family_position_maps_average_to_the_encoder_preactivation(tiny_resnet, pixels, preset):
    sae = tiny_sae(preset)
    features = [1, 2, 40]
    result = spatial_attribution(tiny_resnet, sae, pixels, features, token_scale=1.3)
    assert result.path == "encoder"
    np.testing.assert_allclose(result.position_maps.mean(axis=(-2, -1)), result.pooled, rtol=1e-6, atol=1e-6)
    with torch.no_grad():
        x = scaled_token(tiny_resnet, pixels, 1.3)
        expected = (sae.encoder_input(x) @ sae.W_enc + sae.b_enc)[:, features].double().numpy()
    np.testing.assert_allclose(result.pooled, expected, rtol=1e-5, atol=1e-5)


def test_where_a_feature_fires_the_pooled_preactivation_is_its_activation(tiny_resnet, pixels):
    sae = tiny_sae("sae_rad")
    result = spatial_attribution(tiny_resnet, sae, pixels, list(range(64)), token_scale=0.7)
    with torch.no_grad():
        h = sae.encode(scaled_token(tiny_resnet, pixels, 0.7)).double().numpy()
    firing = h > 0
    assert firing.any()
    np.testing.assert_allclose(result.pooled[firing], h[firing], rtol=1e-5, atol=1e-5)


def test_gate_and_magnitude_maps_rank_positions_alike(tiny_resnet, pixels):
    sae = tiny_sae("sae_rad")
    magnitude = spatial_attribution(tiny_resnet, sae, pixels, [3, 7], path="magnitude").position_maps
    gate = spatial_attribution(tiny_resnet, sae, pixels, [3, 7], path="gate").position_maps
    flat_m = magnitude.reshape(*magnitude.shape[:2], -1)
    flat_g = gate.reshape(*gate.shape[:2], -1)
    np.testing.assert_array_equal(np.argsort(flat_m, axis=-1), np.argsort(flat_g, axis=-1))


def test_heatmaps_are_at_input_resolution_and_peak_over_the_peak_cell(tiny_resnet, pixels):
    result = spatial_attribution(tiny_resnet, tiny_sae("sae_rad"), pixels, [0, 9])
    assert result.heatmaps.shape == (3, 2, 64, 96)
    for image in range(3):
        for k in range(2):
            cell = np.unravel_index(np.argmax(result.position_maps[image, k]), (2, 3))
            pixel = np.unravel_index(np.argmax(result.heatmaps[image, k]), (64, 96))
            # 2 × 3 cells of 32 × 32 pixels.
            assert (pixel[0] // 32, pixel[1] // 32) == cell


def test_upsampling_keeps_a_constant_map_constant():
    up = upsample_maps(np.full((2, 4, 4), 3.0), (128, 128))
    assert up.shape == (2, 128, 128)
    np.testing.assert_allclose(up, 3.0)


def test_bad_inputs_name_what_was_expected(tiny_resnet, pixels):
    sae = tiny_sae("sae_rad")
    with pytest.raises(ValueError, match="d_sae=64"):
        spatial_attribution(tiny_resnet, sae, pixels, [64])
    with pytest.raises(ValueError, match="non-empty"):
        spatial_attribution(tiny_resnet, sae, pixels, [])
    with pytest.raises(ValueError, match="path for a gated SAE"):
        affine_preactivation(sae, [0], path="encoder")
    with pytest.raises(ValueError, match=r"\[batch, channels, height, width\]"):
        spatial_attribution(tiny_resnet, sae, pixels[0], [0])
    with pytest.raises(ValueError, match="token_scale"):
        spatial_attribution(tiny_resnet, sae, pixels, [0], token_scale=0.0)
    wrong_width = build_sae(make_config("sae_rad", WIDTH * 2, 2))
    with pytest.raises(SpatialAttributionError, match="d_in=32"):
        spatial_attribution(tiny_resnet, wrong_width, pixels, [0])


def test_the_dispatcher_gives_a_resnet_the_mean_decomposition_with_no_remainder(tiny_resnet, pixels):
    sae = tiny_sae("sae_rad")
    result = spatial_attribution(tiny_resnet, sae, pixels, [0, 9], token_scale=0.7)
    assert result.method == "mean" and result.remainder.shape == (3, 2) and not result.remainder.any()
    assert spatial_attribution(tiny_resnet, sae, pixels, [0, 9], token_scale=0.7, method="mean").method == "mean"
    # The maps are the per-cell pre-activations, computed as before the ViT path existed.
    with torch.no_grad():
        feature_map = tiny_resnet(pixel_values=pixels).last_hidden_state.double()
    offset, weight, bias, _ = affine_preactivation(sae, [0, 9])
    expected = ((0.7 * feature_map.permute(0, 2, 3, 1) - offset) @ weight + bias).permute(0, 3, 1, 2).numpy()
    np.testing.assert_array_equal(result.position_maps, expected)
    for method in ("attention", "patch_tokens"):
        with pytest.raises(ValueError, match="method for a mean-pooled CNN"):
            spatial_attribution(tiny_resnet, sae, pixels, [0], method=method)


def test_a_vit_gets_the_attention_split_and_the_mean_check_names_it():
    from saerad.features.spatial import check_mean_pooled
    from transformers import Dinov2Config, Dinov2Model

    vit = Dinov2Model(Dinov2Config(image_size=32, patch_size=16, hidden_size=WIDTH, num_hidden_layers=1,
                                   num_attention_heads=2, mlp_ratio=1)).eval()
    result = spatial_attribution(vit, tiny_sae("sae_rad"), torch.zeros(1, 3, 32, 32), [0])
    assert result.method == "attention" and result.position_maps.shape == (1, 1, 2, 2)
    with pytest.raises(SpatialAttributionError, match="CLS token.*last block's attention"):
        check_mean_pooled(vit)


def test_a_convnext_is_refused_with_the_reason():
    from transformers import ConvNextConfig, ConvNextModel

    config = ConvNextConfig(num_channels=3, num_stages=2, hidden_sizes=[8, WIDTH], depths=[1, 1])
    convnext = ConvNextModel(config).eval()
    with pytest.raises(SpatialAttributionError, match="layer-normalises after the spatial mean"):
        spatial_attribution(convnext, tiny_sae("sae_rad"), torch.zeros(1, 3, 64, 64), [0])
