"""Read the Indiana University chest X-ray reports (Open-i) from their XML files.

Each of the 3,955 reports is one XML file (``ecgen-radiology/<n>.xml`` in
``NLMCXR_reports.tgz``) holding:

* ``<uId id="CXR<n>">``: the report's id; the de-identification gave every
  report its own patient, so it is the patient's id too;
* four ``<AbstractText Label=...>`` sections: ``COMPARISON``, ``INDICATION``,
  ``FINDINGS``, ``IMPRESSION`` (any may be empty);
* ``<MeSH>``: ``<major>`` terms indexed by hand from the report
  (``"Opacity/lung/base/left/mild"``: a heading, then qualifiers) and
  ``<automatic>`` terms found by software; ``"normal"`` marks a normal report,
  ``"No Indexing"`` one that was not indexed;
* ``<parentImage id="CXR<n>_IM-....">``: the ids of its images (the PNG
  download names them ``<id>.png``).

The text is licensed CC BY-NC-ND 4.0: it is read at run time from the copy
installed with the ``torchxrayvision`` wheel (which ships ``NLMCXR_reports.tgz``
and ``nlmcxr_dicom_metadata.csv.gz``) or from a user's own download, and never
stored in the repository. ``torchxrayvision`` itself is not imported (its
import needs torchvision, which is not installed beside our torch): only its
package folder is located.
"""

from __future__ import annotations

import importlib.util
import tarfile
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pandas as pd

#: The package whose data folder holds the Open-i files, and the files used.
PACKAGE = "torchxrayvision"
REPORTS_ARCHIVE = "NLMCXR_reports.tgz"
DICOM_METADATA = "nlmcxr_dicom_metadata.csv.gz"
#: One image per report labelled PA (frontal) or L (lateral) by torchxrayvision's authors from the pixels
#: (a t-SNE map of the images), because the DICOM view positions are noisy.
DERIVED_VIEWS = "nlmcxr_tsne_pa.csv.gz"
#: How to install it without pulling torchvision (see requirements-nodeps.txt).
INSTALL_HINT = "pip install --no-deps torchxrayvision==1.5.7 (make install does this)"

SECTION_LABELS = ("COMPARISON", "INDICATION", "FINDINGS", "IMPRESSION")
NORMAL_TERM = "normal"
NOT_INDEXED_TERM = "No Indexing"

#: Columns of :func:`read_reports`'s table, in order.
REPORT_COLUMNS = ("report_id", "study_id", "source_file", "comparison", "indication", "findings", "impression",
                  "mesh_major", "mesh_automatic", "image_ids", "problem")


class OpenIError(ValueError):
    """The Open-i reports or tables as a whole cannot be found or read."""


def package_data_dir() -> Path:
    """The ``data`` folder of the installed ``torchxrayvision`` package, found without importing it.

    Raises
    ------
    OpenIError
        When the package is not installed (the message says how to install it).
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise OpenIError(f"the Open-i reports ship with the {PACKAGE} package, which is not installed: {INSTALL_HINT}")
    for location in spec.submodule_search_locations:
        folder = Path(location) / "data"
        if (folder / REPORTS_ARCHIVE).is_file():
            return folder
    raise OpenIError(f"{PACKAGE} is installed at {list(spec.submodule_search_locations)} but its data folder has no "
                     f"{REPORTS_ARCHIVE}; reinstall it: {INSTALL_HINT}")


def packaged_reports_available() -> bool:
    """Whether the installed ``torchxrayvision`` ships the Open-i reports (tests skip without them)."""
    try:
        package_data_dir()
    except OpenIError:
        return False
    return True


def packaged_file(name: str) -> Path:
    """Path of one of the Open-i files in the installed package's data folder."""
    path = package_data_dir() / name
    if not path.is_file():
        raise OpenIError(f"{path}: missing from the installed {PACKAGE}; reinstall it: {INSTALL_HINT}")
    return path


@dataclass(frozen=True)
class ReportFile:
    """One report XML as bytes, with the name it had in its archive or folder."""

    name: str
    content: bytes | None
    problem: str | None = None


