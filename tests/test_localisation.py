"""Localisation measures on hand-made maps and masks whose answers are known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from saerad.features.localisation import (
    METHODS,
    centre_prior,
    intensity_maps,
    localisation_row,
    localisation_table,
    mean_interval,
    pointing_hits,
    pointing_locations,
    region_iou,
    top_area_iou,
    top_area_regions,
    wilson_interval,
)


def square_mask(size: int, top: int, left: int, side: int) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[top:top + side, left:left + side] = True
    return mask


def peaked_map(size: int, row: int, column: int) -> np.ndarray:
    rows, columns = np.mgrid[:size, :size]
    return -((rows - row) ** 2 + (columns - column) ** 2).astype(np.float64)


def test_a_map_peaking_inside_the_mask_hits_and_outside_misses():
    mask = square_mask(16, 2, 2, 4)
    maps = np.stack([peaked_map(16, 3, 4), peaked_map(16, 12, 12)])
    np.testing.assert_array_equal(pointing_hits(maps, np.stack([mask, mask])), [True, False])


def test_ties_resolve_towards_the_image_centre():
    heatmap = np.zeros((1, 9, 9))
    heatmap[0, 3:6, 3:6] = 1.0
    np.testing.assert_array_equal(pointing_locations(heatmap), [[4, 4]])
    # Four tied central pixels (even side): the first of them.
    np.testing.assert_array_equal(pointing_locations(centre_prior((8, 8))[None]), [[3, 3]])
    # A flat map points at the centre.
    np.testing.assert_array_equal(pointing_locations(np.ones((1, 9, 9))), [[4, 4]])


@pytest.mark.parametrize("cell", [(0, 0), (0, 2), (3, 1), (1, 2)])
def test_an_upsampled_coarse_peak_points_at_its_cell_centre_even_at_the_border(cell):
    from saerad.features.spatial import upsample_maps

    coarse = np.zeros((4, 4))
    coarse[cell] = 1.0
    row, column = pointing_locations(upsample_maps(coarse[None], (128, 128)))[0]
    # The cell's centre lies between pixels 32 i + 15 and 32 i + 16.
    assert row in (32 * cell[0] + 15, 32 * cell[0] + 16) and column in (32 * cell[1] + 15, 32 * cell[1] + 16)


def test_iou_of_identical_regions_is_one_and_of_disjoint_ones_zero():
    mask = square_mask(10, 1, 1, 3)
    other = square_mask(10, 6, 6, 3)
    np.testing.assert_allclose(region_iou(np.stack([mask, other]), np.stack([mask, mask])), [1.0, 0.0])
    half = square_mask(10, 1, 1, 3)
    half[:, 2:] = False  # 3 × 1 inside a 3 × 3 mask
    np.testing.assert_allclose(region_iou(half[None], mask[None]), [3 / 9])


def test_top_area_region_has_the_mask_area_and_matches_a_map_shaped_like_the_mask():
    mask = square_mask(12, 4, 5, 3)
    heatmap = mask.astype(float) + 0.01 * np.random.default_rng(0).random((12, 12))
    regions = top_area_regions(heatmap[None], [mask.sum()])
    assert regions.sum() == mask.sum()
    np.testing.assert_allclose(top_area_iou(heatmap[None], mask[None]), [1.0])
    # Ties with the k-th value are all kept.
    assert top_area_regions(np.zeros((1, 4, 4)), [3]).sum() == 16
    assert top_area_regions(np.zeros((1, 4, 4)), [0]).sum() == 0


def test_centre_prior_peaks_in_the_middle_and_intensity_is_as_coarse_as_the_grid():
    prior = centre_prior((9, 9))
    assert np.unravel_index(np.argmax(prior), prior.shape) == (4, 4)
    images = np.zeros((1, 8, 8), dtype=np.float32)
    images[0, :4, :4] = 1.0  # bright top-left quarter
    coarse = intensity_maps(images, grid=(2, 2))
    assert coarse.shape == (1, 8, 8)
    assert coarse[0, 0, 0] == pytest.approx(1.0) and coarse[0, 7, 7] == pytest.approx(0.0)
    np.testing.assert_array_equal(intensity_maps(images), images)


@pytest.mark.parametrize("cell", [(0, 0), (0, 3), (2, 1), (3, 3)])
def test_every_upsampled_peak_lands_on_a_reachable_pixel_of_its_cell(cell):
    from saerad.features.localisation import grid_pointing_pixels
    from saerad.features.spatial import upsample_maps

    coarse = np.random.default_rng(sum(cell)).random((4, 4))
    coarse[cell] = 2.0
    row, column = pointing_locations(upsample_maps(coarse[None], (128, 128)))[0]
    reachable = grid_pointing_pixels((4, 4), (128, 128))
    assert reachable[cell][row, column]
    assert reachable.sum(axis=(2, 3)).tolist() == [[4] * 4] * 4  # 2 × 2 pixels per cell at 32 px per cell


def test_grid_ceiling_and_chance():
    from saerad.features.localisation import grid_pointing_reach

    masks = np.zeros((3, 8, 8), dtype=bool)
    masks[0, 1:3, 1:3] = True  # covers the centre pixels of cell (0, 0) of a 2 × 2 grid
    masks[1, 0, 0] = True  # a corner pixel: no cell centre
    masks[2] = True  # everything
    reach = grid_pointing_reach(masks, (2, 2))
    np.testing.assert_array_equal(reach.sum(axis=1), [1, 0, 4])
    row = localisation_row("x", 0, np.random.default_rng(0).random((3, 8, 8)), np.zeros((3, 8, 8)), masks, (2, 2))
    assert row["grid_ceiling"] == pytest.approx(2 / 3)
    assert row["grid_chance"] == pytest.approx((1 / 4 + 0 + 1) / 3)
    assert np.isnan(localisation_row("x", 0, np.zeros((3, 8, 8)), np.zeros((3, 8, 8)), masks, None)["grid_ceiling"])


def test_intervals_contain_their_estimate():
    low, high = wilson_interval(7, 10)
    assert low < 0.7 < high
    assert np.isnan(wilson_interval(0, 0)).all()
    low, high = wilson_interval(10, 10)
    assert low < 1.0 and high == pytest.approx(1.0)
    values = np.random.default_rng(1).random(40)
    mean, low, high = mean_interval(values, seed=3)
    assert low <= mean <= high and mean == pytest.approx(values.mean())
    assert mean_interval(values, seed=3) == (mean, low, high)  # fixed seed
    groups = np.repeat(np.arange(10), 4)
    mean_g, low_g, high_g = mean_interval(values, groups, seed=3)
    assert mean_g == pytest.approx(values.mean()) and low_g <= mean_g <= high_g
    assert np.isnan(mean_interval(values[:1])[1])


def test_groups_must_match_values():
    with pytest.raises(ValueError, match="one group per value"):
        mean_interval(np.ones(4), np.arange(3))


def make_finding(n: int, inside: int, size: int = 16, seed: int = 0):
    """``n`` images with a mask in the upper-left corner; the first ``inside`` maps peak inside it."""
    rng = np.random.default_rng(seed)
    masks = np.stack([square_mask(size, 1, 1, 4)] * n)
    maps = np.stack([peaked_map(size, 2, 2) if k < inside else peaked_map(size, 12, 12) for k in range(n)])
    images = rng.random((n, size, size)).astype(np.float32)
    return maps, images, masks


def test_localisation_row_counts_hits_and_beats_the_centre_prior_on_a_corner_finding():
    maps, images, masks = make_finding(10, inside=8)
    row = localisation_row("nodule", 17, maps, images, masks, grid=(4, 4), groups=np.arange(10) // 2)
    assert row["feature"] == 17 and row["n_images"] == 10 and row["n_empty_mask"] == 0
    assert row["feature_hit_rate"] == pytest.approx(0.8)
    assert row["feature_hit_low"] < 0.8 < row["feature_hit_high"]
    assert row["centre_hit_rate"] == 0.0  # the mask is in a corner
    assert row["feature_iou_low"] <= row["feature_iou"] <= row["feature_iou_high"]
    assert row["feature_iou"] > row["centre_iou"]
    assert row["mask_share"] == pytest.approx(16 / 256)


def test_empty_masks_are_dropped_and_counted_and_no_images_give_a_nan_row():
    maps, images, masks = make_finding(4, inside=4)
    masks[0] = False
    row = localisation_row("effusion", 3, maps, images, masks, grid=None)
    assert row["n_images"] == 3 and row["n_empty_mask"] == 1 and row["feature_hit_rate"] == 1.0
    empty = localisation_row("rare", 5, np.zeros((0, 16, 16)), np.zeros((0, 16, 16)), np.zeros((0, 16, 16), bool),
                             grid=None)
    assert empty["n_images"] == 0
    table = localisation_table([row, empty])
    assert list(table["finding"]) == ["effusion", "rare"]
    assert table.loc[1, [f"{m}_hit_rate" for m in METHODS]].isna().all()
    assert table.loc[1, [f"{m}_iou_high" for m in METHODS]].isna().all()


def test_bad_inputs_name_what_was_expected():
    maps, images, masks = make_finding(3, inside=1)
    with pytest.raises(ValueError, match=r"\[n, H, W\]"):
        pointing_hits(maps[0], masks)
    with pytest.raises(ValueError, match="one map per mask"):
        pointing_hits(maps[:, :8], masks)
    with pytest.raises(ValueError, match="NaN"):
        pointing_hits(np.full_like(maps, np.nan), masks)
    with pytest.raises(ValueError, match="pixel counts"):
        top_area_regions(maps, [1, 2])


@pytest.mark.parametrize("kind", ["resnet", "dinov2"])
def test_localise_findings_on_a_tiny_synthcxr_layout(tmp_path, kind):
    """End to end on hand-written artifacts: images, ground truth, masks, a tiny encoder (a mean-pooled
    ResNet, or a DINOv2 ViT, split through its last block's attention) and SAE."""
    import torch
    from PIL import Image
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model, ResNetConfig, ResNetModel

    from saerad.features.localisation import images_with_finding, localise_findings
    from saerad.io import write_json
    from saerad.sae import build_sae, make_config

    root = tmp_path / "artifacts"
    data = root / "data"
    dataset = tmp_path / "synthcxr"
    (dataset / "files").mkdir(parents=True)
    (dataset / "ground_truth" / "files").mkdir(parents=True)
    data.mkdir(parents=True)
    write_json(data / "dataset.json", {"root": str(dataset)})
    (root / "encode").mkdir()
    write_json(root / "encode" / "scale.json", {"scale": 0.5})
    rng = np.random.default_rng(0)
    rows = []
    for k in range(6):
        name = f"img{k}"
        Image.fromarray((rng.random((64, 64)) * 255).astype(np.uint8)).save(dataset / "files" / f"{name}.jpg")
        np.savez(dataset / "ground_truth" / "files" / f"{name}_masks.npz", nodule=square_mask(64, 4, 4, 12))
        rows.append({"dicom_id": name, "subject_id": k // 2, "split": "test" if k < 4 else "train",
                     "view_position": "PA", "image_path": f"files/{name}.jpg", "nodule": 1, "effusion": 0,
                     "nodule_laterality": "left" if k % 2 else "right"})
    table = pd.DataFrame(rows)
    table.to_csv(data / "images.csv", index=False)
    table.to_csv(data / "ground_truth.csv", index=False)
    assert list(images_with_finding(root, "nodule")["dicom_id"]) == ["img0", "img1", "img2", "img3"]
    # A finding named with its side keeps the images planted on that side only.
    assert list(images_with_finding(root, "nodule (left)")["dicom_id"]) == ["img1", "img3"]
    with pytest.raises(ValueError, match="effusion_laterality"):
        images_with_finding(root, "effusion (left)")

    torch.manual_seed(0)
    if kind == "resnet":
        model = ResNetModel(ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 8, 8, 16],
                                         depths=[1, 1, 1, 1], layer_type="basic")).eval()
    else:  # 4 x 4 patches of 16 px
        model = Dinov2Model(Dinov2Config(image_size=64, patch_size=16, hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, mlp_ratio=2)).eval()
    processor = BitImageProcessor(do_resize=False, do_center_crop=False, image_mean=[0.5] * 3, image_std=[0.25] * 3)

    class Encoder:
        def __init__(self):
            self.model = model

        def preprocess(self, pictures):
            return processor(images=pictures, return_tensors="pt")["pixel_values"]

    sae = build_sae(make_config("sae_rad", 16, 2)).eval()
    alignment = pd.DataFrame({"finding": ["nodule", "effusion"], "best_feature": [3, 4]})
    result = localise_findings(root, Encoder(), sae, alignment, findings=["nodule", "effusion"], n_resamples=50)
    assert list(result["finding"]) == ["nodule", "effusion"]
    assert result.loc[0, "n_images"] == 4 and result.loc[1, "n_images"] == 0
    assert 0.0 <= result.loc[0, "feature_hit_rate"] <= 1.0
    assert np.isnan(result.loc[1, "feature_hit_rate"])
    assert result.loc[0, "grid_ceiling"] >= 0.0  # scored on the encoder's 4 x 4 grid (cells or patches)


