"""The v2 corrections of the rule labeler, one pattern at a time.

Every sentence here was written for this test in the style of real chest radiograph reports; none
is copied from a report collection. Each case gives the v1 labels (what the correction changes)
and the v2 labels (what CheXpert's own conventions say).
"""

from __future__ import annotations

import math

import pytest

from saerad.metrics.chexpert_rules import (
    CURRENT_RULES,
    RULE_VERSIONS,
    RULES_V2_CHANGES,
    label_report,
    label_sentence,
    sentence_findings,
    sentence_rules_out_no_finding,
)

# (change, sentence, v1 labels, v2 labels)
CASES = [
    # Granulomas and calcified nodules are not lung lesions; granulomatous infection is not pneumonia.
    ("granuloma", "An old calcified granuloma sits in the left apex.", {"Lung Lesion": 1.0}, {}),
    ("granuloma", "Two calcified nodules in the right lower lung, unchanged.", {"Lung Lesion": 1.0}, {}),
    ("granuloma", "There is an uncalcified nodule in the lingula.", {"Lung Lesion": 1.0}, {"Lung Lesion": 1.0}),
    ("granuloma", "Sequelae of remote granulomatous infection.", {"Pneumonia": 1.0, "Lung Opacity": 1.0}, {}),
    ("granuloma", "Changes of cystic fibrosis in both upper lobes.", {}, {}),
    # A bare "lesion" is not a lung lesion.
    ("bare lesion", "A lytic lesion is seen in the left seventh rib.", {"Lung Lesion": 1.0}, {}),
    ("bare lesion", "Spiculated lung lesion in the right upper lobe.", {"Lung Lesion": 1.0}, {"Lung Lesion": 1.0}),
    # CheXpert's Edema terms.
    ("edema terms", "Changes of congestive heart failure are present.", {}, {"Edema": 1.0, "Lung Opacity": 1.0}),
    # CheXpert's Pleural Other terms.
    ("pleural other terms", "Chronic fibrosis at both apices.", {}, {"Pleural Other": 1.0}),
    ("pleural other terms", "Pleuroparenchymal scarring at the right base.", {}, {"Pleural Other": 1.0}),
    # CheXpert's Lung Opacity terms.
    ("opacity terms", "Linear scarring in the left midlung.", {}, {"Lung Opacity": 1.0}),
    ("opacity terms", "Coarse interstitial markings throughout both lungs.", {}, {"Lung Opacity": 1.0}),
    # CheXpert's Support Devices terms.
    ("device terms", "A prosthetic mitral valve is in place.", {}, {"Support Devices": 1.0}),
    ("device terms", "Loop recorder device over the left chest.", {}, {"Support Devices": 1.0}),
    # Negation by normal limits.
    ("negation", "The cardiac silhouette is not significantly enlarged.", {"Cardiomegaly": 1.0}, {"Cardiomegaly": 0.0}),
    ("negation", "Heart size is at the upper limits of normal.", {"Cardiomegaly": 0.0}, {"Cardiomegaly": 0.0}),
    ("negation", "The heart is top normal in size.", {"Cardiomegaly": -1.0}, {"Cardiomegaly": 0.0}),
    ("negation", "The heart is top-normal in size.", {}, {"Cardiomegaly": 0.0}),
    ("negation", "Pulmonary vascular congestion appears within limits of normal.",
     {"Edema": 1.0, "Lung Opacity": 1.0}, {"Edema": 0.0}),
    ("negation", "The heart size is top normal to mildly enlarged.", {"Cardiomegaly": -1.0}, {"Cardiomegaly": -1.0}),
    # Findings of another organ.
    ("wrong organ", "A small pericardial effusion is suspected.", {"Pleural Effusion": -1.0}, {}),
    ("wrong organ", "Soft tissue edema along the right flank.", {"Edema": 1.0, "Lung Opacity": 1.0}, {}),
    ("wrong organ", "A small bony density projects over the left clavicle.", {"Lung Opacity": 1.0}, {}),
    ("wrong organ", "A fractured catheter fragment projects over the right heart.",
     {"Fracture": 1.0, "Support Devices": 1.0}, {"Support Devices": 1.0}),
    # The size word's owner.
    ("size word owner", "Normal heart size, with an enlarged and tortuous descending aorta.",
     {"Cardiomegaly": 1.0}, {"Cardiomegaly": 0.0}),
    ("size word owner", "Heart size moderately enlarged, stable mediastinal contours.",
     {"Cardiomegaly": 1.0, "Enlarged Cardiomediastinum": 1.0}, {"Cardiomegaly": 1.0}),
]


@pytest.mark.parametrize("change,text,v1,v2", CASES, ids=[f"{c[0]}: {c[1][:40]}" for c in CASES])
def test_each_v2_correction_changes_what_it_says(change, text, v1, v2):
    assert change in dict(RULES_V2_CHANGES)
    assert label_sentence(text, rules="v1") == v1
    assert label_sentence(text, rules="v2") == v2
    assert label_sentence(text) == label_sentence(text, rules=CURRENT_RULES)


def test_every_listed_change_has_a_test():
    assert {change for change, *_ in CASES} | {"other findings"} == set(dict(RULES_V2_CHANGES))


@pytest.mark.parametrize("text", [
    "Lungs are clear. Mild dextroscoliosis of the thoracic spine.",
    "No focal consolidation. Emphysematous changes in both upper lobes.",
    "Heart size is normal. Degenerative changes of the thoracic spine.",
    "The lungs are clear. Small hiatal hernia behind the heart.",
])
def test_other_findings_rule_out_no_finding_in_v2_only(text):
    assert label_report(text, rules="v1")["No Finding"] == 1.0
    assert math.isnan(label_report(text, rules="v2")["No Finding"])


def test_negated_other_finding_keeps_no_finding():
    report = "The lungs are clear. No emphysema. No acute osseous abnormality."
    assert label_report(report, rules="v2")["No Finding"] == 1.0
    assert not sentence_rules_out_no_finding("No emphysema.")
    assert sentence_rules_out_no_finding("Mild emphysema.")
    assert not sentence_rules_out_no_finding("Mild emphysema.", rules="v1")


def test_new_concepts_name_no_synthcxr_finding():
    assert sentence_findings("An old calcified granuloma sits in the left apex.") == set()
    assert sentence_findings("A small pericardial effusion is suspected.") == set()


def test_versions_and_unknown_version():
    assert RULE_VERSIONS == ("v1", "v2") and CURRENT_RULES == "v2"
    with pytest.raises(ValueError, match="unknown rules version 'v3'"):
        label_sentence("No effusion.", rules="v3")


def test_label_sentence_returns_a_copy_of_memoised_labels():
    labels = label_sentence("Small left pleural effusion.")
    labels["Pleural Effusion"] = 0.0
    assert label_sentence("Small left pleural effusion.") == {"Pleural Effusion": 1.0}
