"""Report generation: active features, prompt, offline composer, provenance, nearest-neighbour baseline,
generated.jsonl (resume), finding F1 against planted truth, cost counting."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from saerad.reports.active import ActiveFeature, active_features, load_activations, study_activations
from saerad.reports.baseline import extrapolate_search_seconds, nearest_neighbour_reports, nearest_neighbours
from saerad.reports.composer import compose_report, description_statements
from saerad.reports.prompt import format_elapsed, prior_reports_by_study, report_prompt_text
from saerad.reports.provenance import attach_provenance
from saerad.reports.generate import (
    f1_scores,
    finding_f1_against_truth,
    generate_reports,
    read_generated,
    synthcxr_sentence_marks,
    tau_study,
)
from saerad.synthcxr import FINDINGS

# A tiny labeler standing in for saerad.metrics.chexpert_rules.sentence_findings, so these tests
# check report generation and not the labeler's rules.
_VOCABULARY = {"effusion": "pleural_effusion", "pneumothorax": "pneumothorax", "cardiomegaly": "cardiomegaly",
               "heart": "cardiomegaly", "pacemaker": "pacemaker", "edema": "edema"}


def toy_findings(text: str) -> set:
    lowered = text.lower()
    negated = lowered.startswith("no ") or " no " in lowered or "normal" in lowered
    return {(name, not negated) for word, name in _VOCABULARY.items() if word in lowered}


@dataclass(frozen=True)
class Description:
    feature: int
    status: str
    description: str
    statements: tuple


def describe(feature, *sentences, status="ok"):
    statements = tuple((s, frozenset(toy_findings(s))) for s in sentences)
    return Description(feature, status, " ".join(sentences), statements)


# -- active features -------------------------------------------------------------------------------


def test_active_features_threshold_importance_and_order():
    row = np.array([0.0, 2.0, 0.5, 4.0, 2.0, 0.1])
    active = active_features(row, tau=0.4)
    assert [a.feature for a in active] == [3, 1, 4, 2]  # ties (1 and 4 at 2.0) by feature id
    assert [a.importance for a in active] == [1.0, 0.5, 0.5, 0.125]
    assert active_features(sp.csr_matrix(row), 0.4) == active
    assert active_features(torch.tensor(row), 0.4) == active
    assert active_features(row, tau=4.0) == []  # strict ">"
    with pytest.raises(ValueError):
        active_features(row, tau=-1)
    with pytest.raises(ValueError):
        active_features(np.array([1.0, -0.5]), tau=0)


def test_study_activations_take_the_maximum_over_images(tmp_path):
    dense = np.array([[1.0, 0, 3], [2, 0, 1], [0, 5, 0], [0, 0, 0]], dtype=np.float32)
    index = pd.DataFrame({"row": range(4), "dicom_id": list("abcd"), "study_id": [10, 10, 20, 30],
                          "subject_id": 1, "split": "test"})
    matrix, ids = study_activations(sp.csr_matrix(dense), index, [20, 10, 30])
    assert ids.tolist() == [20, 10, 30]
    np.testing.assert_array_equal(matrix.toarray(), [[0, 5, 0], [2, 0, 3], [0, 0, 0]])
    with pytest.raises(ValueError, match="no image"):
        study_activations(sp.csr_matrix(dense), index, [99])
    sp.save_npz(tmp_path / "activations.npz", sp.csr_matrix(dense))
    index.to_csv(tmp_path / "activations_index.csv", index=False)
    loaded, loaded_index = load_activations(tmp_path)
    assert loaded.shape == (4, 3) and loaded_index["study_id"].tolist() == [10, 10, 20, 30]
    index.iloc[:3].to_csv(tmp_path / "activations_index.csv", index=False)
    with pytest.raises(ValueError, match="aligned"):
        load_activations(tmp_path)


# -- prompt ----------------------------------------------------------------------------------------


def test_format_elapsed_matches_the_papers_style():
    assert format_elapsed(64 + 28 / 60) == "0 years, 2 days, 16 hours and 28 minutes"
    assert format_elapsed(365 * 24 + 25.5) == "1 years, 1 days, 1 hours and 30 minutes"
    with pytest.raises(ValueError):
        format_elapsed(-1.0)


def test_prompt_configurations_show_only_their_inputs(tmp_path):
    features = [("the absence of pneumothorax.", 1.0), ("a left pleural effusion.", 0.4)]
    priors_csv = tmp_path / "priors.csv"
    pd.DataFrame({"study_id": [5, 5, 5, 5], "prior_rank": [2, 1, 3, 4], "prior_study_id": [1, 2, 3, 4],
                  "hours_before": [100.0, 2.5, 300.0, 400.0],
                  "prior_report": ["SECOND REPORT", "FIRST REPORT", "THIRD REPORT", "FOURTH REPORT"]}).to_csv(priors_csv)
    priors = prior_reports_by_study(priors_csv)[5]
    assert [p.text for p in priors] == ["FIRST REPORT", "SECOND REPORT", "THIRD REPORT"]  # most recent first, max 3
    texts = {c: report_prompt_text(features, c, "Chest pain.", priors)[1] for c in ("no_aux", "indication", "indication_priors")}
    assert "Chest pain." not in texts["no_aux"] and "FIRST REPORT" not in texts["no_aux"]
    assert "Chest pain." in texts["indication"] and "FIRST REPORT" not in texts["indication"]
    assert "Chest pain." in texts["indication_priors"] and "FIRST REPORT" in texts["indication_priors"]
    assert "0 years, 0 days, 2 hours and 30 minutes" in texts["indication_priors"]
    assert "FOURTH REPORT" not in texts["indication_priors"]
    for text in texts.values():
        assert "Importance score 1.00" in text and "Importance score 0.40" in text
        assert "never use the word 'feature'" in text and "five to six sentences" in text
    with pytest.raises(ValueError):
        report_prompt_text(features, "with_everything")
    with pytest.raises(ValueError):
        report_prompt_text([], "no_aux")


# -- offline composer ------------------------------------------------------------------------------


def test_composer_merges_duplicates_resolves_contradictions_and_orders_by_score():
    descriptions = {
        1: describe(1, "Small left pleural effusion.", "No pneumothorax."),
        2: describe(2, "Left pleural effusion.", "Moderate cardiomegaly."),
        3: describe(3, "No pleural effusion."),
        4: describe(4, "Dual-chamber pacemaker.", status="flagged"),
        5: describe(5, "The lungs are well expanded."),
        6: describe(6, "The lungs are well-expanded!"),
    }
    active = [ActiveFeature(1, 5.0, 1.0), ActiveFeature(2, 3.0, 0.6), ActiveFeature(3, 2.5, 0.5),
              ActiveFeature(4, 2.0, 0.4), ActiveFeature(5, 1.0, 0.2), ActiveFeature(6, 0.5, 0.1)]
    report = compose_report(active, descriptions, findings_of=toy_findings)
    texts = [s.text for s in report.sentences]
    # effusion present (1.0 + 0.6) beats absent (0.5): "No pleural effusion." is dropped
    assert "No pleural effusion." not in texts and [s.text for s in report.contradicted] == ["No pleural effusion."]
    # the two effusion statements are one sentence, worded as the most important feature, with both sources
    effusion = report.sentences[0]
    assert effusion.text == "Small left pleural effusion." and effusion.feature_ids == [1, 2]
    assert effusion.score == pytest.approx(1.6)
    assert "Dual-chamber pacemaker." not in texts  # flagged description
    # same normalised text: merged
    lungs = [s for s in report.sentences if "expanded" in s.text]
    assert len(lungs) == 1 and lungs[0].feature_ids == [5, 6]
    assert [s.score for s in report.sentences] == sorted((s.score for s in report.sentences), reverse=True)
    assert report.text == " ".join(texts)
    # deterministic, and "max" changes the scores, not the content here
    assert compose_report(active, descriptions, findings_of=toy_findings).text == report.text
    by_max = compose_report(active, descriptions, aggregate="max", findings_of=toy_findings)
    assert by_max.sentences[0].score == pytest.approx(1.0)


def test_composer_tie_drops_both_sides_and_limits_length():
    descriptions = {1: describe(1, "Pleural effusion."), 2: describe(2, "No pleural effusion.")}
    report = compose_report([ActiveFeature(1, 1, 1.0), ActiveFeature(2, 1, 1.0)], descriptions, findings_of=toy_findings)
    assert report.sentences == [] and len(report.contradicted) == 2
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliett"]
    many = {k: describe(k, f"Finding {words[k]} is seen.") for k in range(10)}
    active = [ActiveFeature(k, 10 - k, (10 - k) / 10) for k in range(10)]
    limited = compose_report(active, many, max_sentences=3, findings_of=toy_findings)
    assert [s.feature_ids for s in limited.sentences] == [[0], [1], [2]] and len(limited.truncated) == 7
    first_only = compose_report([ActiveFeature(1, 1, 1.0)], {1: describe(1, "Cardiomegaly.", "No edema.")},
                                findings_of=toy_findings, statements_per_feature=1)
    assert [s.text for s in first_only.sentences] == ["Cardiomegaly."]


def test_composer_absorbs_statements_already_covered_and_reads_jsonl_records():
    records = {
        1: {"feature": 1, "status": "ok", "description": "no effusion or pneumothorax.",
            "statements": [{"text": "no effusion or pneumothorax", "findings": [["pleural_effusion", False],
                                                                              ["pneumothorax", False]]}]},
        2: {"feature": 2, "status": "ok", "description": "No pneumothorax.",
            "statements": [{"text": "No pneumothorax."}]},  # findings missing: labelled by findings_of
    }
    assert description_statements(records[2])[0].findings is None
    report = compose_report([ActiveFeature(1, 2, 1.0), ActiveFeature(2, 1, 0.5)], records, findings_of=toy_findings)
    assert [s.text for s in report.sentences] == ["No effusion or pneumothorax."]
    assert report.sentences[0].feature_ids == [1, 2]
    assert report.sentence_records() == [{"text": "No effusion or pneumothorax.", "feature_ids": [1, 2]}]


# -- provenance -------------------------------------------------------------------------------------


def test_provenance_by_findings_then_tfidf_and_unmatched_are_counted():
    descriptions = {1: describe(1, "Left pleural effusion."), 2: describe(2, "Moderate cardiomegaly."),
                    3: describe(3, "Sternotomy wires are intact and aligned.")}
    active = [ActiveFeature(1, 3, 1.0), ActiveFeature(2, 2, 0.66), ActiveFeature(3, 1, 0.33)]
    report = ("There is a small left effusion. The heart is enlarged. Median sternotomy wires are aligned. "
              "Clinical correlation is advised.")
    result = attach_provenance(report, active, descriptions, findings_of=toy_findings)
    assert [s["feature_ids"] for s in result.sentences] == [[1], [2], [3], []]
    assert result.matched_by == ["findings", "findings", "tfidf", "none"]
    assert result.n_unmatched == 1
    strict = attach_provenance(report, active, descriptions, threshold=0.99, findings_of=toy_findings)
    assert strict.n_unmatched == 2


# -- nearest-neighbour baseline ---------------------------------------------------------------------


def test_nearest_neighbours_match_brute_force_with_any_chunking_and_ties_go_to_the_lower_row():
    rng = np.random.default_rng(0)
    database = rng.standard_normal((300, 16)).astype(np.float32)
    queries = rng.standard_normal((50, 16)).astype(np.float32)
    brute = np.linalg.norm(queries[:, None, :].astype(np.float64) - database[None].astype(np.float64), axis=-1)
    for q_chunk, db_chunk in ((7, 13), (1024, 16384)):
        rows, distances = nearest_neighbours(queries, database, query_chunk=q_chunk, database_chunk=db_chunk)
        np.testing.assert_array_equal(rows, brute.argmin(1))
        np.testing.assert_allclose(distances, brute.min(1), rtol=1e-12)
    tied = np.stack([database[5], database[5]])
    duplicated = np.concatenate([database, tied])
    rows, _ = nearest_neighbours(database[5:6], duplicated[::-1].copy(), database_chunk=50)
    assert rows[0] == 0  # three identical rows (0, 1 and 301 reversed): the lowest index wins


def test_baseline_reports_use_the_closest_image_of_each_study():
    train = np.array([[0.0, 0], [10, 0], [0, 10]], dtype=np.float32)
    train_index = pd.DataFrame({"study_id": [1, 2, 3], "dicom_id": ["a", "b", "c"]})
    test = np.array([[9.0, 0], [0, 6], [0.5, 0.5]], dtype=np.float32)
    test_index = pd.DataFrame({"study_id": [100, 100, 200], "dicom_id": ["x", "y", "z"]})
    findings = {1: "Normal.", 2: "Effusion.", 3: "Cardiomegaly."}
    found = nearest_neighbour_reports(train, train_index, test, test_index, findings)
    assert found["study_id"].tolist() == [100, 200]
    assert found["neighbour_study_id"].tolist() == [2, 1]  # study 100: image x is 1 from study 2, y is 4 from 3
    assert found["report"].tolist() == ["Effusion.", "Normal."]
    assert found["distance"].iloc[0] == pytest.approx(1.0)
    assert extrapolate_search_seconds({"n_queries": 10, "n_database": 100, "dim": 8, "seconds": 2.0}, 20, 100, 8) == 4.0


# -- marks and F1 against planted truth --------------------------------------------------------------


def test_sentence_marks_against_planted_truth():
    marks, missed = synthcxr_sentence_marks(
        ["Left pleural effusion.", {"text": "No pneumothorax."}, "Moderate cardiomegaly.", "Lungs are clear."],
        {"pleural_effusion": 1, "edema": 1, "cardiomegaly": 0}, findings_of=toy_findings)
    assert [m for _, m in marks] == ["shared", "shared", "extra", "none"]
    assert missed == ["edema"]
    with pytest.raises(ValueError, match="unknown"):
        synthcxr_sentence_marks([], ["not_a_finding"], findings_of=toy_findings)


def test_f1_scores_by_hand():
    predicted = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]])
    truth = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]])
    scores = f1_scores(predicted, truth)
    np.testing.assert_allclose(scores["per_finding"][:2], [2 / 3, 2 / 3])
    assert np.isnan(scores["per_finding"][2])  # never planted, never predicted: left out
    assert scores["summary"]["macro_f1"] == pytest.approx(2 / 3) and scores["summary"]["n_findings_in_macro"] == 2
    assert scores["summary"]["micro_f1"] == pytest.approx(4 / 6)


# -- end to end on a small world ------------------------------------------------------------------------


def _world(root, n_train=12, n_test=4, dim=6, d_sae=5, seed=0):
    """A data/encode tree with studies that plant effusion or cardiomegaly, and activations that see them."""
    rng = np.random.default_rng(seed)
    (root / "data").mkdir(parents=True)
    (root / "encode").mkdir()
    rows, truth, tokens, acts = [], [], [], []
    for k in range(n_train + n_test):
        study = 1000 + k
        effusion, heart = k % 2 == 0, k % 3 == 0
        findings = ("Left pleural effusion." if effusion else "No pleural effusion.") + (
            " Moderate cardiomegaly." if heart else " Normal heart size.")
        split = "train" if k < n_train else "test"
        rows.append({"study_id": study, "subject_id": 1, "split": split, "findings": findings,
                     "indication": "Dyspnoea.", "study_datetime": f"2150-01-{k + 1:02d} 10:00:00"})
        truth.append({"dicom_id": f"d{k}", "study_id": study, **{f: 0 for f in FINDINGS},
                      "pleural_effusion": int(effusion), "cardiomegaly": int(heart)})
        tokens.append(np.r_[float(effusion), float(heart), rng.normal(0, 0.01, dim - 2)])
        acts.append([3.0 * effusion, 2.0 * heart, 0.0 if effusion else 1.0, 0.0 if heart else 0.5, 0.05])
    studies = pd.DataFrame(rows)
    studies.to_csv(root / "data" / "studies.csv", index=False)
    pd.DataFrame({"study_id": [1000 + n_train], "prior_rank": [1], "prior_study_id": [1000],
                  "hours_before": [30.0], "prior_report": ["FINDINGS: Small effusion."]}).to_csv(
        root / "data" / "priors.csv", index=False)
    ground_truth = pd.DataFrame(truth)
    index = pd.DataFrame({"row": range(len(rows)), "dicom_id": [t["dicom_id"] for t in truth],
                          "subject_id": 1, "study_id": studies["study_id"], "split": studies["split"],
                          "encoded": True})
    np.save(root / "encode" / "class_tokens.npy", np.array(tokens, dtype=np.float32))
    index.to_csv(root / "encode" / "tokens_index.csv", index=False)
    (root / "encode" / "scale.json").write_text(json.dumps({"scale": 1.0}))
    descriptions = {0: describe(0, "Left pleural effusion."), 1: describe(1, "Moderate cardiomegaly."),
                    2: describe(2, "No pleural effusion."), 3: describe(3, "Normal heart size."),
                    4: describe(4, "Dual-chamber pacemaker.")}
    activations = (sp.csr_matrix(np.array(acts, dtype=np.float32)), index.drop(columns="encoded"))
    return ground_truth, descriptions, activations


@pytest.fixture
def labeler(monkeypatch):
    import saerad.reports.composer as composer

    monkeypatch.setattr(composer, "_default_findings_of", lambda: toy_findings)
    for module in ("saerad.reports.generate", "saerad.reports.provenance"):
        monkeypatch.setattr(f"{module}._default_findings_of", lambda: toy_findings)


def test_generate_reports_offline_end_to_end_and_f1(tmp_path, labeler):
    root = tmp_path / "artifacts"
    ground_truth, descriptions, activations = _world(root)
    path = generate_reports(root, descriptions, tau=0.1, activations=activations)
    assert path == root / "reports" / "generated.jsonl" and not path.with_name("generated.jsonl.partial").exists()
    table = read_generated(path)
    assert len(table) == 8 and set(zip(table.system, table.config)) == {("sae_rad", "no_aux"), ("nearest_neighbour", "-")}
    assert table["reason"].isna().all()
    sae = table[table.system == "sae_rad"].set_index("study_id")
    assert sae.loc[1012, "report"] == "Left pleural effusion. Moderate cardiomegaly."  # k=12: effusion and heart
    assert sae.loc[1013, "sentences"] == [{"text": "No pleural effusion.", "feature_ids": [2]},
                                          {"text": "Normal heart size.", "feature_ids": [3]}]
    scores = finding_f1_against_truth(path, ground_truth, findings_of=toy_findings).set_index("system")
    assert scores.loc["sae_rad", "macro_f1"] == pytest.approx(1.0)
    assert scores.loc["nearest_neighbour", "macro_f1"] == pytest.approx(1.0)  # tokens encode the findings exactly
    # a study with no active feature gets a reason, not a missing line
    matrix, index = activations
    silent = sp.csr_matrix(matrix.toarray() * (index["study_id"] != 1013).to_numpy()[:, None])
    path2 = generate_reports(root, descriptions, tau=0.1, activations=(silent, index), out_path=tmp_path / "g2.jsonl")
    again = read_generated(path2).set_index(["study_id", "system"])
    assert again.loc[(1013, "sae_rad"), "reason"] == "no feature above tau"
    assert again.loc[(1013, "sae_rad"), "report"] == ""
    tau_table = tau_study(*study_activations(matrix, index, [1012, 1013, 1014, 1015]), descriptions, [0.1, 2.5, 10],
                          ground_truth, findings_of=toy_findings)
    assert tau_table["mean_sentences"].tolist() == [2.0, 0.5, 0.0]
    assert tau_table["macro_f1"].iloc[0] == pytest.approx(1.0)


def test_generate_reports_llm_path_resumes_and_records_failures(tmp_path, labeler):
    root = tmp_path / "artifacts"
    _, descriptions, activations = _world(root)
    from saerad.llm import Completion

    class FakeClient:
        def __init__(self, fail_on=None):
            self.prompts, self.fail_on = [], fail_on

        def usage(self):
            return {"backend": "offline", "model": "fake"}

        def complete_many(self, prompts, progress=True):
            out = []
            for prompt in prompts:
                self.prompts.append(prompt)
                if self.fail_on and self.fail_on in prompt.key:
                    raise KeyboardInterrupt  # the run is killed half-way
                text = None if "No pleural effusion" in prompt.user else "Left pleural effusion. Please correlate clinically."
                out.append(Completion(text, None if text else "refused", False, 10, 5, "offline", "fake", prompt.key))
            return out

    first = FakeClient(fail_on="1014-indication_priors")
    with pytest.raises(KeyboardInterrupt):
        generate_reports(root, descriptions, tau=0.1, client=first, activations=activations, batch_size=1)
    partial = root / "reports" / "generated.jsonl.partial"
    assert partial.exists() and not (root / "reports" / "generated.jsonl").exists()
    second = FakeClient()
    path = generate_reports(root, descriptions, tau=0.1, client=second, activations=activations, batch_size=1)
    assert {p.key for p in second.prompts}.isdisjoint({p.key for p in first.prompts[:-1]})  # nothing redone
    table = read_generated(path)
    assert len(table) == 4 * 4  # 4 test studies x (3 configs + baseline)
    llm = table[table.system == "sae_rad"].set_index(["study_id", "config"])
    effusion = llm.loc[(1012, "indication")]
    assert effusion["sentences"] == [{"text": "Left pleural effusion.", "feature_ids": [0]},
                                     {"text": "Please correlate clinically.", "feature_ids": []}]
    assert llm.loc[(1013, "no_aux"), "reason"] == "language model failed: refused"
    prior_prompt = next(p for p in first.prompts + second.prompts if p.key == "report-1012-indication_priors")
    assert "FINDINGS: Small effusion." in prior_prompt.user and "Dyspnoea." in prior_prompt.user
