"""Sparse SAE feature activations of a whole data set, their statistics and top-k examples.

Why memory stays bounded
------------------------
The SAE is applied ``chunk_size`` tokens at a time under ``torch.no_grad``.
Only one chunk ever exists as a dense array: ``chunk_size × d_sae`` floats of
activations (a gated SAE also holds its gate and magnitude pre-activations
of the same shape while encoding, so count about three such arrays). Each
chunk is turned into CSR right away, keeping only its non-zero entries, so
what grows with the data set is the CSR itself: ``nnz ≈ n · L0`` entries of
4 bytes (value) + 4 bytes (column, int32) plus one row pointer per token.
The top-k state is ``d_sae × k`` (value, row, group) triples, independent of
``n``, and the streaming counters are a few ``d_sae`` vectors.

Arithmetic at paper scale (n ≈ 240,000 MIMIC-CXR frontal images,
d_sae = 49,152, L0 ≈ 14):

* a dense ``[n, d_sae]`` float32 matrix would be 240,000 × 49,152 × 4 B ≈ 47 GB;
* the CSR is 240,000 × 14 × 8 B ≈ 27 MB (+ ~1 MB of row pointers);
* one dense chunk at ``chunk_size = 4096`` is 4096 × 49,152 × 4 B ≈ 0.8 GB
  (≈ 2.4 GB for a gated SAE's three intermediates), so at paper width pass
  ``chunk_size = 1024`` (≈ 0.2 GB each) on a small machine;
* the top-k state at k = 10 is 49,152 × 10 × (4 + 8 + 8) B ≈ 10 MB.

Quantiles of each feature's non-zero activations are exact: they are read
from the CSC form of the kept CSR, which is O(nnz), not from a sketch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from tqdm import tqdm

from saerad.io import atomic_path, read_json, write_json, write_table

#: Quantiles of the non-zero activations reported per feature.
QUANTILES = (0.5, 0.9, 0.99)

STATISTICS_COLUMNS = ("feature", "density", "fire_count", "max", "mean_nonzero", "q50", "q90", "q99", "dead")


# -- encoding ------------------------------------------------------------------------------------------------------


def _dense_chunk_to_csr(activations: torch.Tensor) -> sp.csr_matrix:
    """CSR of one dense activation chunk; only the non-zero entries leave the device."""
    n_rows, n_cols = activations.shape
    mask = activations != 0
    positions = mask.nonzero()  # row-major order, i.e. already CSR order
    values = activations[mask].to("cpu", torch.float32).numpy()
    rows = positions[:, 0].to("cpu").numpy()
    columns = positions[:, 1].to("cpu", torch.int32).numpy()
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=indptr[1:])
    return sp.csr_matrix((values, columns, indptr), shape=(n_rows, n_cols))


def iter_activation_chunks(
    sae, tokens: np.ndarray, chunk_size: int = 4096, device: str = "cpu", progress: bool = False
) -> Iterator[tuple[int, sp.csr_matrix]]:
    """Yield ``(row_offset, csr_chunk)`` of ``sae.feature_activations`` over ``tokens``, chunk by chunk.

    Parameters
    ----------
    sae
        A :class:`saerad.sae.SparseAutoencoder` (any object with ``feature_activations``,
        ``config.d_in`` and ``config.d_sae``).
    tokens
        ``[n, d_in]`` array; a NumPy memmap is read one chunk at a time.
    chunk_size
        Tokens per dense chunk (memory ∝ ``chunk_size × d_sae``).
    device
        Torch device the SAE runs on.
    progress
        Show a tqdm bar over chunks.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if tokens.ndim != 2 or tokens.shape[1] != sae.config.d_in:
        raise ValueError(f"tokens must have shape [n, d_in={sae.config.d_in}], got {tuple(tokens.shape)}")
    sae = sae.to(device)
    was_training = sae.training
    sae.eval()
    starts = range(0, tokens.shape[0], chunk_size)
    try:
        with torch.no_grad():
            for start in tqdm(starts, desc="SAE activations", unit="chunk", disable=not progress):
                # A copy: memmap slices are read-only, which torch.from_numpy warns about.
                chunk = np.array(tokens[start:start + chunk_size], dtype=np.float32, order="C", copy=True)
                if not np.isfinite(chunk).all():
                    raise ValueError(f"tokens rows {start}..{start + len(chunk) - 1} contain NaN or inf")
                x = torch.from_numpy(chunk).to(device)
                yield start, _dense_chunk_to_csr(sae.feature_activations(x))
    finally:
        sae.train(was_training)