def iter_report_files(source: str | Path | None = None) -> Iterator[ReportFile]:
    """Every report XML of ``source``, in name order.

    Parameters
    ----------
    source
        ``NLMCXR_reports.tgz`` (the Open-i download, or the copy in the installed
        package when None), or a folder holding the unpacked XML files (searched
        recursively).
    """
    path = packaged_file(REPORTS_ARCHIVE) if source in (None, "") else Path(source).expanduser()
    if path.is_dir():
        files = sorted(path.rglob("*.xml"))
        if not files:
            raise OpenIError(f"{path}: no .xml report files found (expected the unpacked {REPORTS_ARCHIVE})")
        for file in files:
            try:
                yield ReportFile(file.relative_to(path).as_posix(), file.read_bytes())
            except OSError as error:
                yield ReportFile(file.relative_to(path).as_posix(), None, f"cannot be read ({error})")
        return
    if not path.is_file():
        raise OpenIError(f"{path}: neither a folder of report XML files nor a {REPORTS_ARCHIVE} archive")
    try:
        with tarfile.open(path, "r:*") as archive:
            members = sorted((m for m in archive.getmembers() if m.isfile() and m.name.endswith(".xml")),
                             key=lambda m: m.name)
            if not members:
                raise OpenIError(f"{path}: the archive holds no .xml report files")
            for member in members:
                handle = archive.extractfile(member)
                yield ReportFile(member.name, handle.read() if handle is not None else None,
                                 None if handle is not None else "cannot be extracted")
    except tarfile.TarError as error:
        raise OpenIError(f"{path}: cannot be read as a tar archive ({error})") from error


def _text(element: ElementTree.Element | None) -> str | None:
    """The whitespace-collapsed text of an element, None when empty."""
    if element is None or element.text is None:
        return None
    text = " ".join(element.text.split())
    return text or None


def parse_report(content: bytes, name: str = "<report>") -> dict:
    """One report XML as a row of :func:`read_reports`'s table (without ``source_file`` and ``problem``).

    Raises
    ------
    ValueError
        When the XML cannot be parsed or has no ``uId`` of the form ``CXR<number>``.
    """
    try:
        root = ElementTree.fromstring(content)
    except ElementTree.ParseError as error:
        raise ValueError(f"{name}: not well-formed XML ({error})") from error
    uid = root.find("uId")
    report_id = uid.get("id", "") if uid is not None else ""
    if not (report_id.startswith("CXR") and report_id[3:].isdigit()):
        raise ValueError(f"{name}: expected <uId id=\"CXR<number>\">, found {report_id!r}")
    sections = {label: None for label in SECTION_LABELS}
    for element in root.iter("AbstractText"):
        label = (element.get("Label") or "").upper()
        if label in sections:
            sections[label] = _text(element)
    major = [text for text in (_text(e) for e in root.iter("major")) if text]
    automatic = [text for text in (_text(e) for e in root.iter("automatic")) if text]
    images = [e.get("id") for e in root.iter("parentImage") if e.get("id")]
    return {
        "report_id": report_id, "study_id": int(report_id[3:]),
        "comparison": sections["COMPARISON"], "indication": sections["INDICATION"],
        "findings": sections["FINDINGS"], "impression": sections["IMPRESSION"],
        "mesh_major": "|".join(major), "mesh_automatic": "|".join(automatic), "image_ids": "|".join(images),
    }


def read_reports(source: str | Path | None = None) -> pd.DataFrame:
    """All Open-i reports as a table, one row per XML file.

    Parameters
    ----------
    source
        See :func:`iter_report_files` (default: the copy in the installed package).

    Returns
    -------
    DataFrame
        Columns ``REPORT_COLUMNS``: ``report_id`` (``CXR<n>``), ``study_id``
        (``n``), ``source_file``, the four sections (None when empty), MeSH
        major and automatic terms and image ids joined by ``"|"``, and
        ``problem``: None, or why the file could not be read (its other fields
        are then empty).
    """
    rows = []
    for file in iter_report_files(source):
        row = {column: None for column in REPORT_COLUMNS}
        row["source_file"] = file.name
        if file.content is None:
            row["problem"] = file.problem
        else:
            try:
                row.update(parse_report(file.content, file.name))
            except ValueError as error:
                row["problem"] = str(error)
        rows.append(row)
    table = pd.DataFrame(rows, columns=list(REPORT_COLUMNS))
    table["study_id"] = table["study_id"].astype("Int64")
    return table


def split_terms(joined: object) -> list[str]:
    """The MeSH terms (or image ids) of one report from their ``"|"``-joined form."""
    return [term for term in str(joined).split("|") if term] if isinstance(joined, str) else []


def report_text(findings: object, impression: object) -> str:
    """Findings and impression of a report as one text (what the MeSH terms were indexed from)."""
    return " ".join(part for part in (findings, impression) if isinstance(part, str) and part.strip())
