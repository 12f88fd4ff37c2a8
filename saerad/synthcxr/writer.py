"""Assemble the SynthCXR world and write it in the MIMIC-CXR-JPG layout.

:func:`sample_studies` yields the world in memory; :func:`generate_world`
renders it with a process pool and writes images, reports, the MIMIC CSV
tables and our ground-truth additions.  Every output byte is a function of
the config: per-patient random streams, fixed gzip/zip timestamps and ordered
results from the pool.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import multiprocessing
import os
import time
import zipfile
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from .catalogue import CHEXPERT_OBSERVATIONS, FINDING_ATTRIBUTES, FINDINGS, NUISANCE_COLUMNS
from .patients import STREAM_RENDER, STREAM_REPORT, PatientPlan, patient_rng, simulate_patients
from .render import render_frontal, render_lateral
from .reports import write_report

DEFECT_KINDS = ("corrupt_jpeg", "missing_image", "missing_report", "unknown_view")
METADATA_COLUMNS = ("dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition",
                    "Rows", "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning",
                    "ViewCodeSequence_CodeMeaning", "PatientOrientationCodeSequence_CodeMeaning")
_DEFECT_SEED_KEY = 1_000_000_007  # spawn key outside the range of patient indices


@dataclass
class SynthCXRConfig:
    """Everything that determines a SynthCXR world.

    Attributes
    ----------
    n_patients : int
        Number of patients (subjects).
    image_size : int
        Side of the square JPEGs in pixels.
    seed : int
        World seed; patient ``i`` depends only on ``seed`` and ``i``.
    max_studies_per_patient : int
        Upper bound on studies per patient.
    lateral_fraction : float
        Share of studies that also get a lateral image.
    test_fraction, validate_fraction : float
        Split shares, drawn per patient (MIMIC splits by subject).
    prevalence_scale : dict
        Finding name -> multiplier on its base onset probability.
    n_defects : int
        Deliberately broken items written to disk (train split only).
    jpeg_quality : int
        JPEG quality passed to Pillow.
    """

    n_patients: int = 1500
    image_size: int = 128
    seed: int = 0
    max_studies_per_patient: int = 4
    lateral_fraction: float = 0.5
    test_fraction: float = 0.15
    validate_fraction: float = 0.05
    prevalence_scale: dict = field(default_factory=dict)
    n_defects: int = 8
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        # Checked before anything is generated or deleted: the data stage replaces the previous world.
        if self.n_patients < 1:
            raise ValueError(f"SynthCXR: n_patients must be at least 1 (data.n_patients), got {self.n_patients}")
        if self.image_size < 16:
            raise ValueError(f"SynthCXR: image_size must be at least 16 pixels (data.image_size), got {self.image_size}")
        if self.max_studies_per_patient < 1:
            raise ValueError("SynthCXR: max_studies_per_patient must be at least 1 (data.max_studies_per_patient), "
                             f"got {self.max_studies_per_patient}")


@dataclass
class ImageRecord:
    """One image: identifiers, view, full state and (if rendered) pixels."""

    dicom_id: str
    view_position: str
    view_code_meaning: str
    patient_orientation: str
    state: dict
    image: np.ndarray | None = None
    masks: dict | None = None

    @property
    def is_frontal(self) -> bool:
        return self.view_position in ("PA", "AP")


@dataclass
class StudyRecord:
    """One study with its images, report, sentence facts and CheXpert labels."""

    subject_id: int
    study_id: int
    study_index: int
    study_datetime: datetime
    split: str
    procedure: str
    state: dict
    images: list[ImageRecord]
    report: str
    sentences: list[dict]
    report_structure: str
    indication: str
    chexpert: dict

    @property
    def views(self) -> list[str]:
        return [im.view_position for im in self.images]

    @property
    def view(self) -> str:
        """View position of the first (frontal) image."""
        return self.images[0].view_position


def _build_patient(config: SynthCXRConfig, plan: PatientPlan, render: bool) -> list[StudyRecord]:
    records = []
    prev_state = None
    for study in plan.studies:
        views = [im.view_position for im in study.images]
        report_rng = patient_rng(config.seed, plan.index, STREAM_REPORT, study.study_index)
        report_state = dict(study.state, nuisance=study.images[0].state["nuisance"])
        report = write_report(report_state, prev_state, views, study.procedure, report_rng)
        images = []
        for j, im in enumerate(study.images):
            im.state["view_position"] = im.view_position
            im.state["split"] = plan.split
            pixels = masks = None
            if render:
                rng = patient_rng(config.seed, plan.index, STREAM_RENDER, study.study_index, j)
                if im.view_position in ("PA", "AP"):
                    pixels, masks = render_frontal(im.state, rng, config.image_size)
                else:
                    pixels = render_lateral(im.state, rng, config.image_size)
            images.append(ImageRecord(im.dicom_id, im.view_position, im.view_code_meaning,
                                      im.patient_orientation, im.state, pixels, masks))
        records.append(StudyRecord(plan.subject_id, study.study_id, study.study_index, study.study_datetime,
                                   plan.split, study.procedure, study.state, images, report.text,
                                   report.sentences, report.structure, report.indication, report.chexpert))
        prev_state = study.state
    return records


def sample_studies(config: SynthCXRConfig, render: bool = True, progress: bool = False) -> Iterator[StudyRecord]:
    """Yield every study of the world in memory (no disk access).

    Parameters
    ----------
    config : SynthCXRConfig
    render : bool
        If False, images and masks are left as ``None``; states, reports
        and labels are still produced (fast prevalence checks).
    progress : bool
        Show a tqdm bar over patients.

    Yields
    ------
    StudyRecord
        Patients in index order, each patient's studies in time order.
    """
    plans = simulate_patients(config)
    if progress:
        from tqdm import tqdm
        plans = tqdm(plans, total=config.n_patients, desc="SynthCXR", unit="patient")
    for plan in plans:
        yield from _build_patient(config, plan, render)


# --- encoding -----------------------------------------------------------------------------

def _jpeg_bytes(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image, mode="L").save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """Same format as ``np.savez_compressed`` but with fixed zip timestamps.

    ``np.savez_compressed`` stamps each member with the current time, which
    would break byte-identical reruns; ``np.load`` reads this file the same way.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def _json_bytes(obj) -> bytes:
    # Compact separators keep json on its C encoder (indent forces the slow one).
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _encode_patient(args) -> list[dict]:
    """Worker: build and render one patient, return what is to be written."""
    config, plan = args
    out = []
    for rec in _build_patient(config, plan, render=True):
        images = []
        for im in rec.images:
            images.append({
                "record": ImageRecord(im.dicom_id, im.view_position, im.view_code_meaning,
                                      im.patient_orientation, im.state),
                "jpeg": _jpeg_bytes(im.image, config.jpeg_quality),
                "masks": _npz_bytes(im.masks) if im.masks is not None else None,
            })
        rec.images = [i["record"] for i in images]
        out.append({"study": rec, "images": images})
    return out