def stack_chunks(chunks: Iterable[tuple[int, sp.csr_matrix]], d_sae: int) -> sp.csr_matrix:
    """Concatenate consecutive CSR chunks (offsets must follow each other) into one CSR, O(nnz)."""
    data, indices, indptrs = [], [], [np.zeros(1, dtype=np.int64)]
    expected_offset, nnz = 0, 0
    for offset, chunk in chunks:
        if offset != expected_offset:
            raise ValueError(f"chunk offset {offset} does not follow the previous chunk (expected {expected_offset})")
        if chunk.shape[1] != d_sae:
            raise ValueError(f"chunk has {chunk.shape[1]} columns, expected d_sae={d_sae}")
        data.append(chunk.data.astype(np.float32, copy=False))
        indices.append(chunk.indices.astype(np.int32, copy=False))
        indptrs.append(chunk.indptr[1:].astype(np.int64) + nnz)
        nnz += chunk.nnz
        expected_offset += chunk.shape[0]
    empty_f, empty_i = np.zeros(0, np.float32), np.zeros(0, np.int32)
    matrix = sp.csr_matrix(
        (np.concatenate(data) if data else empty_f, np.concatenate(indices) if indices else empty_i,
         np.concatenate(indptrs)),
        shape=(expected_offset, d_sae),
    )
    return matrix


def sparse_feature_activations(
    sae, tokens: np.ndarray, chunk_size: int = 4096, device: str = "cpu", progress: bool = False
) -> sp.csr_matrix:
    """``h_i(x) · ||W_dec[i]||`` for every token as a float32 CSR ``[n_tokens, d_sae]``.

    Never builds the dense ``[n, d_sae]`` matrix; see the module notes for the
    memory bound. Arguments as :func:`iter_activation_chunks`.
    """
    return stack_chunks(iter_activation_chunks(sae, tokens, chunk_size, device, progress), sae.config.d_sae)


def iter_csr_chunks(activations: sp.spmatrix, chunk_size: int = 4096) -> Iterator[tuple[int, sp.csr_matrix]]:
    """Row blocks ``(row_offset, csr_chunk)`` of an existing sparse matrix."""
    activations = sp.csr_matrix(activations)
    for start in range(0, activations.shape[0], chunk_size):
        yield start, activations[start:start + chunk_size]


# -- streaming statistics ------------------------------------------------------------------------------------------


