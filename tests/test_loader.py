import gzip

import pandas as pd
import pytest

from saerad.mimic import DatasetError, load_dataset
from saerad.mimic.loader import CHEXPERT_OBSERVATIONS, read_dataset_tables


def test_fixture_goes_through_the_loader_with_every_drop_counted(mimic_fixture):
    root, expected = mimic_fixture
    dataset = load_dataset(root, progress=False)
    assert len(dataset.images) == expected["kept_images"]
    assert len(dataset.studies) == expected["kept_studies"]
    assert set(dataset.images["view_position"]) <= {"AP", "PA"}
    drops = dataset.drop_table().set_index("reason")
    for reason, (images, studies) in expected["drops"].items():
        assert (drops.loc[reason, "images"], drops.loc[reason, "studies"]) == (images, studies), reason
    assert drops["images"].sum() == len(dataset.dropped.query("level == 'image'"))
    # Every image row of the metadata is either kept or dropped exactly once.
    metadata = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", dtype={"dicom_id": str})
    accounted = set(dataset.images["dicom_id"]) | set(dataset.dropped.query("level == 'image'")["dicom_id"])
    assert accounted == set(metadata["dicom_id"])
    assert len(dataset.dropped.query("level == 'image'")) + len(dataset.images) == len(metadata)


def test_text_split_labels_and_priors(mimic_fixture):
    root, _ = mimic_fixture
    dataset = load_dataset(root, progress=False)
    studies = dataset.studies.set_index("study_id")
    assert studies.loc[50000002, "findings_source"] == "impression"
    assert studies.loc[50000001, "findings"].startswith("Small left pleural effusion.")
    assert studies.loc[50000001, "indication"] == "___F with cough // eval for pneumonia"
    assert studies.loc[50000004, "split"] == "test"
    assert studies.loc[50000001, "Pleural Effusion"] == 1.0 and pd.isna(studies.loc[50000001, "Edema"])
    assert list(dataset.studies.columns[-len(CHEXPERT_OBSERVATIONS):]) == list(CHEXPERT_OBSERVATIONS)

    priors = dataset.priors
    third = priors[priors["study_id"] == 50000003].sort_values("prior_rank")
    assert list(third["prior_study_id"]) == [50000002, 50000001]
    second = priors[priors["study_id"] == 50000002].iloc[0]
    assert second["hours_before"] == pytest.approx(50.0 + 0.5 / 3600, abs=1e-6)
    assert second["prior_report"].startswith("FINDINGS: Small left pleural effusion.")
    assert priors[priors["study_id"] == 50000004].empty


def test_tables_are_saved_and_read_back(mimic_fixture, tmp_path):
    root, _ = mimic_fixture
    dataset = load_dataset(root, progress=False)
    dataset.save(tmp_path / "out")
    tables = read_dataset_tables(tmp_path / "out")
    assert len(tables["images"]) == len(dataset.images)
    assert tables["images"]["dicom_id"].tolist() == dataset.images["dicom_id"].tolist()
    assert not list((tmp_path / "out").glob(".*tmp*")), "temporary files left behind"


def test_header_only_check_misses_truncation_but_finds_missing_files(mimic_fixture):
    root, _ = mimic_fixture
    drops = load_dataset(root, verify_images="none", progress=False).drop_table().set_index("reason")
    assert drops.loc["image file missing", "images"] == 1
    assert drops.loc["image file unreadable", "images"] == 0


@pytest.mark.parametrize("bad_root", ["", "does/not/exist"])
def test_empty_or_wrong_path_is_a_clear_error(bad_root, tmp_path):
    with pytest.raises(DatasetError, match="dataset_root"):
        load_dataset(bad_root if bad_root == "" else tmp_path / bad_root, progress=False)


def test_folder_without_tables_names_the_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="mimic-cxr-2.0.0-metadata.csv.gz"):
        load_dataset(tmp_path, progress=False)


def test_missing_column_is_named(mimic_fixture):
    root, _ = mimic_fixture
    table = pd.read_csv(root / "mimic-cxr-2.0.0-split.csv.gz").drop(columns="split")
    with gzip.open(root / "mimic-cxr-2.0.0-split.csv.gz", "wt") as handle:
        table.to_csv(handle, index=False)
    with pytest.raises(DatasetError, match=r"split.csv.gz: missing column\(s\) \['split'\]"):
        load_dataset(root, progress=False)


def test_synthcxr_goes_through_the_same_loader(tmp_path):
    from saerad.synthcxr import SynthCXRConfig, generate_world

    root = tmp_path / "synthcxr"
    generate_world(SynthCXRConfig(n_patients=40, image_size=48, seed=3, n_defects=8), root, progress=False)
    dataset = load_dataset(root, progress=False)
    defects = pd.read_csv(root / "synthcxr-defects.csv", dtype={"dicom_id": str})
    drops = dataset.drop_table().set_index("reason")
    metadata = pd.read_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", dtype={"dicom_id": str})
    frontal = metadata["ViewPosition"].isin(["AP", "PA"])
    assert drops.loc["lateral or other view (not AP/PA)", "images"] == metadata["ViewPosition"].isin(["LATERAL", "LL"]).sum()
    # Each planted defect is found under its own reason.
    assert drops.loc["view position missing", "images"] == (metadata["ViewPosition"].isna()).sum() > 0
    assert drops.loc["image file unreadable", "images"] >= 1
    assert drops.loc["image file missing", "images"] >= 1
    assert drops.loc["report file missing", "studies"] >= 1
    assert len(defects) == 8
    assert len(dataset.images) + drops["images"].sum() == len(metadata)
    assert frontal.sum() - drops.loc[[r for r in drops.index if "view" not in r], "images"].sum() == len(dataset.images)
    assert set(dataset.studies["split"]) <= {"train", "validate", "test"}
    assert dataset.studies["findings"].str.len().min() > 0
    assert set(dataset.studies["findings_source"]) <= {"findings", "impression"}
