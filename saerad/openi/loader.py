"""Load the Indiana University chest X-ray collection (Open-i) into the MIMIC-CXR loader's tables.

What is read:

* the reports: ``NLMCXR_reports.tgz`` (or its unpacked folder), by default the
  copy installed with ``torchxrayvision`` (:mod:`saerad.openi.reports`);
* the images: the PNG download ``NLMCXR_png.tgz`` unpacked anywhere under
  ``images_root``, one file ``<image id>.png`` per image
  (``CXR1_1_IM-0001-3001.png``), found by name in any sub-folder;
* the projection of each image, from two tables installed with
  ``torchxrayvision``: ``nlmcxr_tsne_pa.csv.gz`` (one image of each report
  labelled frontal or lateral from its pixels) first, then the DICOM
  ``View Position`` of ``nlmcxr_dicom_metadata.csv.gz`` (AP/PA frontal;
  LL, RL, LATERAL lateral). The DICOM field is noisy: where both exist they
  disagree on about one image in twelve, so a few laterals labelled PA in
  DICOM may remain among the images not covered by the derived labels.

The rules are the paper's, as in :func:`saerad.mimic.loader.load_dataset`:
frontal images only, the findings section with the impression as fallback,
studies with neither dropped, every dropped item counted by reason.

There is no official split. We follow the convention of the Open-i report-
generation literature (R2Gen, Chen et al. 2020): 70 % train, 10 % validate,
20 % test, drawn at random with a seed. It is drawn by *patient*: the
de-identification gave each report its own patient (the DICOM ``Patient ID``
is the report's number), so a patient is a report here, and the split is
drawn over all 3,955 reports before anything is dropped, so it does not move
when an image folder is incomplete.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from saerad.io import write_json, write_table, write_text
from saerad.mimic import loader as mimic
from saerad.mimic.loader import CHEXPERT_OBSERVATIONS, DatasetError, LoadedDataset, RESTRICTED_KEY
from saerad.openi.mesh import mesh_labels
from saerad.openi.sections_check import SECTIONS, mimic_layout
from saerad.openi.reports import DERIVED_VIEWS, DICOM_METADATA, OpenIError, packaged_file, read_reports, split_terms

DATASET_NAME = "Open-i (Indiana University chest X-rays)"
LICENCE = "CC BY-NC-ND 4.0"
#: R2Gen's proportions (train, validate, test).
SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
SPLITS = ("train", "validate", "test")

FRONTAL = ("AP", "PA")
LATERAL = ("LL", "RL", "LATERAL", "LARGE LATERAL", "L")

# Drop reasons Open-i adds to the MIMIC-CXR loader's (which it also uses).
REPORT_WITHOUT_IMAGES = "report lists no image"
#: Every reason of the drop table, in the order a row meets them.
DROP_REASONS = (mimic.REPORT_UNREADABLE, REPORT_WITHOUT_IMAGES, mimic.NO_VIEW, mimic.NOT_FRONTAL,
                mimic.NOT_IN_SPLIT, mimic.IMAGE_MISSING, mimic.IMAGE_UNREADABLE, mimic.REPORT_MISSING,
                mimic.NO_FINDINGS)

# Where an image's projection came from.
VIEW_FROM_PIXELS = "derived from the pixels (torchxrayvision)"
VIEW_FROM_DICOM = "DICOM View Position"
VIEW_UNKNOWN = "unknown"


@dataclass
class OpenILoadedDataset(LoadedDataset):
    """A :class:`~saerad.mimic.loader.LoadedDataset` of Open-i, plus what only Open-i has.

    Attributes
    ----------
    reports
        Every report as read (:func:`saerad.openi.reports.read_reports`), with
        its ``split``: the sections, MeSH terms and image ids.
    views
        One row per image a report lists: ``dicom_id, study_id, dicom_view,
        derived_view, view, view_source``.
    """

    reports: pd.DataFrame | None = None
    views: pd.DataFrame | None = None

    def drop_table(self) -> pd.DataFrame:
        """Counts of dropped images and studies by reason, including Open-i's own reasons."""
        rows = []
        for reason in DROP_REASONS:
            subset = self.dropped[self.dropped["reason"] == reason]
            rows.append({"reason": reason, "images": int((subset["level"] == "image").sum()),
                         "studies": int((subset["level"] == "study").sum())})
        return pd.DataFrame(rows)

    def view_sources(self) -> pd.DataFrame:
        """How many listed images got their projection from each source, and what it was."""
        counts = self.views.groupby(["view_source", "view"], dropna=False).size().reset_index(name="images")
        return counts.sort_values(["view_source", "view"]).reset_index(drop=True)

    def save(self, out_dir: str | Path) -> None:
        """The MIMIC-CXR loader's tables, then Open-i's: ``openi_reports.csv``, ``image_views.csv``.

        Every kept report is also written in MIMIC-CXR's free-text layout to ``out_dir/reports/<report_id>.txt``
        (its ``report_path``), and ``reports_root`` points there from then on, so that whatever reads a
        study's report file (the data chapter shows one) finds it as it would for MIMIC-CXR. These files
        stay in the artifacts folder: the licence forbids distributing them.
        """
        out_dir = Path(out_dir)
        reports_dir = out_dir / "reports"
        by_id = self.reports.set_index("report_id")
        for report_id in self.studies["report_path"].str.removesuffix(".txt"):
            row = by_id.loc[report_id]
            write_text(reports_dir / f"{report_id}.txt", mimic_layout(
                {label: row[name] for label, name in SECTIONS.items()}))
        self.options.setdefault("reports_source", str(self.reports_root))
        self.reports_root = reports_dir
        super().save(out_dir)
        write_table(out_dir / "openi_reports.csv", self.reports)
        write_table(out_dir / "image_views.csv", self.views)
        write_table(out_dir / "view_sources.csv", self.view_sources())
        write_json(out_dir / "dataset.json", {
            "root": str(self.root), "reports_root": str(self.reports_root), **self.options,
            "dataset": DATASET_NAME, "licence": LICENCE,
            # Not under a data use agreement: public, non-commercial, no derivatives to be distributed.
            RESTRICTED_KEY: self.restricted_text,
        })


