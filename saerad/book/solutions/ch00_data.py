"""Solutions of the data chapter's exercises (``notebooks/00_data.ipynb``).

00.1 loads the chapter's dataset again with the official parser's last-paragraph fallback switched on and
compares the drop tables; 00.2 generates a SynthCXR world of 300 patients and compares what scales with the
world against what stays about the same.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from saerad.book.solutions import solution
from saerad.book.tables import format_percent
from saerad.io import read_json
from saerad.paths import project_path


def _stage_dataset_root(artifacts_root: Path) -> Path:
    """The folder the data stage read (``dataset.json``'s ``root``), resolved against the repository."""
    record = artifacts_root / "data" / "dataset.json"
    if not record.exists():
        raise FileNotFoundError(f"{record} is missing: run the data stage first")
    return project_path(read_json(record)["root"])


def _load(root: Path, settings: Mapping[str, Any], **changes: Any):
    from saerad.data import load_dataset

    options = {"verify_images": settings["verify_images"], "use_last_paragraph": settings["use_last_paragraph"],
               "max_priors": settings["max_priors"], "workers": settings["workers"]}
    options.update(changes)
    reports_root = project_path(settings["reports_root"]) if settings.get("reports_root") else None
    return load_dataset(root, reports_root, progress=False, **options)


@solution("00.1", keys=("no_text_default", "no_text_changed", "last_paragraph_studies", "kept_studies_default",
                        "kept_studies_changed", "kept_images_default", "kept_images_changed", "changed_rows"),
          reads=("data",), data__use_last_paragraph=True)
def last_paragraph_fallback(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Load the chapter's dataset with and without the last-paragraph fallback; compare the drop tables."""
    from saerad.mimic.loader import NO_FINDINGS
    from saerad.params import stage_parameters

    settings = stage_parameters(artifacts_root, "data")
    root = _stage_dataset_root(artifacts_root)
    default = _load(root, settings, use_last_paragraph=False)
    changed = _load(root, settings, use_last_paragraph=parameters["data.use_last_paragraph"])
    before = default.drop_table().set_index("reason")
    after = changed.drop_table().set_index("reason")
    moved = [reason for reason in before.index
             if (before.loc[reason, ["images", "studies"]] != after.loc[reason, ["images", "studies"]]).any()]
    return {
        "no_text_default": int(before.loc[NO_FINDINGS, "studies"]),
        "no_text_changed": int(after.loc[NO_FINDINGS, "studies"]),
        "last_paragraph_studies": int((changed.studies["findings_source"] == "last_paragraph").sum()),
        "kept_studies_default": len(default.studies),
        "kept_studies_changed": len(changed.studies),
        "kept_images_default": len(default.images),
        "kept_images_changed": len(changed.images),
        "changed_rows": "; ".join(f"“{reason}”" for reason in moved) or "none",
    }


def world_numbers(root: Path, dataset) -> dict[str, float]:
    """Counts and shares of one SynthCXR (or MIMIC-CXR) folder and what the loader kept of it."""
    from saerad.mimic.loader import FRONTAL_VIEWS, METADATA_FILE

    metadata = pd.read_csv(root / METADATA_FILE)
    view = metadata["ViewPosition"].fillna("").astype(str).str.strip().str.upper()
    studies = dataset.studies
    numbers = {
        "patients on disk": float(metadata["subject_id"].nunique()),
        "images on disk": float(len(metadata)),
        "kept frontal images": float(len(dataset.images)),
        "kept studies": float(len(studies)),
        "share of images that are lateral (or another non-frontal view)": float(
            ((view != "") & ~view.isin(FRONTAL_VIEWS)).mean()),
        "share of kept images in the test split": float((dataset.images["split"] == "test").mean()),
        "share of kept studies with a findings section": float((studies["findings_source"] == "findings").mean()),
        "share of kept studies with an earlier report": float(studies["study_id"].isin(dataset.priors["study_id"]).mean()),
    }
    truth_path = root / "synthcxr-ground-truth.csv.gz"
    if truth_path.exists():
        truth = pd.read_csv(truth_path, dtype={"dicom_id": str})
        kept = truth[truth["dicom_id"].isin(dataset.images["dicom_id"].astype(str))]
        if "cardiomegaly" in kept.columns:
            numbers["share of kept images with cardiomegaly planted"] = float(kept["cardiomegaly"].fillna(0).mean())
    return numbers


@solution("00.2", keys=("table", "patients_default", "patients_changed", "count_ratio_median",
                        "largest_share_change", "largest_share_change_quantity"),
          reads=("data",), data__n_patients=300)
def smaller_world(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Generate a SynthCXR world of ``data.n_patients`` patients and set its numbers beside the chapter's."""
    from saerad.data import make_synthcxr
    from saerad.params import stage_parameters

    settings = stage_parameters(artifacts_root, "data")
    if settings["source"] != "synthcxr":
        raise ValueError("exercise 00.2 generates a SynthCXR world; the data stage read MIMIC-CXR "
                         f"(source={settings['source']!r})")
    root = _stage_dataset_root(artifacts_root)
    ours = world_numbers(root, _load(root, settings))
    with tempfile.TemporaryDirectory(prefix="saerad-00.2-") as scratch:
        small_root, _, _ = make_synthcxr(Path(scratch) / "synthcxr", parameters["data.n_patients"],
                                         settings["image_size"], settings["max_studies_per_patient"], settings["seed"])
        theirs = world_numbers(small_root, _load(small_root, settings))

    rows, ratios, changes = [], [], {}
    for quantity, value in ours.items():
        other = theirs.get(quantity, float("nan"))
        if quantity.startswith("share"):
            changes[quantity] = abs(other - value) * 100
            rows.append({"quantity": quantity, "chapter's world": format_percent(value),
                         "smaller world": format_percent(other), "change": f"{(other - value) * 100:+.1f} points"})
        else:
            ratio = other / value if value else float("nan")
            ratios.append(ratio)
            rows.append({"quantity": quantity, "chapter's world": f"{value:,.0f}", "smaller world": f"{other:,.0f}",
                         "change": f"× {ratio:.2f}"})
    largest = max(changes, key=changes.get)
    return {
        "table": rows,
        "patients_default": int(ours["patients on disk"]),
        "patients_changed": int(theirs["patients on disk"]),
        "count_ratio_median": f"{np.nanmedian(ratios):.2f}",
        "largest_share_change": f"{changes[largest]:.1f}",
        "largest_share_change_quantity": largest.removeprefix("share of "),
    }
