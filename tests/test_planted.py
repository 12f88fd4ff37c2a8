"""Judging generated sentences against SynthCXR's planted findings by finding, side and size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from saerad.metrics.planted import (BOTH, Claim, finding_f1_by_side_and_size, judge_claim, lesion_size_class,
                                    planted_findings, sentence_claims, sentence_marks, sentence_sides,
                                    sentence_size)
from saerad.synthcxr import FINDINGS

RIGHT_15MM_NODULE = {"lung_nodule": {"sides": frozenset({"right"}), "size": "10-19 mm"}}


def _truth_rows(rows):
    """A ground_truth.csv-like table: every finding 0 unless a row sets it."""
    table = []
    for row in rows:
        base = {name: 0 for name in FINDINGS}
        table.append({**base, **row})
    return pd.DataFrame(table)


def test_a_nodule_on_the_other_side_is_not_agreement():
    marks, missed = sentence_marks(["New 20 mm nodule in the LEFT mid lung."], RIGHT_15MM_NODULE)
    (text, mark, reasons), = marks
    assert mark == "extra"
    assert reasons == ["lung nodule: says left, planted right"]
    assert missed == ["lung_nodule"]  # the planted right nodule was not reported


def test_side_and_size_must_both_match():
    right_but_larger = sentence_marks(["New 22 mm nodule in the right upper lung."], RIGHT_15MM_NODULE)[0][0]
    assert right_but_larger[1] == "extra" and right_but_larger[2] == ["lung nodule: says 20-29 mm, planted 10-19 mm"]
    (_, mark, reasons), = sentence_marks(["There is a 16 mm nodule in the right mid lung."], RIGHT_15MM_NODULE)[0]
    assert (mark, reasons) == ("shared", [])
    # No side and no size stated: the finding alone is judged.
    assert sentence_marks(["Possible pulmonary nodule."], RIGHT_15MM_NODULE)[0][0][1] == "shared"


def test_bilateral_effusion_is_not_a_left_effusion_and_denials_need_only_absence():
    planted = {"pleural_effusion": {"sides": BOTH, "size": "moderate"}}
    marks, missed = sentence_marks(["Small left pleural effusion.", "Moderate bilateral pleural effusions.",
                                    "No pneumothorax.", "The lungs are well expanded."], planted)
    assert [mark for _, mark, _ in marks] == ["extra", "shared", "shared", "none"]
    assert marks[0][2] == ["pleural effusion: says left, planted both sides"]
    assert missed == []


def test_anatomy_with_a_side_word_is_not_a_side():
    assert sentence_sides("Left-sided pacemaker with leads terminating in the right atrium and right ventricle.") \
        == frozenset({"left"})
    assert sentence_sides("RIJ line tip is in the upper right atrium.") == frozenset({"right"})
    assert sentence_sides("Bibasilar atelectasis.") == BOTH
    assert sentence_sides("Lingular pneumonia.") == frozenset({"left"})
    assert sentence_sides("No pneumothorax.") is None


def test_size_classes():
    assert lesion_size_class(9) == "< 10 mm" and lesion_size_class(15) == "10-19 mm"
    assert lesion_size_class(51) == ">= 50 mm"
    assert sentence_size("There is a 3.5 cm mass in the left upper lung.", "lung_mass") == "30-49 mm"
    assert sentence_size("Tiny right apical pneumothorax.", "pneumothorax") == "small"
    assert sentence_size("The heart is markedly enlarged.", "cardiomegaly") == "severe"
    assert sentence_size("Small and large words.", "pleural_effusion") is None  # two sizes: not judged


def test_claims_follow_the_rule_labeler_and_skip_sides_of_denied_findings():
    claims = sentence_claims("No left pleural effusion.")
    assert claims == [Claim("pleural_effusion", False, None, None)]
    assert judge_claim(Claim("edema", True, None, "mild"), {"edema": {"sides": None, "size": "severe"}}) \
        == "edema: says mild, planted severe"


def test_planted_findings_read_side_and_size_per_study():
    truth = _truth_rows([
        {"study_id": 1, "lung_nodule": 1, "lung_nodule_laterality": "right", "lung_nodule_size_mm": 15.0},
        {"study_id": 1, "pleural_effusion": 1, "pleural_effusion_laterality": "bilateral",
         "pleural_effusion_size": "small"},
        {"study_id": 2},
    ])
    planted = planted_findings(truth)
    assert planted[1] == {"pleural_effusion": {"sides": BOTH, "size": "small"}, **RIGHT_15MM_NODULE}
    assert planted[2] == {}
    with pytest.raises(ValueError, match="missing columns"):
        planted_findings(truth.drop(columns="edema"))


def test_f1_counts_a_misplaced_finding_as_a_false_claim_and_a_miss():
    truth = _truth_rows([
        {"study_id": 1, "lung_nodule": 1, "lung_nodule_laterality": "right", "lung_nodule_size_mm": 15.0},
        {"study_id": 2, "lung_nodule": 1, "lung_nodule_laterality": "left", "lung_nodule_size_mm": 12.0},
    ])
    generated = pd.DataFrame([
        {"study_id": 1, "system": "a", "config": "-", "report": "New 20 mm nodule in the left mid lung."},
        {"study_id": 2, "system": "a", "config": "-", "report": "There is a 12 mm nodule in the left mid lung."},
    ])
    row = finding_f1_by_side_and_size(generated, truth).iloc[0]
    # nodule: TP 1 (study 2), FP 1 and FN 1 (study 1) -> F1 = 2 / (2 + 1 + 1)
    assert row["macro_f1"] == pytest.approx(0.5) and row["micro_f1"] == pytest.approx(0.5)
    assert row["wrong_side_or_size"] == 1 and row["n_findings_in_macro"] == 1


def test_without_sides_or_sizes_it_equals_the_finding_only_f1():
    from saerad.reports.generate import finding_f1_against_truth

    truth = _truth_rows([{"study_id": 1, "edema": 1}, {"study_id": 2, "cardiomegaly": 1}, {"study_id": 3}])
    generated = pd.DataFrame([
        {"study_id": s, "system": "a", "config": "-", "reference": "", "sentences": [], "reason": None, "report": r}
        for s, r in ((1, "Pulmonary edema."), (2, "No cardiomegaly. Edema."), (3, "Cardiomegaly."))])
    ours = finding_f1_by_side_and_size(generated, truth).iloc[0]
    theirs = finding_f1_against_truth(generated, truth).iloc[0]
    assert ours["macro_f1"] == pytest.approx(theirs["macro_f1"])
    assert ours["micro_f1"] == pytest.approx(theirs["micro_f1"])


def test_side_and_size_readings_agree_with_the_facts_of_generated_reports():
    """Every side and size the rule reads from a SynthCXR sentence is the one its facts were written with."""
    from saerad.metrics.planted import LESION_SIZE_COLUMN, SIDE_ATTRIBUTE, SIZE_WORDS, _SIDE_VALUES
    from saerad.synthcxr.patients import _draw_attributes, normal_state
    from saerad.synthcxr.reports import write_report

    rng = np.random.default_rng(0)
    checked = {"side": 0, "size": 0}
    for _ in range(400):
        names = list(rng.choice(FINDINGS, size=int(rng.integers(1, 4)), replace=False))
        state, prev = normal_state(), normal_state() if rng.random() < 0.5 else None
        for name in names:
            state["findings"][name] = _draw_attributes(name, rng)
            if prev is not None and rng.random() < 0.5:
                prev["findings"][name] = _draw_attributes(name, rng)
        report = write_report(state, prev, ["PA"], "CHEST (PA AND LAT)", rng)
        for sentence in report.sentences:
            claims = {claim.finding: claim for claim in sentence_claims(sentence["text"])}
            for fact in sentence["facts"]:
                claim, attributes, name = claims.get(fact["finding"]), fact["attributes"], fact["finding"]
                if not fact["present"] or claim is None:
                    continue
                if claim.sides is not None and SIDE_ATTRIBUTE.get(name) in attributes:
                    checked["side"] += 1
                    assert claim.sides == _SIDE_VALUES[attributes[SIDE_ATTRIBUTE[name]]], sentence["text"]
                if claim.size is not None:
                    checked["size"] += 1
                    expected = (lesion_size_class(attributes["size_mm"]) if name in LESION_SIZE_COLUMN
                                else attributes[SIZE_WORDS[name][0]])
                    assert claim.size == expected, sentence["text"]
    assert checked["side"] > 100 and checked["size"] > 100
