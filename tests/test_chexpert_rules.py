"""Tests of the rule-based CheXpert / SynthCXR labeler."""

from __future__ import annotations

import math

import numpy as np
import pytest

from saerad.metrics.chexpert_rules import (
    label_report,
    label_sentence,
    report_findings,
    sentence_findings,
    split_sentences,
)
from saerad.mimic.loader import CHEXPERT_OBSERVATIONS
from saerad.synthcxr import FINDINGS, SynthCXRConfig, sample_studies

# (sentence, expected label_sentence, expected sentence_findings)
SYNTH_SENTENCES = [
    ("No focal consolidation, pleural effusion, or pneumothorax is seen.",
     {"Consolidation": 0.0, "Pleural Effusion": 0.0, "Pneumothorax": 0.0},
     {("consolidation", False), ("pleural_effusion", False), ("pneumothorax", False)}),
    ("Heart size and mediastinal contours are normal.",
     {"Cardiomegaly": 0.0, "Enlarged Cardiomediastinum": 0.0},
     {("cardiomegaly", False), ("enlarged_cardiomediastinum", False)}),
    ("There is severe enlargement of the cardiac silhouette.", {"Cardiomegaly": 1.0}, {("cardiomegaly", True)}),
    ("The heart size is top normal to mildly enlarged.", {"Cardiomegaly": -1.0}, {("cardiomegaly", True)}),
    ("The mediastinum appears widened, which may be accentuated by technique.",
     {"Enlarged Cardiomediastinum": -1.0}, {("enlarged_cardiomediastinum", True)}),
    ("Left basilar opacities may reflect atelectasis, though infection cannot be excluded.",
     {"Atelectasis": -1.0, "Lung Opacity": -1.0, "Pneumonia": -1.0},
     {("atelectasis", True), ("consolidation", True)}),
    ("Focal opacity in the right upper lobe, likely pneumonia.",
     {"Lung Opacity": 1.0, "Pneumonia": -1.0}, {("consolidation", True)}),
    ("No focal airspace opacity to suggest pneumonia.", {"Lung Opacity": 0.0, "Pneumonia": 0.0},
     {("consolidation", False)}),
    ("Endotracheal tube terminates 3 cm above the carina and could be withdrawn by approximately 2 cm.",
     {"Support Devices": 1.0}, {("endotracheal_tube", True)}),
    ("RIJ line tip is in the mid SVC.", {"Support Devices": 1.0}, {("central_line", True)}),
    ("Interval extubation.", {"Support Devices": 0.0}, {("endotracheal_tube", False)}),
    ("The previously seen left pleural effusion has resolved.", {"Pleural Effusion": 0.0},
     {("pleural_effusion", False)}),
    ("A tiny left apical pneumothorax cannot be excluded.", {"Pneumothorax": -1.0}, {("pneumothorax", True)}),
    ("Possible nodular opacity in the right mid lung, which may represent a nipple shadow.",
     {"Lung Lesion": -1.0}, {("lung_nodule", True)}),
    ("Diffuse alveolar opacities consistent with severe pulmonary edema.",
     {"Edema": 1.0, "Lung Opacity": 1.0}, {("edema", True)}),
    ("Opacity in the right lower lobe may represent atelectasis or consolidation.",
     {"Atelectasis": -1.0, "Consolidation": -1.0, "Lung Opacity": -1.0},
     {("atelectasis", True), ("consolidation", True)}),
    ("There is a 2.3 cm mass in the left upper lung, concerning for malignancy.", {"Lung Lesion": 1.0},
     {("lung_mass", True)}),
    ("Possible nondisplaced fracture of the right sixth rib.", {"Fracture": -1.0}, {("rib_fracture", True)}),
    ("No acute osseous abnormality.", {"Fracture": 0.0}, {("rib_fracture", False)}),
    ("Right apical pleural thickening.", {"Pleural Other": 1.0}, {("pleural_thickening", True)}),
    ("Left-sided pacemaker with leads terminating in the right atrium and right ventricle.",
     {"Support Devices": 1.0}, {("pacemaker", True)}),
    ("The patient is status post median sternotomy.", {"Support Devices": 1.0}, {("sternotomy_wires", True)}),
    ("Nasogastric tube terminates in the distal esophagus and should be advanced.",
     {"Support Devices": 1.0}, {("nasogastric_tube", True)}),
    ("Interval removal of the central venous catheter.", {"Support Devices": 0.0}, {("central_line", False)}),
    ("There is no pulmonary vascular congestion or edema.", {"Edema": 0.0}, {("edema", False)}),
]

