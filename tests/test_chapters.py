"""The real chapter notebooks, executed by the real runner on a tiny SynthCXR world."""

import json
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from saerad.pipeline import REPO_ROOT, run

TINY = ["data.n_patients=40", "data.image_size=128", "encode.projection_points=60", "sae.steps=60",
        "sae.comparison_steps=30", "sae.checkpoint_every=20", "sae.batch_size=32", "sae.expansion_factor=2",
        "sae.table5_expansion_factors=[1, 2, 4]", "reader_study.n_cases=2", "reader_study.simulated_cases=4",
        "counterfactuals.image_size=16", "counterfactuals.channels=[8, 8, 8]", "counterfactuals.epochs=1",
        "counterfactuals.batch_size=8", "counterfactuals.checkpoint_every=2", "counterfactuals.sampling_steps=2",
        "counterfactuals.images_per_group=3"]


@pytest.mark.slow
def test_demo_chapters_run_and_write_their_artifacts(tmp_path):
    static = f"reader_study.book_static_dir={tmp_path / 'extra'}"  # keep the real book's copy of the page untouched
    outcome = run("demo", assignments=TINY + [static], artifacts_base=tmp_path / "artifacts",
                  chapters_dir=tmp_path / "chapters",
                  timeout=600)
    assert outcome == {"data": "ran", "encode": "ran", "sae": "ran", "features": "ran", "reports": "ran",
                       "metrics": "ran", "counterfactuals": "ran", "reader_study": "ran", "real_reports": "ran",
                       "scorecard": "ran"}
    for name in ("00_data.ipynb", "01_encode.ipynb", "02_sae.ipynb", "03_features.ipynb", "04_reports.ipynb",
                 "05_metrics.ipynb", "06_counterfactual.ipynb", "07_reader_study.ipynb", "08_scorecard.ipynb",
                 "09_real_reports.ipynb"):
        executed = nbformat.read(tmp_path / "chapters" / name, as_version=4)
        errors = [o for c in executed.cells if c.cell_type == "code" for o in c.get("outputs", [])
                  if o.output_type == "error"]
        assert not errors
    data = tmp_path / "artifacts/demo/data"
    images = pd.read_csv(data / "images.csv")
    assert len(images) > 40 and set(images["view_position"]) <= {"AP", "PA"}
    assert (data / "drop_table.csv").exists() and (data / "ground_truth.csv").exists()

    encode = tmp_path / "artifacts/demo/encode"
    probe = pd.read_csv(encode / "probe_auroc.csv")
    assert list(probe.columns[:3]) == ["finding", "prevalence", "auroc"]
    scale = json.loads((encode / "scale.json").read_text())
    assert scale["mean_norm_after"] == pytest.approx(scale["target_mean_norm"], rel=1e-4)
    import numpy as np

    tokens = np.load(encode / "class_tokens.npy")
    assert tokens.shape[0] == len(images) and np.isfinite(tokens).all()

    sae = tmp_path / "artifacts/demo/sae"
    for table in ("table3", "table5", "ablation"):
        columns = pd.read_csv(sae / f"{table}.csv").columns
        assert {"l0", "explained_variance"} <= set(columns), table
    assert {"cfg.json", "sae_weights.safetensors"} <= {p.name for p in (sae / "sae_rad_main").iterdir()}

    features = tmp_path / "artifacts/demo/features"
    alignment = pd.read_csv(features / "finding_alignment.csv")
    assert list(alignment.columns[:3]) == ["finding", "best_feature", "auroc"]
    stats = pd.read_csv(features / "feature_stats.csv")
    described = [json.loads(line) for line in (features / "descriptions.jsonl").read_text().splitlines()]
    # Every live feature has a description or a flagged failure with its reason.
    assert sorted(record["feature"] for record in described) == sorted(stats.loc[~stats["dead"], "feature"])
    assert all(record["status"] == "ok" or record["flag_reason"] for record in described)

    generated = [json.loads(line) for line in
                 (tmp_path / "artifacts/demo/reports/generated.jsonl").read_text().splitlines()]
    studies = pd.read_csv(data / "studies.csv")
    test_studies = set(studies.loc[studies["split"] == "test", "study_id"])
    for system in ("sae_rad", "nearest_neighbour"):
        lines = [record for record in generated if record["system"] == system]
        assert {record["study_id"] for record in lines} == test_studies, system
        assert all(record["report"] or record["reason"] for record in lines)
    assert all(sentence["feature_ids"] for record in generated if record["system"] == "sae_rad"
               for sentence in record["sentences"])

    metrics = tmp_path / "artifacts/demo/metrics"
    table1 = pd.read_csv(metrics / "table1.csv")
    assert list(table1.columns[:6]) == ["system", "metric", "value", "ci_low", "ci_high", "source"]
    assert set(table1["source"]) == {"measured", "paper", "not measured"}
    measured = table1[table1["source"] == "measured"]
    assert measured[["value", "ci_low", "ci_high"]].notna().all().all()
    assert table1.loc[table1["source"] == "not measured", "note"].str.startswith("n/a").all()
    table2 = pd.read_csv(metrics / "table2.csv")
    sweep = pd.read_csv(metrics / "table2_sae_sweep.csv")
    assert list(sweep["sae"]) == ["x1", "x2", "x4", "x1_dense", "x2_dense", "x4_dense"]
    assert {f"SAE-Rad {sae} (offline composer)" for sae in sweep["sae"]} <= set(table2["system"])
    check = pd.read_csv(metrics / "pycocoevalcap_check.csv")
    assert check["abs_difference"].max() <= 1e-6

    counterfactuals = tmp_path / "artifacts/demo/counterfactuals"
    axioms = pd.read_csv(counterfactuals / "axioms.csv")
    assert list(axioms.columns) == ["feature", "finding", "measure", "value", "n", "N", "note"]
    assert {"pacemaker", "cardiomegaly"} <= set(axioms["finding"])  # measured, or an n/a row saying why
    # the null intervention returns the token exactly, so its image is the reconstruction's
    null = axioms[axioms["measure"] == "composability: |null - reconstruction|"]
    assert len(null) >= 1 and (null["value"] == 0).all()
    measured = axioms[axioms["feature"] >= 0]
    assert (measured["n"] <= measured["N"]).all() and not measured["note"].str.startswith("n/a").any()
    assert {"decoder.safetensors", "checkpoint.pt", "history.csv"} <= {p.name for p in (counterfactuals / "decoder").iterdir()}

    reader = tmp_path / "artifacts/demo/reader_study"
    assert {"review.html", "unblinding.json", "cases.json"} <= {p.name for p in (reader / "review_page").iterdir()}
    summary = pd.read_csv(reader / "summary.csv")
    assert {"paper counts (Appendix E.1)", "simulated reader (SynthCXR truth)"} <= set(summary["source"])
    shares = summary[(summary["unit"] == "share") & (summary["total"] > 0)]  # 0 of 0 has no share
    assert ((shares["ci_low"] <= shares["value"]) & (shares["value"] <= shares["ci_high"])).all()

    scorecard = pd.read_csv(tmp_path / "artifacts/demo/scorecard/scorecard.csv")
    assert len(scorecard) >= 20 and "not run" not in set(scorecard["verdict"])  # every stage ran, so every row reads

    _built_book_renders_in_chromium(tmp_path)  # last: it skips when there is no browser


