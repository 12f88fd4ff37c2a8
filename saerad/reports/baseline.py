"""The nearest-neighbour baseline (Appendix B.6): the report of the closest training image.

Each test image's class token is compared with every training image's token
in L2; the findings of the training study holding the nearest token are the
prediction. A study with several frontal images takes the neighbour of the
image that comes closest (smallest distance over its images).

Search is exact and runs in blocks of ``query_chunk × database_chunk``
distances, so memory is bounded by the block, not by the data: squared
distances come from ``||a||² − 2 a·b + ||b||²`` (one matrix product per
block, float32), the ``candidates`` smallest per query are kept across
blocks, and those few are re-ranked with distances computed directly in
float64. The re-rank makes the answer exact unless more than ``candidates``
training tokens lie within float32 rounding (≈1e-6 of ``||a||²``) of the
true nearest one, and makes ties deterministic: equal distances go to the
lower training row.

Cost: ``2 · n_test · n_train · d`` FLOPs. At the paper's scale (3,403 test
images × 239,931 training images × 768) that is 1.25 TFLOP and the training
tokens take 0.74 GB in float32. Measured on two CPU threads, 2,500 × 24,000 ×
768 random tokens took 3.4 s (27 GFLOP/s), which scales to about 46 s for
the paper's search: a one-off minute, so an approximate index is not needed
(:func:`time_exact_search` measures, :func:`extrapolate_search_seconds` scales).
"""

from __future__ import annotations

import time
from typing import Mapping

import numpy as np
import pandas as pd
import torch

PAPER_SEARCH_SHAPE = {"n_queries": 3_403, "n_database": 239_931, "dim": 768}  # Section 5.1: test / train images, Rad-DINO width