class StreamingFeatureStats:
    """Fire count, sum and max of every feature, accumulated chunk by chunk in O(d_sae) memory.

    Quantiles need the values themselves; :func:`feature_statistics` takes them
    from the kept CSR.
    """

    def __init__(self, d_sae: int):
        self.d_sae = int(d_sae)
        self.n_rows = 0
        self.fire_count = np.zeros(self.d_sae, dtype=np.int64)
        self.total = np.zeros(self.d_sae, dtype=np.float64)
        self.max = np.zeros(self.d_sae, dtype=np.float32)

    def update(self, chunk: sp.spmatrix) -> None:
        """Add the rows of one CSR chunk ``[rows, d_sae]`` (explicit zeros are not counted as firing)."""
        chunk = sp.csr_matrix(chunk)
        if chunk.shape[1] != self.d_sae:
            raise ValueError(f"chunk has {chunk.shape[1]} columns, expected d_sae={self.d_sae}")
        self.n_rows += chunk.shape[0]
        fired = chunk.data != 0
        columns, values = chunk.indices[fired], chunk.data[fired]
        self.fire_count += np.bincount(columns, minlength=self.d_sae)
        self.total += np.bincount(columns, weights=values, minlength=self.d_sae)
        np.maximum.at(self.max, columns, values.astype(np.float32))

    def result(self) -> pd.DataFrame:
        """``feature, density, fire_count, max, mean_nonzero, dead`` (mean is NaN for dead features)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.fire_count > 0, self.total / self.fire_count, np.nan)
            density = self.fire_count / self.n_rows if self.n_rows else np.full(self.d_sae, np.nan)
        return pd.DataFrame({
            "feature": np.arange(self.d_sae), "density": density, "fire_count": self.fire_count,
            "max": self.max.astype(np.float64), "mean_nonzero": mean, "dead": self.fire_count == 0,
        })


def column_quantiles(activations: sp.spmatrix, quantiles: Iterable[float] = QUANTILES) -> np.ndarray:
    """Exact quantiles (linear interpolation, as ``numpy.quantile``) of each column's non-zero values.

    Returns ``[d_sae, len(quantiles)]``, NaN for columns without non-zero values.
    Vectorised over columns: one sort of the CSC data, O(nnz log nnz).
    """
    csc = sp.csc_matrix(activations)
    csc.eliminate_zeros()
    counts = np.diff(csc.indptr)
    column_of_entry = np.repeat(np.arange(csc.shape[1]), counts)
    order = np.lexsort((csc.data, column_of_entry))
    values = csc.data[order].astype(np.float64)
    starts = csc.indptr[:-1]
    quantiles = np.asarray(list(quantiles), dtype=np.float64)
    out = np.full((csc.shape[1], len(quantiles)), np.nan)
    live = counts > 0
    for j, q in enumerate(quantiles):
        position = q * (counts[live] - 1)
        lower = np.floor(position).astype(np.int64)
        upper = np.minimum(lower + 1, counts[live] - 1)
        low_values, high_values = values[starts[live] + lower], values[starts[live] + upper]
        out[live, j] = low_values + (high_values - low_values) * (position - lower)
    return out


def feature_statistics(activations: sp.spmatrix) -> pd.DataFrame:
    """Per-feature statistics of a CSR ``[n, d_sae]`` of activations.

    Returns
    -------
    DataFrame
        ``feature, density, fire_count, max, mean_nonzero, q50, q90, q99, dead``;
        density = fire_count / n; ``max`` is 0 and the rest NaN for dead features.
    """
    stats = StreamingFeatureStats(activations.shape[1])
    for _, chunk in iter_csr_chunks(activations, chunk_size=65536):
        stats.update(chunk)
    table = stats.result()
    quantiles = column_quantiles(activations, QUANTILES)
    for j, q in enumerate(QUANTILES):
        table[f"q{round(q * 100)}"] = quantiles[:, j]
    return table[list(STATISTICS_COLUMNS)]


# -- streaming top-k -----------------------------------------------------------------------------------------------


class StreamingTopK:
    """The ``k`` largest activations of every feature, kept in O(d_sae · k) memory.

    Order within a feature: activation descending, then row ascending, so ties
    go to the lower row whatever the chunking. With ``group_ids`` (e.g. the
    study of each image) a group appears at most once per feature, with its
    largest activation (and, on a tie, its lowest row).

    The update is vectorised: entries of a chunk below their feature's current
    k-th value are dropped first, then the survivors and the state of the
    features they touch are merged with one lexsort.
    """

    def __init__(self, d_sae: int, k: int):
        if d_sae < 1 or k < 1:
            raise ValueError(f"d_sae and k must be positive, got d_sae={d_sae}, k={k}")
        self.d_sae, self.k = int(d_sae), int(k)
        self.values = np.full((self.d_sae, self.k), -np.inf, dtype=np.float32)
        self.rows = np.full((self.d_sae, self.k), -1, dtype=np.int64)
        self.groups = np.full((self.d_sae, self.k), -1, dtype=np.int64)
        self._grouped: bool | None = None

    def update(self, chunk: sp.spmatrix, row_offset: int, group_ids: np.ndarray | None = None) -> None:
        """Merge the non-zero entries of one chunk.

        Parameters
        ----------
        chunk
            CSR ``[rows, d_sae]``; row ``r`` is global row ``row_offset + r``.
        row_offset
            Global index of the chunk's first row.
        group_ids
            Integer group (e.g. study_id) of each of the chunk's rows, or None
            for one group per row. Use it for every update or for none.
        """
        chunk = sp.csr_matrix(chunk)
        if chunk.shape[1] != self.d_sae:
            raise ValueError(f"chunk has {chunk.shape[1]} columns, expected d_sae={self.d_sae}")
        grouped = group_ids is not None
        if self._grouped is None:
            self._grouped = grouped
        elif self._grouped != grouped:
            raise ValueError("group_ids must be given for every update or for none")
        local_rows = np.repeat(np.arange(chunk.shape[0]), np.diff(chunk.indptr))
        columns = chunk.indices.astype(np.int64)
        values = chunk.data.astype(np.float32)
        rows = local_rows + int(row_offset)
        if grouped:
            group_ids = np.asarray(group_ids)
            if group_ids.shape != (chunk.shape[0],):
                raise ValueError(f"group_ids must have one entry per chunk row ({chunk.shape[0]}), got {group_ids.shape}")
            if not np.issubdtype(group_ids.dtype, np.integer):
                raise ValueError(f"group_ids must be integers (e.g. study_id), got dtype {group_ids.dtype}")
            groups = group_ids.astype(np.int64)[local_rows]
        else:
            groups = rows
        fired = values != 0
        columns, values, rows, groups = columns[fired], values[fired], rows[fired], groups[fired]
        # An entry below its feature's current k-th value can neither enter nor raise its group's value.
        keep = values >= self.values[columns, -1]
        if not keep.any():
            return
        columns, values, rows, groups = columns[keep], values[keep], rows[keep], groups[keep]
        touched = np.unique(columns)
        state = (self.values[touched], self.rows[touched], self.groups[touched])
        valid = state[1] >= 0
        state_columns = np.broadcast_to(touched[:, None], valid.shape)[valid]
        columns = np.concatenate([state_columns, columns])
        values = np.concatenate([state[0][valid], values])
        rows = np.concatenate([state[1][valid], rows])
        groups = np.concatenate([state[2][valid], groups])
        if grouped:
            # Best entry of every (feature, group): value descending, then row ascending.
            order = np.lexsort((rows, -values, groups, columns))
            columns, values, rows, groups = columns[order], values[order], rows[order], groups[order]
            first = np.ones(len(columns), dtype=bool)
            first[1:] = (columns[1:] != columns[:-1]) | (groups[1:] != groups[:-1])
            columns, values, rows, groups = columns[first], values[first], rows[first], groups[first]
        order = np.lexsort((rows, -values, columns))
        columns, values, rows, groups = columns[order], values[order], rows[order], groups[order]
        run_start = np.ones(len(columns), dtype=bool)
        run_start[1:] = columns[1:] != columns[:-1]
        start_positions = np.flatnonzero(run_start)
        rank = np.arange(len(columns)) - np.repeat(start_positions, np.diff(np.append(start_positions, len(columns))))
        within = rank < self.k
        # Every touched feature keeps at least its previous entries, so clearing them first loses nothing.
        self.values[touched] = -np.inf
        self.rows[touched] = -1
        self.groups[touched] = -1
        target = (columns[within], rank[within])
        self.values[target] = values[within]
        self.rows[target] = rows[within]
        self.groups[target] = groups[within]

    def result(self) -> pd.DataFrame:
        """Long table ``feature, rank, row, group, activation`` (rank 1 = largest), sorted by feature then rank.

        Features that fired fewer than ``k`` times (in fewer than ``k`` groups)
        have fewer rows; dead features have none. ``group`` equals ``row``
        when no ``group_ids`` were given.
        """
        feature, rank = np.nonzero(self.rows >= 0)
        return pd.DataFrame({
            "feature": feature.astype(np.int64), "rank": rank.astype(np.int64) + 1,
            "row": self.rows[feature, rank], "group": self.groups[feature, rank],
            "activation": self.values[feature, rank].astype(np.float64),
        })


def top_activating_studies(
    activations: sp.spmatrix | Iterable[tuple[int, sp.csr_matrix]], index: pd.DataFrame, k: int = 10,
    chunk_size: int = 4096,
) -> pd.DataFrame:
    """The ``k`` studies on which every feature fires most (a study counts once, with its best image).

    Parameters
    ----------
    activations
        CSR ``[n, d_sae]`` whose rows are the rows of ``index`` (by position), or an
        iterable of ``(row_offset, csr_chunk)`` as :func:`iter_activation_chunks` yields.
    index
        One row per activation row, with ``study_id`` and ``dicom_id``.
    k
        Studies per feature.

    Returns
    -------
    DataFrame
        ``feature, rank, study_id, dicom_id, row, activation``; ``row`` is the
        position in ``activations`` / ``index``; rank 1 is the largest.
    """
    missing = {"study_id", "dicom_id"} - set(index.columns)
    if missing:
        raise ValueError(f"index lacks the column(s) {sorted(missing)}")
    study_ids = index["study_id"].to_numpy()
    if not np.issubdtype(study_ids.dtype, np.integer):
        raise ValueError(f"index study_id must be integers without gaps, got dtype {study_ids.dtype}")
    if sp.issparse(activations):
        if activations.shape[0] != len(index):
            raise ValueError(f"activations have {activations.shape[0]} rows but index has {len(index)}")
        chunks: Iterable[tuple[int, sp.csr_matrix]] = iter_csr_chunks(activations, chunk_size)
    else:
        chunks = activations
    top: StreamingTopK | None = None
    for offset, chunk in chunks:
        if offset + chunk.shape[0] > len(index):
            raise ValueError(f"chunk at row {offset} runs past the {len(index)} rows of the index")
        top = top or StreamingTopK(chunk.shape[1], k)
        top.update(chunk, offset, study_ids[offset:offset + chunk.shape[0]])
    if top is None:
        return pd.DataFrame(columns=["feature", "rank", "study_id", "dicom_id", "row", "activation"])
    table = top.result().rename(columns={"group": "study_id"})
    table["dicom_id"] = index["dicom_id"].to_numpy()[table["row"].to_numpy()]
    return table[["feature", "rank", "study_id", "dicom_id", "row", "activation"]]


# -- whole data set ------------------------------------------------------------------------------------------------


@dataclass
class SparseEncoding:
    """What :func:`encode_dataset_to_sparse` writes, in memory."""

    activations: sp.csr_matrix
    index: pd.DataFrame
    stats: pd.DataFrame
    top: pd.DataFrame
    paths: dict[str, Path]


SPARSE_ENCODING_FILES = {"activations": "activations.npz", "index": "activations_index.csv",
                         "stats": "feature_stats.csv", "top": "top_activations.csv"}
#: Written last by :func:`write_sparse_encoding`: what the four files were computed from.
MANIFEST_FILENAME = "activations_manifest.json"


def sae_digest(sae) -> str:
    """A content hash of every tensor of ``sae`` (names, shapes, values) and its config."""
    digest = hashlib.sha256(json.dumps(asdict(sae.config), sort_keys=True, default=str).encode())
    for name, tensor in sorted(sae.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def tokens_digest(tokens: np.ndarray, block_rows: int = 65536) -> str:
    """A content hash of a (possibly memory-mapped) token matrix, read in blocks."""
    digest = hashlib.sha256(f"{tokens.shape}:{tokens.dtype}".encode())
    for start in range(0, len(tokens), block_rows):
        digest.update(np.ascontiguousarray(tokens[start:start + block_rows]).tobytes())
    return digest.hexdigest()[:16]


def encoding_manifest(sae, tokens: np.ndarray, chunk_size: int, k: int) -> dict:
    """Everything the activation files depend on; a finished pass with the same manifest is reused.

    ``chunk_size`` is part of it because a chunk is one forward pass, and
    float results may depend on the batch an input shares.
    """
    return {"sae": sae_digest(sae), "tokens": tokens_digest(tokens), "n_rows": int(len(tokens)),
            "chunk_size": int(chunk_size), "k": int(k)}


def write_sparse_encoding(out_dir: str | Path, activations: sp.csr_matrix, index: pd.DataFrame,
                          stats: pd.DataFrame, top: pd.DataFrame, manifest: dict) -> SparseEncoding:
    """Write the four activation files atomically, then the manifest that marks them complete."""
    out_dir = Path(out_dir)
    paths = {key: out_dir / name for key, name in SPARSE_ENCODING_FILES.items()}
    # A manifest left from an earlier pass must not vouch for files being replaced.
    (out_dir / MANIFEST_FILENAME).unlink(missing_ok=True)
    with atomic_path(paths["activations"]) as temporary:
        sp.save_npz(temporary, activations, compressed=True)
    write_table(paths["index"], index)
    write_table(paths["stats"], stats)
    write_table(paths["top"], top)
    write_json(out_dir / MANIFEST_FILENAME, manifest)
    return SparseEncoding(activations, index, stats, top, paths)


def read_finished_encoding(out_dir: str | Path, manifest: dict) -> SparseEncoding | None:
    """The activation files in ``out_dir`` if a pass with exactly ``manifest`` finished there, else None."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / MANIFEST_FILENAME
    paths = {key: out_dir / name for key, name in SPARSE_ENCODING_FILES.items()}
    if not manifest_path.exists() or not all(path.exists() for path in paths.values()):
        return None
    if read_json(manifest_path) != manifest:
        return None
    activations, index = load_sparse_encoding(out_dir)
    stats = pd.read_csv(paths["stats"])
    top = pd.read_csv(paths["top"], dtype={"dicom_id": str})
    return SparseEncoding(activations, index, stats, top, paths)