# Realistic MIMIC-CXR-style sentences (not SynthCXR templates).
MIMIC_SENTENCES = [
    ("The lungs are clear without focal consolidation, effusion, or pneumothorax.",
     {"Consolidation": 0.0, "Pleural Effusion": 0.0, "Pneumothorax": 0.0}),
    ("Compared to the prior study, there is increased opacity at the left base which may represent "
     "atelectasis or pneumonia.", {"Lung Opacity": 1.0, "Atelectasis": -1.0, "Pneumonia": -1.0}),
    ("Moderate cardiomegaly is unchanged.", {"Cardiomegaly": 1.0}),
    ("The heart is not enlarged.", {"Cardiomegaly": 0.0}),
    ("Small bilateral pleural effusions with adjacent atelectasis.",
     {"Pleural Effusion": 1.0, "Atelectasis": 1.0, "Lung Opacity": 1.0}),
    ("Right PICC line ends in the mid SVC.", {"Support Devices": 1.0}),
    ("No change in the large left pleural effusion.", {"Pleural Effusion": 1.0}),
    ("Pneumonia cannot be excluded in the appropriate clinical setting.",
     {"Pneumonia": -1.0, "Lung Opacity": -1.0}),
    ("Moderate right pneumothorax, but no tension.", {"Pneumothorax": 1.0}),
    ("Retrocardiac opacity likely reflects atelectasis, although infection is not excluded.",
     {"Lung Opacity": -1.0, "Atelectasis": -1.0, "Pneumonia": -1.0}),
    ("Mediastinal and hilar contours are unremarkable.", {"Enlarged Cardiomediastinum": 0.0}),
    ("No displaced fractures.", {"Fracture": 0.0}),
    ("There is no evidence of pulmonary edema.", {"Edema": 0.0}),
]


@pytest.mark.parametrize("text,labels,findings", SYNTH_SENTENCES)
def test_synthcxr_template_sentences(text, labels, findings):
    assert label_sentence(text) == labels
    assert sentence_findings(text) == findings


@pytest.mark.parametrize("text,labels", MIMIC_SENTENCES)
def test_realistic_mimic_sentences(text, labels):
    assert label_sentence(text) == labels


def test_sentence_without_findings_is_empty():
    assert label_sentence("Findings were discussed with the referring team by telephone.") == {}
    assert sentence_findings("Frontal and lateral views of the chest.") == set()


def test_split_sentences_keeps_decimals_and_drops_item_numbers():
    text = "1.  There is a 1.5 cm nodule.  2.  No effusion.\n\nSmall pneumothorax."
    assert split_sentences(text) == ["There is a 1.5 cm nodule.", "No effusion.", "Small pneumothorax."]


def test_label_report_aggregation_and_no_finding():
    labels = label_report("No pleural effusion. Possible small left pleural effusion. Lines and tubes in place.")
    assert set(labels) == set(CHEXPERT_OBSERVATIONS)
    assert labels["Pleural Effusion"] == -1.0  # uncertain beats negative
    assert math.isnan(labels["No Finding"])  # an uncertain pathology blocks No Finding
    assert labels["Support Devices"] == 1.0
    assert math.isnan(labels["Cardiomegaly"])

    normal = label_report("Heart size is normal. No pneumothorax. Right IJ line tip in the SVC.")
    assert normal["No Finding"] == 1.0  # support devices do not block No Finding
    assert normal["Cardiomegaly"] == 0.0

    positive = label_report("Possible small right effusion.  Small right pleural effusion.")
    assert positive["Pleural Effusion"] == 1.0  # positive beats uncertain
    assert all(math.isnan(v) for k, v in label_report(float("nan")).items() if k != "No Finding")


def test_report_findings_present_beats_absent():
    got = report_findings("No pleural effusion. Small left pleural effusion. No pneumothorax.")
    assert got == {"pleural_effusion": True, "pneumothorax": False}
    assert set(got) <= set(FINDINGS)


def test_rejects_non_string_sentence():
    with pytest.raises(TypeError, match="str"):
        label_sentence(None)


def test_agreement_on_a_fresh_synthcxr_world():
    """A world with a seed the rules were never looked at on: labels vs the report facts."""
    config = SynthCXRConfig(n_patients=120, seed=2024)
    from saerad.synthcxr.catalogue import chexpert_labels_from_facts

    n_sent = n_exact = 0
    pred, true = [], []
    for rec in sample_studies(config, render=False):
        for s in rec.sentences:
            want = {}
            for fact in s["facts"]:
                if fact["finding"] in FINDINGS:
                    want[fact["finding"]] = want.get(fact["finding"], False) or fact["present"]
            n_sent += 1
            n_exact += sentence_findings(s["text"]) == set(want.items())
        text = " ".join(s["text"] for s in rec.sentences)
        got = label_report(text)
        ref = chexpert_labels_from_facts([f for s in rec.sentences for f in s["facts"]])
        pred.append([got[o] in (1.0, -1.0) for o in CHEXPERT_OBSERVATIONS])
        true.append([ref[o] in (1.0, -1.0) for o in CHEXPERT_OBSERVATIONS])
    pred, true = np.array(pred), np.array(true)
    assert n_sent > 500
    # Sentences naming devices only generically ("lines and tubes") cannot be matched; the rest must be.
    assert n_exact / n_sent > 0.95
    tp = (pred & true).sum(0)
    f1 = 2 * tp / np.maximum(pred.sum(0) + true.sum(0), 1)
    supported = true.sum(0) > 0
    assert f1[supported].mean() > 0.97