# --- writing ----------------------------------------------------------------------------

def _atomic_write(path: Path, data: bytes) -> None:
    """Write to a temporary sibling, then rename: readers never see half files."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def _csv_bytes(header, rows) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6, mtime=0)


def _label(value: float) -> str:
    return "" if value != value else f"{value:.1f}"


def _study_time(when: datetime) -> str:
    value = when.hour * 10000 + when.minute * 100 + when.second + when.microsecond / 1e6
    return repr(round(value, 3))


def _choose_defects(config: SynthCXRConfig, plans: list[PatientPlan]) -> dict[tuple, str]:
    """Pick defect targets among train studies: key (kind, id) -> kind.

    Each defect goes to a distinct study so that kinds do not mask each other.
    """
    train_studies = [s for p in plans if p.split == "train" for s in p.studies]
    n = min(int(config.n_defects), len(train_studies))
    if n <= 0:
        return {}
    rng = np.random.default_rng(np.random.SeedSequence(int(config.seed), spawn_key=(_DEFECT_SEED_KEY,)))
    chosen = rng.choice(len(train_studies), size=n, replace=False)
    defects = {}
    for i, k in enumerate(sorted(int(c) for c in chosen)):
        study = train_studies[k]
        kind = DEFECT_KINDS[i % len(DEFECT_KINDS)]
        if kind == "missing_report":
            defects[("study", study.study_id)] = kind
        else:
            image = study.images[int(rng.integers(len(study.images)))]
            defects[("image", image.dicom_id)] = kind
    return defects


def _gt_row(rec: StudyRecord, im: ImageRecord) -> list:
    state = im.state
    findings = state["findings"]
    row = [im.dicom_id, rec.subject_id, rec.study_id, im.view_position]
    row += [int(bool(findings[name]["present"])) for name in FINDINGS]
    for name in FINDINGS:
        for attr in FINDING_ATTRIBUTES[name]:
            row.append(findings[name].get(attr, "") if findings[name]["present"] else "")
    nz = state["nuisance"]
    extra = {"age": state["age"], "sex": state["sex"], "setting": state["setting"]}
    for col in NUISANCE_COLUMNS:
        value = extra[col] if col in extra else nz.get(col, "")
        row.append(int(value) if isinstance(value, bool) else value)
    row += [rec.split, rec.study_index]
    return row


def _gt_header() -> list[str]:
    header = ["dicom_id", "subject_id", "study_id", "view_position", *FINDINGS]
    header += [f"{name}_{attr}" for name in FINDINGS for attr in FINDING_ATTRIBUTES[name]]
    return header + list(NUISANCE_COLUMNS) + ["split", "study_index"]


def generate_world(config: SynthCXRConfig, out_dir: str | Path, progress: bool = True,
                   workers: int | None = None) -> dict:
    """Generate the world and write it to ``out_dir`` in MIMIC-CXR-JPG layout.

    Parameters
    ----------
    config : SynthCXRConfig
    out_dir : str or Path
        Created if missing; existing files of the same names are replaced.
    progress : bool
        Show a tqdm progress bar over patients.
    workers : int, optional
        Rendering processes; default ``os.cpu_count()`` (at most 8).  The
        output does not depend on this number.

    Returns
    -------
    dict
        Counts of patients, studies, images (frontal, lateral), reports,
        masks files, defects by kind, and the elapsed seconds.
    """
    started = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plans = list(simulate_patients(config))
    defects = _choose_defects(config, plans)
    workers = max(1, min(8, os.cpu_count() or 1) if workers is None else int(workers))

    meta_rows, split_rows, chexpert_rows, gt_rows, facts_lines, defect_rows = [], [], [], [], [], []
    counts = {"n_patients": len(plans), "n_studies": 0, "n_images": 0, "n_frontal": 0, "n_lateral": 0,
              "n_reports": 0, "n_mask_files": 0}
    made_dirs: set[Path] = set()

    def ensure(path: Path) -> Path:
        if path not in made_dirs:
            path.mkdir(parents=True, exist_ok=True)
            made_dirs.add(path)
        return path

    jobs = ((config, plan) for plan in plans)
    if workers > 1 and len(plans) > 1:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = multiprocessing.get_context(method).Pool(workers)
        results = pool.imap(_encode_patient, jobs, chunksize=4)
    else:
        pool = None
        results = map(_encode_patient, jobs)
    if progress:
        from tqdm import tqdm
        results = tqdm(results, total=len(plans), desc="SynthCXR", unit="patient")
    try:
        for payload in results:
            for item in payload:
                rec: StudyRecord = item["study"]
                prefix = f"p{str(rec.subject_id)[:2]}/p{rec.subject_id}"
                study_dir = ensure(out / "files" / prefix / f"s{rec.study_id}")
                gt_dir = ensure(out / "ground_truth" / "files" / prefix / f"s{rec.study_id}")
                counts["n_studies"] += 1
                if defects.get(("study", rec.study_id)) == "missing_report":
                    defect_rows.append(["", rec.study_id, rec.subject_id, "missing_report"])
                else:
                    _atomic_write(study_dir.parent / f"s{rec.study_id}.txt", rec.report.encode("utf-8"))
                    counts["n_reports"] += 1
                date = int(rec.study_datetime.strftime("%Y%m%d"))
                for entry in item["images"]:
                    im: ImageRecord = entry["record"]
                    kind = defects.get(("image", im.dicom_id))
                    counts["n_images"] += 1
                    counts["n_frontal" if im.is_frontal else "n_lateral"] += 1
                    jpeg = entry["jpeg"]
                    if kind == "corrupt_jpeg":
                        jpeg = jpeg[: len(jpeg) // 3]
                    if kind != "missing_image":
                        _atomic_write(study_dir / f"{im.dicom_id}.jpg", jpeg)
                    if kind:
                        defect_rows.append([im.dicom_id, rec.study_id, rec.subject_id, kind])
                    view = "" if kind == "unknown_view" else im.view_position
                    meaning = "" if kind == "unknown_view" else im.view_code_meaning
                    meta_rows.append([im.dicom_id, rec.subject_id, rec.study_id, rec.procedure, view,
                                      config.image_size, config.image_size, date, _study_time(rec.study_datetime),
                                      rec.procedure, meaning, im.patient_orientation])
                    split_rows.append([im.dicom_id, rec.study_id, rec.subject_id, rec.split])
                    gt_rows.append(_gt_row(rec, im))
                    _atomic_write(gt_dir / f"{im.dicom_id}.json", _json_bytes(im.state))
                    if entry["masks"] is not None:
                        _atomic_write(gt_dir / f"{im.dicom_id}_masks.npz", entry["masks"])
                        counts["n_mask_files"] += 1
                chexpert_rows.append([rec.subject_id, rec.study_id] +
                                     [_label(rec.chexpert[o]) for o in CHEXPERT_OBSERVATIONS])
                facts_lines.append(json.dumps({
                    "study_id": rec.study_id, "subject_id": rec.subject_id,
                    "report_structure": rec.report_structure, "indication": rec.indication,
                    "sentences": rec.sentences}, ensure_ascii=False, sort_keys=True))
    finally:
        if pool is not None:
            pool.close()
            pool.join()

    # MIMIC tables are sorted by subject, then study, then image.
    meta_rows.sort(key=lambda r: (r[1], r[2], r[0]))
    split_rows.sort(key=lambda r: (r[2], r[1], r[0]))
    chexpert_rows.sort(key=lambda r: (r[0], r[1]))
    gt_rows.sort(key=lambda r: (r[1], r[2], r[0]))
    _atomic_write(out / "mimic-cxr-2.0.0-metadata.csv.gz", _gz(_csv_bytes(METADATA_COLUMNS, meta_rows)))
    _atomic_write(out / "mimic-cxr-2.0.0-split.csv.gz",
                  _gz(_csv_bytes(["dicom_id", "study_id", "subject_id", "split"], split_rows)))
    _atomic_write(out / "mimic-cxr-2.0.0-chexpert.csv.gz",
                  _gz(_csv_bytes(["subject_id", "study_id", *CHEXPERT_OBSERVATIONS], chexpert_rows)))
    _atomic_write(out / "synthcxr-ground-truth.csv.gz", _gz(_csv_bytes(_gt_header(), gt_rows)))
    _atomic_write(out / "synthcxr-report-facts.jsonl.gz", _gz(("\n".join(facts_lines) + "\n").encode("utf-8")))
    _atomic_write(out / "synthcxr-defects.csv",
                  _csv_bytes(["dicom_id", "study_id", "subject_id", "kind"], defect_rows))
    _atomic_write(out / "synthcxr-config.json", _json_bytes(asdict(config)))

    counts["defects"] = {k: sum(r[3] == k for r in defect_rows) for k in DEFECT_KINDS}
    counts["seconds"] = round(time.perf_counter() - started, 2)
    return counts
