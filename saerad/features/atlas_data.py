"""What the feature atlas shows about each live feature, gathered from the features stage's artifacts.

Pure data: tables in, plain dicts and lists out (no HTML, no encoder). The
page writer (:mod:`saerad.features.atlas_page`) turns them into pages; the
heat maps (:mod:`saerad.features.atlas_maps`) are added to the examples
chosen here.

Examples per feature, Neuronpedia-style:

* ``top``: the feature's top-activating *training* studies
  (``top_activations.csv``), the ones its description was written from;
* one band per quantile range of the feature's non-zero activations over
  every image (:data:`QUANTILE_BANDS`), a few images drawn at random from
  each, so the pages show what weak activations look like too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from saerad.io import read_jsonl

#: (label, low, high): quantile ranges of a feature's non-zero activations, strongest first.
QUANTILE_BANDS = (("q75-95", 0.75, 0.95), ("q50-75", 0.50, 0.75), ("q25-50", 0.25, 0.50), ("q0-25", 0.0, 0.25))
#: The system whose reports cite features.
CITING_SYSTEM = "sae_rad"

FEATURE_INDEX_COLUMNS = ("feature", "density", "fire_count", "max", "status", "description", "flag_reason",
                         "explanation_auroc", "aligned_finding", "finding_auroc", "purity")
FEATURE_STATS_COLUMNS = ("feature", "density", "fire_count", "max", "mean_nonzero", "q50", "q90", "q99", "dead")
ACTIVATION_INDEX_COLUMNS = ("row", "dicom_id", "study_id", "split")
TOP_ACTIVATION_COLUMNS = ("feature", "rank", "study_id", "dicom_id", "activation")
EXPLANATION_COLUMNS = ("feature", "n_activating", "n_silent", "problem", "auroc", "precision", "recall")
SCORED_STUDY_COLUMNS = ("feature", "study_id", "activating", "score")
ALIGNMENT_COLUMNS = ("finding", "best_feature", "auroc")
IMAGE_COLUMNS = ("dicom_id", "study_id", "view_position", "image_path")
STUDY_COLUMNS = ("study_id", "findings")


def read_checked_csv(path: Path, columns: Sequence[str], what: str) -> pd.DataFrame:
    """A CSV with the ``columns`` it must have; errors name the file, the columns and the stage that writes it."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {what}")
    table = pd.read_csv(path, dtype={"dicom_id": str})
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected at least {list(columns)}")
    return table


@dataclass
class AtlasTables:
    """The artifacts the atlas reads (optional ones are None when absent)."""

    feature_index: pd.DataFrame
    feature_stats: pd.DataFrame
    activations: sparse.csr_matrix
    activation_index: pd.DataFrame
    top_activations: pd.DataFrame
    images: pd.DataFrame
    report_of_study: dict
    alignment: pd.DataFrame
    explanation: pd.DataFrame | None
    scored_studies: pd.DataFrame | None


