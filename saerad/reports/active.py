"""The active features of a study (Eq. 10) and their importance scores (Appendix B.5).

A feature ``i`` is active on a study when its activation
``a_i = h_i(z) · ||W_dec[:, i]||`` exceeds the threshold ``tau``:
``I(x) = {i : a_i > tau}``. The composer weighs each active feature by an
*importance* in [0, 1]: the activation divided by the largest activation of
the same study, so the strongest feature of every study scores exactly 1.0
(the paper's "scores were normalised to the interval between 0 and 1";
dividing by the maximum is the normalisation that keeps 1.0 for the top
feature as in the prompt of Appendix B.5, and keeps the ratios between
features).

A study may hold several frontal images (the demo has 137 such studies out of
3,406). Its activation of feature ``i`` is the *maximum* over its images: a
finding visible on one view is present in the study, and the maximum keeps
the activation on the same scale as a single image's (a sum would inflate
studies with more images past ``tau``).

The features stage writes ``features/activations.npz`` (a CSR matrix,
``[n_images, d_sae]``) with ``features/activations_index.csv`` (``row,
dicom_id, study_id, subject_id, split``); :func:`load_activations` reads
them and :func:`study_activations` reduces them to one row per study.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

INDEX_COLUMNS = ("row", "dicom_id", "study_id", "subject_id", "split")


class ActiveFeature(NamedTuple):
    """One element of ``I(x)``: a feature, its activation and its importance in [0, 1]."""

    feature: int
    activation: float
    importance: float


def active_features(activations_row, tau: float) -> list[ActiveFeature]:
    """``I(x) = {i : a_i > tau}`` with importances, strongest first.

    Parameters
    ----------
    activations_row
        The feature activations ``h_i · ||W_dec[:, i]||`` of one study: a 1-D
        NumPy array, a ``[1, d_sae]`` / ``[d_sae]`` sparse matrix or array, or
        a ``[d_sae]`` torch tensor.
    tau
        Activation threshold (strict ``>``). Must be >= 0: the activations
        are non-negative, so a negative threshold would make every feature
        of the dictionary "active".

    Returns
    -------
    list of ActiveFeature
        Sorted by importance descending, ties by feature id ascending.
        ``importance = activation / max activation of the study`` (see the
        module docstring); an empty list when no feature exceeds ``tau``.
    """
    if not np.isfinite(tau) or tau < 0:
        raise ValueError(f"tau must be a finite number >= 0, got {tau!r}")
    features, values = _nonzero_entries(activations_row)
    if values.size and not np.isfinite(values).all():
        raise ValueError("activations contain NaN or infinite values")
    if values.size and values.min() < 0:
        raise ValueError("activations must be non-negative (h_i · ||W_dec[:, i]|| with ReLU codes)")
    keep = values > tau
    features, values = features[keep], values[keep]
    if values.size == 0:
        return []
    top = float(values.max())
    order = np.lexsort((features, -values))
    return [ActiveFeature(int(features[k]), float(values[k]), float(values[k]) / top) for k in order]


def _nonzero_entries(row) -> tuple[np.ndarray, np.ndarray]:
    """(feature ids, activations) of the non-zero entries of one row, as int64 / float64."""
    if sp.issparse(row):
        row = sp.csr_matrix(row)
        if row.shape[0] != 1:
            raise ValueError(f"expected one row of activations, got a sparse matrix of shape {row.shape}")
        row.sum_duplicates()
        return row.indices.astype(np.int64), row.data.astype(np.float64)
    if hasattr(row, "detach"):  # a torch tensor
        row = row.detach().cpu().numpy()
    dense = np.asarray(row, dtype=np.float64)
    if dense.ndim == 2 and dense.shape[0] == 1:
        dense = dense[0]
    if dense.ndim != 1:
        raise ValueError(f"expected a 1-D row of activations, got shape {dense.shape}")
    features = np.flatnonzero(dense)
    return features.astype(np.int64), dense[features]


def load_activations(features_dir: str | Path) -> tuple[sp.csr_matrix, pd.DataFrame]:
    """Read ``activations.npz`` and ``activations_index.csv`` written by the features stage.

    Returns
    -------
    (activations, index)
        CSR ``[n_images, d_sae]`` float32 and its index, row ``k`` of the
        matrix being the image of index row ``k``.
    """
    features_dir = Path(features_dir)
    matrix_path, index_path = features_dir / "activations.npz", features_dir / "activations_index.csv"
    for path in (matrix_path, index_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run the features stage first")
    activations = sp.load_npz(matrix_path).tocsr()
    index = pd.read_csv(index_path, dtype={"dicom_id": str})
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise ValueError(f"{index_path}: missing columns {missing}; expected {list(INDEX_COLUMNS)}")
    if len(index) != activations.shape[0]:
        raise ValueError(
            f"{index_path} has {len(index)} rows but {matrix_path} has {activations.shape[0]}: they must be aligned"
        )
    if not np.array_equal(index["row"].to_numpy(), np.arange(len(index))):
        raise ValueError(f"{index_path}: column 'row' must be 0..n-1 in order (rows of {matrix_path.name})")
    return activations, index


def study_activations(
    activations: sp.spmatrix | np.ndarray, index: pd.DataFrame, study_ids: Sequence[int] | None = None
) -> tuple[sp.csr_matrix, np.ndarray]:
    """One row per study: the element-wise maximum over the study's images.

    Parameters
    ----------
    activations
        ``[n_images, d_sae]`` (sparse or dense), rows aligned with ``index``.
    index
        Has a ``study_id`` column, one row per image.
    study_ids
        Studies to return, in this order (default: every study of ``index``
        in order of first appearance). A study without images raises.

    Returns
    -------
    (study_matrix, study_ids)
        CSR ``[n_studies, d_sae]`` float32 and the study ids of its rows.
    """
    matrix = sp.csr_matrix(activations, dtype=np.float32)
    if "study_id" not in index.columns:
        raise ValueError("index must have a 'study_id' column")
    if len(index) != matrix.shape[0]:
        raise ValueError(f"index has {len(index)} rows but the activations have {matrix.shape[0]}")
    image_studies = index["study_id"].to_numpy()
    if study_ids is None:
        study_ids = pd.unique(image_studies)
    study_ids = np.asarray(study_ids, dtype=np.int64)
    position = pd.Series(np.arange(len(study_ids)), index=study_ids)
    if position.index.has_duplicates:
        raise ValueError("study_ids contains duplicates")
    missing = np.setdiff1d(study_ids, image_studies)
    if missing.size:
        raise ValueError(f"{missing.size} requested studies have no image in the index (e.g. {missing[:3].tolist()})")
    keep = np.isin(image_studies, study_ids)
    sub = matrix[np.flatnonzero(keep)].tocoo()
    study_row = position.loc[image_studies[keep]].to_numpy()[sub.row]
    d_sae = matrix.shape[1]
    # Max-reduce duplicate (study, feature) pairs: sort by key, then reduceat over runs of equal keys.
    key = study_row.astype(np.int64) * d_sae + sub.col
    order = np.argsort(key, kind="stable")
    key, values = key[order], sub.data[order]
    if key.size:
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        values = np.maximum.reduceat(values, starts)
        key = key[starts]
    reduced = sp.csr_matrix((values, (key // d_sae, key % d_sae)), shape=(len(study_ids), d_sae), dtype=np.float32)
    return reduced, study_ids