# ---------------------------------------------------------------------------
# CheXpert F1 and the labeler agreement table
# ---------------------------------------------------------------------------

def test_chexpert_f1_matches_sklearn_and_resamples():
    import pandas as pd
    from sklearn.metrics import f1_score

    from saerad.metrics.chexpert_f1 import (
        KEY_OBSERVATIONS,
        binary_label_arrays,
        chexpert_f1,
        chexpert_f1_from_arrays,
    )

    rng = np.random.default_rng(0)
    values = np.array([1.0, 0.0, -1.0, np.nan])
    ref = pd.DataFrame(rng.choice(values, size=(40, 14)), columns=list(CHEXPERT_OBSERVATIONS))
    gen = pd.DataFrame(rng.choice(values, size=(40, 14)), columns=list(CHEXPERT_OBSERVATIONS))
    gen.iloc[:, 3] = np.nan  # an observation never predicted
    scores = chexpert_f1(gen, ref)
    t = np.isin(ref.to_numpy(), (1.0, -1.0))
    p = np.isin(gen.to_numpy(), (1.0, -1.0))
    key = [CHEXPERT_OBSERVATIONS.index(o) for o in KEY_OBSERVATIONS]
    assert scores["macro_f1_14"] == pytest.approx(f1_score(t, p, average="macro", zero_division=0))
    assert scores["micro_f1_14"] == pytest.approx(f1_score(t, p, average="micro", zero_division=0))
    assert scores["macro_f1_5"] == pytest.approx(f1_score(t[:, key], p[:, key], average="macro", zero_division=0))
    assert scores["micro_f1_5"] == pytest.approx(f1_score(t[:, key], p[:, key], average="micro", zero_division=0))
    pred, true = binary_label_arrays(gen, ref)
    idx = rng.integers(0, 40, 40)
    boot = chexpert_f1_from_arrays(pred, true, indices=idx)
    assert boot["macro_f1_14"] == pytest.approx(f1_score(t[idx], p[idx], average="macro", zero_division=0))
    assert chexpert_f1(ref, ref)["micro_f1_14"] == 1.0
    with pytest.raises(ValueError, match="different studies"):
        chexpert_f1(gen.iloc[:-1], ref)


def test_evaluate_labeler_on_a_small_written_world(tmp_path):
    import gzip
    import json

    import pandas as pd

    from saerad.metrics.chexpert_f1 import evaluate_labeler

    studies, gt_rows = [], []
    facts = gzip.open(tmp_path / "facts.jsonl.gz", "wt")
    for rec in sample_studies(SynthCXRConfig(n_patients=40, seed=7), render=False):
        findings = " ".join(s["text"] for s in rec.sentences if s["section"] == "findings") or \
            " ".join(s["text"] for s in rec.sentences)
        studies.append({"study_id": rec.study_id, "findings": findings, **rec.chexpert})
        for im in rec.images:
            gt_rows.append({"study_id": rec.study_id, "view_position": im.view_position,
                            **{f: int(im.state["findings"][f]["present"]) for f in FINDINGS}})
        facts.write(json.dumps({"study_id": rec.study_id, "sentences": rec.sentences}) + "\n")
    facts.close()
    (tmp_path / "synthcxr").mkdir()
    (tmp_path / "facts.jsonl.gz").rename(tmp_path / "synthcxr" / "synthcxr-report-facts.jsonl.gz")
    pd.DataFrame(studies).to_csv(tmp_path / "studies.csv", index=False)
    pd.DataFrame(gt_rows).to_csv(tmp_path / "ground_truth.csv", index=False)

    tables = evaluate_labeler(tmp_path)
    summary = tables["summary"].set_index("table")
    assert len(tables["findings16"]) == len(FINDINGS)
    assert summary.loc["findings16_facts", "macro_f1"] > 0.97
    assert summary.loc["chexpert14", "macro_f1"] > 0.97
    assert summary.loc["findings16", "macro_f1"] > 0.85  # reports omit some planted findings
    assert 0.9 < summary.loc["sentences_exact_set_match", "micro_f1"] <= 1.0

    (tmp_path / "ground_truth.csv").unlink()
    with pytest.raises(FileNotFoundError, match="ground_truth.csv"):
        evaluate_labeler(tmp_path)
