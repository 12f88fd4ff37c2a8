"""The feature atlas: static, offline HTML pages, one per live SAE feature, and an index to find them.

Layout of the folder :func:`build_atlas` writes (everything relative, no network)::

    index.html               the sortable, filterable, searchable list of live features
    features/<id>.html       one page per live feature (its data inline)
    assets/atlas.css, .js    shared style and behaviour (package data: atlas_assets/)
    data/index.js            window.ATLAS_INDEX: one row per feature, the search index, the atlas's settings
    data/images.js           window.ATLAS_IMAGES: study, view and split of each thumbnail
    data/reports.js          window.ATLAS_REPORTS: report text of each study shown
    thumbs/<image>.jpg       one small JPEG per image used, shared by every page that shows it
    citations.js             window.ATLAS_CITATIONS (null until the reports chapter calls write_citations)

Data travel in ``<script src>`` files rather than ``fetch()``: browsers refuse
``fetch`` of ``file://`` URLs, and the atlas must open straight from disk.
"""

from __future__ import annotations

import html
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from saerad.features.atlas_data import AtlasTables, citation_counts, feature_records, json_dumps, \
    load_atlas_tables, significant
from saerad.features.atlas_search import browser_index, evidence_search
from saerad.features.search import FeatureSearch
from saerad.io import atomic_path, read_json

#: Where the features chapter is, relative to the atlas folder (the book publishes the atlas at <html>/atlas/).
DEFAULT_CHAPTER_LINK = "../book/chapters/03_features.html"
CITATIONS_FILE = "citations.js"
ASSETS = ("atlas.css", "atlas.js")
#: Heat-map cells are stored as integers in [-MAP_LEVELS, MAP_LEVELS] of the feature's largest |cell|.
MAP_LEVELS = 99


@dataclass
class AtlasSummary:
    """What :func:`build_atlas` wrote."""

    out_dir: Path
    n_features: int
    n_images: int
    bytes_on_disk: int
    seconds: float
    has_heatmaps: bool
    heatmap_note: str


def _asset(name: str) -> str:
    return resources.files("saerad.features").joinpath("atlas_assets", name).read_text(encoding="utf-8")


def default_sae_dir(artifacts_root: Path) -> Path:
    """The SAE the features stage described (its ``sae_name`` parameter), else ``sae/sae_rad_main``."""
    stage = artifacts_root / "features" / "stage.json"
    name = "sae_rad_main"
    if stage.exists():
        name = read_json(stage).get("parameters", {}).get("sae_name", name)
    return artifacts_root / "sae" / name


def write_script(path: Path, variable: str, payload) -> None:
    """``window.<variable> = <payload>;`` as a small JavaScript file (written atomically)."""
    with atomic_path(path) as temporary:
        temporary.write_text(f"window.{variable} = {json_dumps(payload)};\n", encoding="utf-8")


