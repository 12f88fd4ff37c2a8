"""The counterfactual chapter's paragraphs, read back from an axioms table."""

from __future__ import annotations

import pandas as pd

from saerad.counterfactual import axioms, summary


def _row(measure, value, n, N, note=""):
    return {"feature": 5, "finding": "pacemaker", "measure": measure, "value": value, "n": n, "N": N, "note": note}


def _table(with_judge=True, with_mask=True):
    rows = [_row(axioms.NULL_DISTANCE, 0.0, 8, 8), _row(axioms.CYCLE_DISTANCE, 0.0123, 8, 8),
            _row(axioms.EFFECT_SIZE, 0.0456, 8, 8)]
    if with_judge:
        rows += [_row(axioms.DETECTED_AFTER_ADD, 0.75, 6, 8), _row(axioms.DETECTED_IN_RECONSTRUCTIONS_WITHOUT, 0.125, 1, 8),
                 _row(axioms.DETECTED_AFTER_REMOVE, 0.25, 2, 8), _row(axioms.DETECTED_IN_RECONSTRUCTIONS_WITH, 0.875, 7, 8),
                 _row(axioms.ADD_TEST, 0.03125, 5, 5, "changed what the judge sees; n: ..., N: ..."),
                 _row(axioms.REMOVE_TEST, 0.5, 3, 4, "no change the judge can tell from chance; n: ..., N: ...")]
    if with_mask:
        rows.append(_row(axioms.SEGMENTATION_IOU, 0.31, 7, 8))
    return axioms.axioms_table(rows)


def test_paragraph_reads_every_measure_from_the_table():
    text = summary.axiom_paragraphs(_table(), {"pacemaker": 5})
    assert text.startswith("**Feature 5 (pacemaker).** Adding it made the judge see pacemaker in 6 of 8 images "
                           "without it (reconstructions: 1 of 8); removing it left 2 of 8 images with it detected "
                           "(reconstructions: 7 of 8). ")
    assert ("Adding it changed what the judge sees: 5 of the 5 images whose decision changed went the expected way "
            "(exact McNemar test, p = 0.031); removing it no change the judge can tell from chance: 3 of the 4 "
            "images whose decision changed went the expected way (exact McNemar test, p = 0.5)") in text
    assert "moved the image not at all (0 exactly); the cycle ended 0.0123 from the reconstruction, against 0.0456" in text
    assert text.endswith("mean IoU 0.31 over 7 images.")


def test_measures_missing_from_the_table_leave_their_sentences_out():
    text = summary.feature_paragraph(_table(with_judge=False, with_mask=False), "pacemaker", 5)
    assert "judge" not in text and "IoU" not in text
    assert "The null intervention moved the image not at all" in text
    assert summary.measure_row(_table(), "pacemaker", "no such measure") is None
    assert summary.measure_row(_table(), "edema", axioms.NULL_DISTANCE) is None


def test_a_test_without_changed_decisions_says_so_and_drops_the_threshold_in_brackets():
    rows = [_row(axioms.ADD_TEST, 1.0, 0, 0, "did nothing the judge could tell from chance (p >= 0.05); n: ..., N: ..."),
            _row(axioms.REMOVE_TEST, 2e-6, 12, 12, "changed what the judge sees; n: ..., N: ...")]
    text = summary.feature_paragraph(axioms.axioms_table(rows), "pacemaker", 5)
    assert "Adding it did nothing the judge could tell from chance: no image's decision changed" in text
    assert "(p >= 0.05)" not in text
    assert "removing it changed what the judge sees: 12 of the 12 images whose decision changed" in text
    assert "p < 0.001" in text