def nearest_neighbours(
    queries: np.ndarray,
    database: np.ndarray,
    query_chunk: int = 1024,
    database_chunk: int = 16384,
    candidates: int = 8,
    device: str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Exact L2 nearest neighbour of every query row among the database rows.

    Parameters
    ----------
    queries, database
        ``[n_q, d]`` and ``[n_db, d]`` float arrays (memory maps are fine:
        they are read block by block).
    query_chunk, database_chunk
        Block sizes; peak extra memory ≈ ``query_chunk × database_chunk × 4`` bytes.
    candidates
        Per-query candidates kept from the float32 pass and re-ranked in float64.
    device
        Torch device of the float32 pass.

    Returns
    -------
    (indices, distances)
        int64 database row and float64 L2 distance per query.
    """
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise ValueError(f"queries {queries.shape} and database {database.shape} must be 2-D with equal widths")
    if len(database) == 0:
        raise ValueError("the database is empty: no training tokens to search")
    candidates = max(1, min(candidates, len(database)))
    device = torch.device(device)
    blocks = []
    for start in range(0, len(database), database_chunk):
        block = torch.as_tensor(np.asarray(database[start:start + database_chunk], dtype=np.float32), device=device)
        blocks.append((start, block, (block * block).sum(1)))
    indices = np.empty(len(queries), dtype=np.int64)
    distances = np.empty(len(queries), dtype=np.float64)
    for q_start in range(0, len(queries), query_chunk):
        query = np.asarray(queries[q_start:q_start + query_chunk], dtype=np.float32)
        q = torch.as_tensor(query, device=device)
        q_norms = (q * q).sum(1, keepdim=True)
        best_d = torch.full((len(q), 0), float("inf"), device=device)
        best_i = torch.empty((len(q), 0), dtype=torch.int64, device=device)
        for start, block, block_norms in blocks:
            squared = q_norms - 2.0 * (q @ block.T) + block_norms
            k = min(candidates, block.shape[0])
            values, positions = torch.topk(squared, k, dim=1, largest=False, sorted=False)
            merged_d = torch.cat([best_d, values], 1)
            merged_i = torch.cat([best_i, positions + start], 1)
            keep = torch.topk(merged_d, min(candidates, merged_d.shape[1]), dim=1, largest=False, sorted=False).indices
            best_d, best_i = merged_d.gather(1, keep), merged_i.gather(1, keep)
        rows = best_i.cpu().numpy()
        exact = _exact_distances(query.astype(np.float64), database, rows)
        # lexsort's last key is primary: smallest distance first, then the lower database row.
        for r in range(len(rows)):
            pick = np.lexsort((rows[r], exact[r]))[0]
            indices[q_start + r], distances[q_start + r] = rows[r, pick], exact[r, pick]
    return indices, distances


def _exact_distances(queries: np.ndarray, database: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``||q_r − database[rows[r, j]]||`` in float64, shape of ``rows``."""
    unique, inverse = np.unique(rows, return_inverse=True)
    gathered = np.asarray(database[unique], dtype=np.float64)[inverse.reshape(rows.shape)]
    return np.sqrt(((gathered - queries[:, None, :]) ** 2).sum(-1))


def nearest_neighbour_reports(
    train_tokens: np.ndarray,
    train_index: pd.DataFrame,
    test_tokens: np.ndarray,
    test_index: pd.DataFrame,
    findings_by_study: Mapping[int, str],
    **search_options,
) -> pd.DataFrame:
    """The baseline's prediction for every test study.

    Parameters
    ----------
    train_tokens, train_index, test_tokens, test_index
        Class tokens and their index rows (``study_id``, ``dicom_id``), as
        :func:`saerad.encode.tokens.load_class_tokens` returns them.
    findings_by_study
        Training study id -> findings text. Training images whose study has
        no findings text are left out of the search.
    **search_options
        Passed to :func:`nearest_neighbours`.

    Returns
    -------
    DataFrame
        ``study_id, neighbour_study_id, neighbour_dicom_id, distance, report``,
        one row per test study (order of first appearance in ``test_index``).
    """
    for name, tokens, index in (("train", train_tokens, train_index), ("test", test_tokens, test_index)):
        if len(tokens) != len(index):
            raise ValueError(f"{name} tokens ({len(tokens)}) and index ({len(index)}) are not aligned")
    usable = np.array([isinstance(findings_by_study.get(int(s)), str) and bool(findings_by_study.get(int(s)).strip())
                       for s in train_index["study_id"]], dtype=bool)
    train_rows = np.flatnonzero(usable)
    if train_rows.size == 0:
        raise ValueError("no training image has a study with findings text")
    database = train_tokens if train_rows.size == len(train_tokens) else np.asarray(train_tokens)[train_rows]
    rows, distances = nearest_neighbours(test_tokens, database, **search_options)
    per_image = pd.DataFrame({
        "study_id": test_index["study_id"].to_numpy(),
        "train_row": train_rows[rows],
        "distance": distances,
    })
    # Per study, the image that comes closest; ties to the lower training row.
    per_image = per_image.sort_values(["study_id", "distance", "train_row"], kind="stable")
    best = per_image.drop_duplicates("study_id", keep="first").set_index("study_id")
    order = pd.unique(test_index["study_id"])
    best = best.loc[order]
    neighbour_rows = best["train_row"].to_numpy()
    neighbour_studies = train_index["study_id"].to_numpy()[neighbour_rows]
    return pd.DataFrame({
        "study_id": order.astype(np.int64),
        "neighbour_study_id": neighbour_studies.astype(np.int64),
        "neighbour_dicom_id": train_index["dicom_id"].to_numpy()[neighbour_rows],
        "distance": best["distance"].to_numpy(),
        "report": [findings_by_study[int(s)] for s in neighbour_studies],
    })


def time_exact_search(n_queries: int, n_database: int, dim: int, seed: int = 0, repeats: int = 3,
                      **search_options) -> dict:
    """Seconds of :func:`nearest_neighbours` on random Gaussian tokens (best of ``repeats``).

    Returns a dict with the shape, ``seconds``, ``flops`` (``2·q·n·d``) and ``gflop_per_s``.
    """
    rng = np.random.default_rng(seed)
    queries = rng.standard_normal((n_queries, dim), dtype=np.float32)
    database = rng.standard_normal((n_database, dim), dtype=np.float32)
    nearest_neighbours(queries[: min(8, n_queries)], database[: min(64, n_database)], **search_options)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        nearest_neighbours(queries, database, **search_options)
        best = min(best, time.perf_counter() - start)
    flops = 2.0 * n_queries * n_database * dim
    return {"n_queries": n_queries, "n_database": n_database, "dim": dim, "seconds": best,
            "flops": flops, "gflop_per_s": flops / best / 1e9, "threads": torch.get_num_threads()}


def extrapolate_search_seconds(measurement: Mapping, n_queries: int, n_database: int, dim: int) -> float:
    """Scale a measured time by the ratio of ``q·n·d`` (the product dominates the cost)."""
    measured = measurement["n_queries"] * measurement["n_database"] * measurement["dim"]
    return float(measurement["seconds"]) * (n_queries * n_database * dim) / measured