def assign_splits(study_ids, seed: int = 0, fractions: tuple[float, float, float] = SPLIT_FRACTIONS) -> dict[int, str]:
    """A seeded random train/validate/test split of report (= patient) ids.

    The ids are sorted before the permutation, so the split depends only on
    the set of ids and the seed. Counts are ``round(fraction * n)`` for train
    and validate, the rest test.
    """
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    ids = np.array(sorted({int(i) for i in study_ids}), dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(ids))
    n_train = int(round(fractions[0] * len(ids)))
    n_validate = int(round(fractions[1] * len(ids)))
    labels = np.array(["test"] * len(ids), dtype=object)
    labels[order[:n_train]] = "train"
    labels[order[n_train:n_train + n_validate]] = "validate"
    return dict(zip(ids.tolist(), labels.tolist()))


def _read_csv(path: Path, columns: tuple[str, ...], what: str) -> pd.DataFrame:
    try:
        table = pd.read_csv(path, low_memory=False, dtype={"imageid": str})
    except Exception as error:  # pandas raises many kinds for a damaged file
        raise OpenIError(f"{path}: cannot be read as the {what} ({error})") from error
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise OpenIError(f"{path}: missing column(s) {missing} of the {what}; found {list(table.columns)[:12]}...")
    return table


def image_views(image_ids: pd.DataFrame, metadata_csv: str | Path | None = None,
                derived_views_csv: str | Path | None = None) -> pd.DataFrame:
    """Projection of every listed image: derived label first, then DICOM.

    Parameters
    ----------
    image_ids
        ``dicom_id, study_id`` of every image the reports list.
    metadata_csv, derived_views_csv
        The two tables (default: the copies installed with ``torchxrayvision``).

    Returns
    -------
    DataFrame
        ``dicom_id, study_id, dicom_view, derived_view, view, view_source,
        study_date, study_time``; ``view`` is ``"AP"``/``"PA"`` for frontal
        (AP only when DICOM says AP), ``"LATERAL"``, or None when unknown.
    """
    metadata = _read_csv(Path(metadata_csv) if metadata_csv else packaged_file(DICOM_METADATA),
                         ("imageid", "View Position", "Study Date", "Study Time"), "Open-i DICOM metadata")
    derived = _read_csv(Path(derived_views_csv) if derived_views_csv else packaged_file(DERIVED_VIEWS),
                        ("imageid", "tsne-view"), "Open-i derived projections")
    metadata = metadata.drop_duplicates("imageid").set_index("imageid")
    derived = derived.drop_duplicates("imageid").set_index("imageid")["tsne-view"]
    table = image_ids[["dicom_id", "study_id"]].copy()
    table["dicom_view"] = table["dicom_id"].map(metadata["View Position"]).astype(object)
    table["dicom_view"] = table["dicom_view"].where(table["dicom_view"].notna(), None)
    table["dicom_view"] = [str(v).strip().upper() if isinstance(v, str) and v.strip() else None for v in table["dicom_view"]]
    table["derived_view"] = [str(v).strip().upper() if isinstance(v, str) else None
                             for v in table["dicom_id"].map(derived)]
    views, sources = [], []
    for dicom_view, derived_view in zip(table["dicom_view"], table["derived_view"]):
        if derived_view in ("PA", "AP"):
            views.append(dicom_view if dicom_view in FRONTAL else "PA")
            sources.append(VIEW_FROM_PIXELS)
        elif derived_view in LATERAL:
            views.append("LATERAL")
            sources.append(VIEW_FROM_PIXELS)
        elif dicom_view in FRONTAL:
            views.append(dicom_view)
            sources.append(VIEW_FROM_DICOM)
        elif dicom_view in LATERAL:
            views.append("LATERAL")
            sources.append(VIEW_FROM_DICOM)
        else:
            views.append(None)
            sources.append(VIEW_UNKNOWN)
    table["view"] = views
    table["view_source"] = sources
    table["study_date"] = table["dicom_id"].map(metadata["Study Date"])
    table["study_time"] = table["dicom_id"].map(metadata["Study Time"])
    return table


