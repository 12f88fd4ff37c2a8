"""The data stage: make (demo) or locate (paper) the dataset, load it, save tables.

The chapter ``00_data`` calls these; later stages read the tables through
:func:`saerad.mimic.loader.read_dataset_tables`.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from saerad.io import read_jsonl, write_table
from saerad.mimic.loader import LoadedDataset, load_dataset

#: Counts reported in the paper (Section 5.1) for MIMIC-CXR after its rules.
PAPER_REPORTED_IMAGES = {"train": 239_931, "test": 3_403}

GROUND_TRUTH_FILE = "synthcxr-ground-truth.csv.gz"

#: Where the data stage's images and reports come from (its ``source``): the generated demo world, a copy of
#: MIMIC-CXR-JPG, or the Indiana University (Open-i) collection.
SOURCES = ("synthcxr", "mimic", "openi")


def make_synthcxr(out_dir: str | Path, n_patients: int, image_size: int, max_studies_per_patient: int, seed: int,
                  progress: bool = False) -> tuple[Path, dict, float]:
    """Generate the SynthCXR world into ``out_dir``; return (root, summary, seconds)."""
    from saerad.synthcxr import SynthCXRConfig, generate_world

    config = SynthCXRConfig(
        n_patients=n_patients, image_size=image_size, max_studies_per_patient=max_studies_per_patient, seed=seed,
    )
    out_dir = Path(out_dir)
    if (out_dir / "synthcxr-config.json").exists():
        # A previous, possibly larger world would leave its extra files behind.
        # The marker file makes sure only a SynthCXR folder is ever removed.
        shutil.rmtree(out_dir)
    started = time.perf_counter()
    summary = generate_world(config, out_dir, progress=progress)
    return Path(out_dir), summary, time.perf_counter() - started


def describe_world(summary: dict) -> str:
    """One sentence on what :func:`make_synthcxr` wrote."""
    defects = sum(summary.get("defects", {}).values())
    return (f"{summary['n_patients']:,} patients, {summary['n_studies']:,} studies, {summary['n_images']:,} images "
            f"({summary['n_frontal']:,} frontal, {summary['n_lateral']:,} lateral), {summary['n_reports']:,} reports, "
            f"{defects} deliberately broken items")


def split_comparison(dataset: LoadedDataset) -> pd.DataFrame:
    """Our split sizes beside the paper's reported MIMIC-CXR image counts."""
    table = dataset.split_sizes()
    table["paper_reported_images"] = table["split"].map(PAPER_REPORTED_IMAGES).astype("Int64")
    return table


def findings_source_counts(dataset: LoadedDataset) -> pd.DataFrame:
    """How many kept studies took their text from findings, impression, last paragraph."""
    counts = dataset.studies["findings_source"].value_counts().rename_axis("text_source").reset_index(name="studies")
    counts["share"] = (counts["studies"] / counts["studies"].sum()).round(4)
    return counts


def kept_ground_truth(dataset_root: str | Path, images: pd.DataFrame) -> pd.DataFrame | None:
    """SynthCXR's per-image ground truth for the kept images (None for MIMIC-CXR)."""
    path = Path(dataset_root) / GROUND_TRUTH_FILE
    if not path.exists():
        return None
    truth = pd.read_csv(path, dtype={"dicom_id": str})
    return images[["dicom_id"]].merge(truth, on="dicom_id", how="left", validate="one_to_one")


def reporting_rates(dataset_root: str | Path, ground_truth: pd.DataFrame, images: pd.DataFrame) -> pd.DataFrame:
    """How often a planted finding is stated in its study's report (SynthCXR only).

    Returns, per finding: the share of kept images in which it is planted,
    the share of those whose report states it as present (definitely or
    possibly), and the share of images *without* it whose report states it.
    """
    from saerad.synthcxr import FINDINGS

    stated: dict[int, set[str]] = {}
    facts_path = Path(dataset_root) / "synthcxr-report-facts.jsonl.gz"
    for number, study in read_jsonl(facts_path, ("study_id", "sentences")):
        try:
            stated[int(study["study_id"])] = {
                fact["finding"] for sentence in study["sentences"] for fact in sentence["facts"] if fact["present"]
            }
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{facts_path}:{number}: expected study_id and sentences "
                             f"[{{text, facts: [{{finding, present, ...}}]}}] ({error!r})") from error
    study_ids = images["study_id"].to_numpy()
    rows = []
    for finding in FINDINGS:
        planted = ground_truth[finding].fillna(0).to_numpy().astype(bool)
        in_report = np.array([finding in stated.get(int(s), set()) for s in study_ids])
        rows.append({
            "finding": finding,
            "planted": planted.mean(),
            "stated_when_planted": in_report[planted].mean() if planted.any() else np.nan,
            "stated_when_absent": in_report[~planted].mean() if (~planted).any() else np.nan,
        })
    return pd.DataFrame(rows)


