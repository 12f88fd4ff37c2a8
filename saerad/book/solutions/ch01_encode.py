"""Solutions of the encode chapter's exercises (``notebooks/01_encode.ipynb``).

01.1 fits the linear probes on a tenth of the training images (five seeded subsamples, averaged) and
compares their AUROC with the chapter's; 01.2 encodes every kept image again in bfloat16 and measures how
far the class tokens and the probes move.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from saerad.book.solutions import solution
from saerad.book.tables import format_percent

#: Subsamples averaged in 01.1, so that one unlucky draw of a rare finding's few positives does not decide.
SUBSAMPLES = 5


def _probe_inputs(artifacts_root: Path):
    from saerad.encode import tokens as token_store
    from saerad.params import stage_parameters

    settings = stage_parameters(artifacts_root, "encode")
    tokens, index = token_store.load_class_tokens(artifacts_root, mmap=False)
    labels, _ = token_store.probe_labels(artifacts_root / "data", index)
    held_out = (index["split"] != "train").to_numpy()
    return settings, tokens, index, labels, held_out


@solution("01.1", keys=("table", "median_full", "median_subsample", "training_images_full",
                        "training_images_subsample", "largest_drop_finding", "largest_drop",
                        "largest_drop_prevalence", "prevalence_correlation", "pattern"),
          reads=("encode",), training_share=0.1)
def fewer_training_images(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Probe AUROC with all training images against a seeded 10 % of them (mean over subsamples)."""
    from scipy.stats import spearmanr

    from saerad.encode.probe import probe_auroc

    settings, tokens, _, labels, held_out = _probe_inputs(artifacts_root)
    train_rows = np.flatnonzero(~held_out)
    minimum = settings["probe_min_prevalence"]
    full = probe_auroc(tokens[train_rows], labels.iloc[train_rows], tokens[held_out], labels[held_out],
                       min_prevalence=minimum, seed=settings["seed"]).set_index("finding")
    size = max(2, int(round(parameters["training_share"] * len(train_rows))))
    rng = np.random.default_rng(settings["seed"])
    runs = []
    for _ in range(SUBSAMPLES):
        rows = np.sort(rng.choice(train_rows, size=size, replace=False))
        table = probe_auroc(tokens[rows], labels.iloc[rows], tokens[held_out], labels[held_out],
                            min_prevalence=minimum, seed=settings["seed"]).set_index("finding")
        runs.append(table["auroc"])
    subsample = pd.concat(runs, axis=1).mean(axis=1)  # a finding a subsample cannot probe is left out of its mean
    compared = full[full["probed"]].assign(auroc_subsample=subsample).dropna(subset=["auroc", "auroc_subsample"])
    compared["loss"] = compared["auroc"] - compared["auroc_subsample"]
    compared = compared.sort_values("loss", ascending=False)
    worst = compared.iloc[0]
    rho = float(spearmanr(compared["prevalence"], compared["loss"]).statistic) if len(compared) > 2 else float("nan")
    pattern = ("the rarer a finding, the more it tends to lose" if rho <= -0.3 else
               "the commoner a finding, the more it tends to lose" if rho >= 0.3 else
               "how much a finding loses hardly follows how common it is")
    return {
        "table": [{"finding": name.replace("_", " "), "prevalence": format_percent(row.prevalence),
                   "AUROC, all training images": f"{row.auroc:.3f}",
                   f"AUROC, {format_percent(parameters['training_share'], 0)} of them": f"{row.auroc_subsample:.3f}",
                   "loss": f"{row.loss:.3f}"}
                  for name, row in compared.head(6).iterrows()],
        "median_full": float(compared["auroc"].median()),
        "median_subsample": float(compared["auroc_subsample"].median()),
        "training_images_full": int(len(train_rows)),
        "training_images_subsample": int(size),
        "largest_drop_finding": str(worst.name).replace("_", " "),
        "largest_drop": float(worst["loss"]),
        "largest_drop_prevalence": format_percent(worst["prevalence"]),
        "prevalence_correlation": rho,
        "pattern": pattern,
    }


@solution("01.2", keys=("images", "seconds", "relative_difference_median", "relative_difference_max",
                        "auroc_change_max", "auroc_change_finding", "findings_changed_third_decimal",
                        "findings_probed"),
          reads=("data", "encode"), encode__dtype="bfloat16")
def bfloat16_tokens(artifacts_root: Path, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Encode every kept image in bfloat16; compare tokens and probe AUROC with the chapter's float32 run."""
    import time

    from saerad.encode import tokens as token_store
    from saerad.encode.encoder import ClassTokenEncoder, dataset_image_paths, encode_paths
    from saerad.io import read_json
    from saerad.paths import project_path
    from saerad.encode.probe import probe_auroc

    settings = _probe_inputs(artifacts_root)[0]
    stage = artifacts_root / "encode"
    index = pd.read_csv(stage / "tokens_index.csv", dtype={"dicom_id": str})
    images = pd.read_csv(artifacts_root / "data" / "images.csv", dtype={"dicom_id": str})
    if list(images["dicom_id"]) != list(index["dicom_id"]):
        raise ValueError(f"{stage / 'tokens_index.csv'} does not follow data/images.csv row for row: "
                         "run the encode stage again")
    paths = [project_path(path) for path in dataset_image_paths(artifacts_root / "data", images["image_path"])]
    model = project_path(settings["encoder_model"])
    encoder = ClassTokenEncoder(model if model.is_dir() else settings["encoder_model"], device="cpu",
                                dtype=parameters["encode.dtype"], local_files_only=True)
    started = time.perf_counter()
    reduced, _ = encode_paths(encoder, paths, batch_size=settings["batch_size"])
    seconds = time.perf_counter() - started

    reference = np.load(stage / "class_tokens.npy")
    encoded = index["encoded"].to_numpy() & np.isfinite(reduced).all(axis=1)
    relative = (np.linalg.norm(reduced[encoded] - reference[encoded], axis=1)
                / np.linalg.norm(reference[encoded], axis=1))

    scale = np.float32(read_json(stage / "scale.json")["scale"])
    kept = index[encoded].reset_index(drop=True)
    labels, _ = token_store.probe_labels(artifacts_root / "data", kept)
    held_out = (kept["split"] != "train").to_numpy()

    def probes(tokens: np.ndarray) -> pd.Series:
        table = probe_auroc(tokens[~held_out], labels[~held_out], tokens[held_out], labels[held_out],
                            min_prevalence=settings["probe_min_prevalence"], seed=settings["seed"])
        return table.set_index("finding")["auroc"].dropna()

    full, low = probes(reference[encoded] * scale), probes(reduced[encoded] * scale)
    change = (low - full).abs().dropna()
    third_decimal = int((full.round(3) != low.round(3)).loc[change.index].sum())
    return {
        "images": int(encoded.sum()),
        "seconds": float(seconds),
        "relative_difference_median": format_percent(float(np.median(relative)), 2),
        "relative_difference_max": format_percent(float(relative.max()), 2),
        "auroc_change_max": f"{change.max():.4f}" if len(change) else "n/a: nothing probed",
        "auroc_change_finding": str(change.idxmax()).replace("_", " ") if len(change) else "none",
        "findings_changed_third_decimal": third_decimal,
        "findings_probed": int(len(change)),
    }
