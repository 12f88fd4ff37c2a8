"""The SAE chapter's exercise solutions: registered, referenced consistently, and runnable on a tiny world."""

from __future__ import annotations

import re

import nbformat
import numpy as np
import pandas as pd
import pytest

from saerad.book.solutions import registry, run_solution
from saerad.io import write_json
from saerad.paths import REPO_ROOT

NOTEBOOK = REPO_ROOT / "notebooks" / "02_sae.ipynb"
EXERCISES = [f"02.{number}" for number in range(1, 9)]


def _chapter_sources() -> tuple[str, str]:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    markdown = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    return markdown, code


def test_every_exercise_has_a_solution_whose_keys_the_chapter_uses():
    entries = registry()
    assert [name for name in entries if name.startswith("02.")] == EXERCISES
    markdown, code = _chapter_sources()
    for exercise in EXERCISES:
        entry = entries[exercise]
        assert entry.reads == ("encode", "sae") and entry.parameters, exercise
        assert f":::{{admonition}} Exercise {exercise[1:]}" in markdown
        assert f"{{dropdown}} Solution to exercise {exercise[1:]}" in markdown
        assert f"{{glue:md}}`sol-{exercise}-status`" in markdown
        assert f'"{exercise}"' in code  # glued by the chapter's glue_solution loop
        used = set(re.findall(rf"sol-{re.escape(exercise)}-(\w+)`", markdown)) - {"status"}
        assert used <= set(entry.keys), (exercise, sorted(used - set(entry.keys)))
        # every number the solution computes is said somewhere in its prose
        assert set(entry.keys) <= used, (exercise, sorted(set(entry.keys) - used))


def _tiny_world(root, n_train=96, n_test=32, dim=8):
    """Tokens of an encode stage and the SAE stage's record and main table, as the chapter leaves them."""
    rng = np.random.default_rng(0)
    tokens = np.abs(rng.normal(size=(n_train + n_test, dim))).astype(np.float32)
    encode = root / "encode"
    encode.mkdir(parents=True)
    np.save(encode / "class_tokens.npy", tokens)
    pd.DataFrame({"dicom_id": [f"d{i}" for i in range(len(tokens))], "study_id": range(len(tokens)),
                  "split": ["train"] * n_train + ["test"] * n_test, "encoded": True}).to_csv(
        encode / "tokens_index.csv", index=False)
    write_json(encode / "scale.json", {"scale": 1.0})
    sae = root / "sae"
    sae.mkdir()
    recipe = {"steps": 40, "batch_size": 16, "expansion_factor": 2, "checkpoint_every": 20, "l1_coefficient": 0.5}
    write_json(sae / "stage.json", {"parameters": recipe})
    pd.DataFrame([{"name": "sae_rad_main", "l0": 6.0, "explained_variance": 0.5, "dead_features": 3,
                   "train_explained_variance": 0.6}]).to_csv(sae / "main_sae.csv", index=False)
    return root


def test_halving_lambda_trains_one_sae_and_reports_against_the_main_row(tmp_path):
    root = _tiny_world(tmp_path / "artifacts")
    record = run_solution(registry()["02.1"], root, "tiny", solutions_dir=tmp_path / "solutions")
    values = record["values"]
    assert set(values) == set(registry()["02.1"].keys)
    assert (values["main_l0"], values["main_dead_features"]) == (6.0, 3)
    assert 0 < values["l0"] <= 16 and values["dead_features"] >= 0  # 16 features: 8 dimensions × 2
    assert values["l0_change"] == f"{values['l0'] / 6.0 - 1:+.0%}"
    assert values["moves_more"] in ("L0", "explained variance")
    assert (tmp_path / "solutions" / "tiny" / "02.1.json").exists()


def test_a_solution_without_the_chapters_table_says_which_stage_to_run(tmp_path):
    root = _tiny_world(tmp_path / "artifacts")
    (root / "sae" / "main_sae.csv").unlink()
    with pytest.raises(FileNotFoundError, match="run the sae stage first"):
        run_solution(registry()["02.1"], root, "tiny", solutions_dir=tmp_path / "solutions")