def test_centre_prior_verdicts_say_why_a_feature_loses():
    from saerad.features.localisation import centre_prior_verdicts

    def row(finding, n, ceiling, feature, low, high, centre, centre_low, centre_high):
        return {"finding": finding, "n_images": n, "grid_ceiling": ceiling, "feature_hit_rate": feature,
                "feature_hit_low": low, "feature_hit_high": high, "centre_hit_rate": centre,
                "centre_hit_low": centre_low, "centre_hit_high": centre_high}

    table = pd.DataFrame([row("effusion", 50, 0.5, 0.4, 0.3, 0.5, 0.0, 0.0, 0.05),
                          row("nodule", 50, 0.5, 0.1, 0.02, 0.2, 0.05, 0.0, 0.15),
                          row("wires", 50, 0.0, 0.0, 0.0, 0.1, 0.7, 0.6, 0.8),
                          row("heart", 50, 1.0, 0.5, 0.4, 0.6, 0.7, 0.6, 0.8),
                          row("mass", 50, 0.5, 0.0, 0.0, 0.1, 0.0, 0.0, 0.1),
                          row("absent", 0, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan)])
    verdicts = centre_prior_verdicts(table).set_index("finding")
    assert verdicts["beats_centre"].tolist() == [True, True, False, False, False, False]
    assert verdicts["clearly_beats_centre"].tolist() == [True, False, False, False, False, False]
    assert "no map at this resolution" in verdicts.loc["wires", "why_not"]
    assert "image centre" in verdicts.loc["heart", "why_not"] and "70%" in verdicts.loc["heart", "why_not"]
    assert verdicts.loc["mass", "why_not"] == "the feature's map peaks elsewhere"
    assert verdicts.loc["absent", "why_not"] == "no held-out image carries it"
