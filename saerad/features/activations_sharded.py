"""The features chapter's SAE activation pass, data-parallel under ``torchrun``.

Each rank applies the SAE to a block of whole chunks of the class tokens
(:func:`saerad.distributed.assign_chunks`: chunk boundaries stay at the
multiples of ``chunk_size`` a single process uses, so every chunk sees
exactly the same input), writes its rows' activations as a CSR
``features/shards/shard-<rank>-of-<world>.npz`` with an index and a marker,
and rank 0 merges them after a barrier into the four files
:func:`saerad.features.activations.encode_dataset_to_sparse` writes:
``activations.npz`` (the same CSR: data, indices, indptr equal),
``activations_index.csv``, ``feature_stats.csv`` and ``top_activations.csv``.

The expensive part, the SAE forward pass, is what is spread; the merge's
statistics and top-k are O(nnz) and run once on rank 0.
"""

from __future__ import annotations

import time
from pathlib import Path

import scipy.sparse as sp

from saerad import distributed
from saerad.distributed import RankInfo, ShardError, ShardFiles
from saerad.features.activations import (
    SparseEncoding,
    activation_index,
    encoding_manifest,
    feature_statistics,
    iter_activation_chunks,
    sae_digest,
    stack_chunks,
    tokens_digest,
    top_activating_studies,
    write_sparse_encoding,
)
from saerad.io import atomic_path, write_json

SHARD_DIR_NAME = "shards"


def run_sharded_activations(
    artifacts_root: str | Path,
    sae_dir: str | Path,
    info: RankInfo,
    out_dir: str | Path | None = None,
    chunk_size: int = 4096,
    k: int = 10,
    device: str = "cpu",
    progress: bool = False,
    merge: bool | None = None,
    encode: bool = True,
    timeout_s: float = 72 * 3600,
) -> dict:
    """This rank's block of SAE activations; after a barrier rank 0 writes the merged features files.

    Parameters
    ----------
    artifacts_root
        ``artifacts/<profile>`` (class tokens are read from its ``encode/``).
    sae_dir
        A folder written by :func:`saerad.sae.save_sae`.
    out_dir
        Where the merged files go (default ``<artifacts_root>/features``);
        shards go to its ``shards/``.
    merge, encode
        As :func:`saerad.encode.sharded.run_sharded_encode`.

    Returns
    -------
    dict
        ``status`` ("skipped" or "encoded"), ``rows``, ``seconds`` and, on the
        merging rank, ``merged``.
    """
    from saerad.sae import load_sae

    started = time.perf_counter()
    out_dir = Path(out_dir) if out_dir is not None else Path(artifacts_root) / "features"
    shard_dir = out_dir / SHARD_DIR_NAME
    sae_dir = Path(sae_dir)
    device = distributed.rank_device(device, info)
    tokens, index = activation_index(artifacts_root)
    blocks = distributed.assign_chunks(len(index), chunk_size, info.world_size)
    sae = load_sae(sae_dir, device=device)
    base = {"sae": sae_digest(sae), "chunk_size": int(chunk_size), "n_rows": int(len(index)), "world_size": info.world_size}

    def manifest(rank: int) -> dict:
        start, stop = blocks[rank]
        # The exact inputs of this block, so new tokens or a new scale invalidate the shard.
        return {**base, "rank": rank, "start": start, "stop": stop, "tokens": tokens_digest(tokens[start:stop])}

    with distributed.process_group(info, device, timeout_s, join=encode) as joined:
        summary: dict = {"rank": info.rank, "world_size": info.world_size, "status": "skipped"}
        files = ShardFiles(shard_dir, info.rank, info.world_size, suffix=".npz")
        own = manifest(info.rank)
        if encode and not files.is_complete(own):
            start, stop = blocks[info.rank]
            chunks = []
            for offset, chunk in iter_activation_chunks(sae, tokens[start:stop], chunk_size, device, progress):
                chunks.append((offset, chunk))
                distributed.maybe_fail(info, len(chunks))
            block = stack_chunks(chunks, sae.config.d_sae)
            with atomic_path(files.data) as temporary:
                sp.save_npz(temporary, block, compressed=True)
            write_json(files.index, {"start": start, "stop": stop})
            files.mark_complete(own, seconds=round(time.perf_counter() - started, 3))
            summary["status"] = "encoded"
        summary["rows"] = blocks[info.rank][1] - blocks[info.rank][0]
        distributed.barrier()
        if distributed.merges_here(merge, info, joined):
            merged = merge_activation_shards(shard_dir, out_dir, index, blocks, manifest, sae.config.d_sae, k,
                                             chunk_size, encoding_manifest(sae, tokens, chunk_size, k))
            summary["merged"] = {"rows": merged.activations.shape[0], "nnz": int(merged.activations.nnz)}
        summary["seconds"] = time.perf_counter() - started
        return summary


def merge_activation_shards(shard_dir, out_dir, index, blocks, manifest, d_sae: int, k: int,
                            chunk_size: int, encoding: dict) -> SparseEncoding:
    """Stack the complete shards in row order and write what ``encode_dataset_to_sparse`` writes.

    ``manifest(rank)`` is what each shard's marker must hold; ``encoding`` the
    :func:`~saerad.features.activations.encoding_manifest` of the whole pass,
    written beside the merged files so the features chapter reuses them.
    """
    shard_dir, out_dir = Path(shard_dir), Path(out_dir)
    pieces = []
    for rank, (start, stop) in enumerate(blocks):
        files = ShardFiles(shard_dir, rank, len(blocks), suffix=".npz")
        files.require_complete(manifest(rank))
        block = sp.csr_matrix(sp.load_npz(files.data))
        if block.shape != (stop - start, d_sae):
            raise ShardError(f"{files.data}: shape {block.shape}, expected ({stop - start}, {d_sae})")
        pieces.append((start, block))
    activations = stack_chunks(pieces, d_sae)
    top = top_activating_studies(activations, index, k=k, chunk_size=chunk_size)
    stats = feature_statistics(activations)
    return write_sparse_encoding(out_dir, activations, index, stats, top, encoding)


__all__ = ["run_sharded_activations", "merge_activation_shards"]
