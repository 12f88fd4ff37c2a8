"""The features chapter's worked solutions, run on a small hand-made world of activations and reports."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from saerad.book.solutions import registry
from saerad.book.solutions import ch03_features as solutions

PACEMAKER = "Left-sided pacemaker with leads in the right atrium and ventricle."
CARDIOMEGALY = "The heart is moderately enlarged."
NORMAL = "No acute cardiopulmonary process."


def _write_world(root: Path, n_studies: int = 90, seed: int = 0) -> None:
    """Feature 0 fires on pacemaker studies, 1 on enlarged hearts, 2 at random, 3 never."""
    rng = np.random.default_rng(seed)
    study_ids = np.arange(1000, 1000 + n_studies)
    splits = np.where(np.arange(n_studies) < 0.6 * n_studies, "train",
                      np.where(np.arange(n_studies) < 0.8 * n_studies, "validate", "test"))
    pacemaker = rng.random(n_studies) < 0.3
    enlarged = rng.random(n_studies) < 0.3
    findings = [" ".join(text for text, present in ((PACEMAKER, p), (CARDIOMEGALY, e)) if present) or NORMAL
                for p, e in zip(pacemaker, enlarged)]
    (root / "data").mkdir(parents=True)
    pd.DataFrame({"study_id": study_ids, "split": splits, "findings": findings}).to_csv(
        root / "data" / "studies.csv", index=False)
    dense = np.zeros((n_studies, 4), dtype=np.float32)
    dense[:, 0] = pacemaker * rng.uniform(1, 3, n_studies)
    dense[:, 1] = enlarged * rng.uniform(1, 3, n_studies)
    dense[:, 2] = (rng.random(n_studies) < 0.4) * rng.uniform(0.5, 1, n_studies)
    features = root / "features"
    features.mkdir()
    sp.save_npz(features / "activations.npz", sp.csr_matrix(dense))
    pd.DataFrame({"row": np.arange(n_studies), "token_row": np.arange(n_studies),
                  "dicom_id": [f"d{study}" for study in study_ids], "subject_id": study_ids,
                  "study_id": study_ids, "split": splits}).to_csv(features / "activations_index.csv", index=False)
    fire_count = (dense > 0).sum(axis=0)
    pd.DataFrame({"feature": np.arange(4), "fire_count": fire_count, "density": fire_count / n_studies,
                  "dead": fire_count == 0}).to_csv(features / "feature_stats.csv", index=False)


def test_every_solution_of_the_chapter_is_registered_with_its_keys():
    entries = {name: entry for name, entry in registry().items() if name.startswith("03.")}
    assert sorted(entries) == ["03.1", "03.2", "03.3"]
    assert entries["03.1"].parameters == {"features.min_lift": 1.0}
    assert entries["03.2"].parameters == {"features.top_k": 3}
    assert entries["03.3"].parameters == {"sae.expansion_factor": 4}
    for entry in entries.values():
        assert "table" in entry.keys and "features" in entry.reads


def test_lower_lift_describes_at_least_as_many_features_and_returns_exactly_its_keys(tmp_path):
    _write_world(tmp_path)
    entry = registry()["03.1"]
    values = entry.compute(tmp_path, dict(entry.parameters))
    assert set(values) == set(entry.keys)
    assert values["live"] == 3  # feature 3 never fires
    # With the default lift the two planted features are described; a lower lift can only admit more statements.
    assert values["described_default"] >= 2
    assert values["described_changed"] >= values["described_default"]
    assert values["auroc_default"] > 0.8  # the descriptions name the planted findings
    assert [row["measure"] for row in values["table"]][0] == "described features"
    # The stored record sorts keys; sorted, the columns still read measure, the chapter's setting, the changed one.
    assert sorted(values["table"][0]) == ["measure", "the chapter: min_lift = 2", "with min_lift = 1"]


def test_fewer_reports_changes_what_a_description_rests_on(tmp_path):
    _write_world(tmp_path)
    entry = registry()["03.2"]
    values = entry.compute(tmp_path, dict(entry.parameters))
    assert set(values) == set(entry.keys)
    assert values["top_k_default"] == 10
    assert values["specificity"] in {"less specific", "more specific", "as specific"}


def test_describe_and_score_rejects_an_unknown_setting(tmp_path):
    _write_world(tmp_path)
    world = solutions.load_feature_world(tmp_path)
    with pytest.raises(ValueError, match="top_kk"):
        solutions.describe_and_score(world, top_kk=3)


def test_load_feature_world_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="feature_stats.csv"):
        solutions.load_feature_world(tmp_path)


@pytest.mark.parametrize("new, old, word", [(0.8, 0.7, "higher"), (0.6, 0.7, "lower"), (0.702, 0.7, "unchanged"),
                                            (float("nan"), 0.7, "unchanged")])
def test_direction_words(new, old, word):
    assert solutions.direction(new, old, "higher", "lower") == word
