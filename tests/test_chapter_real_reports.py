"""The real-reports chapter runs on a tiny collection of reports written here (tiny counts everywhere)."""

from __future__ import annotations

import json

import nbformat
import pandas as pd
import pytest

from saerad.openi.reports import packaged_reports_available
from saerad.pipeline import REPO_ROOT, STAGES

pytestmark = pytest.mark.skipif(not packaged_reports_available(),
                                reason="torchxrayvision (the Open-i tables) is not installed")


def test_stage_is_declared_before_the_scorecard():
    names = [stage.name for stage in STAGES]
    assert names.index("real_reports") == names.index("reader_study") + 1
    stage = STAGES[names.index("real_reports")]
    assert stage.notebook == "09_real_reports.ipynb"
    assert "real_reports_labeler.csv" in stage.declared_outputs({})


@pytest.mark.slow
def test_chapter_runs_on_a_tiny_collection(tmp_path):
    import papermill

    from test_openi import write_collection

    write_collection(tmp_path)
    artifacts = tmp_path / "artifacts"
    executed = tmp_path / "09.ipynb"
    papermill.execute_notebook(
        str(REPO_ROOT / "notebooks" / "09_real_reports.ipynb"), str(executed), cwd=str(REPO_ROOT),
        kernel_name="python3", progress_bar=False,
        parameters={"artifacts_root": str(artifacts), "reports_source": str(tmp_path / "ecgen-radiology"),
                    "n_resamples": 50, "min_support": 1, "describer_sets": 2, "describer_set_size": 2})
    notebook = nbformat.read(executed, as_version=4)
    errors = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.output_type == "error"]
    assert not errors
    stage_dir = artifacts / "real_reports"
    labeler = pd.read_csv(stage_dir / "real_reports_labeler.csv")
    assert set(labeler["rules"]) == {"v1", "v2"} and len(labeler) == 2 * 15
    summary = json.loads((stage_dir / "summary.json").read_text())
    assert summary["reports"] == 6 and summary["indexed_reports"] == 4
    drops = pd.read_csv(stage_dir / "drop_table.csv").set_index("reason")
    assert drops.loc["report file unreadable", "studies"] == 1
