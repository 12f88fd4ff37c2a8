"""The reader study's review page (Section 5.4, Appendix E, Figure 19).

In the paper one radiologist read ten radiographs, each with three reports
(SAE-Rad, CheXagent and the nearest-neighbour baseline), blinded to the
system, and marked every sentence keep / edit / delete; an edit or a delete
took one or more error categories and a clinical significance.
:func:`build_review_page` prepares such a study from ``reports/generated.jsonl``:

- it picks ``n_cases`` studies (seeded) among those where every chosen
  system wrote a report and that have a frontal image, and makes one case
  per (study, system);
- it orders the cases (seeded) so that two reports of the same radiograph are
  never adjacent when that can be avoided, and names them ``case-01``, ...;
- it writes into ``out_dir``, each file atomically:

  ``review.html``
      one self-contained page (inline CSS and JavaScript, the radiographs as
      base64 JPEG thumbnails): it needs no server and no network, keeps the
      reader's progress in ``localStorage`` under the page id, and downloads
      the annotations in the format of ``export_schema.json``;
  ``cases.json``
      what the page shows (sentences, indications, image hashes), to
      reproduce it;
  ``unblinding.json``
      case id -> study, system and config. It is *not* embedded in the page:
      nothing the reader's browser receives names a system.

The page id is the SHA-256 of the canonical JSON (sorted keys, no spaces,
UTF-8) of ``{"cases": ..., "images": ...}`` as written in ``cases.json``;
every export carries it, so an export joins its unblinding file unambiguously.
The same inputs and seed give byte-identical files.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from saerad.io import read_json, write_json, write_text
from saerad.thumbnails import encode_thumbnail, jpeg_data_uri
from saerad.mimic.loader import FRONTAL_VIEWS
from saerad.reader_study.schema import CLINICAL_SIGNIFICANCE, ERROR_CATEGORIES, EXPORT_SCHEMA_ID

CASES_SCHEMA_ID = "saerad-reader-study-cases/1"
UNBLINDING_SCHEMA_ID = "saerad-reader-study-unblinding/1"
TEMPLATE_PATH = Path(__file__).with_name("review_page.html")
DATA_PLACEHOLDER = "__REVIEW_DATA_JSON__"
TITLE_PLACEHOLDER = "__REVIEW_TITLE__"
DEFAULT_TITLE = "Chest radiograph report review"
GENERATED_COLUMNS = ("study_id", "system", "config", "sentences")
IMAGE_COLUMNS = ("study_id", "view_position", "image_path")


@dataclass(frozen=True)
class ReviewPage:
    """What :func:`build_review_page` wrote.

    Attributes
    ----------
    page_id
        SHA-256 of the canonical cases content (hex).
    html_path, cases_path, unblinding_path
        ``review.html``, ``cases.json`` and ``unblinding.json`` in ``out_dir``.
    unblinding
        One row per case in page order: ``case_id, study_id, system, config,
        dicom_id, n_sentences``.
    """

    page_id: str
    html_path: Path
    cases_path: Path
    unblinding_path: Path
    unblinding: pd.DataFrame


def build_review_page(
    generated: pd.DataFrame,
    images: pd.DataFrame,
    out_dir: str | os.PathLike,
    n_cases: int = 10,
    systems: Sequence[str] = ("sae_rad", "nearest_neighbour"),
    seed: int = 0,
    image_root: str | os.PathLike | None = None,
    indication: pd.DataFrame | pd.Series | Mapping | None = None,
    configs: Mapping[str, str] | None = None,
    image_size: int = 512,
    title: str = DEFAULT_TITLE,
) -> ReviewPage:
    """Write a blinded review page for ``n_cases`` studies x ``systems``.

    Parameters
    ----------
    generated
        ``reports/generated.jsonl`` as :func:`saerad.reports.generate.read_generated`
        returns it (columns ``study_id, system, config, sentences``; a
        sentence is ``{"text": ...}``). A report with no non-blank sentence
        counts as not written.
    images
        ``data/images.csv``: ``study_id, view_position, image_path`` (and
        ``dicom_id``). A study shows its first AP/PA image in table order.
    out_dir
        Folder for ``review.html``, ``cases.json`` and ``unblinding.json``.
    n_cases
        Number of studies (radiographs); the page holds
        ``n_cases * len(systems)`` reports.
    systems
        Systems whose reports are read, one case per study and system.
    seed
        Seeds the choice of studies and the order of the cases.
    image_root
        Folder that ``image_path`` is relative to (``data/dataset.json``'s
        ``root``); ``None`` reads the paths as given.
    indication
        The exam indication per study: ``data/studies.csv`` (columns
        ``study_id, indication``), a Series indexed by study id, or a mapping.
        Missing or NaN shows "No indication given".
    configs
        ``{system: config}`` for a system with reports from several configs
        (e.g. SAE-Rad ``no_aux`` and ``indication``); required for those.
    image_size
        Longest side of the embedded thumbnails, in pixels (never enlarged).
    title
        Heading of the page. It must not name a system.

    Returns
    -------
    ReviewPage
        The page id, the written paths and the unblinding table.

    Raises
    ------
    ValueError
        When an input lacks a field or is inconsistent; the message names it.
    FileNotFoundError
        When a chosen study's image file does not exist.
    """
    systems = _check_arguments(generated, images, systems, n_cases, image_size)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
        raise ValueError(f"seed: must be an integer, got {seed!r}")
    seed = int(seed)
    reports = {system: _reports_of(generated, system, configs) for system in systems}
    frontal = _first_frontal_images(images)
    indications = _indications(indication)

    eligible = sorted(set.intersection(*(set(table) for table in reports.values())) & set(frontal))
    if len(eligible) < n_cases:
        raise ValueError(
            f"n_cases={n_cases}, but only {len(eligible)} studies have a frontal image and a report from "
            f"every system in systems={list(systems)}"
        )
    rng = np.random.default_rng(seed)
    chosen = [eligible[k] for k in sorted(rng.choice(len(eligible), size=n_cases, replace=False))]
    pairs = [(study, system) for study in chosen for system in systems]
    order = spread_order([study for study, _ in pairs], rng)
    width = max(2, len(str(len(pairs))))

    image_keys: dict[str, str] = {}
    image_meta: dict[str, dict] = {}
    image_data: dict[str, str] = {}
    cases, unblinding = [], []
    for number, pair_index in enumerate(order, start=1):
        study, system = pairs[pair_index]
        record = reports[system][study]
        if study not in image_keys:
            key = f"image-{len(image_keys) + 1:0{width}d}"
            row = frontal[study]
            path = Path(image_root) / row["image_path"] if image_root is not None else Path(row["image_path"])
            if not path.is_file():
                raise FileNotFoundError(f"images.image_path of study {study}: {path} does not exist")
            payload, width_px, height_px = encode_thumbnail(path, image_size)
            image_keys[study] = key
            image_meta[key] = {"media_type": "image/jpeg", "sha256": hashlib.sha256(payload).hexdigest(),
                               "width": width_px, "height": height_px}
            image_data[key] = jpeg_data_uri(payload)
        case_id = f"case-{number:0{width}d}"
        cases.append({"case_id": case_id, "image": image_keys[study], "indication": indications.get(study),
                      "sentences": record["sentences"]})
        unblinding.append({"case_id": case_id, "study_id": record["study_id"], "system": system,
                           "config": record["config"], "dicom_id": frontal[study].get("dicom_id"),
                           "n_sentences": len(record["sentences"])})

    content = {"cases": cases, "images": image_meta}
    page_id = hashlib.sha256(canonical_json(content).encode("utf-8")).hexdigest()
    out_dir = Path(out_dir)
    cases_path = write_json(out_dir / "cases.json",
                            {"schema": CASES_SCHEMA_ID, "page_id": page_id, "study_seed": seed, **content})
    unblinding_path = write_json(out_dir / "unblinding.json", {
        "schema": UNBLINDING_SCHEMA_ID, "page_id": page_id, "seed": seed, "systems": list(systems),
        "cases": {row["case_id"]: {k: v for k, v in row.items() if k != "case_id"} for row in unblinding},
    })
    page_data = {"page_id": page_id, "study_seed": seed, "export_schema": EXPORT_SCHEMA_ID,
                 "error_categories": list(ERROR_CATEGORIES), "clinical_significance": list(CLINICAL_SIGNIFICANCE),
                 "cases": cases, "images": image_data}
    html_path = write_text(out_dir / "review.html", render_page(page_data, title))
    return ReviewPage(page_id, html_path, cases_path, unblinding_path, pd.DataFrame(unblinding))


def review_inputs(data_dir: str | os.PathLike) -> dict[str, Any]:
    """``images``, ``image_root`` and ``indication`` of a data stage, as :func:`build_review_page` takes them.

    ``image_root`` is ``dataset.json``'s ``root`` as written (relative to the
    repository root for the demo), like :func:`saerad.encode.encoder.dataset_image_paths`.
    """
    data_dir = Path(data_dir)
    studies = pd.read_csv(data_dir / "studies.csv", usecols=["study_id", "indication"])
    return {"images": pd.read_csv(data_dir / "images.csv"),
            "image_root": Path(read_json(data_dir / "dataset.json")["root"]),
            "indication": studies}


def unblinding_table(path: str | os.PathLike) -> pd.DataFrame:
    """``unblinding.json`` as a table, one row per case in page order.

    Columns ``case_id, study_id, system, config, dicom_id, n_sentences``;
    ``table.attrs`` holds ``page_id`` and ``seed``.
    """
    from saerad.reader_study.schema import read_unblinding

    payload, _ = read_unblinding(path)
    if payload.get("schema") != UNBLINDING_SCHEMA_ID:
        raise ValueError(f"{path}: schema is {payload.get('schema')!r}, expected {UNBLINDING_SCHEMA_ID!r}")
    table = pd.DataFrame([{"case_id": case_id, **row} for case_id, row in payload["cases"].items()])
    table.attrs.update(page_id=payload["page_id"], seed=payload["seed"])
    return table


def spread_order(groups: Sequence[Any], rng: np.random.Generator) -> list[int]:
    """A random order of ``range(len(groups))`` where equal neighbours are avoided when possible.

    At each step the next item is drawn at random among the groups other than
    the previous one, keeping only draws after which the rest can still be
    arranged without equal neighbours (no group holds more than half of what
    is left, the previous group at most the floor of half). When no such
    arrangement exists (e.g. a single group) the order is a plain shuffle
    around the unavoidable repeats.
    """
    pending: dict[Any, list[int]] = {}
    for item in rng.permutation(len(groups)).tolist():
        pending.setdefault(groups[item], []).append(item)
    order: list[int] = []
    previous = None
    while pending:
        names = sorted(pending, key=str)
        candidates = [names[k] for k in rng.permutation(len(names)).tolist() if names[k] != previous]
        feasible = [name for name in candidates if _arrangeable(pending, name)]
        chosen = (feasible or candidates or [previous])[0]
        order.append(pending[chosen].pop(0))
        if not pending[chosen]:
            del pending[chosen]
        previous = chosen
    return order


def _arrangeable(pending: Mapping[Any, list], taken: Any) -> bool:
    counts = {name: len(items) - (name == taken) for name, items in pending.items()}
    left = sum(counts.values())
    return all(count <= (left // 2 if name == taken else (left + 1) // 2) for name, count in counts.items())


def canonical_json(payload: Any) -> str:
    """JSON with sorted keys and no spaces: the text the page id hashes."""
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def render_page(page_data: Mapping[str, Any], title: str = DEFAULT_TITLE) -> str:
    """Fill the HTML template with the page's data (as inert JSON) and title."""
    template = TEMPLATE_PATH.read_text(encoding="utf-8")
    for placeholder in (DATA_PLACEHOLDER, TITLE_PLACEHOLDER):
        if placeholder not in template:
            raise ValueError(f"{TEMPLATE_PATH}: placeholder {placeholder} is missing")
    # Inside <script type="application/json"> only "</" could end the element; escape all markup characters.
    data = canonical_json(page_data).replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
    return template.replace(TITLE_PLACEHOLDER, html.escape(title)).replace(DATA_PLACEHOLDER, data)


