"""Localisation of each finding's best feature on the demo's held-out images (read-only on the artifacts).

For every SynthCXR finding, the feature the features stage aligned with it
(``features/finding_alignment.csv``) is mapped over the test-split frontal
images that carry the finding (:mod:`saerad.features.spatial`; a DINOv2 encoder gets the
per-patch attention split of :mod:`saerad.features.spatial_vit`), and scored
against the planted masks with the pointing game and the top-area IoU, beside
a centre prior and the image's own (cell-averaged) intensity
(:mod:`saerad.features.localisation`).

    python benchmarks/localisation_demo.py [--artifacts artifacts/demo] [--sae sae/sae_rad_main] [--out /tmp/atlas_out]

Writes ``localisation.csv`` under ``--out`` and prints the table. Before
scoring, it checks that the encoder reproduces the encode stage's stored class
tokens for a few test images, so the maps belong to the tokens the SAE saw.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from saerad.encode.encoder import ClassTokenEncoder
from saerad.features.localisation import finding_maps, localise_findings, score_methods
from saerad.features.spatial import load_token_scale
from saerad.io import read_json
from saerad.sae import load_sae

REPO_ROOT = Path(__file__).resolve().parent.parent


def check_tokens_match(artifacts: Path, encoder: ClassTokenEncoder, n_images: int = 8) -> float:
    """Largest absolute gap between re-encoded and stored class tokens of the first test images."""
    from saerad.counterfactual.images import dataset_root

    index = pd.read_csv(artifacts / "encode" / "tokens_index.csv", dtype={"dicom_id": str})
    images = pd.read_csv(artifacts / "data" / "images.csv", dtype={"dicom_id": str})
    test = index[(index["split"] == "test") & index["encoded"]].head(n_images)
    paths = images.set_index("dicom_id").loc[test["dicom_id"], "image_path"]
    stored = np.load(artifacts / "encode" / "class_tokens.npy", mmap_mode="r")[test["row"].to_numpy()]
    root = dataset_root(artifacts)
    pictures = []
    for path in paths:
        with Image.open(root / path) as picture:
            pictures.append(picture.convert("RGB"))
    # The class token itself (pooler_output), for a mean-pooled CNN and a ViT alike.
    token = encoder.encode_pixels(encoder.preprocess(pictures))
    return float(np.abs(token - stored).max())


def hits_by_side(artifacts: Path, encoder, sae, table: pd.DataFrame, split: str) -> pd.DataFrame:
    """Feature and baseline hit rates per laterality, for findings SynthCXR plants on a side.

    A finding's best feature may be side-specific ("left effusion"); it
    would then point at the finding on one side only.
    """
    truth = pd.read_csv(artifacts / "data" / "ground_truth.csv", dtype={"dicom_id": str}).set_index("dicom_id")
    records = []
    for finding, feature in zip(table["finding"], table["feature"]):
        side_column = f"{finding}_laterality"
        if side_column not in truth.columns or feature < 0:
            continue
        rows, heatmaps, images, masks, grid = finding_maps(artifacts, encoder, sae, finding, int(feature), split)
        filled = masks.sum(axis=(1, 2)) > 0
        if not filled.any():
            continue
        scores = score_methods(heatmaps[filled], images[filled], masks[filled], grid)
        sides = truth.loc[rows["dicom_id"][filled], side_column].fillna("?").to_numpy()
        scores["side"] = np.tile(sides, 3)
        summary = scores.groupby(["side", "method"])["hit"].agg(["mean", "size"]).unstack("method")
        for side, values in summary.iterrows():
            records.append({"finding": finding, "feature": int(feature), "side": side,
                            "n": int(values[("size", "feature")]),
                            **{f"hit {m}": round(float(values[("mean", m)]), 2)
                               for m in ("feature", "centre", "intensity")}})
    return pd.DataFrame(records)


def interval(value: float, low: float, high: float, digits: int = 2) -> str:
    if not np.isfinite(value):
        return "n/a"
    if not np.isfinite(low):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """One line per finding with the estimates and intervals written out."""
    out = table[["finding", "feature", "n_images", "mask_share", "grid_ceiling", "grid_chance"]].copy()
    out = out.rename(columns={"grid_ceiling": "ceiling", "grid_chance": "chance"}).round(
        {"mask_share": 3, "ceiling": 2, "chance": 2})
    for measure, label in (("hit", "hit"), ("iou", "IoU")):
        for method in ("feature", "centre", "intensity"):
            value = table[f"{method}_hit_rate" if measure == "hit" else f"{method}_iou"]
            out[f"{label} {method}"] = [interval(v, lo, hi) for v, lo, hi in zip(
                value, table[f"{method}_{measure}_low"], table[f"{method}_{measure}_high"])]
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--artifacts", default=str(REPO_ROOT / "artifacts" / "demo"))
    parser.add_argument("--sae", default="sae/sae_rad_main", help="SAE directory, relative to --artifacts")
    parser.add_argument("--split", default="test")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="/tmp/atlas_out")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    artifacts = Path(args.artifacts)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    encoder_name = read_json(artifacts / "encode" / "scale.json")["encoder"]
    encoder_dir = Path(encoder_name) if Path(encoder_name).is_absolute() else REPO_ROOT / encoder_name
    encoder = ClassTokenEncoder(encoder_dir)
    gap = check_tokens_match(artifacts, encoder)
    print(f"encoder {encoder_dir}: re-encoded test tokens differ from the stored ones by at most {gap:.2e}")
    if gap > 1e-3:
        raise SystemExit("the encoder does not reproduce the encode stage's tokens; the maps would not be the SAE's")
    sae = load_sae(artifacts / args.sae)
    alignment = pd.read_csv(artifacts / "features" / "finding_alignment.csv")
    print(f"SAE {args.sae} (preset {sae.config.preset_name()}),"
          f" token scale {load_token_scale(artifacts):.4f}")
    table = localise_findings(artifacts, encoder, sae, alignment, split=args.split, n_resamples=args.resamples,
                              seed=args.seed)
    table = table.merge(alignment[["finding", "auroc"]], on="finding", how="left")
    table.to_csv(out / "localisation.csv", index=False)
    with pd.option_context("display.width", 250, "display.max_columns", 30, "display.max_colwidth", 30):
        print(readable(table).to_string(index=False))
    sides = hits_by_side(artifacts, encoder, sae, table, args.split)
    sides.to_csv(out / "localisation_by_side.csv", index=False)
    print("\nPointing-game hit rate by the finding's side (patient's left/right):")
    print(sides.to_string(index=False))
    print(f"\n{time.perf_counter() - started:.0f} s; tables written to {out}")


if __name__ == "__main__":
    main()
