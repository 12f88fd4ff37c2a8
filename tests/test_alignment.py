"""Feature/finding AUROC against sklearn, and the alignment tables built from it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.metrics import roc_auc_score

from saerad.features import (
    align_to_ground_truth,
    feature_alignment,
    feature_finding_auroc,
    finding_alignment,
    ground_truth_labels,
    recovered_fraction,
)


def planted(n: int = 400, d: int = 30, seed: int = 0):
    """Sparse codes where feature 2 tracks finding "a", feature 7 "b", with ties, a dead feature and negatives."""
    rng = np.random.default_rng(seed)
    labels = pd.DataFrame({"a": rng.random(n) < 0.2, "b": (rng.random(n) < 0.4).astype(int), "c": rng.random(n) < 0.5})
    dense = np.where(rng.random((n, d)) < 0.1, rng.integers(1, 4, (n, d)) / 2, 0.0)
    dense[:, 2] = np.where(labels["a"], rng.integers(2, 5, n), np.where(rng.random(n) < 0.05, 1.0, 0.0))
    dense[:, 7] = np.where(labels["b"] == 1, rng.random(n) + 0.5, 0.0) * (rng.random(n) < 0.9)
    dense[:, 4] = 0.0
    dense[:5, 9] = -1.0  # negative values rank below the zero block
    return sp.csr_matrix(dense.astype(np.float32)), labels, dense


def test_auroc_matches_sklearn_including_ties_dead_and_negative():
    activations, labels, dense = planted()
    table = feature_finding_auroc(activations, labels)
    assert table.shape == (30, 3) and list(table.columns) == ["a", "b", "c"] and table.index.name == "feature"
    expected = np.array([[roc_auc_score(labels[f].astype(int), dense[:, j]) if np.ptp(dense[:, j]) > 0 else 0.5
                          for f in labels] for j in range(30)])
    np.testing.assert_allclose(table.to_numpy(), expected, atol=1e-12)
    assert table.loc[4].tolist() == [0.5, 0.5, 0.5]
    assert table.loc[2, "a"] > 0.95 and table.loc[7, "b"] > 0.9


def test_auroc_ignores_explicit_zeros_and_row_order_of_storage():
    activations, labels, dense = planted(seed=1)
    with_zeros = activations.tocoo()
    extra = sp.coo_matrix((np.zeros(3), ([0, 1, 2], [0, 0, 0])), shape=activations.shape)
    padded = sp.csr_matrix((np.concatenate([with_zeros.data, extra.data]),
                            (np.concatenate([with_zeros.row, extra.row]), np.concatenate([with_zeros.col, extra.col]))),
                           shape=activations.shape)
    np.testing.assert_allclose(feature_finding_auroc(padded, labels), feature_finding_auroc(activations, labels))


def test_auroc_is_nan_for_a_finding_without_positives_and_rejects_bad_labels():
    activations, labels, _ = planted()
    labels = labels.assign(never=False)
    assert feature_finding_auroc(activations, labels)["never"].isna().all()
    with pytest.raises(ValueError, match="rows"):
        feature_finding_auroc(activations, labels.iloc[:10])
    with pytest.raises(ValueError, match="missing values in column"):
        feature_finding_auroc(activations, labels.assign(a=np.where(labels["a"], 1.0, np.nan)))
    with pytest.raises(ValueError, match=r"\['b'\]"):
        feature_finding_auroc(activations, labels.assign(b=labels["b"] * 2))


def test_finding_alignment_picks_the_planted_feature():
    activations, labels, _ = planted()
    table = feature_finding_auroc(activations, labels)
    findings = finding_alignment(table, labels.mean(axis=0))
    assert list(findings.columns[:4]) == ["finding", "best_feature", "auroc", "prevalence"]
    best = findings.set_index("finding")
    assert best.loc["a", "best_feature"] == 2 and best.loc["b", "best_feature"] == 7
    assert best.loc["a", "auroc"] == pytest.approx(table["a"].max())
    assert best.loc["a", "prevalence"] == pytest.approx(labels["a"].mean())
    assert best.loc["a", "runner_up_auroc"] == pytest.approx(np.sort(table["a"].to_numpy())[-2])
    with pytest.raises(ValueError, match="prevalence lacks"):
        finding_alignment(table, {"a": 0.2})


def test_finding_alignment_without_positives_has_no_best_feature():
    table = pd.DataFrame({"x": [np.nan, np.nan], "y": [0.4, 0.7]})
    result = finding_alignment(table, {"x": 0.0, "y": 0.5}).set_index("finding")
    assert result.loc["x", "best_feature"] == -1 and np.isnan(result.loc["x", "auroc"])
    assert result.loc["y", "best_feature"] == 1 and result.loc["y", "runner_up_feature"] == 0


def test_feature_alignment_purity_is_precision():
    activations, labels, dense = planted()
    table = feature_finding_auroc(activations, labels)
    features = feature_alignment(activations, labels, table).set_index("feature")
    assert 4 not in features.index  # dead features are left out
    assert features.loc[2, "aligned_finding"] == "a"
    fires = dense[:, 2] != 0
    assert features.loc[2, "purity"] == pytest.approx(labels["a"][fires].mean())
    assert features.loc[2, "fire_count"] == fires.sum()
    second = table.loc[2].drop("a").idxmax()
    assert features.loc[2, "second_finding"] == second
    with pytest.raises(ValueError, match="same features and findings"):
        feature_alignment(activations, labels[["a", "b"]], table)


def test_recovered_fraction_counts_only_common_findings():
    table = pd.DataFrame({
        "finding": list("abcde"), "auroc": [0.95, 0.90, 0.89, 0.99, np.nan],
        "prevalence": [0.10, 0.02, 0.30, 0.01, 0.05],
    })
    # Eligible (prevalence >= 2 %): a, b, c, e; recovered (AUROC >= 0.9): a, b.
    assert recovered_fraction(table) == pytest.approx(2 / 4)
    assert recovered_fraction(table, min_prevalence=0.0) == pytest.approx(3 / 5)
    assert recovered_fraction(table, threshold=0.95) == pytest.approx(1 / 4)
    assert np.isnan(recovered_fraction(table, min_prevalence=0.5))


def test_align_to_ground_truth_uses_held_out_rows(tmp_path):
    activations, labels, dense = planted(n=60)
    index = pd.DataFrame({"dicom_id": [f"img{i}" for i in range(60)], "study_id": np.arange(60),
                          "split": np.where(np.arange(60) < 30, "train", np.where(np.arange(60) < 40, "validate", "test"))})
    truth = pd.DataFrame({"dicom_id": index["dicom_id"][::-1], "a": labels["a"][::-1].astype(int),
                          "b": labels["b"][::-1], "c": labels["c"][::-1].astype(int)})
    truth.to_csv(tmp_path / "ground_truth.csv", index=False)
    held_out = ground_truth_labels(tmp_path, index.iloc[30:].reset_index(drop=True), findings=["a", "b", "c"])
    np.testing.assert_array_equal(held_out.to_numpy(), labels.iloc[30:].astype(int).to_numpy())
    with pytest.raises(FileNotFoundError, match="ground_truth.csv"):
        align_to_ground_truth(activations, index, tmp_path / "nowhere")
    with pytest.raises(ValueError, match="lacks the finding"):
        ground_truth_labels(tmp_path, index)  # the default is SynthCXR's 16 findings
    with pytest.raises(ValueError, match="no row for 1 image"):
        ground_truth_labels(tmp_path, pd.DataFrame({"dicom_id": ["img1", "elsewhere"]}), findings=["a"])


def test_finding_alignment_can_select_on_other_rows():
    reported = pd.DataFrame({"x": [0.9, 0.6, 0.7]})
    selection = pd.DataFrame({"x": [0.5, 0.8, 0.75]})
    row = finding_alignment(reported, {"x": 0.1}, selection_auroc=selection).iloc[0]
    # Feature 1 wins on the selection rows; its AUROC on the reported rows is what is shown.
    assert row["best_feature"] == 1 and row["auroc"] == pytest.approx(0.6)
    assert row["runner_up_feature"] == 2 and row["runner_up_auroc"] == pytest.approx(0.7)
    with pytest.raises(ValueError, match="features and findings"):
        finding_alignment(reported, {"x": 0.1}, selection_auroc=selection.iloc[:2])


def test_align_to_ground_truth_scores_held_out_rows_and_selects_on_train(tmp_path, monkeypatch):
    activations, labels, dense = planted(n=200, seed=3)
    split = np.where(np.arange(200) < 120, "train", np.where(np.arange(200) < 150, "validate", "test"))
    index = pd.DataFrame({"dicom_id": [f"img{i}" for i in range(200)], "study_id": np.arange(200), "split": split})
    pd.concat([index[["dicom_id"]], labels.astype(int)], axis=1).to_csv(tmp_path / "ground_truth.csv", index=False)
    held = np.flatnonzero(split != "train")
    from saerad.features import alignment

    original = alignment.ground_truth_labels
    # The planted labels are "a", "b", "c", not SynthCXR's findings.
    monkeypatch.setattr(alignment, "ground_truth_labels",
                        lambda data_dir, idx, **options: original(data_dir, idx, findings=["a", "b", "c"], **options))
    auroc, findings, features = align_to_ground_truth(activations, index, tmp_path)
    _, selected, _ = align_to_ground_truth(activations, index, tmp_path, select_splits=("train",))
    expected = feature_finding_auroc(activations[held], labels.iloc[held].reset_index(drop=True))
    pd.testing.assert_frame_equal(auroc, expected)
    assert findings.set_index("finding").loc["a", "prevalence"] == pytest.approx(labels["a"].iloc[held].mean())
    train_choice = feature_finding_auroc(activations[:120], labels.iloc[:120].reset_index(drop=True)).idxmax()
    np.testing.assert_array_equal(selected["best_feature"], train_choice.to_numpy())
    np.testing.assert_allclose(selected["auroc"], [expected.loc[f, c] for c, f in train_choice.items()])
    assert set(features["feature"]) == set(np.flatnonzero((dense[held] != 0).any(axis=0)))


def _sided_world(tmp_path, n=400, seed=0):
    """Finding "a" planted on the left or right (or both); feature 1 fires on left ones, feature 2 on right ones."""
    rng = np.random.default_rng(seed)
    side = rng.choice(["", "left", "right", "bilateral"], size=n, p=[0.6, 0.17, 0.17, 0.06])
    has_a = side != ""
    dense = np.where(rng.random((n, 6)) < 0.05, rng.random((n, 6)), 0.0)
    dense[:, 1] = np.where(np.isin(side, ["left", "bilateral"]), 1 + rng.random(n), 0.0)
    dense[:, 2] = np.where(np.isin(side, ["right", "bilateral"]), 1 + rng.random(n), 0.0)
    index = pd.DataFrame({"dicom_id": [f"img{i}" for i in range(n)], "study_id": np.arange(n),
                          "split": np.where(np.arange(n) < n // 2, "train", "test")})
    truth = pd.DataFrame({"dicom_id": index["dicom_id"], "a": has_a.astype(int), "a_laterality": side,
                          "b": (rng.random(n) < 0.3).astype(int)})
    truth.loc[~has_a, "a_laterality"] = None
    truth.to_csv(tmp_path / "ground_truth.csv", index=False)
    return sp.csr_matrix(dense), index, side


def test_labels_by_side_split_sided_findings_and_count_bilateral_on_both(tmp_path):
    _, index, side = _sided_world(tmp_path)
    sided = ground_truth_labels(tmp_path, index, findings=["a", "b"], by_side=True)
    assert list(sided.columns) == ["a (left)", "a (right)", "b"]
    np.testing.assert_array_equal(sided["a (left)"], np.isin(side, ["left", "bilateral"]).astype(int))
    np.testing.assert_array_equal(sided["a (right)"], np.isin(side, ["right", "bilateral"]).astype(int))
    plain = ground_truth_labels(tmp_path, index, findings=["a", "b"])
    np.testing.assert_array_equal(sided["b"], plain["b"])


def test_a_finding_split_by_side_is_recovered_by_a_pair_not_by_one_feature(tmp_path, monkeypatch):
    from saerad.features import alignment

    activations, index, _ = _sided_world(tmp_path)
    original = alignment.ground_truth_labels
    monkeypatch.setattr(alignment, "ground_truth_labels",
                        lambda data_dir, idx, **options: original(data_dir, idx, findings=["a"], **options))
    pairs = alignment.best_feature_pairs(activations, index, tmp_path, candidates=4, splits=("test",))
    row = pairs.set_index("finding").loc["a"]
    assert row["single_auroc"] < 0.8 and row["pair_auroc"] > 0.99
    assert set(row["pair"].split(" + ")) == {"1", "2"}
    _, by_side, _ = alignment.align_to_ground_truth(activations, index, tmp_path, splits=("test",),
                                                    select_splits=("train",), by_side=True)
    assert by_side.set_index("finding")["best_feature"].to_dict() == {"a (left)": 1, "a (right)": 2}
    assert (by_side["auroc"] > 0.99).all()
