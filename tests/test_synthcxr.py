"""Tests for the SynthCXR synthetic world (tiny worlds, fast)."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from saerad.synthcxr import (
    CHEXPERT_OBSERVATIONS,
    FINDING_ATTRIBUTES,
    FINDINGS,
    NUISANCE_COLUMNS,
    SynthCXRConfig,
    chexpert_labels_from_facts,
    generate_world,
    render_frontal,
    render_lateral,
    sample_studies,
)
from saerad.synthcxr.catalogue import DEVICES, FACT_SUBJECTS, PATHOLOGY_FINDINGS
from saerad.synthcxr.patients import _draw_attributes, normal_state

TINY = dict(n_patients=12, image_size=64)
DICOM_RE = re.compile(r"^[0-9a-f]{8}(-[0-9a-f]{8}){4}$")
METADATA_COLUMNS = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
                    "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning"]


def _read_csv_gz(path: Path) -> tuple[list[str], list[dict]]:
    with gzip.open(path, "rt", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames), list(reader)


def _tree_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("synthcxr") / "world"
    summary = generate_world(SynthCXRConfig(**TINY), out, progress=False, workers=2)
    return out, summary


def test_generation_is_byte_identical_and_independent_of_workers(tiny_world, tmp_path):
    out, _ = tiny_world
    again = tmp_path / "again"
    generate_world(SynthCXRConfig(**TINY), again, progress=False, workers=1)
    first, second = _tree_hashes(out), _tree_hashes(again)
    assert list(first) == list(second)
    assert first == second


def test_first_patients_do_not_depend_on_world_size():
    def world(n):
        return [(s.subject_id, s.study_id, s.report, tuple(im.dicom_id for im in s.images))
                for s in sample_studies(SynthCXRConfig(n_patients=n), render=False)]
    small, large = world(5), world(9)
    assert large[: len(small)] == small


def test_layout_ids_and_columns(tiny_world):
    out, summary = tiny_world
    columns, meta = _read_csv_gz(out / "mimic-cxr-2.0.0-metadata.csv.gz")
    assert columns == METADATA_COLUMNS
    assert len(meta) == summary["n_images"]
    split_cols, splits = _read_csv_gz(out / "mimic-cxr-2.0.0-split.csv.gz")
    assert split_cols == ["dicom_id", "study_id", "subject_id", "split"]
    assert {r["split"] for r in splits} <= {"train", "validate", "test"}
    chex_cols, chex = _read_csv_gz(out / "mimic-cxr-2.0.0-chexpert.csv.gz")
    assert chex_cols == ["subject_id", "study_id", *CHEXPERT_OBSERVATIONS]
    assert len(chex) == summary["n_studies"]
    for row in chex:
        assert all(row[o] in ("", "1.0", "0.0", "-1.0") for o in CHEXPERT_OBSERVATIONS)

    subject_split = {}
    for r in splits:  # a subject never straddles splits
        assert subject_split.setdefault(r["subject_id"], r["split"]) == r["split"]
    for r in meta:
        assert DICOM_RE.match(r["dicom_id"])
        assert re.fullmatch(r"1\d{7}", r["subject_id"]) and re.fullmatch(r"5\d{7}", r["study_id"])
        assert r["ViewPosition"] in ("PA", "AP", "LATERAL", "LL", "")
        assert 21000101 <= int(r["StudyDate"]) <= 22001231
        hhmmss = float(r["StudyTime"])
        assert 0 <= hhmmss < 240000 and int(hhmmss) % 100 < 60
        assert r["Rows"] == r["Columns"] == "64"
        assert r["PatientOrientationCodeSequence_CodeMeaning"] in ("Erect", "Recumbent")
        if r["ViewPosition"] in ("PA", "AP"):
            assert r["ViewCodeSequence_CodeMeaning"] == {"PA": "postero-anterior", "AP": "antero-posterior"}[r["ViewPosition"]]
        study_dir = out / "files" / f"p{r['subject_id'][:2]}" / f"p{r['subject_id']}" / f"s{r['study_id']}"
        assert study_dir.is_dir()
    gt_cols, gt = _read_csv_gz(out / "synthcxr-ground-truth.csv.gz")
    assert gt_cols[:4] == ["dicom_id", "subject_id", "study_id", "view_position"]
    assert gt_cols[4:4 + len(FINDINGS)] == list(FINDINGS)
    assert "pleural_effusion_laterality" in gt_cols and set(NUISANCE_COLUMNS) <= set(gt_cols)
    assert len(gt) == len(meta)
    config = json.loads((out / "synthcxr-config.json").read_text())
    assert config["n_patients"] == 12 and config["image_size"] == 64
    assert not list(out.rglob("*.tmp")), "atomic writes must not leave temporaries"


def test_every_listed_file_exists_except_recorded_defects(tiny_world):
    out, summary = tiny_world
    _, meta = _read_csv_gz(out / "mimic-cxr-2.0.0-metadata.csv.gz")
    _, splits = _read_csv_gz(out / "mimic-cxr-2.0.0-split.csv.gz")
    split_of = {r["dicom_id"]: r["split"] for r in splits}
    study_split = {r["study_id"]: r["split"] for r in splits}
    with open(out / "synthcxr-defects.csv", newline="") as fh:
        defects = list(csv.DictReader(fh))
    assert len(defects) == 8
    assert Counter(d["kind"] for d in defects) == Counter(
        {"corrupt_jpeg": 2, "missing_image": 2, "missing_report": 2, "unknown_view": 2})
    by_dicom = {d["dicom_id"]: d["kind"] for d in defects if d["dicom_id"]}
    missing_reports = {d["study_id"] for d in defects if d["kind"] == "missing_report"}
    for d in defects:
        assert (split_of.get(d["dicom_id"]) or study_split[d["study_id"]]) == "train"
    for r in meta:
        sub, study = r["subject_id"], r["study_id"]
        jpg = out / "files" / f"p{sub[:2]}" / f"p{sub}" / f"s{study}" / f"{r['dicom_id']}.jpg"
        report = out / "files" / f"p{sub[:2]}" / f"p{sub}" / f"s{study}.txt"
        kind = by_dicom.get(r["dicom_id"])
        assert jpg.exists() == (kind != "missing_image")
        assert report.exists() == (study not in missing_reports)
        assert (r["ViewPosition"] == "") == (kind == "unknown_view")
        if kind == "corrupt_jpeg":
            with pytest.raises(OSError):
                Image.open(jpg).load()
        elif jpg.exists():
            with Image.open(jpg) as im:
                assert im.mode == "L" and im.size == (64, 64)
        gt_dir = out / "ground_truth" / "files" / f"p{sub[:2]}" / f"p{sub}" / f"s{study}"
        state = json.loads((gt_dir / f"{r['dicom_id']}.json").read_text())
        assert set(state["findings"]) == set(FINDINGS)
        assert (gt_dir / f"{r['dicom_id']}_masks.npz").exists() == (state["view_position"] in ("PA", "AP"))


def test_masks_match_planted_findings(tiny_world):
    out, _ = tiny_world
    n_checked = 0
    for js in sorted((out / "ground_truth").rglob("*.json")):
        state = json.loads(js.read_text())
        if state["view_position"] not in ("PA", "AP"):
            continue
        with np.load(js.with_name(js.stem + "_masks.npz")) as masks:
            present = {n for n in FINDINGS if state["findings"][n]["present"]}
            assert set(masks.files) == present
            for name in masks.files:
                assert masks[name].dtype == bool and masks[name].shape == (64, 64) and masks[name].any()
        n_checked += 1
    assert n_checked > 10


@pytest.mark.parametrize("side", ["left", "right"])
def test_effusion_and_nodule_masks_lie_where_stated(side):
    size = 96
    state = normal_state()
    eff = _draw_attributes("pleural_effusion", np.random.default_rng(1))
    eff.update(laterality=side, size="moderate")
    nod = _draw_attributes("lung_nodule", np.random.default_rng(2))
    nod.update(laterality=side, zone="upper")
    state["findings"].update(pleural_effusion=eff, lung_nodule=nod)
    image, masks = render_frontal(state, np.random.default_rng(0), size)
    assert image.dtype == np.uint8 and image.shape == (size, size)
    assert set(masks) == {"pleural_effusion", "lung_nodule"}
    rows, cols = np.nonzero(masks["pleural_effusion"])
    assert rows.min() > size / 2, "effusion must be basal"
    # Patient's right is displayed on the image left.
    assert (cols.max() < size / 2) if side == "right" else (cols.min() > size / 2)
    rows, cols = np.nonzero(masks["lung_nodule"])
    assert rows.mean() < size / 2
    assert (cols.mean() < size / 2) if side == "right" else (cols.mean() > size / 2)
    # The lesion must actually change the pixels under its mask.
    clean, _ = render_frontal(normal_state(), np.random.default_rng(0), size)
    assert image[masks["lung_nodule"]].mean() > clean[masks["lung_nodule"]].mean() + 20
    assert image[masks["pleural_effusion"]].mean() > clean[masks["pleural_effusion"]].mean() + 20


def test_every_finding_renders_a_visible_change():
    size = 64
    clean, _ = render_frontal(normal_state(), np.random.default_rng(0), size)
    for i, name in enumerate(FINDINGS):
        state = normal_state()
        state["findings"][name] = _draw_attributes(name, np.random.default_rng(i))
        image, masks = render_frontal(state, np.random.default_rng(0), size)
        assert set(masks) == {name}
        diff = np.abs(image.astype(int) - clean.astype(int))[masks[name]]
        assert diff.mean() > 8, name
    lateral = render_lateral(normal_state(), np.random.default_rng(0), size)
    assert lateral.dtype == np.uint8 and lateral.shape == (size, size)


def test_chexpert_labels_follow_sentence_facts(tiny_world):
    out, _ = tiny_world
    _, chex = _read_csv_gz(out / "mimic-cxr-2.0.0-chexpert.csv.gz")
    labels = {r["study_id"]: r for r in chex}
    with gzip.open(out / "synthcxr-report-facts.jsonl.gz", "rt") as fh:
        records = [json.loads(line) for line in fh]
    assert len(records) == len(labels)
    for rec in records:
        facts = [f for s in rec["sentences"] for f in s["facts"]]
        expected = chexpert_labels_from_facts(facts)
        row = labels[str(rec["study_id"])]
        for obs in CHEXPERT_OBSERVATIONS:
            value = expected[obs]
            assert row[obs] == ("" if math.isnan(value) else f"{value:.1f}"), (rec["study_id"], obs)
        for s in rec["sentences"]:
            assert s["section"] in ("findings", "impression", "findings_and_impression", "wet_read", "other")
            for f in s["facts"]:
                assert set(f) == {"finding", "present", "certainty", "attributes", "comparison"}
                assert f["finding"] in FACT_SUBJECTS
                assert f["certainty"] in ("definite", "uncertain")
                assert f["comparison"] in (None, "new", "unchanged", "improved", "worsened")


def test_chexpert_rules():
    def fact(name, present=True, certainty="definite", **attrs):
        return {"finding": name, "present": present, "certainty": certainty, "attributes": attrs, "comparison": None}
    labels = chexpert_labels_from_facts([fact("pleural_effusion", False), fact("pacemaker")])
    assert labels["Pleural Effusion"] == 0.0 and labels["Support Devices"] == 1.0 and labels["No Finding"] == 1.0
    assert math.isnan(labels["Lung Opacity"])
    labels = chexpert_labels_from_facts([fact("consolidation", certainty="uncertain", term="pneumonia"),
                                         fact("consolidation", False), fact("edema")])
    assert labels["Pneumonia"] == -1.0 and labels["Consolidation"] == 0.0 and labels["Lung Opacity"] == 1.0
    assert math.isnan(labels["No Finding"])


def test_report_format_and_section_proportions():
    structures = Counter()
    n_reports = 0
    for study in sample_studies(SynthCXRConfig(n_patients=300), render=False):
        text = study.report
        lines = text.split("\n")
        assert lines[0].strip() in ("FINAL REPORT", "") or lines[0].startswith(" WET READ")
        assert "FINAL REPORT" in text and text.endswith("\n")
        assert all(line.startswith(" ") for line in lines[:-1] if line), text
        assert all(len(line) <= 80 for line in lines)
        has_findings = "\n FINDINGS:" in text or "\n FINDINGS AND IMPRESSION:" in text
        has_impression = re.search(r"\n (IMPRESSION|IMPRESSON):", text) is not None
        kind = study.report_structure
        assert has_findings == (kind in ("findings_impression", "findings_and_impression")), text
        assert has_impression == (kind in ("findings_impression", "impression_only")), text
        if study.study_index > 0:
            assert "COMPARISON:  None." in text or "___" in text.split("COMPARISON:")[1].split("\n")[0]
        structures[kind] += 1
        n_reports += 1
    share = {k: v / n_reports for k, v in structures.items()}
    assert share["findings_impression"] > 0.8
    assert 0.05 < share["impression_only"] < 0.12
    assert 0.01 < share["free_text"] < 0.06
    assert share.get("findings_and_impression", 0) > 0


def test_default_world_prevalences():
    frontal = Counter()
    n_frontal = 0
    n_studies = 0
    for study in sample_studies(SynthCXRConfig(), render=False):
        n_studies += 1
        for im in study.images:
            if im.view_position in ("PA", "AP"):
                n_frontal += 1
                for name in FINDINGS:
                    frontal[name] += im.state["findings"][name]["present"]
    assert 3000 <= n_studies <= 4000
    prevalence = {name: frontal[name] / n_frontal for name in FINDINGS}
    for name in FINDINGS:
        low = 0.01 if name == "pleural_thickening" else 0.03
        assert low <= prevalence[name] <= 0.30, (name, prevalence[name])
    for name in ("pleural_effusion", "cardiomegaly", "edema", "central_line"):
        assert prevalence[name] >= 0.1, name


def test_prevalence_scale_raises_the_scaled_finding():
    def prevalence(scale):
        counts, n = Counter(), 0
        for study in sample_studies(SynthCXRConfig(n_patients=400, prevalence_scale=scale), render=False):
            n += 1
            counts.update(name for name in FINDINGS if study.state["findings"][name]["present"])
        return {k: counts[k] / n for k in FINDINGS}
    base, boosted = prevalence({}), prevalence({"pneumothorax": 3.0})
    assert boosted["pneumothorax"] > 2 * base["pneumothorax"]


def test_attributes_are_complete_for_present_findings():
    for study in sample_studies(SynthCXRConfig(n_patients=60), render=False):
        for name, finding in study.state["findings"].items():
            if finding["present"]:
                assert set(FINDING_ATTRIBUTES[name]) <= set(finding), name
        assert sorted(PATHOLOGY_FINDINGS + DEVICES) == sorted(FINDINGS)


def test_a_world_without_patients_is_refused_before_anything_is_deleted(tmp_path):
    from saerad.data import make_synthcxr

    world = tmp_path / "synthcxr"
    world.mkdir()
    (world / "synthcxr-config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"n_patients must be at least 1 \(data.n_patients\), got 0"):
        make_synthcxr(world, n_patients=0, image_size=64, max_studies_per_patient=2, seed=0)
    assert (world / "synthcxr-config.json").exists()
