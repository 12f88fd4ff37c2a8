"""The encode stage, data-parallel under ``torchrun``: one shard of the studies per rank, one merged artifact.

Usage (see ``python -m saerad.encode.sharded --help``)::

    torchrun --nproc_per_node=8 -m saerad.encode.sharded --profile paper --artifacts-root artifacts/paper
    torchrun ... -m saerad.encode.sharded --stage activations --profile paper   # the features chapter's SAE pass

Every rank reads the data stage's ``images.csv`` as the encode chapter does,
takes its share of the *studies* (:func:`saerad.distributed.assign_groups`:
all images of a study on one rank), and writes
``encode/shards/shard-<rank>-of-<world>.npy`` (its rows' tokens),
``.index.json`` (which rows, which failed) and ``.complete.json`` (the
marker) atomically. After a barrier, rank 0 merges the shards into exactly
what :func:`saerad.encode.encoder.encode_files` writes for one process:
``encode/chunks/`` (so the encode chapter finds every chunk done and only
re-merges), ``class_tokens.npy``, ``failed_images.json``, and also
``tokens_index.csv`` / ``scale.json`` as the chapter does.

Why the merged tokens are bit-identical to a one-process run
-------------------------------------------------------------
Some encoders (convolutions in particular) give an image slightly different
float32 results depending on which other images share its batch. A rank
therefore never forms its own batches: it runs the batches a single process
would run (``batch_size`` images from the start of each ``chunk_size``
chunk) that contain at least one of its rows, and keeps only its rows. At a
shard boundary inside a batch both neighbours compute that batch, which
costs at most one batch per boundary. On a CPU the equality also needs the
same number of torch threads per process as the run compared against (some
kernels round a one-image batch differently with another thread count).

Resuming
--------
Inside a shard, each finished chunk is kept in ``shard-<r>-of-<w>.parts/``;
a complete shard is skipped as a whole. A killed job rerun with the same
command recomputes only what was missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import shutil
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm import tqdm

from saerad import distributed
from saerad.distributed import RankInfo, ShardError, ShardFiles
from saerad.paths import REPO_ROOT
from saerad.encode.encoder import (
    ClassTokenEncoder,
    EncodeResult,
    chunk_manifest,
    dataset_image_paths,
    encode_paths,
    merge_chunks,
    prepare_chunk_dir,
)
from saerad.io import atomic_path, read_json, write_json, write_npy

SHARD_DIR_NAME = "shards"


def read_image_paths(artifacts_root: str | Path) -> tuple[pd.DataFrame, list[Path]]:
    """The data stage's ``images.csv`` and the image paths, as the encode chapter builds them."""
    data_dir = Path(artifacts_root) / "data"
    images_path = data_dir / "images.csv"
    if not images_path.exists():
        raise FileNotFoundError(f"{images_path} is missing: run the data stage first")
    images = pd.read_csv(images_path, dtype={"dicom_id": str})
    missing = {"study_id", "image_path", "dicom_id", "subject_id", "split"} - set(images.columns)
    if missing:
        raise ValueError(f"{images_path}: missing column(s) {sorted(missing)}")
    return images, dataset_image_paths(data_dir, images["image_path"])


def _rows_digest(rows: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]


def shard_manifest(base: dict, batch_size: int, rows: np.ndarray, info: RankInfo) -> dict:
    """What a shard's marker must match: the chunk manifest plus batch size, world and rows."""
    return {**base, "batch_size": int(batch_size), "world_size": info.world_size, "rank": info.rank,
            "rows": _rows_digest(rows), "n_rows": int(len(rows))}