def example_images(images: pd.DataFrame, studies: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A seeded sample of kept images with their study's extracted text."""
    rng = np.random.default_rng(seed)
    chosen = images.iloc[np.sort(rng.choice(len(images), size=min(n, len(images)), replace=False))]
    return chosen.merge(studies[["study_id", "findings", "findings_source"]], on="study_id", how="left")


def example_captions(examples: pd.DataFrame, ground_truth: pd.DataFrame | None, width: int = 60) -> list[str]:
    """Captions for the example grid: planted findings (SynthCXR) or the start of the findings text."""
    if ground_truth is None:
        return [f"{view} · {text[:width]}…" for view, text in zip(examples["view_position"], examples["findings"])]
    from saerad.synthcxr import FINDINGS

    truth = ground_truth.set_index("dicom_id")
    captions = []
    for dicom_id, view in zip(examples["dicom_id"], examples["view_position"]):
        planted = [name.replace("_", " ") for name in FINDINGS if truth.loc[dicom_id, name] == 1]
        captions.append(f"{view} · " + (", ".join(planted) if planted else "no finding planted"))
    return captions


def elapsed_text(hours: float) -> str:
    """A time span as a reader says it: ``"11 hours"``, ``"3.5 days"``, ``"2.1 years"``."""
    if hours != hours:  # NaN
        return "unknown"
    if hours < 48:
        return f"{hours:.0f} hours"
    days = hours / 24
    return f"{days:.1f} days" if days < 365 else f"{days / 365.25:.1f} years"


def prior_report_example(priors: pd.DataFrame, study_id: int | None = None, width: int = 70) -> pd.DataFrame:
    """The earlier reports of one study, for the page: rank, how long before, and the report's first words.

    Parameters
    ----------
    priors
        ``priors.csv`` of the loader (``study_id, prior_rank, hours_before, prior_report``).
    study_id
        The study to show; when None or without earlier reports, the first study with the most of them.
    width
        Characters of each report shown.
    """
    missing = [c for c in ("study_id", "prior_rank", "hours_before", "prior_report") if c not in priors.columns]
    if missing:
        raise ValueError(f"prior_report_example: the priors table lacks {missing}; columns are {list(priors.columns)}")
    columns = ["earlier report", "written before the study", "report (first words)"]
    if priors.empty:
        return pd.DataFrame(columns=columns)
    counts = priors.groupby("study_id", sort=False).size()
    if study_id is None or study_id not in counts.index:
        study_id = counts.idxmax()
    rows = priors[priors["study_id"] == study_id].sort_values("prior_rank")
    return pd.DataFrame({
        columns[0]: rows["prior_rank"].astype(int).to_numpy(),
        columns[1]: [elapsed_text(hours) for hours in rows["hours_before"]],
        columns[2]: [shorten(text, width) for text in rows["prior_report"]],
    })


def shorten(text: str, width: int) -> str:
    """``text`` on one line, cut at a word boundary to at most ``width`` characters (with "…" when cut)."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1].rsplit(" ", 1)[0] + " …"


def least_reported(rates: pd.DataFrame) -> tuple[str, float] | None:
    """The finding of :func:`reporting_rates` that reports state least often when it is planted, or None."""
    present = rates.dropna(subset=["stated_when_planted"])
    if present.empty:
        return None
    row = present.loc[present["stated_when_planted"].idxmin()]
    return str(row["finding"]), float(row["stated_when_planted"])


def save_stage_tables(dataset: LoadedDataset, out_dir: str | Path, ground_truth: pd.DataFrame | None) -> None:
    """Write the dataset tables later stages read (the chapter adds the tables it shows)."""
    out_dir = Path(out_dir)
    dataset.save(out_dir)
    if ground_truth is not None:
        write_table(out_dir / "ground_truth.csv", ground_truth)


__all__ = [
    "PAPER_REPORTED_IMAGES", "make_synthcxr", "split_comparison", "findings_source_counts",
    "describe_world", "kept_ground_truth", "reporting_rates", "example_images", "example_captions", "save_stage_tables", "load_dataset",
    "elapsed_text", "prior_report_example", "least_reported", "shorten",
]
