"""Encoders side by side (saerad.encode.comparison): geometry, the untrained twin, raw pixels, arms on disk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from saerad.encode import comparison
from saerad.encode.tokens import load_class_tokens
from conftest import save_tiny_dinov2


def test_token_geometry_of_known_tokens():
    rng = np.random.default_rng(0)
    # Variance only along two axes, a constant offset of 3 on every entry: the mean dominates the norm.
    tokens = np.zeros((500, 8))
    tokens[:, 0] = rng.normal(0, 2.0, 500)
    tokens[:, 1] = rng.normal(0, 1.0, 500)
    tokens += 3.0
    geometry = comparison.token_geometry(tokens)
    assert geometry["directions_for_90pct_variance"] == 2
    assert geometry["negative_share"] == pytest.approx(float((tokens < 0).mean()))
    expected_share = (8 * 9.0) / (tokens ** 2).sum(axis=1).mean()
    assert geometry["mean_share_of_squared_norm"] == pytest.approx(expected_share, rel=0.02)


def test_token_geometry_of_signed_and_positive_tokens():
    rng = np.random.default_rng(0)
    positive = np.abs(rng.normal(size=(200, 8))) + 5
    geometry = comparison.token_geometry(positive)
    assert geometry["negative_share"] == 0.0 and geometry["mean_share_of_squared_norm"] > 0.9
    signed = rng.normal(size=(500, 8)) * np.array([3, 1, 1, 1, 1, 1, 1, 1])
    assert comparison.token_geometry(signed)["directions_for_90pct_variance"] >= 5


def test_token_geometry_skips_failed_rows_and_needs_two_tokens():
    tokens = np.array([[1.0, -1.0], [np.nan, 0.0], [2.0, 1.0]])
    assert comparison.token_geometry(tokens)["negative_share"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="at least two finite tokens"):
        comparison.token_geometry(tokens[:2])


def test_untrained_twin_keeps_architecture_and_preprocessing_and_is_reused(tmp_path):
    from transformers import AutoConfig
    from safetensors.numpy import load_file

    source = save_tiny_dinov2(tmp_path / "trained", seed=1)
    twin = comparison.untrained_twin(source, tmp_path / "twin", seed=0)
    assert AutoConfig.from_pretrained(twin).to_dict()["hidden_size"] == 32
    assert (twin / "preprocessor_config.json").read_text() != ""
    trained, random = load_file(source / "model.safetensors"), load_file(twin / "model.safetensors")
    assert set(trained) == set(random)
    assert any(not np.array_equal(trained[name], random[name]) for name in trained)
    stamp = (twin / "model.safetensors").stat().st_mtime_ns
    comparison.untrained_twin(source, tmp_path / "twin", seed=0)
    assert (twin / "model.safetensors").stat().st_mtime_ns == stamp  # same seed and config: reused
    again = comparison.untrained_twin(source, tmp_path / "twin", seed=1)
    assert not np.array_equal(load_file(again / "model.safetensors")[next(iter(random))], random[next(iter(random))])


def test_raw_pixel_tokens_shrink_and_mark_unreadable_images(tmp_path):
    image = np.zeros((16, 16), dtype=np.uint8)
    image[:, 8:] = 255
    Image.fromarray(image).save(tmp_path / "a.png")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    rows = comparison.raw_pixel_tokens([tmp_path / "a.png", tmp_path / "broken.png"], side=4)
    assert rows.shape == (2, 16)
    grid = rows[0].reshape(4, 4)
    assert np.allclose(grid[:, 0], 0) and np.allclose(grid[:, -1], 1)  # dark left half, bright right half
    assert (np.diff(grid, axis=1) >= 0).all() and np.allclose(grid, grid[:1])
    assert np.isnan(rows[1]).all()


def _planted(n=400, seed=0):
    rng = np.random.default_rng(seed)
    labels = pd.DataFrame({"effusion": rng.integers(0, 2, n), "nodule": rng.integers(0, 2, n)})
    informative = np.c_[labels["effusion"] * 3 + rng.normal(0, 0.3, n), labels["nodule"] * 3 + rng.normal(0, 0.3, n)]
    noise = rng.normal(0, 1, (n, 2))
    train = np.arange(n) < n // 2
    return labels, informative, noise, train


def test_compare_ranks_an_informative_token_above_noise():
    labels, informative, noise, train = _planted()
    arms = [comparison.Arm("informative", "this profile's encoder", informative),
            comparison.Arm("noise", "baseline", noise)]
    summary, per_finding = comparison.compare(arms, labels, train, ~train, min_prevalence=0.02, seed=0)
    assert list(summary["encoder"]) == ["informative", "noise"]
    by_arm = summary.set_index("encoder")
    assert by_arm.loc["informative", "median_auroc"] > 0.95
    assert 0.3 < by_arm.loc["noise", "median_auroc"] < 0.7
    assert by_arm.loc["informative", "findings_at_floor"] == 2 and by_arm.loc["noise", "findings_at_floor"] == 0
    assert set(per_finding.columns) == {"finding", "informative", "noise"}


def test_compare_leaves_out_failed_rows_of_an_arm():
    labels, informative, _, train = _planted()
    damaged = informative.copy()
    damaged[:50] = np.nan
    summary, _ = comparison.compare([comparison.Arm("damaged", "arm", damaged)], labels, train, ~train,
                                    min_prevalence=0.02, seed=0)
    assert summary.loc[0, "median_auroc"] > 0.95


def test_saved_arm_loads_in_the_main_rows_with_its_own_scale(tmp_path):
    from saerad.encode.tokens import save_index_and_scale

    stage = tmp_path / "encode"
    stage.mkdir()
    images = pd.DataFrame({"dicom_id": ["a", "b", "c", "d"], "subject_id": 1, "study_id": [1, 2, 3, 4],
                           "split": ["train", "train", "test", "test"]})
    main = np.ones((4, 3), dtype=np.float32)
    np.save(stage / "class_tokens.npy", main)
    save_index_and_scale(stage, images, main, "main")
    arm_tokens = np.arange(8, dtype=np.float32).reshape(4, 2) + 1
    arm_tokens[3] = np.nan  # an image this arm could not read
    comparison.save_arm(stage, comparison.Arm("other", "comparison arm", arm_tokens),
                        np.array([True, True, False, False]))
    train, index = load_class_tokens(tmp_path, "train", arm="other")
    assert train.shape == (2, 2) and list(index["dicom_id"]) == ["a", "b"]
    assert np.linalg.norm(train, axis=1).mean() == pytest.approx(np.sqrt(2), rel=1e-5)
    test, index = load_class_tokens(tmp_path, "test", arm="other")
    assert list(index["dicom_id"]) == ["c"]  # the unreadable row is left out
    with pytest.raises(FileNotFoundError, match="arms written: \\['other'\\]"):
        load_class_tokens(tmp_path, "train", arm="missing")
