"""Load MIMIC-CXR-JPG (or SynthCXR, which is written in the same layout).

Layout expected under ``dataset_root`` (MIMIC-CXR-JPG 2.0.0)::

    mimic-cxr-2.0.0-metadata.csv.gz    dicom_id, subject_id, study_id, ViewPosition, StudyDate, StudyTime, ...
    mimic-cxr-2.0.0-split.csv.gz       dicom_id, study_id, subject_id, split
    mimic-cxr-2.0.0-chexpert.csv.gz    subject_id, study_id, 14 observations (1 / 0 / -1 / blank)
    files/p10/p10000032/s50414267/<dicom_id>.jpg

and under ``reports_root`` (the unzipped ``mimic-cxr-reports.zip``; by
default the same folder)::

    files/p10/p10000032/s50414267.txt

The rules are the paper's (Section 5.1): keep AP and PA images, take the
findings section with the impression as fallback, drop studies with
neither, use the official split. Nothing that is wrong with a single item
stops the load: every dropped image or study is recorded with its reason.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from saerad.io import read_json, write_json, write_table
from saerad.mimic.sections import clean_text, extract_findings, extract_indication, split_sections

METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv.gz"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv.gz"
CHEXPERT_FILE = "mimic-cxr-2.0.0-chexpert.csv.gz"

CHEXPERT_OBSERVATIONS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
    "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion",
    "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
)
FRONTAL_VIEWS = ("AP", "PA")
#: How far the loaders check each kept image (the data stage's ``verify_images``): decode it whole (catches
#: truncated files), only read its header, or only check that the file exists.
IMAGE_CHECKS = ("decode", "header", "none")

#: Written by the SynthCXR generator at the root of every world it makes: the one mark of a dataset whose
#: reports are not under a data use agreement. Any other dataset the loader reads is treated as MIMIC-CXR.
SYNTHCXR_MARKER = "synthcxr-config.json"
#: Key of ``dataset.json`` (written by :meth:`LoadedDataset.save`) that later stages read the mark from.
RESTRICTED_KEY = "restricted_text"

_REQUIRED_COLUMNS = {
    METADATA_FILE: ("dicom_id", "subject_id", "study_id", "ViewPosition", "StudyDate", "StudyTime"),
    SPLIT_FILE: ("dicom_id", "study_id", "subject_id", "split"),
    CHEXPERT_FILE: ("subject_id", "study_id"),
}

# Drop reasons, in the order a row meets them.
NO_VIEW = "view position missing"
NOT_FRONTAL = "lateral or other view (not AP/PA)"
NOT_IN_SPLIT = "not in the official split file"
IMAGE_MISSING = "image file missing"
IMAGE_UNREADABLE = "image file unreadable"
REPORT_MISSING = "report file missing"
REPORT_UNREADABLE = "report file unreadable"
NO_FINDINGS = "report has neither findings nor impression"


class DatasetError(ValueError):
    """The dataset folder as a whole is unusable (wrong path, missing table, bad columns)."""


@dataclass
class LoadedDataset:
    """What the loader keeps and what it dropped.

    Attributes
    ----------
    images
        One row per kept frontal image: ``dicom_id, subject_id, study_id,
        split, view_position, image_path`` (relative to ``root``) and
        ``study_datetime``.
    studies
        One row per kept study: ``study_id, subject_id, split,
        study_datetime, findings, findings_source, indication, report_path``
        and the 14 CheXpert labels.
    priors
        Earlier reports of the same patient for each kept study, most recent
        first: ``study_id, prior_rank, prior_study_id, hours_before,
        prior_report``.
    dropped
        One row per dropped image (``level == "image"``) or study
        (``level == "study"``) with its ``reason``.
    restricted_text
        True when the reports are under a data use agreement (MIMIC-CXR, whose
        text must not go to an online service that may keep it): every
        dataset except a SynthCXR world. Written to ``dataset.json`` so that
        the stages that call a language model can check it.
    """

    root: Path
    reports_root: Path
    images: pd.DataFrame
    studies: pd.DataFrame
    priors: pd.DataFrame
    dropped: pd.DataFrame
    options: dict = field(default_factory=dict)
    restricted_text: bool = True

    def drop_table(self) -> pd.DataFrame:
        """Counts of dropped images and studies by reason (zero rows kept)."""
        reasons = [NO_VIEW, NOT_FRONTAL, NOT_IN_SPLIT, IMAGE_MISSING, IMAGE_UNREADABLE,
                   REPORT_MISSING, REPORT_UNREADABLE, NO_FINDINGS]
        rows = []
        for reason in reasons:
            subset = self.dropped[self.dropped["reason"] == reason]
            rows.append({
                "reason": reason,
                "images": int((subset["level"] == "image").sum()),
                "studies": int((subset["level"] == "study").sum()),
            })
        return pd.DataFrame(rows)

    def split_sizes(self) -> pd.DataFrame:
        """Kept images, studies and patients per official split."""
        table = pd.DataFrame({
            "images": self.images.groupby("split").size(),
            "studies": self.studies.groupby("split").size(),
            "patients": self.studies.groupby("split")["subject_id"].nunique(),
        }).reindex(["train", "validate", "test"]).fillna(0).astype(int)
        table.index.name = "split"
        return table.reset_index()

    def label_prevalence(self) -> pd.DataFrame:
        """Share of kept studies whose report states each CheXpert observation (1 positive, -1 uncertain)."""
        rows = []
        for observation in CHEXPERT_OBSERVATIONS:
            labels = self.studies[observation]
            rows.append({
                "observation": observation,
                "positive": float((labels == 1).mean()),
                "uncertain": float((labels == -1).mean()),
                "negative": float((labels == 0).mean()),
                "not_mentioned": float(labels.isna().mean()),
            })
        return pd.DataFrame(rows)

    def save(self, out_dir: str | Path) -> None:
        """Write every table as CSV (atomically) into ``out_dir``."""
        out_dir = Path(out_dir)
        write_table(out_dir / "images.csv", self.images)
        write_table(out_dir / "studies.csv", self.studies)
        write_table(out_dir / "priors.csv", self.priors)
        write_table(out_dir / "dropped_items.csv", self.dropped)
        write_table(out_dir / "drop_table.csv", self.drop_table())
        write_table(out_dir / "split_sizes.csv", self.split_sizes())
        write_table(out_dir / "label_prevalence.csv", self.label_prevalence())
        write_json(out_dir / "dataset.json", {
            "root": str(self.root), "reports_root": str(self.reports_root), **self.options,
            "dataset": "MIMIC-CXR" if self.restricted_text else "SynthCXR", RESTRICTED_KEY: self.restricted_text,
        })


def is_synthcxr_root(root: str | Path) -> bool:
    """Whether ``root`` is a SynthCXR world (its generator's marker file is there)."""
    return (Path(root) / SYNTHCXR_MARKER).is_file()


def reports_restriction(data_dir: str | Path) -> tuple[bool, str]:
    """Whether the reports the data stage kept are restricted text, and why, from its ``dataset.json``.

    Fail-safe: without the data stage's record the reports count as restricted. A record
    written before the mark existed is judged by its dataset root, as the loader would.

    Returns
    -------
    (restricted, why)
        ``why`` names the file and what it says, for messages.
    """
    path = Path(data_dir) / "dataset.json"
    if not path.is_file():
        return True, f"{path} is missing, so where the reports come from is unknown (treated as MIMIC-CXR)"
    record = read_json(path)
    if RESTRICTED_KEY in record:
        restricted = bool(record[RESTRICTED_KEY])
        return restricted, f"{path} says {RESTRICTED_KEY}={str(restricted).lower()} ({record.get('dataset', '?')})"
    from saerad.paths import project_path  # a relative root is relative to the repository, as the chapters run

    restricted = not record.get("root") or not is_synthcxr_root(project_path(record["root"]))
    return restricted, (f"{path}: dataset root {record.get('root')!r} "
                        + ("is not a SynthCXR world (treated as MIMIC-CXR)" if restricted else "is a SynthCXR world"))


def read_dataset_tables(out_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Read the tables written by :meth:`LoadedDataset.save` (for later stages)."""
    out_dir = Path(out_dir)
    tables = {}
    for name in ("images", "studies", "priors", "drop_table", "split_sizes"):
        path = out_dir / f"{name}.csv"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run the data stage first")
        tables[name] = pd.read_csv(path, dtype={"dicom_id": str})
    return tables


def _read_table(root: Path, name: str) -> pd.DataFrame:
    path = root / name
    if not path.is_file():
        raise DatasetError(f"{path}: missing; expected the MIMIC-CXR-JPG 2.0.0 table {name} in dataset_root")
    try:
        table = pd.read_csv(path, dtype={"dicom_id": str})
    except Exception as error:  # pandas raises many kinds for a damaged file
        raise DatasetError(f"{path}: cannot be read as a gzip-compressed CSV ({error})") from error
    missing = [column for column in _REQUIRED_COLUMNS[name] if column not in table.columns]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")
    return table


def study_folder(subject_id: int, study_id: int) -> str:
    """``files/pXX/p<subject>/s<study>`` as MIMIC-CXR lays studies out."""
    subject = str(int(subject_id))
    return f"files/p{subject[:2]}/p{subject}/s{int(study_id)}"


def study_datetimes(metadata: pd.DataFrame) -> pd.Series:
    """Combine ``StudyDate`` (YYYYMMDD) and ``StudyTime`` (HHMMSS.fff) into timestamps."""
    dates = metadata["StudyDate"].astype("Int64").astype(str)
    times = metadata["StudyTime"].astype(float)
    whole = np.floor(times).astype(int).astype(str).str.zfill(6)
    fraction = ((times - np.floor(times)) * 1e6).round().astype(int).astype(str).str.zfill(6)
    return pd.to_datetime(dates + whole + fraction, format="%Y%m%d%H%M%S%f", errors="coerce")


def _check_image(path: Path, mode: str) -> str | None:
    """Return a drop reason for an image, or None if it is usable."""
    if not path.is_file():
        return IMAGE_MISSING
    if mode == "none":
        return None
    try:
        with Image.open(path) as image:
            if mode == "decode":
                image.load()
    except Exception:  # PIL raises OSError, SyntaxError, ValueError... for damaged files
        return IMAGE_UNREADABLE
    return None


def _map_threads(function, items: Iterable, total: int, description: str, workers: int, progress: bool) -> list:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(function, items), total=total, desc=description, disable=not progress, leave=False))


def load_dataset(
    dataset_root: str | Path,
    reports_root: str | Path | None = None,
    verify_images: str = "decode",
    use_last_paragraph: bool = False,
    max_priors: int = 3,
    workers: int = 8,
    progress: bool = True,
) -> LoadedDataset:
    """Read a MIMIC-CXR-JPG style dataset with the paper's selection rules.

    Parameters
    ----------
    dataset_root
        Folder holding the three ``mimic-cxr-2.0.0-*.csv.gz`` tables and ``files/``.
    reports_root
        Folder holding ``files/pXX/pYYY/sZZZ.txt`` reports (default: ``dataset_root``).
    verify_images
        ``"decode"`` decodes every kept image (catches truncated JPEGs),
        ``"header"`` only opens it, ``"none"`` only checks that it exists.
    use_last_paragraph
        Accept the official parser's last-paragraph fallback for reports
        with neither findings nor impression (the paper does not).
    max_priors
        How many earlier reports of the same patient to keep per study.
    workers
        Threads for file checks and report reading.
    progress
        Show progress bars.
    """
    if verify_images not in IMAGE_CHECKS:
        raise ValueError(f"verify_images must be one of {IMAGE_CHECKS}, got {verify_images!r}")
    if dataset_root in (None, ""):
        raise DatasetError("dataset_root is empty: give the folder of MIMIC-CXR-JPG 2.0.0")
    root = Path(dataset_root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset_root {root} is not a folder")
    reports_root = Path(reports_root).expanduser() if reports_root else root
    if not reports_root.is_dir():
        raise DatasetError(f"reports_root {reports_root} is not a folder")

    metadata = _read_table(root, METADATA_FILE)
    split = _read_table(root, SPLIT_FILE)
    chexpert = _read_table(root, CHEXPERT_FILE)
    if metadata.empty:
        raise DatasetError(f"{root / METADATA_FILE}: has no rows")
    metadata["study_datetime"] = study_datetimes(metadata)

    dropped: list[dict] = []

    def drop(rows: pd.DataFrame, reason: str, level: str = "image") -> None:
        for row in rows.itertuples(index=False):
            dropped.append({
                "level": level, "reason": reason, "subject_id": int(row.subject_id),
                "study_id": int(row.study_id), "dicom_id": getattr(row, "dicom_id", "") if level == "image" else "",
            })

    images = metadata.copy()
    view = images["ViewPosition"].fillna("").astype(str).str.strip().str.upper()
    drop(images[view == ""], NO_VIEW)
    drop(images[(view != "") & ~view.isin(FRONTAL_VIEWS)], NOT_FRONTAL)
    images = images[view.isin(FRONTAL_VIEWS)].assign(view_position=view[view.isin(FRONTAL_VIEWS)])

    images = images.merge(split[["dicom_id", "split"]], on="dicom_id", how="left")
    drop(images[images["split"].isna()], NOT_IN_SPLIT)
    images = images[images["split"].notna()].copy()

    images["image_path"] = [
        f"{study_folder(subject, study)}/{dicom}.jpg"
        for subject, study, dicom in zip(images["subject_id"], images["study_id"], images["dicom_id"])
    ]
    reasons = _map_threads(
        lambda relative: _check_image(root / relative, verify_images),
        images["image_path"], len(images), "checking images", workers, progress,
    )
    images["reason"] = reasons
    for reason in (IMAGE_MISSING, IMAGE_UNREADABLE):
        drop(images[images["reason"] == reason], reason)
    images = images[images["reason"].isna()].drop(columns="reason")

    # Every study in the metadata gets its report read: kept studies need
    # their findings, and earlier studies (even lateral-only ones) can serve
    # as prior reports.
    all_studies = (
        metadata.groupby(["subject_id", "study_id"], as_index=False)["study_datetime"].min()
        .sort_values(["subject_id", "study_datetime", "study_id"]).reset_index(drop=True)
    )
    all_studies["report_path"] = [f"{study_folder(s, t)}.txt" for s, t in zip(all_studies["subject_id"], all_studies["study_id"])]

    def read_report(relative: str) -> tuple[str | None, str | None]:
        path = reports_root / relative
        if not path.is_file():
            return None, REPORT_MISSING
        try:
            return path.read_text(encoding="utf-8"), None
        except (OSError, UnicodeDecodeError):
            return None, REPORT_UNREADABLE

    read = _map_threads(read_report, all_studies["report_path"], len(all_studies), "reading reports", workers, progress)
    all_studies["report"] = [text for text, _ in read]
    all_studies["report_problem"] = [problem for _, problem in read]
    parsed = [
        extract_findings(text, use_last_paragraph) if isinstance(text, str) else (None, None)
        for text in all_studies["report"]
    ]
    all_studies["findings"] = [text for text, _ in parsed]
    all_studies["findings_source"] = [source for _, source in parsed]
    all_studies["indication"] = [extract_indication(text) if isinstance(text, str) else None for text in all_studies["report"]]

    frontal_study_ids = set(images["study_id"])
    candidates = all_studies[all_studies["study_id"].isin(frontal_study_ids)]
    for problem in (REPORT_MISSING, REPORT_UNREADABLE):
        bad = candidates[candidates["report_problem"] == problem]
        drop(bad, problem, level="study")
        drop(images[images["study_id"].isin(bad["study_id"])], problem)
    no_text = candidates[candidates["report_problem"].isna() & candidates["findings"].isna()]
    drop(no_text, NO_FINDINGS, level="study")
    drop(images[images["study_id"].isin(no_text["study_id"])], NO_FINDINGS)
    kept = candidates[candidates["findings"].notna()]
    images = images[images["study_id"].isin(kept["study_id"])]

    split_by_study = images.groupby("study_id")["split"].first()
    studies = kept.assign(split=kept["study_id"].map(split_by_study))
    labels = chexpert.drop_duplicates("study_id").set_index("study_id")
    for observation in CHEXPERT_OBSERVATIONS:
        studies[observation] = studies["study_id"].map(labels[observation]) if observation in labels else np.nan
    studies = studies[
        ["study_id", "subject_id", "split", "study_datetime", "findings", "findings_source", "indication", "report_path",
         *CHEXPERT_OBSERVATIONS]
    ].reset_index(drop=True)

    images = images[
        ["dicom_id", "subject_id", "study_id", "split", "view_position", "image_path", "study_datetime"]
    ].sort_values(["subject_id", "study_datetime", "study_id", "dicom_id"]).reset_index(drop=True)

    priors = _prior_reports(all_studies, set(studies["study_id"]), max_priors)
    dropped_table = pd.DataFrame(dropped, columns=["level", "reason", "subject_id", "study_id", "dicom_id"])
    return LoadedDataset(
        root=root, reports_root=reports_root, images=images, studies=studies, priors=priors, dropped=dropped_table,
        options={"verify_images": verify_images, "use_last_paragraph": use_last_paragraph, "max_priors": max_priors},
        restricted_text=not is_synthcxr_root(root),
    )


def _prior_reports(all_studies: pd.DataFrame, kept_ids: set, max_priors: int) -> pd.DataFrame:
    """Up to ``max_priors`` earlier reports of the same patient for each kept study."""
    rows = []
    for _, history in all_studies.groupby("subject_id", sort=False):
        history = history[history["report"].notna()].sort_values("study_datetime")
        records = list(history.itertuples(index=False))
        for position, current in enumerate(records):
            if current.study_id not in kept_ids:
                continue
            earlier = [r for r in records[:position] if r.study_datetime < current.study_datetime]
            for rank, prior in enumerate(reversed(earlier[-max_priors:] if max_priors else []), start=1):
                rows.append({
                    "study_id": current.study_id,
                    "prior_rank": rank,
                    "prior_study_id": prior.study_id,
                    "hours_before": (current.study_datetime - prior.study_datetime).total_seconds() / 3600.0,
                    "prior_report": _report_body(prior.report),
                })
    return pd.DataFrame(rows, columns=["study_id", "prior_rank", "prior_study_id", "hours_before", "prior_report"])


def _report_body(text: str) -> str:
    """Findings and impression of a prior report, or its whole cleaned text."""
    sections = split_sections(text, last_paragraph_fallback=False)
    parts = []
    for name in ("findings", "impression"):
        for section in reversed(sections):
            if section.name == name and section.text.strip():
                parts.append(f"{name.upper()}: {clean_text(section.text)}")
                break
    return " ".join(parts) if parts else clean_text(text)