def _check_arguments(generated, images, systems, n_cases, image_size) -> tuple[str, ...]:
    if isinstance(systems, str):
        raise ValueError(f"systems: give a sequence of system names, not the string {systems!r}")
    systems = tuple(systems)
    if not systems or len(set(systems)) != len(systems):
        raise ValueError(f"systems: need one or more distinct system names, got {list(systems)}")
    if not isinstance(n_cases, (int, np.integer)) or n_cases < 1:
        raise ValueError(f"n_cases: must be a positive integer, got {n_cases!r}")
    if image_size < 16:
        raise ValueError(f"image_size: must be at least 16 pixels, got {image_size}")
    for name, table, columns in (("generated", generated, GENERATED_COLUMNS), ("images", images, IMAGE_COLUMNS)):
        missing = [column for column in columns if column not in table.columns]
        if missing:
            raise ValueError(f"{name}: missing columns {missing}")
    return systems


def _study_key(value: Any) -> str:
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    return str(value).strip()


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _reports_of(generated: pd.DataFrame, system: str, configs: Mapping[str, str] | None) -> dict[str, dict]:
    """``study key -> {study_id, config, sentences}`` of the reports a system wrote."""
    rows = generated[generated["system"] == system]
    if rows.empty:
        raise ValueError(f"systems: {system!r} has no report in generated "
                         f"(systems there: {sorted(generated['system'].astype(str).unique())})")
    if configs and system in configs:
        rows = rows[rows["config"] == configs[system]]
        if rows.empty:
            raise ValueError(f"configs: system {system!r} has no report with config {configs[system]!r}")
    elif rows["config"].nunique() > 1:
        raise ValueError(f"generated: system {system!r} has reports from configs {sorted(rows['config'].unique())}; "
                         f"choose one with configs={{{system!r}: ...}}")
    reports = {}
    for position, row in zip(rows.index, rows.itertuples(index=False)):
        key = _study_key(row.study_id)
        if key in reports:
            raise ValueError(f"generated: study {row.study_id} has two reports from {system!r} ({row.config})")
        sentences = row.sentences if isinstance(row.sentences, (list, tuple)) else None
        if sentences is None:
            raise ValueError(f"generated.sentences (row {position}, study {row.study_id}, {system!r}): "
                             f"expected a list, got {type(row.sentences).__name__}")
        texts = []
        for number, sentence in enumerate(sentences):
            text = sentence.get("text") if isinstance(sentence, Mapping) else sentence
            if not isinstance(text, str):
                raise ValueError(f"generated.sentences[{number}].text (row {position}, study {row.study_id}, "
                                 f"{system!r}): expected a string, got {type(text).__name__}")
            if text.strip():
                texts.append(" ".join(text.split()))
        if texts:
            reports[key] = {"study_id": _plain(row.study_id), "config": _plain(row.config), "sentences": texts}
    return reports