def load_atlas_tables(artifacts_root: str | Path) -> AtlasTables:
    """Read and check every table the atlas is built from."""
    root = Path(artifacts_root)
    features, data = root / "features", root / "data"
    run_features = "run the features stage (chapter 03) first"
    feature_index = read_checked_csv(features / "feature_index.csv", FEATURE_INDEX_COLUMNS, run_features)
    feature_stats = read_checked_csv(features / "feature_stats.csv", FEATURE_STATS_COLUMNS, run_features)
    activation_index = read_checked_csv(features / "activations_index.csv", ACTIVATION_INDEX_COLUMNS, run_features)
    top = read_checked_csv(features / "top_activations.csv", TOP_ACTIVATION_COLUMNS, run_features)
    npz = features / "activations.npz"
    if not npz.exists():
        raise FileNotFoundError(f"{npz} is missing: {run_features}")
    try:
        activations = sparse.load_npz(npz).tocsr()
    except (ValueError, OSError) as error:
        raise ValueError(f"{npz}: not a scipy sparse matrix ({error})") from error
    if activations.shape[0] != len(activation_index):
        raise ValueError(f"{npz} has {activations.shape[0]} rows but {features / 'activations_index.csv'} "
                         f"lists {len(activation_index)} images")
    if not np.array_equal(activation_index["row"].to_numpy(), np.arange(len(activation_index))):
        raise ValueError(f"{features / 'activations_index.csv'}: column 'row' must be 0, 1, 2, ... in order")
    bad = feature_index.loc[~feature_index["feature"].between(0, activations.shape[1] - 1), "feature"]
    if len(bad):
        raise ValueError(f"{features / 'feature_index.csv'}: feature ids {bad.tolist()[:5]} outside "
                         f"[0, {activations.shape[1]}) (the columns of {npz})")
    if not set(feature_index["status"]) <= {"ok", "flagged"}:
        raise ValueError(f"{features / 'feature_index.csv'}: column 'status' must be 'ok' or 'flagged', got "
                         f"{sorted(set(feature_index['status']) - {'ok', 'flagged'})}")
    run_data = "run the data stage (chapter 00) first"
    images = read_checked_csv(data / "images.csv", IMAGE_COLUMNS, run_data)
    studies = read_checked_csv(data / "studies.csv", STUDY_COLUMNS, run_data)
    alignment = []
    for name in ("finding_alignment.csv", "finding_alignment_by_side.csv"):
        if (features / name).exists():
            alignment.append(read_checked_csv(features / name, ALIGNMENT_COLUMNS, run_features))
    alignment = (pd.concat(alignment).drop_duplicates("finding", ignore_index=True) if alignment
                 else pd.DataFrame(columns=list(ALIGNMENT_COLUMNS)))
    explanation = scored = None
    if (features / "explanation_scores.csv").exists():
        explanation = read_checked_csv(features / "explanation_scores.csv", EXPLANATION_COLUMNS, run_features)
    if (features / "explanation_scored_studies.csv").exists():
        scored = read_checked_csv(features / "explanation_scored_studies.csv", SCORED_STUDY_COLUMNS, run_features)
        scored["activating"] = scored["activating"].astype(str).str.lower().map({"true": True, "false": False,
                                                                                 "1": True, "0": False})
        if scored["activating"].isna().any():
            raise ValueError(f"{features / 'explanation_scored_studies.csv'}: column 'activating' must be true/false")
    return AtlasTables(feature_index=feature_index, feature_stats=feature_stats.set_index("feature"),
                       activations=activations, activation_index=activation_index, top_activations=top,
                       images=images, report_of_study=dict(zip(studies["study_id"].astype(int),
                                                               studies["findings"].fillna("").astype(str))),
                       alignment=alignment, explanation=explanation, scored_studies=scored)