def write_citations(artifacts_root: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    """Write ``citations.js`` (how many SAE-Rad reports cite each feature) into ``out_dir``.

    Called by the reports chapter, which runs after the atlas is built, with its own folder
    (``reports/atlas``); publishing the book lays the file over the atlas's placeholder
    (:data:`saerad.publish.EXTRA_PAGES`). The pages read it through a ``<script>`` tag and say "n/a"
    while it holds null.

    Returns the counts written (:func:`saerad.features.atlas_data.citation_counts`).
    """
    out_dir = Path(out_dir)
    counts = citation_counts(Path(artifacts_root) / "reports" / "generated.jsonl")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_script(out_dir / CITATIONS_FILE, "ATLAS_CITATIONS", counts)
    return counts


def _heatmaps(artifacts_root: Path, tables: AtlasTables, records: list[dict], image_rows: list[int], sae,
              encoder_dir, image_root: Path, progress: bool) -> tuple[bool, str, list | None, str | None]:
    """Add each example's map (``map``: ints) and each feature's ``map_scale``.

    Returns (has maps, note, [h, w], caption): the caption is None for a mean-pooled CNN (the page's own
    text describes its maps) and describes the attention split for a ViT, whose examples also get
    ``map_remainder`` (the part of the pre-activation no patch carries).
    """
    from saerad.features.atlas_maps import atlas_example_maps, load_atlas_encoder
    from saerad.features.spatial import SpatialAttributionError, load_token_scale

    encoder = load_atlas_encoder(artifacts_root, encoder_dir)
    paths_by_dicom = dict(zip(tables.images["dicom_id"], tables.images["image_path"]))
    dicoms = tables.activation_index["dicom_id"].to_numpy()
    position = {row: k for k, row in enumerate(image_rows)}
    pairs = [(position[example["row"]], record["feature"]) for record in records for example in record["examples"]]
    try:
        cells, remainder, method = atlas_example_maps(
            encoder, [image_root / paths_by_dicom[dicoms[row]] for row in image_rows], [p[0] for p in pairs],
            [p[1] for p in pairs], sae, load_token_scale(artifacts_root), progress=progress)
    except SpatialAttributionError as error:
        return False, (f"No heat maps: a feature's pre-activation does not split over image positions for the "
                       f"encoder {type(encoder.model).__name__}. ({error})"), None, None
    # In the book's units: activation = ReLU(pre-activation) · ||W_dec[i]||, so where a feature fires
    # the mean of its cells (plus the remainder, for a ViT) equals the activation the page prints.
    norms = sae.W_dec.detach().double().norm(dim=1).numpy()
    cells *= norms[[p[1] for p in pairs]][:, None, None]
    remainder = remainder * norms[[p[1] for p in pairs]]
    k = 0
    for record in records:
        chunk = cells[k:k + len(record["examples"])]
        rest = remainder[k:k + len(record["examples"])]
        k += len(record["examples"])
        scale = float(np.abs(chunk).max()) if chunk.size else 0.0
        record["map_scale"] = significant(scale, 4)
        for example, grid, left in zip(record["examples"], chunk, rest):
            example["map"] = (np.round(grid / scale * MAP_LEVELS).astype(int).ravel().tolist() if scale > 0
                              else [0] * grid.size)
            example["map_mean"] = significant(grid.mean(), 4)
            if method == "attention":
                example["map_remainder"] = significant(left, 4)
    height, width = cells.shape[-2:]
    if method == "attention":
        note = (f"Heat maps: each of the encoder's {height} × {width} patches' contribution to the feature's "
                f"pre-activation through the last block's attention, times the number of patches (and the decoder "
                f"norm), so the mean of the cells plus the image's remainder (CLS token, residual, MLP, biases) is "
                f"the pre-activation, and where the feature fires its activation.")
        caption = (f"The map is each patch's contribution to the feature's pre-activation through the encoder's last "
                   f"attention layer ({height} × {width} patches, times their number): red pushes the feature up, "
                   f"blue pushes it down; one scale for every image on this page. Where the feature fires, the mean "
                   f"of the cells plus the remainder that no patch carries (the CLS token's own path) is its "
                   f"activation. A patch's value says which patch token the last layer reads the feature from, "
                   f"not which pixels caused it.")
        return True, note, [int(height), int(width)], caption
    return True, (f"Heat maps: the feature's pre-activation in each of the encoder's {height} × {width} cells "
                  f"(times the decoder norm, so where the feature fires the mean of the cells is its activation)."), \
        [int(height), int(width)], None


def _write_thumbnails(folder: Path, paths: list[Path], size: int, quality: int, progress: bool) -> None:
    from saerad.thumbnails import encode_thumbnail

    folder.mkdir()
    iterator = enumerate(paths)
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(iterator, total=len(paths), desc="atlas thumbnails")
    for number, path in iterator:
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: data/images.csv lists it (image_path) but the file is gone")
        payload, _, _ = encode_thumbnail(path, size, quality=quality)
        (folder / f"{number}.jpg").write_bytes(payload)


def _feature_page(record: dict, chapter_link: str) -> str:
    feature = record["feature"]
    if record["status"] == "ok":
        lede = html.escape(record["description"])
    else:
        lede = "Flagged: " + html.escape(record["flag_reason"] or "no description")
    return (_asset("feature.html").replace("@@FEATURE@@", str(feature)).replace("@@LEDE@@", lede)
            .replace("@@CHAPTER@@", html.escape(_from_subfolder(chapter_link), quote=True))
            .replace("@@DATA@@", json_dumps(record)))


def _from_subfolder(link: str) -> str:
    """A link relative to the atlas folder, as seen from ``features/`` (absolute URLs unchanged)."""
    return link if "://" in link or link.startswith("/") else "../" + link


def _folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def build_atlas(artifacts_root: str | os.PathLike, out_dir: str | os.PathLike, sae_dir: str | os.PathLike | None = None,
                *, examples_per_band: int = 4, top_examples: int = 8, neighbours: int = 8, seed: int = 0,
                heatmaps: bool = True, encoder_dir: str | os.PathLike | None = None,
                chapter_link: str = DEFAULT_CHAPTER_LINK, thumbnail_size: int = 128, thumbnail_quality: int = 80,
                search: FeatureSearch | None = None, progress: bool = False) -> AtlasSummary:
    """Build the feature atlas of ``artifacts_root`` into ``out_dir`` (replaced only when the build succeeds).

    Parameters
    ----------
    artifacts_root
        A run's artifacts (``features/``, ``data/``, ``encode/``, ``sae/``; ``reports/`` optional).
    out_dir
        The atlas folder (e.g. ``book/extra/atlas``); an existing one is replaced.
    sae_dir
        The SAE the features stage described; default: its ``sae_name`` parameter under ``sae/``.
    examples_per_band
        Images per quantile band of the activations (:data:`saerad.features.atlas_data.QUANTILE_BANDS`).
    top_examples
        Top-activating training studies shown (at most the ``top_k`` the stage kept).
    neighbours
        Nearest features by decoder cosine.
    seed
        Seed of the band draws (with the feature id; each feature's draw is its own).
    heatmaps
        False skips the encoder pass (pages say there are no heat maps). A mean-pooled CNN gives
        each cell's pre-activation, a DINOv2 ViT each patch's contribution through the last block's
        attention (:mod:`saerad.features.spatial_vit`); other encoders give no heat maps, with the
        reason on the pages.
    encoder_dir
        The encoder; default: the one ``encode/scale.json`` names.
    chapter_link
        The features chapter, relative to the atlas folder (or an absolute URL).
    thumbnail_size, thumbnail_quality
        Longest side (pixels, never enlarged) and JPEG quality of the shared thumbnails.
    search
        The text search the index page repeats; default: the chapter's evidence search rebuilt from the
        artifacts (:func:`saerad.features.atlas_search.evidence_search`).
    progress
        Show progress bars.

    Returns
    -------
    AtlasSummary
    """
    from saerad.counterfactual.images import dataset_root
    from saerad.sae import load_sae

    started = time.perf_counter()
    root = Path(artifacts_root)
    out_dir = Path(out_dir)
    sae_dir = Path(sae_dir) if sae_dir is not None else default_sae_dir(root)
    if not (sae_dir / "cfg.json").exists():
        raise FileNotFoundError(f"{sae_dir / 'cfg.json'} is missing: give the SAE the features stage described")
    tables = load_atlas_tables(root)
    search_index = browser_index(search if search is not None else evidence_search(root, tables))
    sae = load_sae(sae_dir)
    if sae.config.d_sae != tables.activations.shape[1]:
        raise ValueError(f"{sae_dir}: d_sae={sae.config.d_sae}, but features/activations.npz has "
                         f"{tables.activations.shape[1]} columns: not the SAE the features stage described")
    decoder = sae.W_dec.detach().double().numpy()
    records = feature_records(tables, decoder, examples_per_band=examples_per_band, top_examples=top_examples,
                              neighbours=neighbours, seed=seed, progress=progress)

    # Images: one id per distinct activation row shown, numbered in row order (stable across builds).
    image_rows = sorted({example["row"] for record in records for example in record["examples"]})
    image_root = dataset_root(root)
    images = tables.images.drop_duplicates("dicom_id").set_index("dicom_id")
    dicoms = tables.activation_index["dicom_id"].to_numpy()
    missing = sorted({dicoms[row] for row in image_rows} - set(images.index))
    if missing:
        raise ValueError(f"{root / 'data' / 'images.csv'} lacks {len(missing)} image(s) of "
                         f"features/activations_index.csv, e.g. {missing[:3]}")
    has_maps, note, grid, caption = False, "No heat maps: the atlas was built with heatmaps=False.", None, None
    if heatmaps:
        has_maps, note, grid, caption = _heatmaps(root, tables, records, image_rows, sae, encoder_dir, image_root,
                                                  progress)

    image_id = {row: number for number, row in enumerate(image_rows)}
    for record in records:
        for example in record["examples"]:
            example["image"] = image_id[example.pop("row")]
            example["activation"] = significant(example["activation"], 4)
    split_of_row = tables.activation_index["split"].astype(str).to_numpy()
    image_table = [[int(images.at[dicoms[row], "study_id"]), str(images.at[dicoms[row], "view_position"]),
                    split_of_row[row], str(dicoms[row])] for row in image_rows]
    studies = {entry[0] for entry in image_table}
    studies |= {item["study"] for record in records for item in (record["scored"] or [])}
    reports = {str(study): tables.report_of_study.get(study, "") for study in sorted(studies)}

    index_payload = {
        "columns": ["feature", "status", "text", "density", "fire_count", "max", "explanation_auroc",
                    "aligned_finding", "finding_auroc", "purity"],
        "rows": [[r["feature"], r["status"], r["description"] if r["status"] == "ok" else (r["flag_reason"] or ""),
                  r["density"], r["fire_count"], r["max"], (r["explanation"] or {}).get("auroc"),
                  r["alignment"]["finding"], r["alignment"]["auroc"], r["alignment"]["purity"]] for r in records],
        "search": search_index,
        "meta": {"n_images": int(tables.activations.shape[0]), "d_sae": int(sae.config.d_sae),
                 "n_live": len(records), "has_heatmaps": has_maps, "heatmap_note": note,
                 "grid": grid, **({"heatmap_caption": caption} if caption else {}), "chapter": chapter_link,
                 "scored_saved": tables.scored_studies is not None,
                 "explanation_saved": tables.explanation is not None,
                 "examples_per_band": examples_per_band, "top_examples": top_examples, "seed": seed},
    }

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    building = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.building-"))
    try:
        (building / "assets").mkdir()
        for name in ASSETS:
            (building / "assets" / name).write_text(_asset(name), encoding="utf-8")
        (building / "data").mkdir()
        write_script(building / "data" / "index.js", "ATLAS_INDEX", index_payload)
        write_script(building / "data" / "images.js", "ATLAS_IMAGES", image_table)
        write_script(building / "data" / "reports.js", "ATLAS_REPORTS", reports)
        generated = root / "reports" / "generated.jsonl"
        write_script(building / CITATIONS_FILE, "ATLAS_CITATIONS",
                     citation_counts(generated) if generated.exists() else None)
        _write_thumbnails(building / "thumbs", [image_root / images.at[dicoms[row], "image_path"]
                                                for row in image_rows], thumbnail_size, thumbnail_quality, progress)
        (building / "features").mkdir()
        for record in records:
            (building / "features" / f"{record['feature']}.html").write_text(_feature_page(record, chapter_link),
                                                                            encoding="utf-8")
        (building / "index.html").write_text(
            _asset("index.html").replace("@@CHAPTER@@", html.escape(chapter_link, quote=True))
            .replace("@@N_LIVE@@", f"{len(records):,}").replace("@@D_SAE@@", f"{sae.config.d_sae:,}"),
            encoding="utf-8")
        os.chmod(building, 0o777 & ~_umask())
        _replace_folder(building, out_dir)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)
        raise
    return AtlasSummary(out_dir=out_dir, n_features=len(records), n_images=len(image_rows),
                        bytes_on_disk=_folder_bytes(out_dir), seconds=time.perf_counter() - started,
                        has_heatmaps=has_maps, heatmap_note=note)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _replace_folder(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``; an old ``target`` is moved aside first and deleted only after."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
