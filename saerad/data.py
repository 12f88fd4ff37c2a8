"""The data stage: make (demo) or locate (paper) the dataset, load it, save tables.

The chapter ``00_data`` calls these; later stages read the tables through
:func:`saerad.mimic.loader.read_dataset_tables`.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from saerad.io import write_table
from saerad.mimic.loader import LoadedDataset, load_dataset

#: Counts reported in the paper (Section 5.1) for MIMIC-CXR after its rules.
PAPER_REPORTED_IMAGES = {"train": 239_931, "test": 3_403}

GROUND_TRUTH_FILE = "synthcxr-ground-truth.csv.gz"


def make_synthcxr(out_dir: str | Path, n_patients: int, image_size: int, max_studies_per_patient: int, seed: int,
                  progress: bool = False) -> tuple[Path, dict, float]:
    """Generate the SynthCXR world into ``out_dir``; return (root, summary, seconds)."""
    from saerad.synthcxr import SynthCXRConfig, generate_world

    config = SynthCXRConfig(
        n_patients=n_patients, image_size=image_size, max_studies_per_patient=max_studies_per_patient, seed=seed,
    )
    started = time.perf_counter()
    summary = generate_world(config, out_dir, progress=progress)
    return Path(out_dir), summary, time.perf_counter() - started


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


def example_images(images: pd.DataFrame, studies: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """A seeded sample of kept images with their study's extracted text."""
    rng = np.random.default_rng(seed)
    chosen = images.iloc[np.sort(rng.choice(len(images), size=min(n, len(images)), replace=False))]
    return chosen.merge(studies[["study_id", "findings", "findings_source"]], on="study_id", how="left")


def save_stage_tables(dataset: LoadedDataset, out_dir: str | Path, ground_truth: pd.DataFrame | None) -> None:
    """Write everything later stages and the book need."""
    out_dir = Path(out_dir)
    dataset.save(out_dir)
    write_table(out_dir / "split_comparison.csv", split_comparison(dataset))
    write_table(out_dir / "findings_source.csv", findings_source_counts(dataset))
    if ground_truth is not None:
        write_table(out_dir / "ground_truth.csv", ground_truth)


__all__ = [
    "PAPER_REPORTED_IMAGES", "make_synthcxr", "split_comparison", "findings_source_counts",
    "kept_ground_truth", "example_images", "save_stage_tables", "load_dataset",
]
