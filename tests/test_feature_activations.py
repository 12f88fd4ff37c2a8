"""Sparse activations, streaming statistics and top-k against dense brute force."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from saerad.features import (
    StreamingFeatureStats,
    StreamingTopK,
    column_quantiles,
    encode_dataset_to_sparse,
    feature_statistics,
    iter_csr_chunks,
    load_sparse_encoding,
    sparse_feature_activations,
    top_activating_studies,
)
from saerad.io import write_json, write_npy
from saerad.sae import build_sae, make_config


def random_codes(n: int, d: int, density: float, seed: int, levels: int = 4) -> np.ndarray:
    """Dense non-negative codes with few distinct values, so ties are common."""
    rng = np.random.default_rng(seed)
    values = rng.integers(1, levels + 1, size=(n, d)).astype(np.float32) / 2
    return np.where(rng.random((n, d)) < density, values, 0).astype(np.float32)


def brute_force_top_k(dense: np.ndarray, k: int, groups: np.ndarray | None = None) -> pd.DataFrame:
    """Per feature: best entry per group (value desc, row asc), then the k best groups, same order."""
    groups = np.arange(len(dense)) if groups is None else groups
    records = []
    for feature in range(dense.shape[1]):
        best: dict[int, tuple[float, int]] = {}
        for row in np.flatnonzero(dense[:, feature]):
            value, group = float(dense[row, feature]), int(groups[row])
            if group not in best or (-value, row) < (-best[group][0], best[group][1]):
                best[group] = (value, row)
        ranked = sorted(((value, row, group) for group, (value, row) in best.items()), key=lambda t: (-t[0], t[1]))
        for rank, (value, row, group) in enumerate(ranked[:k], start=1):
            records.append((feature, rank, row, group, value))
    return pd.DataFrame(records, columns=["feature", "rank", "row", "group", "activation"])


def streamed(dense: np.ndarray, k: int, chunk_size: int, groups=None, reverse: bool = False) -> pd.DataFrame:
    top = StreamingTopK(dense.shape[1], k)
    chunks = list(iter_csr_chunks(sp.csr_matrix(dense), chunk_size))
    for offset, chunk in (reversed(chunks) if reverse else chunks):
        top.update(chunk, offset, None if groups is None else groups[offset:offset + chunk.shape[0]])
    return top.result()


def assert_same_top(ours: pd.DataFrame, expected: pd.DataFrame) -> None:
    ours = ours.reset_index(drop=True)
    expected = expected.reset_index(drop=True)
    assert len(ours) == len(expected)
    for column in ("feature", "rank", "row", "group"):
        np.testing.assert_array_equal(ours[column].to_numpy(), expected[column].to_numpy(), err_msg=column)
    np.testing.assert_allclose(ours["activation"].to_numpy(), expected["activation"].to_numpy())


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_top_k_matches_brute_force_with_ties(chunk_size):
    dense = random_codes(120, 30, density=0.15, seed=1)
    dense[:, 5] = 0  # a dead feature has no rows
    dense[:2, 6] = [1.0, 2.0]  # and one firing fewer than k times keeps only those
    dense[2:, 6] = 0
    expected = brute_force_top_k(dense, k=5)
    assert_same_top(streamed(dense, 5, chunk_size), expected)
    assert 5 not in set(expected["feature"]) and (expected["feature"] == 6).sum() == 2


@pytest.mark.parametrize("chunk_size", [1, 7, 1000])
def test_top_k_groups_are_distinct_and_keep_their_best_row(chunk_size):
    dense = random_codes(150, 25, density=0.3, seed=2, levels=3)
    groups = np.repeat(np.arange(60), [3, 2, 3] * 20)[:150] * 10 + 7  # studies with 2-3 images, non-consecutive ids
    expected = brute_force_top_k(dense, k=6, groups=groups)
    ours = streamed(dense, 6, chunk_size, groups=groups)
    assert_same_top(ours, expected)
    assert not ours.duplicated(["feature", "group"]).any()
    # Out-of-order chunks give the same answer: the order is a property of the data, not of the stream.
    assert_same_top(streamed(dense, 6, 7, groups=groups, reverse=True), expected)


def test_top_k_group_tie_goes_to_lower_row():
    dense = np.zeros((4, 2), dtype=np.float32)
    dense[:, 0] = [3.0, 3.0, 1.0, 3.0]  # rows 0,1 are study 100 (tie), row 3 is study 200 (same value)
    groups = np.array([100, 100, 300, 200])
    table = streamed(dense, 2, chunk_size=1, groups=groups, reverse=True)
    assert table["row"].tolist() == [0, 3] and table["group"].tolist() == [100, 200]
    assert table["feature"].tolist() == [0, 0]


def test_chunk_size_does_not_change_any_output():
    dense = random_codes(200, 40, density=0.1, seed=3)
    groups = np.arange(200) // 2
    small, large = streamed(dense, 4, 7, groups), streamed(dense, 4, 1000, groups)
    pd.testing.assert_frame_equal(small, large)


def test_top_k_rejects_inconsistent_input():
    top = StreamingTopK(5, 2)
    with pytest.raises(ValueError, match="d_sae=5"):
        top.update(sp.csr_matrix(np.ones((2, 4))), 0)
    with pytest.raises(ValueError, match="one entry per chunk row"):
        top.update(sp.csr_matrix(np.ones((2, 5))), 0, np.array([1, 2, 3]))
    top.update(sp.csr_matrix(np.ones((2, 5))), 0, np.array([1, 2]))
    with pytest.raises(ValueError, match="every update or for none"):
        top.update(sp.csr_matrix(np.ones((2, 5))), 2)


def test_statistics_match_dense_numpy():
    dense = random_codes(300, 20, density=0.2, seed=4, levels=50)
    dense[:, 0] = 0
    table = feature_statistics(sp.csr_matrix(dense))
    assert list(table.columns) == ["feature", "density", "fire_count", "max", "mean_nonzero", "q50", "q90", "q99", "dead"]
    for feature in range(20):
        values = dense[:, feature][dense[:, feature] != 0].astype(np.float64)
        row = table.iloc[feature]
        assert row["fire_count"] == len(values) and row["density"] == pytest.approx(len(values) / 300)
        assert bool(row["dead"]) == (len(values) == 0)
        if len(values):
            assert row["max"] == pytest.approx(values.max())
            assert row["mean_nonzero"] == pytest.approx(values.mean())
            np.testing.assert_allclose(row[["q50", "q90", "q99"]].to_numpy(float), np.quantile(values, [0.5, 0.9, 0.99]))
        else:
            assert row["max"] == 0 and np.isnan(row[["mean_nonzero", "q50", "q90", "q99"]].to_numpy(float)).all()


def test_streaming_statistics_do_not_depend_on_chunking():
    dense = random_codes(90, 12, density=0.3, seed=5, levels=20)
    results = []
    for chunk_size in (1, 7, 1000):
        stats = StreamingFeatureStats(12)
        for _, chunk in iter_csr_chunks(sp.csr_matrix(dense), chunk_size):
            stats.update(chunk)
        results.append(stats.result())
    pd.testing.assert_frame_equal(results[0], results[2], check_exact=False, rtol=1e-12)
    pd.testing.assert_frame_equal(results[1], results[2], check_exact=False, rtol=1e-12)


def test_column_quantiles_ignore_explicit_zeros():
    matrix = sp.csr_matrix((np.array([0.0, 2.0, 4.0], np.float32), np.array([0, 0, 0]), np.array([0, 1, 2, 3])),
                           shape=(3, 1))
    np.testing.assert_allclose(column_quantiles(matrix, [0.5]), [[3.0]])


def tiny_sae(architecture: str = "sae_rad", d_in: int = 8, expansion: int = 4, seed: int = 0):
    config = make_config(architecture, d_in, expansion, seed=seed, **({"k": 3} if architecture == "topk" else {}))
    sae = build_sae(config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # negative gate biases and uneven decoder norms, so sparsity and the norm factor matter
        if architecture == "sae_rad":
            sae.b_gate.copy_(-0.5 - torch.rand(config.d_sae, generator=generator))
            sae.r_mag.copy_(torch.randn(config.d_sae, generator=generator) * 0.3)
        sae.W_dec.mul_(0.5 + torch.rand(config.d_sae, 1, generator=generator))
    return sae


@pytest.mark.parametrize("architecture", ["sae_rad", "topk"])
def test_sparse_activations_equal_dense_feature_activations(architecture, tmp_path):
    sae = tiny_sae(architecture)
    tokens = np.random.default_rng(0).normal(size=(53, 8)).astype(np.float32)
    with torch.no_grad():
        dense = sae.feature_activations(torch.from_numpy(tokens)).numpy()
    assert 0 < (dense != 0).mean() < 0.6
    write_npy(tmp_path / "tokens.npy", tokens)
    memmap = np.load(tmp_path / "tokens.npy", mmap_mode="r")
    small = sparse_feature_activations(sae, memmap, chunk_size=7)
    large = sparse_feature_activations(sae, tokens, chunk_size=1000)
    assert isinstance(small, sp.csr_matrix) and small.dtype == np.float32 and small.shape == (53, 32)
    assert small.nnz == (dense != 0).sum()
    np.testing.assert_allclose(small.toarray(), dense, rtol=1e-6, atol=1e-7)
    # Chunk size changes BLAS blocking, so values agree to rounding, not bit for bit.
    assert (abs(small - large) > 1e-5).nnz == 0 and small.nnz == large.nnz
    assert sae.training  # the module's mode is restored


def test_sparse_activations_reject_wrong_width_and_nan():
    sae = tiny_sae()
    with pytest.raises(ValueError, match="d_in=8"):
        sparse_feature_activations(sae, np.zeros((3, 5), np.float32))
    bad = np.zeros((3, 8), np.float32)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        sparse_feature_activations(sae, bad)


def test_top_activating_studies_from_matrix_and_chunks():
    dense = random_codes(40, 6, density=0.4, seed=6)
    index = pd.DataFrame({"row": np.arange(40), "dicom_id": [f"img{i}" for i in range(40)],
                          "study_id": 5000 + np.arange(40) // 2})
    from_matrix = top_activating_studies(sp.csr_matrix(dense), index, k=3)
    from_chunks = top_activating_studies(iter_csr_chunks(sp.csr_matrix(dense), 9), index, k=3)
    pd.testing.assert_frame_equal(from_matrix, from_chunks)
    assert list(from_matrix.columns) == ["feature", "rank", "study_id", "dicom_id", "row", "activation"]
    expected = brute_force_top_k(dense, 3, index["study_id"].to_numpy())
    np.testing.assert_array_equal(from_matrix["study_id"], expected["group"])
    np.testing.assert_array_equal(from_matrix["dicom_id"], [f"img{r}" for r in expected["row"]])
    np.testing.assert_allclose(from_matrix["activation"], dense[expected["row"], expected["feature"]])
    with pytest.raises(ValueError, match="rows but index"):
        top_activating_studies(sp.csr_matrix(dense), index.iloc[:10], k=3)


def write_encode_stage(root, tokens: np.ndarray, encoded: np.ndarray, scale: float) -> None:
    stage = root / "encode"
    write_npy(stage / "class_tokens.npy", tokens)
    n = len(tokens)
    pd.DataFrame({
        "row": np.arange(n), "dicom_id": [f"d{i:03d}" for i in range(n)], "subject_id": 1 + np.arange(n) // 4,
        "study_id": 100 + np.arange(n) // 2, "split": np.where(np.arange(n) < n - 6, "train", "test"),
        "encoded": encoded,
    }).to_csv(stage / "tokens_index.csv", index=False)
    write_json(stage / "scale.json", {"scale": scale, "dim": tokens.shape[1]})


def test_encode_dataset_to_sparse_writes_aligned_artifacts(tmp_path):
    sae = tiny_sae()
    tokens = np.random.default_rng(1).normal(size=(30, 8)).astype(np.float32)
    encoded = np.ones(30, dtype=bool)
    encoded[4] = False  # a failed image is left out and the rows renumbered
    write_encode_stage(tmp_path / "art", tokens, encoded, scale=2.0)
    result = encode_dataset_to_sparse(sae, tmp_path / "art", tmp_path / "out", chunk_size=4, k=3)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "activations.npz", "activations_index.csv", "activations_manifest.json", "feature_stats.csv",
        "top_activations.csv"]
    activations, index = load_sparse_encoding(tmp_path / "out")
    assert activations.shape == (29, 32) and index["row"].tolist() == list(range(29))
    assert 4 not in index["token_row"].tolist() and index["dicom_id"].iloc[4] == "d005"
    with torch.no_grad():
        dense = sae.feature_activations(torch.from_numpy(tokens[encoded] * 2.0)).numpy()
    np.testing.assert_allclose(activations.toarray(), dense, rtol=1e-6, atol=1e-7)
    stats = pd.read_csv(tmp_path / "out" / "feature_stats.csv")
    np.testing.assert_array_equal(stats["fire_count"], (dense != 0).sum(axis=0))
    top = pd.read_csv(tmp_path / "out" / "top_activations.csv", dtype={"dicom_id": str})
    pd.testing.assert_frame_equal(top, top_activating_studies(activations, index, k=3), check_dtype=False)
    assert not top.duplicated(["feature", "study_id"]).any()
    assert (index.set_index("row").loc[top["row"], "dicom_id"].to_numpy() == top["dicom_id"].to_numpy()).all()
    assert result.activations.shape == activations.shape


def test_encode_dataset_to_sparse_reuses_a_finished_pass_only_for_the_same_inputs(tmp_path, monkeypatch):
    import saerad.features.activations as module

    sae = tiny_sae()
    tokens = np.random.default_rng(1).normal(size=(30, 8)).astype(np.float32)
    write_encode_stage(tmp_path / "art", tokens, np.ones(30, dtype=bool), scale=2.0)
    first = encode_dataset_to_sparse(sae, tmp_path / "art", tmp_path / "out", chunk_size=4, k=3)
    calls = []
    real = module.iter_activation_chunks
    monkeypatch.setattr(module, "iter_activation_chunks", lambda *a, **kw: calls.append(1) or real(*a, **kw))

    again = encode_dataset_to_sparse(sae, tmp_path / "art", tmp_path / "out", chunk_size=4, k=3)
    assert calls == []  # read back, not recomputed
    assert (again.activations != first.activations).nnz == 0
    pd.testing.assert_frame_equal(again.top, first.top, check_dtype=False)
    pd.testing.assert_frame_equal(again.stats, first.stats, check_dtype=False)

    # Anything the files depend on changes: computed anew.
    encode_dataset_to_sparse(sae, tmp_path / "art", tmp_path / "out", chunk_size=4, k=2)
    with torch.no_grad():
        next(sae.parameters()).add_(0.01)
    encode_dataset_to_sparse(sae, tmp_path / "art", tmp_path / "out", chunk_size=4, k=2)
    encode_dataset_to_sparse(sae, tmp_path / "art", tmp_path / "out", chunk_size=5, k=2)
    encode_dataset_to_sparse(sae, tmp_path / "art", tmp_path / "out", chunk_size=5, k=2, reuse=False)
    assert len(calls) == 4
    write_encode_stage(tmp_path / "art", tokens + 1.0, np.ones(30, dtype=bool), scale=2.0)
    encode_dataset_to_sparse(sae, tmp_path / "art", tmp_path / "out", chunk_size=5, k=2)
    assert len(calls) == 5


def test_load_sparse_encoding_names_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="activations.npz"):
        load_sparse_encoding(tmp_path)
