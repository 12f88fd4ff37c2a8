"""The features chapter's encoder comparison (saerad.features.encoder_arms) on a tiny planted world."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from saerad.features import encoder_arms


def _world(tmp_path, n=200, seed=0):
    rng = np.random.default_rng(seed)
    effusion = rng.integers(0, 2, n)
    side = np.where(rng.random(n) < 0.5, "left", "right")
    truth = pd.DataFrame({
        "dicom_id": [f"d{i}" for i in range(n)], "view_position": np.where(rng.random(n) < 0.3, "AP", "PA"),
        "sex": np.where(rng.random(n) < 0.5, "F", "M"), "rotation_deg": rng.normal(0, 5, n),
        "pleural_effusion": effusion, "pleural_effusion_laterality": np.where(effusion == 1, side, ""),
    })
    from saerad.synthcxr import FINDINGS
    for finding in FINDINGS:
        if finding not in truth:
            truth[finding] = 0
    truth.to_csv(tmp_path / "ground_truth.csv", index=False)
    index = pd.DataFrame({"dicom_id": truth["dicom_id"], "study_id": np.arange(n),
                          "split": np.where(np.arange(n) < n // 2, "train", "test")})
    return truth, index


def test_nuisance_labels_one_hot_levels_and_quarters(tmp_path):
    truth, index = _world(tmp_path)
    labels = encoder_arms.nuisance_labels(tmp_path, index)
    assert {"view_position: AP", "view_position: PA", "sex: F", "rotation_deg: top quarter",
            "rotation_deg: bottom quarter"} <= set(labels.columns)
    assert labels["view_position: AP"].tolist() == (truth["view_position"] == "AP").astype(int).tolist()
    assert labels["rotation_deg: top quarter"].mean() == pytest.approx(0.25, abs=0.01)


def test_largest_features_reading_tells_finding_from_nuisance(tmp_path):
    truth, index = _world(tmp_path)
    rng = np.random.default_rng(1)
    n = len(truth)
    finding_feature = (truth["pleural_effusion"] * (1 + rng.random(n))).to_numpy()
    view_feature = ((truth["view_position"] == "AP") * (1 + rng.random(n))).to_numpy()
    noise_feature = rng.random(n) * (rng.random(n) < 0.9)
    activations = sp.csr_matrix(np.c_[finding_feature, view_feature, noise_feature])
    table = encoder_arms.largest_features_reading(activations, index, tmp_path, n=3).set_index("feature")
    assert table.loc[0, "tracks"] == "finding" and table.loc[0, "best_finding"].startswith("pleural_effusion")
    assert table.loc[1, "tracks"] == "nuisance" and table.loc[1, "best_nuisance"] == "view_position: AP"
    assert table.loc[2, "tracks"] == "neither"
    assert list(table.index) == [2, 0, 1]  # most frequent first: noise ~90 %, effusion ~50 %, AP view ~30 %


def test_recovery_by_encoder_side_by_side():
    a = pd.DataFrame({"finding": ["x", "y", "rare"], "best_feature": [1, 2, 3], "auroc": [0.95, 0.6, 0.99],
                      "prevalence": [0.2, 0.1, 0.01]})
    b = a.assign(auroc=[0.99, 0.97, 0.99])
    per_finding, summary = encoder_arms.recovery_by_encoder({"label-free": a, "supervised": b})
    assert list(per_finding.columns) == ["finding", "prevalence", "label-free", "supervised"]
    assert list(per_finding["finding"]) == ["x", "y"]  # the rare finding is left out
    assert summary.set_index("encoder")["recovered"].to_dict() == {"label-free": 1, "supervised": 2}


def test_encoder_summary_and_reading_follow_the_numbers():
    activations = {"label-free": sp.csr_matrix(np.array([[1.0, 0, 0], [0, 2.0, 0]])),
                   "supervised": sp.csr_matrix(np.array([[1.0, 1.0, 1.0], [0, 0, 0]]))}
    table = pd.DataFrame({"finding": ["x", "y"], "best_feature": [0, 1], "auroc": [0.95, 0.6], "prevalence": [0.2, 0.2]})
    findings = {"label-free": table, "supervised": table.assign(auroc=[0.95, 0.95])}
    scores = {"label-free": pd.DataFrame({"auroc": [0.6, 0.8]}), "supervised": pd.DataFrame({"auroc": [0.9]})}
    largest = {"label-free": pd.DataFrame({"tracks": ["finding", "nuisance", "nuisance"]}),
               "supervised": pd.DataFrame({"tracks": ["finding", "finding", "neither"]})}
    summary, recovery = encoder_arms.encoder_summary(activations, findings, findings, scores, largest)
    by = summary.set_index("encoder")
    assert by.loc["label-free", "l0"] == 1.0 and by.loc["supervised", "l0"] == 1.5
    assert by.loc["label-free", "live_features"] == 2 and by.loc["supervised", "live_features"] == 3
    assert by.loc["label-free", "recovered_fraction"] == 0.5 and by.loc["supervised", "recovered_fraction"] == 1.0
    assert by.loc["label-free", "largest_tracking_nuisance"] == 2
    assert set(recovery["judged"]) == {"finding", "finding and side"}
    reading = encoder_arms.encoder_reading(summary, largest)
    assert "50% of the common findings on the label-free SAE against 100%" in reading["summary"]
    assert "head start" in reading["summary"]
    assert "2 a nuisance factor" in reading["largest"]
    alone = encoder_arms.encoder_reading(summary.iloc[:1], {})
    assert alone["summary"].startswith("n/a")