def activation_histogram(values: np.ndarray, n_images: int, bins: int = 24) -> dict:
    """Counts of a feature's non-zero activations in ``bins`` equal bins from 0 to its largest one.

    Returns ``{"edges": [bins + 1 floats], "counts": [bins ints], "zeros": images where it is silent}``;
    edges and counts are empty for a feature that never fires.
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[values > 0]
    zeros = int(n_images - len(values))
    if not len(values):
        return {"edges": [], "counts": [], "zeros": zeros}
    counts, edges = np.histogram(values, bins=bins, range=(0.0, float(values.max())))
    return {"edges": [significant(edge) for edge in edges], "counts": counts.astype(int).tolist(), "zeros": zeros}


def band_examples(rows: np.ndarray, values: np.ndarray, per_band: int, rng: np.random.Generator,
                  exclude: Sequence[int] = (), bands: Sequence[tuple[str, float, float]] = QUANTILE_BANDS
                  ) -> list[dict]:
    """Images drawn from quantile bands of a feature's non-zero activations.

    Parameters
    ----------
    rows, values
        The images (rows) where the feature fires and its activation on each.
    per_band
        Images to draw per band (fewer when a band holds fewer).
    rng
        The draw's generator (one per feature, so a feature's examples do not depend on the others').
    exclude
        Rows already shown (the top examples): never drawn again, nor is a row drawn twice.
    bands
        ``(label, low, high)``: a band holds the activations ranked in ``[low, high)`` of the
        feature's sorted non-zero activations (by rank, so ties cannot empty a band).

    Returns
    -------
    list of ``{"band", "row", "activation"}``, band by band, strongest first within a band.
    """
    rows, values = np.asarray(rows), np.asarray(values, dtype=np.float64)
    if len(rows) != len(values):
        raise ValueError(f"rows and values differ in length ({len(rows)} vs {len(values)})")
    order = np.lexsort((rows, values))  # ascending activation, ties by row: the ranking does not depend on storage
    rows, values = rows[order], values[order]
    taken = set(int(row) for row in exclude)
    chosen = []
    n = len(rows)
    for label, low, high in bands:
        start, end = int(np.floor(low * n)), int(np.ceil(high * n))
        candidates = [k for k in range(start, min(end, n)) if int(rows[k]) not in taken]
        if not candidates or per_band <= 0:
            continue
        picked = rng.choice(candidates, size=min(per_band, len(candidates)), replace=False)
        for k in sorted(picked.tolist(), key=lambda k: (-values[k], rows[k])):
            taken.add(int(rows[k]))
            chosen.append({"band": label, "row": int(rows[k]), "activation": float(values[k])})
    return chosen


def nearest_features(decoder: np.ndarray, features: Sequence[int], k: int = 8, block: int = 2048
                     ) -> dict[int, list[tuple[int, float]]]:
    """Each feature's ``k`` nearest other features by cosine of decoder rows (``W_dec``, ``[d_sae, d_in]``).

    Only ``features`` (the live ones) are candidates. Ties are broken by feature id. Computed in
    blocks, so the paper's 49,152 features need ``block × n`` floats at a time, not ``n × n``.
    """
    features = np.asarray(sorted(int(f) for f in features), dtype=np.int64)
    if not len(features):
        return {}
    rows = np.asarray(decoder, dtype=np.float64)[features]
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit = rows / np.where(norms > 0, norms, 1.0)
    k = min(k, len(features) - 1)
    nearest = {}
    for start in range(0, len(features), block):
        cosine = unit[start:start + block] @ unit.T
        for offset, similarities in enumerate(cosine):
            similarities[start + offset] = -np.inf  # not its own neighbour
            # Stable: among equal cosines the smaller feature id comes first (features are sorted).
            best = np.argsort(-similarities, kind="stable")[:k]
            nearest[int(features[start + offset])] = [(int(features[j]), significant(similarities[j], 4))
                                                      for j in best]
    return nearest


def citation_counts(generated_path: str | Path) -> dict:
    """How many SAE-Rad reports cite each feature, per report configuration.

    A report cites a feature when any of its sentences lists it in ``feature_ids``; it counts
    once however many sentences do. The *main* configuration is the one most reports have (ties:
    first by name).

    Returns
    -------
    ``{"config": main, "reports": {config: n_reports}, "counts": {config: {feature: n_reports}}}``
    (feature ids as strings, as JSON keys are).
    """
    path = Path(generated_path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the reports stage (chapter 04) first")
    reports: dict[str, int] = {}
    counts: dict[str, dict[str, int]] = {}
    for number, record in read_jsonl(path, required=("system", "config", "study_id", "sentences")):
        if record["system"] != CITING_SYSTEM:
            continue
        config = str(record["config"])
        reports[config] = reports.get(config, 0) + 1
        cited = set()
        for sentence in record["sentences"] or []:
            ids = sentence.get("feature_ids") if isinstance(sentence, dict) else None
            if ids is None or not isinstance(ids, list):
                raise ValueError(f"{path}:{number}: every sentence needs a list 'feature_ids'")
            cited.update(int(feature) for feature in ids)
        per_config = counts.setdefault(config, {})
        for feature in cited:
            per_config[str(feature)] = per_config.get(str(feature), 0) + 1
    main = min(reports, key=lambda config: (-reports[config], config)) if reports else None
    return {"config": main, "reports": reports, "counts": counts}


def significant(value, digits: int = 4):
    """``value`` to ``digits`` significant digits (None for missing or non-finite), so pages stay small."""
    if value is None:
        return None
    value = float(value)
    if not np.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _text(value) -> str | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def feature_records(tables: AtlasTables, decoder: np.ndarray | None, examples_per_band: int = 4,
                    top_examples: int = 8, neighbours: int = 8, seed: int = 0, progress: bool = False
                    ) -> list[dict]:
    """One record per live feature (``feature_index.csv`` order by feature id) with everything its page shows.

    Examples carry the activation row of their image (``row``); the page writer maps rows to
    images and adds heat maps. ``decoder`` (``W_dec``) gives the nearest features; None leaves them out.
    """
    index = tables.feature_index.sort_values("feature", ignore_index=True)
    live = index["feature"].astype(int).tolist()
    columns = tables.activations.tocsc()
    n_images = tables.activations.shape[0]
    row_of_dicom = dict(zip(tables.activation_index["dicom_id"], tables.activation_index["row"].astype(int)))
    top = tables.top_activations.sort_values(["feature", "rank"])
    top_by_feature = {int(f): group for f, group in top.groupby("feature", sort=True)}
    explanation = ({int(r.feature): r for r in tables.explanation.itertuples()}
                   if tables.explanation is not None else {})
    scored = ({int(f): g for f, g in tables.scored_studies.groupby("feature", sort=True)}
              if tables.scored_studies is not None else None)
    best_for: dict[int, list[dict]] = {}
    for finding in tables.alignment.itertuples():
        if pd.notna(finding.best_feature) and int(finding.best_feature) >= 0:
            best_for.setdefault(int(finding.best_feature), []).append(
                {"finding": str(finding.finding), "auroc": significant(finding.auroc)})
    nearest = nearest_features(decoder, live, neighbours) if decoder is not None else {}
    iterator = index.itertuples()
    if progress:
        from tqdm.auto import tqdm
        iterator = tqdm(iterator, total=len(index), desc="atlas records")
    records = []
    for entry in iterator:
        feature = int(entry.feature)
        start, end = columns.indptr[feature], columns.indptr[feature + 1]
        rows, values = columns.indices[start:end], columns.data[start:end]
        examples = []
        for item in top_by_feature.get(feature, pd.DataFrame()).head(top_examples).itertuples():
            row = row_of_dicom.get(item.dicom_id)
            if row is None:
                raise ValueError(f"top_activations.csv: image {item.dicom_id} (feature {feature}) is not in "
                                 "activations_index.csv")
            examples.append({"band": "top", "row": int(row), "activation": float(item.activation)})
        examples += band_examples(rows, values, examples_per_band, np.random.default_rng([seed, feature]),
                                  exclude=[example["row"] for example in examples])
        stats = tables.feature_stats.loc[feature] if feature in tables.feature_stats.index else None
        score = explanation.get(feature)
        records.append({
            "feature": feature, "status": str(entry.status), "description": _text(entry.description) or "",
            "flag_reason": _text(entry.flag_reason), "density": significant(entry.density),
            "fire_count": int(entry.fire_count), "max": significant(entry.max),
            "stats": None if stats is None else {name: significant(stats[name]) for name in
                                                 ("mean_nonzero", "q50", "q90", "q99")},
            "histogram": activation_histogram(values, n_images),
            "examples": examples,
            "explanation": None if score is None else {
                "auroc": significant(score.auroc), "precision": significant(score.precision),
                "recall": significant(score.recall), "n_activating": int(score.n_activating),
                "n_silent": int(score.n_silent), "problem": _text(score.problem)},
            "scored": None if scored is None else [
                {"study": int(s.study_id), "activating": bool(s.activating), "score": significant(s.score, 3),
                 "right": None if pd.isna(s.score) else bool((s.score >= 0.5) == s.activating)}
                for s in scored.get(feature, pd.DataFrame(columns=list(SCORED_STUDY_COLUMNS))).itertuples()],
            "alignment": {"finding": _text(entry.aligned_finding), "auroc": significant(entry.finding_auroc),
                          "purity": significant(entry.purity), "best_for": best_for.get(feature, [])},
            "neighbours": [list(pair) for pair in nearest.get(feature, [])],
        })
    return records


def json_dumps(payload) -> str:
    """Compact JSON with sorted keys (byte-identical output for equal inputs), safe inside ``<script>``."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.replace("</", "<\\/")
