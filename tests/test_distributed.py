"""Sharded, resumable encoding: 2 gloo ranks on CPU give bit-for-bit the single-process artifacts.

The encoder is the shipped demo ResNet, whose float32 output for an image
depends on the other images in its batch (checked below), so equality here
means the shards really ran the single-process batches.

Every encode in this file uses one torch thread, as torchrun's workers do
(``OMP_NUM_THREADS=1``): on some CPUs torch's kernels round a one-image
batch differently with two threads, a property of the kernels, not of the
sharding this file checks.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from PIL import Image

from conftest import torch_threads
from saerad import distributed
from saerad.distributed import FAIL_AFTER_PARTS_ENV, RankInfo, ShardError, ShardFiles
from saerad.encode.sharded import run_sharded_encode
from saerad.encode.encoder import ClassTokenEncoder, encode_files

REPO_ROOT = Path(__file__).resolve().parent.parent
ENCODER = str(REPO_ROOT / "models" / "synthcxr-resnet-small")
TORCHRUN = REPO_ROOT / ".venv" / "bin" / "torchrun"
BATCH, CHUNK = 3, 7
pytestmark = pytest.mark.usefixtures("one_thread")  # the threads of torchrun's workers; see the module docstring
#: images per study: 12 studies, 21 images; row 9 is unreadable.
STUDY_SIZES = [1, 2, 1, 3, 1, 1, 2, 2, 1, 3, 2, 2]
BROKEN_ROW = 9


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """images.csv + dataset.json (absolute image root) and the single-process encode output."""
    base = tmp_path_factory.mktemp("sharded")
    image_root = base / "images"
    rng = np.random.default_rng(0)
    rows = []
    for study, size in enumerate(STUDY_SIZES):
        for view in range(size):
            row = len(rows)
            relative = f"files/s{study}/img{row}.png"
            (image_root / relative).parent.mkdir(parents=True, exist_ok=True)
            if row == BROKEN_ROW:
                (image_root / relative).write_bytes(b"\x89PNG not really")
            else:
                Image.fromarray(rng.integers(0, 255, (96, 96), dtype=np.uint8), mode="L").save(image_root / relative)
            rows.append({"dicom_id": f"d{row:03d}", "subject_id": 100 + study // 3, "study_id": 5000 + study,
                         "split": "test" if study in (4, 11) else "train", "view_position": "PA",
                         "image_path": relative})
    data = base / "template" / "data"
    data.mkdir(parents=True)
    pd.DataFrame(rows).to_csv(data / "images.csv", index=False)
    (data / "dataset.json").write_text(json.dumps({"root": str(image_root)}))

    reference = base / "reference"
    encoder = ClassTokenEncoder(ENCODER)
    paths = [image_root / row["image_path"] for row in rows]
    with torch_threads(1):  # a module fixture is built before the one_thread fixture of its first test
        encode_files(encoder, paths, reference, batch_size=BATCH, chunk_size=CHUNK, progress=False)
    return {"template": base / "template", "reference": reference, "paths": paths, "encoder": encoder}


def fresh_root(dataset, tmp_path) -> Path:
    root = tmp_path / "artifacts"
    shutil.copytree(dataset["template"], root)
    return root


def assert_same_encode_output(stage_dir: Path, reference: Path):
    assert (stage_dir / "class_tokens.npy").read_bytes() == (reference / "class_tokens.npy").read_bytes()
    assert (stage_dir / "failed_images.json").read_text() == (reference / "failed_images.json").read_text()
    for chunk in sorted((reference / "chunks").iterdir()):
        assert (stage_dir / "chunks" / chunk.name).read_bytes() == chunk.read_bytes(), chunk.name


def torchrun(args: list[str], env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {name: value for name, value in os.environ.items() if name != FAIL_AFTER_PARTS_ENV}
    env.update({"OMP_NUM_THREADS": "1", **(env_extra or {})})
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "saerad.encode.sharded", *args,
               "--no-progress"]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120)


# -- plans and rank discovery ------------------------------------------------------------------------------------


def test_assign_groups_keeps_studies_whole_balanced_and_deterministic():
    studies = np.repeat(np.arange(40), np.arange(40) % 4 + 1)
    plan = distributed.assign_groups(studies, 3)
    assert np.array_equal(np.sort(np.concatenate(plan)), np.arange(len(studies)))
    owners = [{int(s) for s in studies[rows]} for rows in plan]
    assert all(not (a & b) for i, a in enumerate(owners) for b in owners[i + 1:])
    sizes = [len(rows) for rows in plan]
    assert max(sizes) - min(sizes) <= 4  # at most one study (<= 4 images) apart
    assert all(np.array_equal(a, b) for a, b in zip(plan, distributed.assign_groups(studies, 3)))
    # Non-contiguous studies still stay whole; more ranks than studies leaves ranks empty.
    scattered = distributed.assign_groups(np.array([7, 8, 7, 9, 8]), 2)
    assert [rows.tolist() for rows in scattered] == [[0, 2], [1, 3, 4]]
    assert [len(rows) for rows in distributed.assign_groups(np.array([1, 1]), 3)] == [0, 2, 0]


def test_assign_chunks_keeps_single_process_chunk_boundaries():
    blocks = distributed.assign_chunks(23, 5, 2)
    assert blocks == [(0, 10), (10, 23)]
    assert all(start % 5 == 0 for start, _ in blocks)
    assert distributed.assign_chunks(3, 5, 2) == [(0, 0), (0, 3)]


def test_rank_from_env_reads_torchrun_variables_and_rejects_bad_ones():
    info = distributed.rank_from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert (info.rank, info.world_size, info.local_rank, info.launched) == (3, 8, 1, True)
    assert distributed.rank_from_env({}) == RankInfo(0, 1, 0, False)
    assert distributed.rank_device("cuda", info) == "cuda:1"
    with pytest.raises(ValueError, match="WORLD_SIZE"):
        distributed.rank_from_env({"RANK": "0", "WORLD_SIZE": "two"})
    with pytest.raises(ValueError, match="rank must be"):
        distributed.rank_from_env({"RANK": "8", "WORLD_SIZE": "8"})


def test_demo_encoder_depends_on_batch_composition(dataset):
    """Why the shards must reproduce the single-process batches (else this file tests nothing hard)."""
    encoder = dataset["encoder"]
    images = [Image.open(path) for i, path in enumerate(dataset["paths"][:6]) if i != BROKEN_ROW]
    together = encoder.encode_images(images)
    alone = np.concatenate([encoder.encode_images([image]) for image in images])
    assert not np.array_equal(together, alone)


# -- in-process: one rank, and shards given by hand (Slurm array style) ----------------------------------------------


def test_one_rank_equals_encode_files_and_the_chapter_resumes_from_it(dataset, tmp_path, monkeypatch):
    root = fresh_root(dataset, tmp_path)
    summary = run_sharded_encode(root, ENCODER, RankInfo(), batch_size=BATCH, chunk_size=CHUNK, progress=False)
    assert summary["merged"] == {"rows": 21, "failed": 1, "seconds": pytest.approx(summary["merged"]["seconds"])}
    stage = root / "encode"
    assert_same_encode_output(stage, dataset["reference"])
    index = pd.read_csv(stage / "tokens_index.csv")
    assert index["encoded"].sum() == 20 and not index.loc[BROKEN_ROW, "encoded"]
    assert json.loads((stage / "scale.json").read_text())["scale"] > 0
    # The encode chapter's encode_files finds every chunk done: it must not encode anything.
    import saerad.encode.encoder as encoder_module

    monkeypatch.setattr(encoder_module, "encode_paths", lambda *a, **k: pytest.fail("re-encoded a chunk"))
    result = encode_files(dataset["encoder"], dataset["paths"], stage, batch_size=BATCH, chunk_size=CHUNK,
                          progress=False)
    assert result.n_encoded == 20
    assert_same_encode_output(stage, dataset["reference"])


@pytest.mark.parametrize("world", [3, 4])
def test_shards_by_hand_then_merge_equal_single_process(dataset, tmp_path, world):
    root = fresh_root(dataset, tmp_path)
    for rank in reversed(range(world)):
        summary = run_sharded_encode(root, ENCODER, RankInfo(rank, world), batch_size=BATCH, chunk_size=CHUNK,
                                     progress=False)
        assert summary["status"] == "encoded" and "merged" not in summary
    assert not (root / "encode" / "class_tokens.npy").exists()
    again = run_sharded_encode(root, ENCODER, RankInfo(1, world), batch_size=BATCH, chunk_size=CHUNK, progress=False)
    assert again["status"] == "skipped"
    merged = run_sharded_encode(root, ENCODER, RankInfo(0, world), batch_size=BATCH, chunk_size=CHUNK,
                                progress=False, merge=True, encode=False)
    assert merged["merged"]["rows"] == 21
    assert_same_encode_output(root / "encode", dataset["reference"])


def test_merge_refuses_missing_or_foreign_shards(dataset, tmp_path):
    root = fresh_root(dataset, tmp_path)
    run_sharded_encode(root, ENCODER, RankInfo(0, 2), batch_size=BATCH, chunk_size=CHUNK, progress=False)
    with pytest.raises(ShardError, match="rank 1 of 2 has not finished"):
        run_sharded_encode(root, ENCODER, RankInfo(0, 2), batch_size=BATCH, chunk_size=CHUNK, progress=False,
                           merge=True, encode=False)
    run_sharded_encode(root, ENCODER, RankInfo(1, 2), batch_size=BATCH, chunk_size=CHUNK, progress=False)
    with pytest.raises(ShardError, match="another run"):  # a different batch size changes the tokens
        run_sharded_encode(root, ENCODER, RankInfo(0, 2), batch_size=BATCH + 1, chunk_size=CHUNK, progress=False,
                           merge=True, encode=False)
    files = ShardFiles(root / "encode" / "shards", 1, 2)
    files.data.write_bytes(files.data.read_bytes()[:-4])  # a damaged shard is not complete
    with pytest.raises(ShardError, match="data file changed"):
        run_sharded_encode(root, ENCODER, RankInfo(0, 2), batch_size=BATCH, chunk_size=CHUNK, progress=False,
                           merge=True, encode=False)


# -- torchrun, 2 gloo ranks --------------------------------------------------------------------------------------


def test_torchrun_killed_rank_resumes_without_reencoding_and_matches_single_process(dataset, tmp_path):
    root = fresh_root(dataset, tmp_path)
    args = ["--artifacts-root", str(root), "--encoder-model", ENCODER, "--device", "cpu",
            "--batch-size", str(BATCH), "--chunk-size", str(CHUNK), "--num-workers", "0"]
    failed = torchrun(args, {FAIL_AFTER_PARTS_ENV: "1:1"})
    assert failed.returncode != 0, failed.stdout + failed.stderr
    assert "rank 1 stopped after 1 part" in failed.stdout + failed.stderr
    shards = root / "encode" / "shards"
    rank1 = ShardFiles(shards, 1, 2)
    assert not rank1.marker.exists() and not (root / "encode" / "class_tokens.npy").exists()
    kept_parts = {p.name: p.stat().st_mtime_ns for p in rank1.parts.glob("part-*.npy")}
    assert len(kept_parts) == 1
    rank0 = ShardFiles(shards, 0, 2)
    rank0_before = (rank0.marker.stat().st_mtime_ns, rank0.data.stat().st_mtime_ns) if rank0.marker.exists() else None
    rank0_parts = len(list(rank0.parts.glob("part-*.npy"))) if rank0.parts.exists() else 0

    resumed = torchrun(args)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    reports = {r["rank"]: r for r in (json.loads(line) for line in resumed.stdout.splitlines() if line.startswith("{"))}
    assert reports[1]["status"] == "encoded" and reports[1]["parts_reused"] == 1
    assert reports[1]["parts_encoded"] >= 1
    if rank0_before is not None:  # rank 0 finished before it was stopped: untouched, not re-encoded
        assert reports[0]["status"] == "skipped"
        assert (rank0.marker.stat().st_mtime_ns, rank0.data.stat().st_mtime_ns) == rank0_before
    else:
        assert reports[0]["parts_reused"] == rank0_parts
    assert json.loads(rank1.marker.read_text())["parts_reused"] == 1
    assert reports[0]["merged"]["rows"] == 21
    assert_same_encode_output(root / "encode", dataset["reference"])


def test_torchrun_sae_activations_equal_single_process(dataset, tmp_path):
    from saerad.features.activations import MANIFEST_FILENAME, encode_dataset_to_sparse, load_sparse_encoding
    from saerad.sae import build_sae, make_config, save_sae

    root = fresh_root(dataset, tmp_path)
    run_sharded_encode(root, ENCODER, RankInfo(), batch_size=BATCH, chunk_size=CHUNK, progress=False)
    sae = build_sae(make_config("sae_rad", d_in=dataset["encoder"].dim, expansion_factor=2, seed=0))
    save_sae(sae, root / "sae" / "tiny")
    reference = tmp_path / "reference"
    encode_dataset_to_sparse(sae, root, reference, chunk_size=4, k=3)

    run = torchrun(["--stage", "activations", "--artifacts-root", str(root), "--sae-name", "tiny",
                    "--chunk-size", "4", "--top-k", "3", "--device", "cpu"])
    assert run.returncode == 0, run.stdout + run.stderr
    merged, index = load_sparse_encoding(root / "features")
    expected, expected_index = load_sparse_encoding(reference)
    assert merged.nnz > 0 and merged.shape == expected.shape == (20, sae.config.d_sae)
    for name in ("data", "indices", "indptr"):
        assert getattr(merged, name).tobytes() == getattr(expected, name).tobytes(), name
    pd.testing.assert_frame_equal(index, expected_index)
    for name in ("activations_index.csv", "feature_stats.csv", "top_activations.csv"):
        assert (root / "features" / name).read_bytes() == (reference / name).read_bytes(), name
    # The features chapter's call finds the merged pass and reads it instead of recomputing.
    assert (root / "features" / MANIFEST_FILENAME).read_text() == (reference / MANIFEST_FILENAME).read_text()
    import saerad.features.activations as activations_module

    def no_recompute(*args, **kwargs):
        raise AssertionError("the merged sharded pass should have been reused")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(activations_module, "iter_activation_chunks", no_recompute)
        reused = encode_dataset_to_sparse(sae, root, root / "features", chunk_size=4, k=3)
    assert (reused.activations != merged).nnz == 0
    # A rerun finds both shards complete and only merges.
    marker = ShardFiles(root / "features" / "shards", 1, 2, ".npz").marker
    before = marker.stat().st_mtime_ns
    from saerad.features.activations_sharded import run_sharded_activations

    again = run_sharded_activations(root, root / "sae" / "tiny", RankInfo(1, 2), chunk_size=4, k=3)
    assert again["status"] == "skipped" and marker.stat().st_mtime_ns == before
    assert sp.issparse(merged)
