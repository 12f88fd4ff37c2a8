"""The front page's generated pieces: the chapter table (parameters, times) and the pipeline diagram."""

from dataclasses import replace
from pathlib import Path

import pytest

from saerad import diagram, front_matter
from saerad.io import write_json
from saerad.params import NotebookParameter
from saerad.pipeline import REPO_ROOT, STAGES

PAGE = REPO_ROOT / "book" / "rerun.md"


def _rows_with_times(tmp_path, seconds=100.0):
    for stage in STAGES:
        write_json(tmp_path / stage.name / "stage.json", {"seconds": seconds})
    return front_matter.chapter_rows(tmp_path)


def test_committed_page_lists_every_stage_with_its_notebooks_parameters(tmp_path):
    rows = _rows_with_times(tmp_path)
    problems = front_matter.check_page(PAGE, rows, tolerance=float("inf"))
    assert problems == []


def test_updated_page_passes_and_a_slower_run_fails_beyond_the_tolerance(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"intro\n{front_matter.START}\nOLD-TABLE\n{front_matter.END}\ntail\n")
    rows = _rows_with_times(tmp_path / "run", seconds=200.0)
    front_matter.update_page(page, rows)
    text = page.read_text()
    assert text.startswith("intro\n") and text.endswith("tail\n") and "OLD-TABLE" not in text
    assert front_matter.check_page(page, rows) == []
    slower = [replace(row, seconds=row.seconds * 1.2) for row in rows]
    assert front_matter.check_page(page, slower) == []  # 200 s vs 240 s: -17 %
    much_slower = [replace(row, seconds=row.seconds * 1.5) for row in rows]
    problems = front_matter.check_page(page, much_slower)
    assert len(problems) == len(STAGES) and "tolerance 25%" in problems[0]


def test_short_stages_pass_within_a_few_seconds_whatever_the_percentage(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"{front_matter.START}\n{front_matter.END}\n")
    rows = _rows_with_times(tmp_path / "run", seconds=10.0)
    front_matter.update_page(page, rows)
    assert front_matter.check_page(page, [replace(row, seconds=14.0) for row in rows]) == []  # -29 %, 4 s
    problems = front_matter.check_page(page, [replace(row, seconds=16.0) for row in rows])  # 6 s
    assert len(problems) == len(STAGES) and "or 5 s" in problems[0]


def test_parameter_drift_and_missing_stage_are_named(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"{front_matter.START}\n{front_matter.END}\n")
    rows = _rows_with_times(tmp_path / "run")
    front_matter.update_page(page, rows)
    knob = NotebookParameter("new_knob", 1, "a knob the page does not know")
    renamed = [replace(rows[0], parameters=rows[0].parameters + (knob,))] + rows[1:]
    problems = front_matter.check_page(page, renamed)
    assert len(problems) == 1 and "new_knob" in problems[0] and "'data'" in problems[0]
    page.write_text("\n".join(line for line in page.read_text().splitlines() if "`encode`" not in line))
    assert any("'encode' is missing" in problem for problem in front_matter.check_page(page, rows))


def test_update_keeping_times_refreshes_parameters_only(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"{front_matter.START}\n{front_matter.END}\n")
    timed = _rows_with_times(tmp_path / "timed", seconds=200.0)
    front_matter.update_page(page, timed)
    knob = NotebookParameter("new_knob", 1, "a knob added since the timed run")
    changed = [replace(row, parameters=row.parameters + (knob,), seconds=5.0) for row in timed]
    front_matter.update_page(page, changed, keep_times=True)
    assert front_matter.check_page(page, [replace(row, seconds=200.0) for row in changed]) == []
    assert "new_knob" in page.read_text() and "| 5 s |" not in page.read_text() and "| 3.3 min |" in page.read_text()


def test_page_without_markers_or_run_is_refused_with_its_name(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("no markers here\n")
    with pytest.raises(ValueError, match="page.md: the chapter-table markers are missing"):
        front_matter.check_page(page, [])
    rows = front_matter.chapter_rows(tmp_path / "no-run")
    assert all(row.seconds is None for row in rows)
    page.write_text(f"{front_matter.START}\n{front_matter.END}\n")
    front_matter.update_page(page, rows)
    assert all("no stage.json" in problem for problem in front_matter.check_page(page, rows))


@pytest.mark.parametrize("seconds, text", [(19.4, "19 s"), (89.6, "90 s"), (325.6, "5.4 min"), (None, "not run")])
def test_times_format_and_parse_back(seconds, text):
    assert front_matter.format_seconds(seconds) == text
    if seconds is not None:
        assert front_matter.parse_seconds(text) == pytest.approx(seconds, rel=0.03)


def test_committed_diagram_is_the_drawing_of_the_current_stages():
    committed = (REPO_ROOT / "book" / "images" / "pipeline.svg").read_text(encoding="utf-8")
    assert committed == diagram.pipeline_svg(), "run: python -m saerad.diagram book/images/pipeline.svg"
    for stage in STAGES:
        assert f"· {stage.name}</text>" in committed


def test_diagram_refuses_a_stage_it_does_not_know():
    from saerad.pipeline import Stage

    with pytest.raises(KeyError, match="no entry for stage"):
        diagram.pipeline_svg(STAGES + (Stage("extra", "99_extra.ipynb", "Extra"),))
