"""Linear-probe a candidate encoder on the book's demo world, exactly as the encode chapter does (issue 21).

The demo world's images (``artifacts/demo/data``) are encoded through
:class:`saerad.encode.encoder.ClassTokenEncoder` (the code that loads Rad-DINO), one
logistic-regression probe per finding is fitted on the train split and scored
on the rest (:func:`saerad.encode.probe.probe_auroc`, prevalence ≥ 2 %, seed 0), and
the token's geometry is measured: share of negative entries, the mean's share
of the squared norm, and the number of principal directions holding 90 % of
the variance.

    python benchmarks/ssl_encoder_probe.py --encoder models/synthcxr-vicreg
    python benchmarks/ssl_encoder_probe.py --untrained --like models/synthcxr-vicreg   # same network, random
    python benchmarks/ssl_encoder_probe.py --raw-pixels 32                             # pixels, 32 x 32
    python benchmarks/ssl_encoder_probe.py --supervised                                # today's encoder (stored tokens)
    python benchmarks/ssl_encoder_probe.py --table                                     # all results so far

Writes ``/tmp/ssl_probe/<name>/probe_auroc.csv`` and ``summary.json``; ``--table`` writes
``/tmp/ssl_probe/comparison.csv`` and ``comparison.md``. Runs on one thread.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from saerad.encode.comparison import raw_pixel_tokens, token_geometry  # noqa: E402
from saerad.encode.ssl_encoder import make_encoder  # noqa: E402
from saerad.encode.encoder import ClassTokenEncoder, dataset_image_paths, encode_paths  # noqa: E402
from saerad.encode.probe import probe_auroc, summarise_probes  # noqa: E402
from saerad.encode.tokens import probe_labels  # noqa: E402

BAR_MEDIAN = 0.90
BAR_FINDING = 0.85
BAR_COUNT = 12


def demo_world(artifacts: Path) -> tuple[pd.DataFrame, list[Path]]:
    index = pd.read_csv(artifacts / "encode" / "tokens_index.csv", dtype={"dicom_id": str})
    images = pd.read_csv(artifacts / "data" / "images.csv", dtype={"dicom_id": str})
    if list(images["dicom_id"]) != list(index["dicom_id"]):
        raise SystemExit("images.csv and tokens_index.csv disagree; re-run the demo's encode stage")
    return index, dataset_image_paths(artifacts / "data", images["image_path"])


def encode_with(folder: str | Path, paths: list[Path]) -> np.ndarray:
    encoder = ClassTokenEncoder(folder)
    tokens, failed = encode_paths(encoder, paths, batch_size=32)
    if failed:
        raise SystemExit(f"{len(failed)} images could not be read, e.g. {failed[0]}")
    return tokens


def probe(name: str, tokens: np.ndarray, index: pd.DataFrame, artifacts: Path, out_root: Path,
          extra: dict | None = None) -> dict:
    keep = np.isfinite(tokens).all(axis=1) & index.get("encoded", pd.Series(True, index=index.index)).to_numpy()
    tokens, index = tokens[keep], index[keep].reset_index(drop=True)
    labels, _ = probe_labels(artifacts / "data", index)
    held_out = (index["split"] != "train").to_numpy()
    table = probe_auroc(tokens[~held_out], labels[~held_out], tokens[held_out], labels[held_out],
                        min_prevalence=0.02, seed=0)
    return report(name, table, tokens, out_root, extra)


def report(name: str, table: pd.DataFrame, tokens: np.ndarray | None, out_root: Path, extra: dict | None) -> dict:
    summary = summarise_probes(table)
    probed = table[table["probed"].astype(bool)].sort_values("auroc")
    result = {
        "name": name,
        "median_auroc": round(summary.median_auroc, 4),
        "n_at_least_0.85": int((probed["auroc"] >= BAR_FINDING).sum()),
        "n_probed": summary.n_probed,
        "lowest_auroc": round(summary.lowest_auroc, 4),
        "weakest_5": {row.finding: round(float(row.auroc), 3) for row in probed.head(5).itertuples()},
        "meets_bar": bool(summary.median_auroc >= BAR_MEDIAN and (probed["auroc"] >= BAR_FINDING).sum() >= BAR_COUNT),
        "book_floors_verdict": summary.verdict,
        **(token_geometry(tokens) if tokens is not None else {}),
        "token_dim": int(tokens.shape[1]) if tokens is not None else None,
        **(extra or {}),
    }
    folder = out_root / name
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "probe_auroc.csv", index=False)
    (folder / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(table.to_string(index=False))
    print(json.dumps(result, indent=2))
    return result


def comparison(out_root: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(out_root.glob("*/summary.json")):
        result = json.loads(path.read_text())
        rows.append({
            "encoder": result["name"],
            "median AUROC": result["median_auroc"],
            "findings ≥ 0.85": f"{result['n_at_least_0.85']}/{result['n_probed']}",
            "meets bar": "yes" if result["meets_bar"] else "no",
            "weakest 5": ", ".join(f"{k} {v:.2f}" for k, v in result["weakest_5"].items()),
            "negative share": _fmt(result.get("negative_share")),
            "mean share of ‖z‖²": _fmt(result.get("mean_share_of_squared_norm")),
            "dirs for 90 % var": result.get("directions_for_90pct_variance", ""),
            "training": result.get("training", ""),
        })
    table = pd.DataFrame(rows).sort_values("median AUROC", ascending=False)
    table.to_csv(out_root / "comparison.csv", index=False)
    markdown = _markdown(table)
    (out_root / "comparison.md").write_text(markdown)
    print(markdown)
    return table


def _fmt(value) -> str:
    return "" if value is None else f"{value:.2f}"


def _markdown(table: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in table.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--encoder", help="a hub-format folder (config.json, model.safetensors, preprocessor_config.json)")
    what.add_argument("--untrained", action="store_true", help="the candidate network with random weights")
    what.add_argument("--raw-pixels", type=int, metavar="SIDE", help="pixels resized to SIDE x SIDE")
    what.add_argument("--supervised", action="store_true", help="today's demo encoder (the stored encode stage)")
    what.add_argument("--table", action="store_true", help="collect every result under --out")
    parser.add_argument("--like", help="with --untrained: take the preprocessing from this folder")
    parser.add_argument("--name", help="result name (default: from the encoder folder)")
    parser.add_argument("--artifacts", default="/work/main/artifacts/demo")
    parser.add_argument("--out", default="/tmp/ssl_probe")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    artifacts, out_root = Path(args.artifacts), Path(args.out)
    if args.table:
        comparison(out_root)
        return
    index, paths = demo_world(artifacts)
    started = time.perf_counter()
    if args.supervised:
        stored = pd.read_csv(artifacts / "encode" / "probe_auroc.csv")
        tokens = np.load(artifacts / "encode" / "class_tokens.npy")
        report(args.name or "supervised-resnet-small", stored, tokens, out_root,
               {"training": "supervised on the findings (today's demo encoder)"})
        return
    if args.raw_pixels:
        tokens = raw_pixel_tokens(paths, args.raw_pixels)
        extra = {"training": "none (pixels)"}
        name = args.name or f"raw-pixels-{args.raw_pixels}"
    elif args.untrained:
        if not args.like:
            parser.error("--untrained needs --like FOLDER (for the preprocessing)")
        from transformers import BitImageProcessor

        with tempfile.TemporaryDirectory() as folder:
            make_encoder(256, seed=0).save_pretrained(folder)
            BitImageProcessor.from_pretrained(args.like).save_pretrained(folder)
            tokens = encode_with(folder, paths)
        extra = {"training": "none (random weights, seed 0)"}
        name = args.name or "untrained-resnet"
    else:
        tokens = encode_with(args.encoder, paths)
        record_path = Path(args.encoder) / "training.json"
        extra = {}
        if record_path.exists():
            record = json.loads(record_path.read_text())
            extra["training"] = (f"{record['recipe']}, {record['steps']} steps / {record['epochs']} epochs, "
                                 f"{record['training_minutes']:.0f} min")
        name = args.name or Path(args.encoder).name
    extra["encode_seconds"] = round(time.perf_counter() - started, 1)
    probe(name, tokens, index, artifacts, out_root, extra)


if __name__ == "__main__":
    main()