def _study_datetimes(views: pd.DataFrame) -> pd.Series:
    """Earliest DICOM study date and time of each report's images (NaT when none)."""
    dated = views.dropna(subset=["study_date"]).copy()
    if dated.empty:
        return pd.Series(dtype="datetime64[ns]")
    dated["StudyDate"] = dated["study_date"]
    dated["StudyTime"] = pd.to_numeric(dated["study_time"], errors="coerce").fillna(0)
    dated["study_datetime"] = mimic.study_datetimes(dated)
    return dated.groupby("study_id")["study_datetime"].min()


def _png_index(images_root: Path) -> dict[str, str]:
    """Image id -> path (relative to ``images_root``) of every ``*.png`` under it."""
    index: dict[str, str] = {}
    for path in sorted(images_root.rglob("*.png")):
        index.setdefault(path.stem, path.relative_to(images_root).as_posix())
    return index


def load_openi(
    images_root: str | Path | None = None,
    reports_source: str | Path | None = None,
    metadata_csv: str | Path | None = None,
    derived_views_csv: str | Path | None = None,
    verify_images: str = "decode",
    split_seed: int = 0,
    split_fractions: tuple[float, float, float] = SPLIT_FRACTIONS,
    workers: int = 8,
    progress: bool = False,
    use_last_paragraph: bool = False,
    max_priors: int = 0,
) -> OpenILoadedDataset:
    """Read Open-i with the paper's selection rules into the MIMIC-CXR loader's tables.

    Parameters
    ----------
    images_root
        Folder holding the Open-i PNGs (``<image id>.png``, in any sub-folder).
        None reads the reports alone: projections are decided, but no image
        file is looked for (``image_path`` is the file name the download uses).
    reports_source
        ``NLMCXR_reports.tgz`` or its unpacked folder; default: the copy in the
        installed ``torchxrayvision``.
    metadata_csv, derived_views_csv
        DICOM metadata and derived projections (default: the installed copies).
    verify_images
        ``"decode"``, ``"header"`` or ``"none"``, as for MIMIC-CXR.
    split_seed, split_fractions
        The seeded patient-level split (:func:`assign_splits`).
    workers, progress
        Threads for checking images; progress bars.
    use_last_paragraph, max_priors
        Accepted so that the call is the MIMIC-CXR loader's; they change nothing: Open-i's sections are
        labelled (there is no last paragraph to fall back on) and no patient has two reports.
    """
    if verify_images not in mimic.IMAGE_CHECKS:
        raise ValueError(f"verify_images must be one of {mimic.IMAGE_CHECKS}, got {verify_images!r}")
    root = Path(images_root).expanduser() if images_root not in (None, "") else None
    if root is not None and not root.is_dir():
        raise DatasetError(f"images_root {root} is not a folder (expected the unpacked Open-i PNGs, NLMCXR_png.tgz)")

    reports = read_reports(reports_source)
    parsed = reports[reports["problem"].isna()].copy()
    splits = assign_splits(parsed["study_id"], split_seed, split_fractions)
    reports["split"] = reports["study_id"].map(lambda i: splits.get(int(i)) if pd.notna(i) else None)

    dropped: list[dict] = []

    def drop(rows: pd.DataFrame, reason: str, level: str) -> None:
        for row in rows.itertuples(index=False):
            study = int(row.study_id) if pd.notna(row.study_id) else -1
            dropped.append({"level": level, "reason": reason, "subject_id": study, "study_id": study,
                            "dicom_id": getattr(row, "dicom_id", "") if level == "image" else ""})

    drop(reports[reports["problem"].notna()], mimic.REPORT_UNREADABLE, "study")
    parsed["split"] = parsed["study_id"].map(lambda i: splits[int(i)])
    parsed["image_list"] = parsed["image_ids"].map(split_terms)
    drop(parsed[parsed["image_list"].map(len) == 0], REPORT_WITHOUT_IMAGES, "study")

    listed = parsed[["study_id", "split", "image_list"]].explode("image_list").dropna(subset=["image_list"])
    listed = listed.rename(columns={"image_list": "dicom_id"}).reset_index(drop=True)
    listed["study_id"] = listed["study_id"].astype(int)
    views = image_views(listed, metadata_csv, derived_views_csv)
    images = listed.merge(views[["dicom_id", "view"]], on="dicom_id", how="left")
    drop(images[images["view"].isna()], mimic.NO_VIEW, "image")
    drop(images[images["view"] == "LATERAL"], mimic.NOT_FRONTAL, "image")
    images = images[images["view"].isin(FRONTAL)].rename(columns={"view": "view_position"}).copy()

    if root is None:
        images["image_path"] = images["dicom_id"] + ".png"
    else:
        index = _png_index(root)
        images["image_path"] = images["dicom_id"].map(index)
        missing = images["image_path"].isna()
        drop(images[missing], mimic.IMAGE_MISSING, "image")
        images = images[~missing].copy()
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            reasons = list(pool.map(lambda relative: mimic._check_image(root / relative, verify_images),
                                    images["image_path"]))
        images["reason"] = reasons
        drop(images[images["reason"] == mimic.IMAGE_UNREADABLE], mimic.IMAGE_UNREADABLE, "image")
        images = images[images["reason"].isna()].drop(columns="reason")

    parsed["findings_text"], parsed["findings_source"] = zip(*[
        (findings, "findings") if isinstance(findings, str) and findings.strip()
        else (impression, "impression") if isinstance(impression, str) and impression.strip() else (None, None)
        for findings, impression in zip(parsed["findings"], parsed["impression"])
    ]) if len(parsed) else ((), ())
    candidates = parsed[parsed["study_id"].isin(set(images["study_id"]))]
    no_text = candidates[candidates["findings_source"].isna()]
    drop(no_text, mimic.NO_FINDINGS, "study")
    drop(images[images["study_id"].isin(set(no_text["study_id"]))], mimic.NO_FINDINGS, "image")
    kept = candidates[candidates["findings_source"].notna()].copy()
    images = images[images["study_id"].isin(set(kept["study_id"]))].copy()

    when = _study_datetimes(views).to_dict()  # a plain dict: mapping onto an empty datetime Series cannot cast
    kept["study_datetime"] = pd.to_datetime(kept["study_id"].map(lambda i: when.get(int(i))))
    images["study_datetime"] = pd.to_datetime(images["study_id"].map(lambda i: when.get(int(i))))
    images["subject_id"] = images["study_id"]
    kept["subject_id"] = kept["study_id"].astype(int)
    kept["study_id"] = kept["study_id"].astype(int)
    labels = [mesh_labels(split_terms(terms)) or {o: np.nan for o in CHEXPERT_OBSERVATIONS}
              for terms in kept["mesh_major"]]
    for observation in CHEXPERT_OBSERVATIONS:
        kept[observation] = [row[observation] for row in labels]
    kept["report_path"] = kept["report_id"] + ".txt"  # the name save() writes the report under
    studies = kept.rename(columns={"findings": "findings_section", "findings_text": "findings"})[
        ["study_id", "subject_id", "split", "study_datetime", "findings", "findings_source", "indication",
         "report_path", *CHEXPERT_OBSERVATIONS]
    ].sort_values("study_id").reset_index(drop=True)
    images = images[["dicom_id", "subject_id", "study_id", "split", "view_position", "image_path", "study_datetime"]]
    images = images.sort_values(["study_id", "dicom_id"]).reset_index(drop=True)
    priors = pd.DataFrame(columns=["study_id", "prior_rank", "prior_study_id", "hours_before", "prior_report"])
    return OpenILoadedDataset(
        root=root if root is not None else Path("."),
        reports_root=Path(reports_source).expanduser() if reports_source else packaged_file("NLMCXR_reports.tgz"),
        images=images, studies=studies, priors=priors,
        dropped=pd.DataFrame(dropped, columns=["level", "reason", "subject_id", "study_id", "dicom_id"]),
        options={"verify_images": verify_images, "use_last_paragraph": False, "max_priors": 0,
                 "split_seed": split_seed, "split_fractions": list(split_fractions),
                 "images_checked": root is not None},
        restricted_text=False,
        reports=reports, views=views,
    )