def _batch_runs(local_rows: np.ndarray, batch_size: int) -> list[tuple[int, int]]:
    """Runs ``(first_batch, last_batch)`` of consecutive batch numbers that hold ``local_rows``."""
    batches = np.unique(local_rows // batch_size)
    if len(batches) == 0:
        return []
    breaks = np.flatnonzero(np.diff(batches) != 1)
    starts = np.concatenate([[0], breaks + 1])
    stops = np.concatenate([breaks, [len(batches) - 1]])
    return [(int(batches[a]), int(batches[b])) for a, b in zip(starts, stops)]


def encode_shard(
    encoder: ClassTokenEncoder,
    paths: Sequence[Path],
    rows: np.ndarray,
    shard_dir: str | Path,
    info: RankInfo,
    batch_size: int = 32,
    chunk_size: int = 2048,
    num_workers: int = 0,
    progress: bool = True,
    base_manifest: dict | None = None,
) -> dict:
    """Encode ``paths[rows]`` into this rank's shard files; skip a shard that is already complete.

    Returns
    -------
    dict
        ``status`` ("skipped" or "encoded"), ``parts_encoded``, ``parts_reused``,
        ``images`` (rows of the shard), ``seconds``.
    """
    started = time.perf_counter()
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and (np.any(np.diff(rows) <= 0) or rows[0] < 0 or rows[-1] >= len(paths)):
        raise ValueError(f"rows must be ascending, unique and within 0..{len(paths) - 1}")
    base = base_manifest or chunk_manifest(encoder, paths, chunk_size)
    manifest = shard_manifest(base, batch_size, rows, info)
    files = ShardFiles(Path(shard_dir), info.rank, info.world_size)
    if files.is_complete(manifest):
        return {"status": "skipped", "parts_encoded": 0, "parts_reused": 0, "images": int(len(rows)),
                "seconds": time.perf_counter() - started}

    parts_manifest = files.parts / "manifest.json"
    if files.parts.exists() and (not parts_manifest.exists() or read_json(parts_manifest) != manifest):
        shutil.rmtree(files.parts)  # parts of another run must not be mixed in
    files.parts.mkdir(parents=True, exist_ok=True)
    write_json(parts_manifest, manifest)

    chunks = np.unique(rows // chunk_size)
    encoded = reused = 0
    bar = tqdm(total=len(rows), desc=f"encoding shard {info.label}", unit="img", disable=not progress)
    for chunk in chunks:
        tokens_path, failed_path = files.parts / f"part-{chunk:06d}.npy", files.parts / f"part-{chunk:06d}.json"
        lo, hi = int(chunk) * chunk_size, min(len(paths), (int(chunk) + 1) * chunk_size)
        mine = rows[(rows >= lo) & (rows < hi)]
        if tokens_path.exists() and failed_path.exists():
            reused += 1
            bar.update(len(mine))
            continue
        tokens = np.full((len(mine), encoder.dim), np.nan, dtype=np.float32)
        failed: list[tuple[int, str]] = []
        owned = set(mine.tolist())
        for first, last in _batch_runs(mine - lo, batch_size):
            # The batches a single process runs for this chunk, so every token comes out bit-identical.
            a, b = lo + first * batch_size, min(hi, lo + (last + 1) * batch_size)
            run_tokens, run_failed = encode_paths(encoder, paths[a:b], batch_size, num_workers)
            take = (mine >= a) & (mine < b)
            tokens[take] = run_tokens[mine[take] - a]
            failed.extend((a + i, problem) for i, problem in run_failed if a + i in owned)
        write_npy(tokens_path, tokens)
        write_json(failed_path, failed)
        encoded += 1
        bar.update(len(mine))
        distributed.maybe_fail(info, encoded)
    bar.close()

    with atomic_path(files.data) as temporary:
        merged = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=(len(rows), encoder.dim))
        failed_all: list[tuple[int, str]] = []
        offset = 0
        for chunk in chunks:
            part = np.load(files.parts / f"part-{chunk:06d}.npy")
            merged[offset:offset + len(part)] = part
            offset += len(part)
            failed_all.extend((int(i), p) for i, p in read_json(files.parts / f"part-{chunk:06d}.json"))
        merged.flush()
        del merged
    write_json(files.index, {"rows": rows.tolist(), "failed": failed_all})
    seconds = time.perf_counter() - started
    files.mark_complete(manifest, parts_encoded=encoded, parts_reused=reused, images=int(len(rows)),
                        seconds=round(seconds, 3))
    shutil.rmtree(files.parts)
    return {"status": "encoded", "parts_encoded": encoded, "parts_reused": reused, "images": int(len(rows)),
            "seconds": seconds}


def merge_encode_shards(
    paths: Sequence[Path],
    plan: Sequence[np.ndarray],
    shard_dir: str | Path,
    out_dir: str | Path,
    base_manifest: dict,
    batch_size: int,
) -> EncodeResult:
    """Merge the ``len(plan)`` complete shards into ``out_dir`` exactly as :func:`encode_files` lays it out.

    Raises :class:`saerad.distributed.ShardError` when a shard is missing,
    incomplete or from another run, and ``ValueError`` when the shards do not
    cover every row exactly once.
    """
    started = time.perf_counter()
    out_dir, shard_dir = Path(out_dir), Path(shard_dir)
    world_size = len(plan)
    chunk_size, dim = int(base_manifest["chunk_size"]), int(base_manifest["dim"])
    shards = []
    for rank, rows in enumerate(plan):
        info = RankInfo(rank, world_size)
        files = ShardFiles(shard_dir, rank, world_size)
        files.require_complete(shard_manifest(base_manifest, batch_size, rows, info))
        index = read_json(files.index)
        shard_rows = np.asarray(index["rows"], dtype=np.int64)
        data = np.load(files.data, mmap_mode="r")
        if data.shape != (len(shard_rows), dim):
            raise ShardError(f"{files.data}: shape {data.shape}, expected ({len(shard_rows)}, {dim})")
        shards.append((shard_rows, data, [(int(i), p) for i, p in index["failed"]]))
    covered = np.sort(np.concatenate([rows for rows, _, _ in shards])) if shards else np.zeros(0, np.int64)
    if not np.array_equal(covered, np.arange(len(paths))):
        raise ValueError(f"shards in {shard_dir} cover {len(np.unique(covered))} distinct rows of {len(paths)} "
                         f"({len(covered)} in all); every row must be in exactly one shard")

    failed = sorted(item for _, _, shard_failed in shards for item in shard_failed)
    chunk_dir = out_dir / "chunks"
    prepare_chunk_dir(chunk_dir, base_manifest)
    for chunk in range(-(-len(paths) // chunk_size)):
        lo, hi = chunk * chunk_size, min(len(paths), (chunk + 1) * chunk_size)
        tokens = np.full((hi - lo, dim), np.nan, dtype=np.float32)
        for rows, data, _ in shards:
            a, b = np.searchsorted(rows, [lo, hi])
            tokens[rows[a:b] - lo] = data[a:b]
        write_npy(chunk_dir / f"tokens_{chunk:06d}.npy", tokens)
        write_json(chunk_dir / f"failed_{chunk:06d}.json", [(i, p) for i, p in failed if lo <= i < hi])
    tokens_path = merge_chunks(out_dir, paths, dim, chunk_size, failed)
    return EncodeResult(tokens_path, len(paths) - len(failed), failed, time.perf_counter() - started)


def run_sharded_encode(
    artifacts_root: str | Path,
    encoder_model: str,
    info: RankInfo,
    device: str = "cpu",
    dtype: str = "float32",
    batch_size: int = 32,
    chunk_size: int = 2048,
    num_workers: int = 0,
    local_files_only: bool = True,
    progress: bool = True,
    merge: bool | None = None,
    encode: bool = True,
    timeout_s: float = 72 * 3600,
) -> dict:
    """Encode this rank's shard, wait for the others, and (rank 0) merge and write the index and scale.

    Parameters
    ----------
    info
        This process's rank (:func:`saerad.distributed.rank_from_env` under ``torchrun``).
    merge
        Merge after the barrier. None: rank 0 merges when there is a barrier
        (``torchrun``) or only one rank; ranks given by hand leave it to a
        separate ``merge=True, encode=False`` call.
    encode
        False to only merge shards written earlier.

    Returns
    -------
    dict
        This rank's shard summary (see :func:`encode_shard`) and, on the rank
        that merged, ``merged`` (rows, failed, seconds).
    """
    from saerad.encode.tokens import save_index_and_scale

    stage_dir = Path(artifacts_root) / "encode"
    shard_dir = stage_dir / SHARD_DIR_NAME
    images, paths = read_image_paths(artifacts_root)
    plan = distributed.assign_groups(images["study_id"].to_numpy(), info.world_size)
    device = distributed.rank_device(device, info)
    with distributed.process_group(info, device, timeout_s, join=encode) as joined:
        encoder = ClassTokenEncoder(encoder_model, device=device, dtype=dtype, local_files_only=local_files_only)
        base = chunk_manifest(encoder, paths, chunk_size)
        summary: dict = {"rank": info.rank, "world_size": info.world_size}
        if encode:
            summary.update(encode_shard(encoder, paths, plan[info.rank], shard_dir, info, batch_size, chunk_size,
                                        num_workers, progress, base))
        distributed.barrier()
        if distributed.merges_here(merge, info, joined):
            result = merge_encode_shards(paths, plan, shard_dir, stage_dir, base, batch_size)
            save_index_and_scale(stage_dir, images, np.load(result.tokens_path, mmap_mode="r"), encoder_model)
            summary["merged"] = {"rows": len(paths), "failed": len(result.failed), "seconds": result.seconds}
        return summary


# -- command line --------------------------------------------------------------------------------------------------

#: Stage of this command -> (chapter notebook whose parameters give the defaults, stage name in the profile).
STAGE_SOURCES = {"encode": ("01_encode.ipynb", "encode"), "activations": ("03_features.ipynb", "features")}


def stage_defaults(stage: str, profile: str | None) -> dict:
    """The chapter's parameter defaults, overridden by ``params/<profile>.yaml`` when a profile is named."""
    from saerad.params import load_profile, notebook_parameters

    notebook, profile_stage = STAGE_SOURCES[stage]
    values = {name: parameter.default for name, parameter in
              notebook_parameters(REPO_ROOT / "notebooks" / notebook).items()}
    if profile:
        loaded = load_profile(REPO_ROOT / "params" / f"{profile}.yaml")
        values.update(loaded["common"])
        values.update(loaded["stages"].get(profile_stage, {}))
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m saerad.encode.sharded",
        description="Data-parallel encode stage (class tokens) or SAE activation pass; run it under torchrun "
                    "(e.g. torchrun --nproc_per_node=8 -m saerad.encode.sharded --profile paper). "
                    "Options left out take the chapter's value from the profile.",
    )
    parser.add_argument("--stage", choices=sorted(STAGE_SOURCES), default="encode")
    parser.add_argument("--profile", help="params/<profile>.yaml to take defaults from (default: chapter defaults)")
    parser.add_argument("--artifacts-root", help="artifacts/<profile> (default: the profile's)")
    parser.add_argument("--encoder-model", help="encode: local directory or hub id; use the profile's exact string, "
                                                "it is part of the chunk manifest the chapter checks")
    parser.add_argument("--device", help="cpu, cuda or auto (cuda means cuda:<LOCAL_RANK>)")
    parser.add_argument("--dtype", help="encode: float32, bfloat16 or float16")
    parser.add_argument("--batch-size", type=int, help="encode: images per forward pass")
    parser.add_argument("--chunk-size", type=int, help="images (encode) or tokens (activations) per chunk")
    parser.add_argument("--num-workers", type=int, help="encode: DataLoader processes per rank")
    parser.add_argument("--hub", action="store_true", help="encode: allow fetching the encoder from a model hub")
    parser.add_argument("--sae-name", help="activations: folder under <artifacts-root>/sae/")
    parser.add_argument("--top-k", type=int, help="activations: top-activating studies per feature")
    parser.add_argument("--rank", type=int, help="this shard's number, without torchrun (e.g. $SLURM_ARRAY_TASK_ID)")
    parser.add_argument("--world-size", type=int, help="number of shards, with --rank or --merge-only")
    parser.add_argument("--merge-only", action="store_true", help="only merge complete shards (after an array job)")
    parser.add_argument("--timeout-hours", type=float, default=72.0, help="how long a barrier waits for other ranks")
    parser.add_argument("--no-progress", action="store_true")
    return parser


def resolve_rank(args: argparse.Namespace) -> RankInfo:
    """RankInfo from torchrun's variables, or from ``--rank/--world-size`` (then no process group)."""
    launched = distributed.rank_from_env()
    if args.rank is not None or args.merge_only:
        if launched.launched:
            raise SystemExit("--rank/--merge-only are for runs without torchrun; torchrun already sets RANK")
        if args.world_size is None:
            raise SystemExit("--rank and --merge-only need --world-size (the number of shards)")
        return RankInfo(0 if args.merge_only else args.rank, args.world_size, 0, launched=False)
    if args.world_size is not None and args.world_size != launched.world_size:
        raise SystemExit(f"--world-size {args.world_size} disagrees with WORLD_SIZE={launched.world_size}")
    return launched


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    values = stage_defaults(args.stage, args.profile)
    info = resolve_rank(args)

    def pick(name: str, given):
        return values[name] if given is None else given

    artifacts_root = args.artifacts_root or f"artifacts/{args.profile or 'demo'}"
    common = dict(info=info, device=pick("device", args.device), progress=not args.no_progress,
                  merge=True if args.merge_only else None, encode=not args.merge_only,
                  timeout_s=args.timeout_hours * 3600)
    if args.stage == "encode":
        summary = run_sharded_encode(
            artifacts_root, pick("encoder_model", args.encoder_model), dtype=pick("dtype", args.dtype),
            batch_size=pick("batch_size", args.batch_size), chunk_size=pick("chunk_size", args.chunk_size),
            num_workers=pick("num_workers", args.num_workers),
            local_files_only=False if args.hub else bool(values["local_files_only"]), **common,
        )
    else:
        from saerad.features.activations_sharded import run_sharded_activations

        sae_dir = Path(artifacts_root) / "sae" / pick("sae_name", args.sae_name)
        summary = run_sharded_activations(
            artifacts_root, sae_dir, chunk_size=pick("chunk_size", args.chunk_size), k=pick("top_k", args.top_k),
            **common,
        )
    print(json.dumps({"stage": args.stage, **summary}, default=str), file=sys.stdout, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
