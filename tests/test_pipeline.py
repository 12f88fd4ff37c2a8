"""The papermill runner on two tiny notebooks made by the test."""

import json
from pathlib import Path

import nbformat
import pytest

from saerad.pipeline import Stage, StageFailed, run
from saerad.params import ParameterError

STAGES = (Stage("first", "00_first.ipynb", "First"), Stage("second", "01_second.ipynb", "Second"))


def _notebook(path: Path, parameters: str, body: str) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    notebook.cells = [cell, nbformat.v4.new_code_cell(body)]
    nbformat.write(notebook, path)


@pytest.fixture
def book(tmp_path):
    notebooks, params = tmp_path / "notebooks", tmp_path / "params"
    notebooks.mkdir(), params.mkdir()
    common = 'profile = "demo"\nseed = 0\nartifacts_root = "x"\n'
    _notebook(notebooks / "00_first.ipynb", common + "value = 1\n",
              "from pathlib import Path\n"
              "Path(artifacts_root, 'first').mkdir(parents=True, exist_ok=True)\n"
              "Path(artifacts_root, 'first', 'value.txt').write_text(str(value * 2 + seed))")
    _notebook(notebooks / "01_second.ipynb", common + "fail = False\n",
              "from pathlib import Path\n"
              "doubled = int(Path(artifacts_root, 'first', 'value.txt').read_text())\n"
              "if fail:\n    raise RuntimeError(f'asked to fail after reading {doubled}')\n"
              "Path(artifacts_root, 'second').mkdir(parents=True, exist_ok=True)\n"
              "Path(artifacts_root, 'second', 'ok.txt').write_text('ok')")
    (params / "demo.yaml").write_text("seed: 1\nstages:\n  first:\n    value: 5\n")
    kwargs = dict(artifacts_base=tmp_path / "artifacts", chapters_dir=tmp_path / "chapters", stages=STAGES,
                  notebooks_dir=notebooks, params_dir=params, timeout=120)
    return tmp_path, kwargs


def test_stages_run_in_order_then_are_skipped_when_up_to_date(book):
    root, kwargs = book
    assert run("demo", **kwargs) == {"first": "ran", "second": "ran"}
    assert (root / "artifacts/demo/first/value.txt").read_text() == "11"
    executed = nbformat.read(root / "chapters/00_first.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    record = json.loads((root / "artifacts/demo/first/stage.json").read_text())
    assert record["parameters"]["value"] == 5 and record["status"] == "ok"
    assert run("demo", **kwargs) == {"first": "up to date", "second": "up to date"}
    assert run("demo", assignments=["first.value=6"], **kwargs) == {"first": "ran", "second": "ran"}


def test_failing_stage_names_cell_and_error_and_keeps_the_good_chapter(book):
    root, kwargs = book
    run("demo", **kwargs)
    good = (root / "chapters/01_second.ipynb").read_bytes()
    with pytest.raises(StageFailed) as failure:
        run("demo", only=["second"], assignments=["second.fail=true"], **kwargs)
    message = str(failure.value)
    assert "stage 'second'" in message and "cell" in message
    assert "RuntimeError: asked to fail after reading 11" in message
    assert (root / "chapters/01_second.ipynb").read_bytes() == good
    assert (root / "artifacts/demo/second/failed.ipynb").exists()
    assert not list((root / "chapters").glob(".*"))
    assert (root / "chapters/00_first.ipynb").exists()


def test_bad_parameters_stop_before_anything_runs(book):
    root, kwargs = book
    with pytest.raises(ParameterError, match="unknown parameter 'valu'"):
        run("demo", assignments=["first.valu=3"], **kwargs)
    with pytest.raises(ParameterError, match="expects bool"):
        run("demo", assignments=["second.fail=maybe"], **kwargs)
    assert not (root / "artifacts").exists() and not (root / "chapters").exists()


def test_from_a_stage_needs_its_predecessors(book):
    root, kwargs = book
    with pytest.raises(StageFailed, match="needs the artifacts of 'first'"):
        run("demo", start="second", **kwargs)
