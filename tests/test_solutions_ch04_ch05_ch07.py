"""The exercise solutions of the reports, metrics and reader-study chapters: registry, and the cheap ones run."""

from __future__ import annotations

import inspect

import pytest

from saerad.book.solutions import registry

CHAPTER_EXERCISES = {"04": ("04.1", "04.2", "04.3"), "05": ("05.1", "05.2", "05.3", "05.4"),
                     "07": ("07.1", "07.2", "07.3", "07.4")}


@pytest.mark.parametrize("chapter", sorted(CHAPTER_EXERCISES))
def test_every_exercise_has_a_solution_whose_keys_are_its_return_keys(chapter):
    entries = registry()
    for exercise in CHAPTER_EXERCISES[chapter]:
        entry = entries[exercise]
        source = inspect.getsource(entry.compute)
        for key in entry.keys:
            assert f'"{key}"' in source, f"{exercise}: key {key!r} is never returned"
        assert set(entry.reads) <= {"data", "encode", "sae", "features", "reports", "metrics", "reader_study"}


def test_reports_solutions_change_what_the_exercises_say():
    entries = registry()
    assert entries["04.1"].parameters == {"reports.tau": 0.5}
    assert entries["04.2"].parameters == {"reports.statements_per_feature": 0}
    assert entries["05.1"].parameters == {"reports.tau": 1.0}
    assert entries["07.2"].parameters["reader_study.simulated_cases"] == 10


def test_sentence_kinds():
    from saerad.book.solutions.ch04_reports import sentence_kind

    assert sentence_kind("Small left pleural effusion.") == "finding"
    assert sentence_kind("No pneumothorax.") == "negative"
    assert sentence_kind("The lungs are well expanded.") == "other"


def test_labeler_blind_spots_are_mislabelled(tmp_path):
    values = registry()["05.4"].compute(tmp_path, {})
    assert values["n_mislabelled"] == 3
    assert [row["mislabelled"] for row in values["table"]] == [True, True, True]


def test_seven_percent_is_the_relative_reading_against_the_others_pooled(tmp_path):
    values = registry()["07.3"].compute(tmp_path, {})
    readings = {row["reading"]: float(row["value (%)"]) for row in values["table"]}
    assert readings["fewer than the others pooled, relative"] == pytest.approx(100 * (1 - (45 / 59) / (87 / 106)), abs=0.05)
    assert readings["fewer than CheXagent, in points"] == pytest.approx(100 * (52 / 62 - 45 / 59), abs=0.05)
    assert values["reading_matching"] == "fewer than the others pooled, relative"


def test_fixed_decimals_are_text():
    from saerad.book.solutions._format import fixed, table_cells

    assert fixed(2.9, 1) == "2.9" and fixed(float("nan"), 1) == "—" and fixed(51172117, 0) == "51,172,117"
    assert table_cells([{"a": 28.3, "b": "x"}], {"a": 1}) == [{"a": "28.3", "b": "x"}]