def test_demo_encoder_checkpoint_is_shipped_and_loads():
    from saerad.encode.encoder import ClassTokenEncoder

    directory = REPO_ROOT / "models" / "synthcxr-resnet-small"  # the supervised comparison arm
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "training.json", "README.md"):
        assert (directory / name).exists(), name
    encoder = ClassTokenEncoder(directory)
    recipe = json.loads((directory / "training.json").read_text())
    assert encoder.dim == recipe["arguments"]["hidden_size"]


def test_the_demo_profile_uses_the_shipped_label_free_encoder_and_keeps_the_supervised_one_as_an_arm():
    import yaml

    from saerad.encode.encoder import ClassTokenEncoder

    demo = yaml.safe_load((REPO_ROOT / "params" / "demo.yaml").read_text())["stages"]["encode"]
    directory = REPO_ROOT / demo["encoder_model"]
    assert directory.name == "synthcxr-simclr"
    record = json.loads((directory / "training.json").read_text())
    assert str(record["labels_used_in_training"]).startswith("none")
    assert ClassTokenEncoder(directory).dim == 256
    arms = {**_notebook_default("01_encode.ipynb", "comparison_arms"), **demo.get("comparison_arms", {})}
    assert arms.get("supervised") == "models/synthcxr-resnet-small"


def _notebook_default(notebook: str, name: str):
    from saerad.params import stage_schema

    stage = {"01_encode.ipynb": "encode"}[notebook]
    return stage_schema(stage, REPO_ROOT / "notebooks" / notebook)[name].default


@pytest.mark.slow
def test_paper_profile_runs_on_a_mimic_layout_fixture_and_a_tiny_dinov2(tmp_path):
    from conftest import save_tiny_dinov2, write_mimic_fixture

    root = tmp_path / "mimic-cxr-jpg"
    root.mkdir()
    expected = write_mimic_fixture(root)
    encoder_dir = save_tiny_dinov2(tmp_path / "rad-dino-like", image_size=32)
    outcome = run(
        "paper",
        assignments=[f"dataset_root={root}", f"encoder_model={encoder_dir}", "device=cpu", "dtype=float32",
                     "num_workers=0", "workers=2"],
        artifacts_base=tmp_path / "artifacts", chapters_dir=tmp_path / "chapters", timeout=600,
        only=["data", "encode"],
    )
    assert outcome == {"data": "ran", "encode": "ran"}
    drops = pd.read_csv(tmp_path / "artifacts/paper/data/drop_table.csv").set_index("reason")
    for reason, (images, studies) in expected["drops"].items():
        assert (drops.loc[reason, "images"], drops.loc[reason, "studies"]) == (images, studies)
    import numpy as np

    tokens = np.load(tmp_path / "artifacts/paper/encode/class_tokens.npy")
    assert tokens.shape == (expected["kept_images"], 32)


def _built_book_renders_in_chromium(tmp_path):
    """The tiny run's chapters, built into the book strictly and opened in the system Chromium."""
    import shutil
    import subprocess
    import sys

    from saerad.book_check import chapter_pages, check_book, find_chromium

    root = tmp_path / "book_root"
    root.mkdir()
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(REPO_ROOT / name, root / name)
    shutil.copytree(REPO_ROOT / "book", root / "book", ignore=shutil.ignore_patterns("*.ipynb", "reader-study"))
    shutil.copytree(tmp_path / "chapters", root / "book" / "chapters", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".*"))
    shutil.copytree(tmp_path / "extra", root / "book" / "extra" / "reader-study")
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    build = subprocess.run([str(jupyter_book), "build", str(root), "--warningiserror", "--keep-going",
                            "--builder", "html"], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    if find_chromium() is None:
        pytest.skip("no system chromium on PATH (`make browser` installs it): the book built, not rendered")
    table = check_book(root / "_build" / "html", chapter_pages(root / "_toc.yml"))
    assert len(table) == 10 and table["passed"].all(), table.to_string()