def _first_frontal_images(images: pd.DataFrame) -> dict[str, dict]:
    """``study key -> images row`` of each study's first AP/PA image."""
    frontal = images[images["view_position"].astype(str).str.upper().isin(FRONTAL_VIEWS)]
    first = frontal.drop_duplicates(subset="study_id", keep="first")
    return {_study_key(row["study_id"]): {k: _plain(v) for k, v in row.items()} for row in first.to_dict("records")}


def _indications(indication: pd.DataFrame | pd.Series | Mapping | None) -> dict[str, str | None]:
    if indication is None:
        return {}
    if isinstance(indication, pd.DataFrame):
        missing = [column for column in ("study_id", "indication") if column not in indication.columns]
        if missing:
            raise ValueError(f"indication: missing columns {missing}")
        pairs = zip(indication["study_id"], indication["indication"])
    elif isinstance(indication, pd.Series):
        pairs = indication.items()
    elif isinstance(indication, Mapping):
        pairs = indication.items()
    else:
        raise ValueError(f"indication: expected a table, a Series or a mapping, got {type(indication).__name__}")
    cleaned = {}
    for study, text in pairs:
        text = None if text is None or (isinstance(text, float) and np.isnan(text)) else " ".join(str(text).split())
        cleaned[_study_key(study)] = text or None
    return cleaned
