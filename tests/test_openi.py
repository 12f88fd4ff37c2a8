"""The Open-i reader: report XMLs, the MeSH mapping, projections, the split and the drop table.

The small collections here are written by the tests (the report text is ours); the tests marked as
reading the installed reports skip when ``torchxrayvision`` is not installed.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from saerad.mimic import loader as mimic
from saerad.openi import loader as openi_loader
from saerad.openi.loader import REPORT_WITHOUT_IMAGES, assign_splits, load_openi
from saerad.openi.mesh import mesh_labels, read_mapping, term_observations, unmapped_headings
from saerad.openi.reports import OpenIError, packaged_reports_available, parse_report, read_reports, split_terms

needs_package = pytest.mark.skipif(not packaged_reports_available(),
                                   reason="torchxrayvision (which ships the Open-i reports) is not installed")


def report_xml(number: int, findings: str | None, impression: str | None, major: list[str], images: list[str],
               indication: str = "Cough.") -> str:
    sections = "".join(
        f'<AbstractText Label="{label}">{text}</AbstractText>' if text is not None else f'<AbstractText Label="{label}"/>'
        for label, text in (("COMPARISON", "None."), ("INDICATION", indication), ("FINDINGS", findings),
                            ("IMPRESSION", impression)))
    mesh = "".join(f"<major>{term}</major>" for term in major)
    parents = "".join(f'<parentImage id="{image}"><figureId>F1</figureId></parentImage>' for image in images)
    return (f'<?xml version="1.0" encoding="utf-8"?><eCitation><uId id="CXR{number}"/><MedlineCitation><Article>'
            f"<Abstract>{sections}</Abstract></Article></MedlineCitation><MeSH>{mesh}</MeSH>{parents}</eCitation>")


def write_collection(root) -> dict:
    """Five reports, their images, metadata and derived views; returns what the loader must find."""
    reports = root / "ecgen-radiology"
    reports.mkdir(parents=True)
    (reports / "1.xml").write_text(report_xml(1, "Heart size is normal. The lungs are clear.", "No acute disease.",
                                              ["normal"], ["CXR1_IM-0001-1001", "CXR1_IM-0001-2001"]))
    (reports / "2.xml").write_text(report_xml(2, None, "Mild cardiomegaly.", ["Cardiomegaly/mild"],
                                              ["CXR2_IM-0002-1001", "CXR2_IM-0002-2001"]))
    (reports / "3.xml").write_text(report_xml(3, None, None, ["No Indexing"], ["CXR3_IM-0003-1001"]))
    (reports / "4.xml").write_text(report_xml(4, "Small right effusion.", None, ["Pleural Effusion/right/small"], []))
    (reports / "5.xml").write_text(report_xml(5, "Left basilar opacity.", "Atelectasis.",
                                              ["Opacity/lung/base/left", "Pulmonary Atelectasis/base/left"],
                                              ["CXR5_IM-0005-1001", "CXR5_IM-0005-2001", "CXR5_IM-0005-3001"]))
    (reports / "6.xml").write_text("<eCitation><uId id='CXR6'/>")  # truncated
    metadata = pd.DataFrame({
        "imageid": ["CXR1_IM-0001-1001", "CXR1_IM-0001-2001", "CXR2_IM-0002-1001", "CXR2_IM-0002-2001",
                    "CXR3_IM-0003-1001", "CXR5_IM-0005-1001", "CXR5_IM-0005-2001", "CXR5_IM-0005-3001"],
        "View Position": ["PA", "LL", "AP", None, "PA", "PA", "PA", None],
        "Study Date": [20110328, 20110328, 20120101, 20120101, 20120202, 20130303, 20130303, 20130303],
        "Study Time": [90650, 90650, 100000, 100000, 110000, 120000, 120000, 120000],
    })
    metadata.to_csv(root / "metadata.csv.gz", index=False)
    # The derived label overrides DICOM: CXR5's second image says PA in DICOM but is a lateral.
    pd.DataFrame({"imageid": ["CXR1_IM-0001-1001", "CXR5_IM-0005-2001"], "tsne-view": ["PA", "L"]}).to_csv(
        root / "views.csv.gz", index=False)
    images = root / "png" / "sub"
    images.mkdir(parents=True)
    for name in ("CXR1_IM-0001-1001", "CXR3_IM-0003-1001"):
        Image.fromarray(np.full((8, 8), 128, np.uint8)).save(images / f"{name}.png")
    (images / "CXR5_IM-0005-1001.png").write_bytes(b"not a png")
    # CXR2_IM-0002-1001.png is missing on purpose.
    return {
        "drops": {mimic.REPORT_UNREADABLE: (0, 1), REPORT_WITHOUT_IMAGES: (0, 1), mimic.NO_VIEW: (2, 0),
                  mimic.NOT_FRONTAL: (2, 0), mimic.IMAGE_MISSING: (1, 0), mimic.IMAGE_UNREADABLE: (1, 0),
                  mimic.NO_FINDINGS: (1, 1), mimic.NOT_IN_SPLIT: (0, 0), mimic.REPORT_MISSING: (0, 0)},
        "kept_images": ["CXR1_IM-0001-1001"],
    }


def test_load_openi_counts_every_dropped_item_by_reason(tmp_path):
    expected = write_collection(tmp_path)
    dataset = load_openi(tmp_path / "png", tmp_path / "ecgen-radiology", tmp_path / "metadata.csv.gz",
                         tmp_path / "views.csv.gz", verify_images="decode")
    drops = dataset.drop_table().set_index("reason")
    for reason, counts in expected["drops"].items():
        assert (drops.loc[reason, "images"], drops.loc[reason, "studies"]) == counts, reason
    assert list(dataset.images["dicom_id"]) == expected["kept_images"]
    assert dataset.images.loc[0, "image_path"] == "sub/CXR1_IM-0001-1001.png"
    assert list(dataset.studies["study_id"]) == [1] and dataset.studies.loc[0, "findings_source"] == "findings"
    assert dataset.studies.loc[0, "No Finding"] == 1.0 and np.isnan(dataset.studies.loc[0, "Cardiomegaly"])
    assert list(dataset.images.columns) == ["dicom_id", "subject_id", "study_id", "split", "view_position",
                                            "image_path", "study_datetime"]
    assert str(dataset.images.loc[0, "study_datetime"]) == "2011-03-28 09:06:50"


def test_reports_only_mode_keeps_the_impression_fallback_and_labels(tmp_path):
    write_collection(tmp_path)
    dataset = load_openi(None, tmp_path / "ecgen-radiology", tmp_path / "metadata.csv.gz", tmp_path / "views.csv.gz")
    studies = dataset.studies.set_index("study_id")
    assert studies.loc[2, "findings_source"] == "impression" and studies.loc[2, "findings"] == "Mild cardiomegaly."
    assert studies.loc[2, "Cardiomegaly"] == 1.0
    assert studies.loc[5, "Atelectasis"] == 1.0 and studies.loc[5, "Lung Opacity"] == 1.0
    assert set(dataset.images["dicom_id"]) == {"CXR1_IM-0001-1001", "CXR2_IM-0002-1001", "CXR5_IM-0005-1001"}
    assert dataset.images.set_index("dicom_id").loc["CXR2_IM-0002-1001", "view_position"] == "AP"
    views = dataset.view_sources()
    assert int(views["images"].sum()) == 8


def test_save_writes_the_mimic_tables_and_marks_the_licence(tmp_path):
    write_collection(tmp_path)
    dataset = load_openi(tmp_path / "png", tmp_path / "ecgen-radiology", tmp_path / "metadata.csv.gz",
                         tmp_path / "views.csv.gz", verify_images="header")
    dataset.save(tmp_path / "out")
    tables = mimic.read_dataset_tables(tmp_path / "out")
    assert len(tables["images"]) == 1 and len(tables["priors"]) == 0
    record = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert record["licence"] == "CC BY-NC-ND 4.0" and record[mimic.RESTRICTED_KEY] is False
    assert mimic.reports_restriction(tmp_path / "out")[0] is False
    # The kept report is written in MIMIC-CXR's layout where report_path says, and parses back.
    from saerad.mimic.sections import extract_findings

    study = tables["studies"].iloc[0]
    text = (tmp_path / "out" / "reports" / study["report_path"]).read_text()
    assert record["reports_root"] == str(tmp_path / "out" / "reports")
    assert extract_findings(text) == ("Heart size is normal. The lungs are clear.", "findings")


def test_assign_splits_is_seeded_patient_level_and_proportional():
    ids = list(range(1000, 3000))
    first, again, other = assign_splits(ids, 0), assign_splits(list(reversed(ids)), 0), assign_splits(ids, 1)
    assert first == again and first != other
    counts = pd.Series(first).value_counts()
    assert (counts["train"], counts["validate"], counts["test"]) == (1400, 200, 400)
    with pytest.raises(ValueError, match="summing to 1"):
        assign_splits(ids, 0, (0.5, 0.5, 0.5))


def test_parse_report_and_unreadable_files(tmp_path):
    row = parse_report(report_xml(7, "Clear lungs.", None, ["normal"], ["CXR7_IM-1-1001"]).encode())
    assert (row["report_id"], row["study_id"], row["findings"], row["impression"]) == ("CXR7", 7, "Clear lungs.", None)
    assert split_terms(row["image_ids"]) == ["CXR7_IM-1-1001"]
    with pytest.raises(ValueError, match="expected <uId"):
        parse_report(b"<eCitation><uId id='X7'/></eCitation>", "7.xml")
    write_collection(tmp_path)
    table = read_reports(tmp_path / "ecgen-radiology")
    assert table.set_index("source_file").loc["6.xml", "problem"].startswith("6.xml: not well-formed XML")
    with pytest.raises(OpenIError, match="no .xml report files"):
        read_reports(tmp_path / "png")


def test_missing_package_names_the_install_command(monkeypatch):
    import importlib.util

    from saerad.openi import reports

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(OpenIError, match="pip install --no-deps torchxrayvision==1.5.7"):
        reports.package_data_dir()


@pytest.mark.parametrize("term,observations", [
    ("Cardiac Shadow/enlarged/mild", ("Cardiomegaly",)),
    ("Cardiac Shadow/borderline", ()),
    ("Pulmonary Congestion/bilateral", ("Edema", "Lung Opacity")),
    ("Calcified Granuloma/lung/base/right", ()),
    ("Fractures, Bone/ribs/left/healed", ("Fracture",)),
    ("Cicatrix/pleura/apex", ("Pleural Other",)),
    ("Cicatrix/lung/apex", ("Lung Opacity",)),
    ("Mass/breast/left", ()),
    ("Hydropneumothorax", ("Pleural Effusion", "Pneumothorax")),
    ("Unheard Of Heading/lung", ()),
])
def test_mesh_terms_map_by_heading_and_qualifier(term, observations):
    assert term_observations(term) == observations


def test_mesh_labels_leave_unindexed_reports_out():
    assert mesh_labels(["No Indexing"]) is None and mesh_labels([]) is None
    labels = mesh_labels(["normal"])
    assert labels["No Finding"] == 1.0 and np.isnan(labels["Cardiomegaly"])


def test_mapping_file_is_checked(tmp_path):
    assert len(read_mapping()) > 100
    bad = tmp_path / "mapping.csv"
    bad.write_text("heading,qualifier,observations,note\nopacity,,Lung Opacities,typo\n")
    with pytest.raises(ValueError, match="'Lung Opacities'] are not CheXpert observations"):
        read_mapping(bad)
    bad.write_text("heading,qualifier,observations,note\nOpacity,,Lung Opacity,\n")
    with pytest.raises(ValueError, match="must be normalised"):
        read_mapping(bad)


@needs_package
def test_every_heading_of_the_installed_reports_is_in_the_mapping():
    reports = read_reports()
    assert len(reports) == 3955 and reports["problem"].isna().all()
    assert unmapped_headings(split_terms(terms) for terms in reports["mesh_major"]) == []


@needs_package
def test_installed_reports_load_with_the_paper_rules():
    dataset = load_openi()
    drops = dataset.drop_table().set_index("reason")
    assert drops.loc[REPORT_WITHOUT_IMAGES, "studies"] == 104
    assert drops.loc[mimic.NOT_IN_SPLIT].sum() == 0
    assert set(dataset.images["view_position"]) <= {"AP", "PA"}
    assert len(dataset.studies) + int(drops["studies"].sum()) <= 3955
    shares = dataset.split_sizes().set_index("split")["patients"] / len(dataset.studies)
    assert abs(shares["train"] - 0.7) < 0.03 and abs(shares["test"] - 0.2) < 0.03


def test_image_views_prefer_the_derived_label(tmp_path):
    write_collection(tmp_path)
    listed = pd.DataFrame({"dicom_id": ["CXR5_IM-0005-2001", "CXR2_IM-0002-2001", "CXR2_IM-0002-1001"],
                           "study_id": [5, 2, 2]})
    views = openi_loader.image_views(listed, tmp_path / "metadata.csv.gz", tmp_path / "views.csv.gz")
    assert list(views["view"].fillna("unknown")) == ["LATERAL", "unknown", "AP"]
    assert list(views["view_source"]) == [openi_loader.VIEW_FROM_PIXELS, openi_loader.VIEW_UNKNOWN,
                                          openi_loader.VIEW_FROM_DICOM]