def activation_index(artifacts_root: str | Path) -> tuple[np.ndarray, pd.DataFrame]:
    """Scaled class tokens of every encoded image (memory-mapped) and the index the activation files use."""
    from saerad.encode.tokens import load_class_tokens

    tokens, index = load_class_tokens(artifacts_root, split=None, mmap=True)
    index = index.rename(columns={"row": "token_row"}).drop(columns=["encoded"], errors="ignore")
    index.insert(0, "row", np.arange(len(index)))
    return tokens, index


def encode_dataset_to_sparse(
    sae, artifacts_root: str | Path, out_dir: str | Path, chunk_size: int = 4096, k: int = 10,
    device: str = "cpu", progress: bool = False, reuse: bool = True,
) -> SparseEncoding:
    """Activations of every encoded image (all splits) and their summaries, written atomically.

    Files in ``out_dir``:

    ``activations.npz``         CSR ``[n, d_sae]`` float32 (``scipy.sparse.load_npz``)
    ``activations_index.csv``   ``row`` (= row of the CSR), ``token_row`` (row of class_tokens.npy),
                                dicom_id, subject_id, study_id, split
    ``feature_stats.csv``       :func:`feature_statistics`
    ``top_activations.csv``     :func:`top_activating_studies` with ``k`` studies per feature
    ``activations_manifest.json`` :func:`encoding_manifest`, written last

    With ``reuse``, files whose manifest matches (same SAE weights, tokens,
    ``chunk_size`` and ``k``) are read back instead of recomputed: a finished
    earlier pass, or the merged output of the data-parallel pass
    (``torchrun -m saerad.encode.sharded --stage activations``), which is
    bit-identical to this one.
    """
    out_dir = Path(out_dir)
    tokens, index = activation_index(artifacts_root)
    manifest = encoding_manifest(sae, tokens, chunk_size, k)
    if reuse and (finished := read_finished_encoding(out_dir, manifest)) is not None:
        return finished
    d_sae = sae.config.d_sae
    top = StreamingTopK(d_sae, k)
    study_ids = index["study_id"].to_numpy()

    def chunks_with_top_k():
        for offset, chunk in iter_activation_chunks(sae, tokens, chunk_size, device, progress):
            top.update(chunk, offset, study_ids[offset:offset + chunk.shape[0]])
            yield offset, chunk

    activations = stack_chunks(chunks_with_top_k(), d_sae)
    top_table = top.result().rename(columns={"group": "study_id"})
    top_table["dicom_id"] = index["dicom_id"].to_numpy()[top_table["row"].to_numpy()]
    top_table = top_table[["feature", "rank", "study_id", "dicom_id", "row", "activation"]]
    return write_sparse_encoding(out_dir, activations, index, feature_statistics(activations), top_table, manifest)


def load_sparse_encoding(out_dir: str | Path) -> tuple[sp.csr_matrix, pd.DataFrame]:
    """Read back ``activations.npz`` and ``activations_index.csv`` written by :func:`encode_dataset_to_sparse`."""
    out_dir = Path(out_dir)
    for name in ("activations.npz", "activations_index.csv"):
        if not (out_dir / name).exists():
            raise FileNotFoundError(f"{out_dir / name} is missing: run encode_dataset_to_sparse first")
    activations = sp.csr_matrix(sp.load_npz(out_dir / "activations.npz"))
    index = pd.read_csv(out_dir / "activations_index.csv", dtype={"dicom_id": str})
    if activations.shape[0] != len(index):
        raise ValueError(f"{out_dir}: activations.npz has {activations.shape[0]} rows, the index {len(index)}")
    return activations, index
