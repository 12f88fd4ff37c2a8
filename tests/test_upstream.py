"""A chapter opened outside the pipeline stops at once, writing nothing, when a stage it reads has not finished."""

import json
from pathlib import Path

import nbformat
import pytest

from saerad.io import write_json
from saerad.paths import REPO_ROOT
from saerad.pipeline import STAGES
from saerad.upstream import UpstreamMissing, require_upstream, required_stages

BY_NAME = {stage.name: stage for stage in STAGES}


def _finish(root: Path, name: str, fingerprint: str | None = None, upstream: dict | None = None,
            status: str = "ok") -> None:
    """Leave ``name``'s folder as a finished pipeline stage leaves it: its record and its declared outputs."""
    parameters = {"source": "synthcxr"} if name == "data" else {}
    for output in BY_NAME[name].declared_outputs(parameters):
        path = root / name / output
        if path.suffix:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("x")
        else:  # a folder that must not be empty
            path.mkdir(parents=True, exist_ok=True)
            (path / "file").write_text("x")
    write_json(root / name / "stage.json", {"stage": name, "status": status, "parameters": parameters,
                                            "fingerprint": fingerprint or f"{name}-1", "upstream": upstream or {}})


def _files(root: Path) -> list[str]:
    return sorted(path.relative_to(root).as_posix() for path in root.rglob("*")) if root.exists() else []


def _refusal(root: Path, stage: str, profile: str = "demo") -> str:
    before = _files(root)
    with pytest.raises(UpstreamMissing) as refusal:
        require_upstream(stage, root, profile)
    assert _files(root) == before  # nothing written, not even the chapter's folder
    return str(refusal.value)


def test_a_chapter_whose_upstream_never_ran_names_each_stage_and_the_command_that_makes_them(tmp_path):
    root = tmp_path / "artifacts" / "demo"
    message = _refusal(root, "features")
    assert message.splitlines() == [
        f"03_features.ipynb cannot run: stages it reads have not finished in {root} (nothing has been written)",
        "  data: it has not run",
        "  encode: it has not run",
        "  sae: it has not run",
        f"Run them first: python -m saerad.pipeline --profile demo --only data --only encode --only sae "
        f"--set artifacts_root={root}",
    ]
    assert not root.exists()


def test_the_command_runs_the_stages_from_the_first_unfinished_one_in_the_profiles_own_root(tmp_path, monkeypatch):
    import saerad.upstream

    monkeypatch.setattr(saerad.upstream, "REPO_ROOT", tmp_path)  # artifacts/<profile> is the profile's default root
    root = tmp_path / "artifacts" / "paper"
    _finish(root, "data")
    _finish(root, "encode", upstream={"data": "data-1"})
    _finish(root, "sae", upstream={"data": "data-1", "encode": "encode-1"}, status="failed")
    message = _refusal(root, "features", "paper")
    assert "  sae: its last run failed (the error is in stage.json)" in message
    assert "data:" not in message and "encode:" not in message
    assert message.endswith("Run them first: python -m saerad.pipeline --profile paper --only sae")


def test_a_missing_output_or_a_stage_made_from_an_earlier_run_is_not_finished(tmp_path):
    root = tmp_path / "root"
    _finish(root, "data", fingerprint="data-2")
    _finish(root, "encode", upstream={"data": "data-1"})  # made before data ran again
    _finish(root, "sae", upstream={"data": "data-2", "encode": "encode-1"})
    (root / "sae" / "sae_rad_main" / "cfg.json").unlink()
    message = _refusal(root, "features")
    assert "  encode: it was made from an earlier run of 'data'" in message
    assert "  sae: output(s) missing: sae_rad_main/cfg.json" in message
    assert "--only encode --only sae --set artifacts_root=" in message


def test_finished_upstream_passes_and_writes_nothing(tmp_path):
    root = tmp_path / "root"
    _finish(root, "data")
    _finish(root, "encode", upstream={"data": "data-1"})
    _finish(root, "sae", upstream={"data": "data-1", "encode": "encode-1"})
    before = _files(root)
    require_upstream("features", root, "demo")
    assert _files(root) == before


@pytest.mark.parametrize("stage", ["data", "real_reports", "scorecard"])
def test_chapters_that_read_no_stage_or_show_not_run_require_nothing(tmp_path, stage):
    # The data and real-reports chapters read no stage; the scorecard marks an unrun chapter's claims "not run".
    assert required_stages(stage) == []
    require_upstream(stage, tmp_path / "empty", "demo")
    assert not (tmp_path / "empty").exists()


def test_a_chapter_requires_what_the_pipeline_checks_before_running_it():
    from saerad.pipeline import needed_stages

    for stage in STAGES:
        if stage.requires is None:
            assert set(required_stages(stage.name)) == needed_stages([stage]), stage.name


def _setup_cell(notebook: str) -> str:
    cells = json.loads((REPO_ROOT / "notebooks" / notebook).read_text())["cells"]
    index = next(i for i, cell in enumerate(cells) if "parameters" in cell["metadata"].get("tags", []))
    setup = cells[index + 1]
    assert "remove-cell" in setup["metadata"].get("tags", []), notebook
    return "".join(setup["source"])


@pytest.mark.parametrize("stage", STAGES, ids=lambda stage: stage.name)
def test_every_chapter_checks_its_upstream_first_thing_in_its_setup_cell(stage):
    source = _setup_cell(stage.notebook)
    assert source.splitlines()[:2] == [
        "from saerad.upstream import require_upstream",
        f'require_upstream("{stage.name}", artifacts_root, profile)'
        "  # stops, writing nothing, if what it reads is unfinished"]
    assert "mkdir" not in source.splitlines()[1]


@pytest.mark.slow
def test_the_features_chapter_opened_without_its_upstream_stops_in_its_first_cell_and_creates_nothing(tmp_path):
    import papermill
    from papermill.exceptions import PapermillExecutionError

    root = tmp_path / "artifacts" / "demo"
    executed = tmp_path / "03.ipynb"
    with pytest.raises(PapermillExecutionError) as stop:
        papermill.execute_notebook(str(REPO_ROOT / "notebooks" / "03_features.ipynb"), str(executed),
                                   parameters={"artifacts_root": str(root)}, cwd=str(REPO_ROOT / "notebooks"),
                                   kernel_name="python3", progress_bar=False)
    assert stop.value.ename == "UpstreamMissing"
    assert "sae: it has not run" in stop.value.evalue
    assert "python -m saerad.pipeline --profile demo --only data --only encode --only sae" in stop.value.evalue
    assert not root.exists()  # neither the root nor the chapter's features/ folder
    # The notebook shows the message, not a traceback into the package.
    error = next(output for cell in nbformat.read(executed, as_version=4).cells
                 for output in cell.get("outputs", []) if output.output_type == "error")
    shown = "\n".join(error.traceback)
    assert "Run them first" in shown and "Traceback" not in shown and "upstream.py" not in shown
