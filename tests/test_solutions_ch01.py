"""The encode chapter's worked solutions and the helpers its page uses."""

import json

import numpy as np
import pandas as pd

from saerad.encode import tokens as token_store
from saerad.book.solutions import registry
from saerad.synthcxr import FINDINGS


def _encode_stage(root, n=600, dim=24, seed=0):
    """Tokens in which each finding is a direction, with a rare finding harder to place."""
    rng = np.random.default_rng(seed)
    prevalence = np.linspace(0.04, 0.4, len(FINDINGS))
    labels = (rng.random((n, len(FINDINGS))) < prevalence).astype(int)
    directions = rng.normal(size=(len(FINDINGS), dim))
    tokens = (rng.normal(size=(n, dim)) + 1.5 * labels @ directions).astype(np.float32)
    ids = [f"d{i}" for i in range(n)]
    split = np.where(np.arange(n) < int(0.7 * n), "train", "test")
    (root / "data").mkdir(parents=True)
    (root / "encode").mkdir()
    pd.DataFrame(labels, columns=list(FINDINGS)).assign(dicom_id=ids).to_csv(root / "data" / "ground_truth.csv",
                                                                              index=False)
    pd.DataFrame({"row": range(n), "dicom_id": ids, "subject_id": range(n), "study_id": range(n), "split": split,
                  "encoded": True}).to_csv(root / "encode" / "tokens_index.csv", index=False)
    np.save(root / "encode" / "class_tokens.npy", tokens)
    (root / "encode" / "scale.json").write_text(json.dumps({"scale": 1.0}))
    (root / "encode" / "stage.json").write_text(json.dumps({"stage": "encode", "parameters": {"seed": 0}}))


def test_fewer_training_images_solution_compares_probes(tmp_path):
    _encode_stage(tmp_path)
    entry = registry()["01.1"]
    values = entry.compute(tmp_path, dict(entry.parameters))
    assert set(values) == set(entry.keys)
    assert values["training_images_full"] == 420 and values["training_images_subsample"] == 42
    assert values["median_full"] > 0.9
    assert values["median_subsample"] <= values["median_full"] + 0.01  # a tenth of the data does not help
    table = pd.DataFrame(values["table"])
    assert len(table) == 6 and table["finding"].iloc[0] == values["largest_drop_finding"]
    assert -1 <= values["prevalence_correlation"] <= 1 and values["pattern"]


def test_bfloat16_solution_is_registered_with_its_keys():
    entry = registry()["01.2"]
    assert entry.parameters == {"encode.dtype": "bfloat16"} and set(entry.reads) == {"data", "encode"}
    assert {"relative_difference_median", "findings_changed_third_decimal"} <= set(entry.keys)


def test_encoder_table_and_finding_groups():
    table = token_store.encoder_table({"checkpoint": "models/x", "input size": "{'height': 128, 'width': 96}",
                                       "parameters": "1,234"})
    assert table.set_index("property").loc["input size", "value"] == "128 × 96 pixels"
    assert table.set_index("property").loc["parameters", "value"] == "1,234"
    groups = token_store.finding_groups(list(FINDINGS))
    assert "pacemaker" in groups["devices"] and "cardiomegaly" in groups["pathologies"]
    assert sorted(groups["devices"] + groups["pathologies"]) == sorted(FINDINGS)
    assert token_store.finding_groups(["Edema", "Support Devices"]) == {"pathologies": ["Edema"],
                                                                         "devices": ["Support Devices"]}


def test_projection_panels_fit_and_say_when_empty():
    import matplotlib

    matplotlib.use("Agg")
    from saerad.plots import TEXT_WIDTH_INCHES, projection_panels

    coordinates = np.random.default_rng(0).normal(size=(50, 2))
    labels = pd.DataFrame({name: np.arange(50) % (i + 2) == 0 for i, name in enumerate(FINDINGS[:6])})
    figure = projection_panels(coordinates, labels)
    assert figure.get_size_inches()[0] <= TEXT_WIDTH_INCHES
    assert min(axis.title.get_fontsize() for axis in figure.axes if axis.get_title()) >= 9
    empty = projection_panels(coordinates, labels.iloc[:, :0])
    assert "no finding" in empty.axes[0].texts[0].get_text()
