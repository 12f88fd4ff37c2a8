"""Reader-study analysis (Appendix E): the paper's counts, hand-made exports and the simulated reader."""

from __future__ import annotations

import copy
import gzip
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402
from sklearn.metrics import cohen_kappa_score  # noqa: E402

from conftest import write_ground_truth  # noqa: E402
from saerad.metrics.oracle import SentenceFacts, study_truth  # noqa: E402
from saerad.reader_study import analysis as ra  # noqa: E402
from saerad.reader_study import paper as rp  # noqa: E402
from saerad.reader_study import simulated as sim  # noqa: E402

# ---------------------------------------------------------------------------
# The paper's counts


# Every number Appendix E.1 prints, as printed: (system, measure, printed value).
PRINTED = [
    ("all", "sentences_per_report", 5.5), ("all", "edits_per_report", 4.4),
    ("all", "edited_or_deleted", 80), ("all", "kept", 20),
    ("all", "impact_none", 61), ("all", "impact_minor", 26.5), ("all", "impact_significant", 12.1),
    ("all", "category:other", 53.03), ("all", "category:omission", 15.15),
    ("all", "category:misclassification", 13.13), ("all", "category:overspecific", 12.62),
    ("all", "category:incorrect location", 6.06),
    ("chexagent", "sentences_per_report", 6.2), ("chexagent", "edited_or_deleted", 83.8),
    ("chexagent", "impact_none", 59.6), ("chexagent", "impact_minor", 25.0),
    ("chexagent", "impact_significant", 15.3),
    ("sae_rad", "sentences_per_report", 5.9), ("sae_rad", "edited_or_deleted", 76.3),
    ("sae_rad", "impact_none", 68.8), ("sae_rad", "impact_minor", 24.4), ("sae_rad", "impact_significant", 6.6),
    ("nearest_neighbour", "sentences_per_report", 4.4), ("nearest_neighbour", "edited_or_deleted", 79.5),
    ("nearest_neighbour", "impact_none", 54.3), ("nearest_neighbour", "impact_minor", 31.4),
    ("nearest_neighbour", "impact_significant", 14.2),
    ("sae_rad_vs_others", "fewer_edits_relative", 7),
]
# Printed as whole percentages: within half a unit (61.36 prints as 61), not within 0.1.
WHOLE_NUMBERS = {("all", "edited_or_deleted"), ("all", "kept"), ("all", "impact_none"),
                 ("sae_rad_vs_others", "fewer_edits_relative")}


@pytest.fixture(scope="module")
def paper():
    return rp.analyse_paper_counts()


@pytest.mark.parametrize("system, measure, printed", PRINTED)
def test_paper_counts_reproduce_each_printed_number(paper, system, measure, printed):
    row = paper["comparison"].set_index(["system", "measure"]).loc[(system, measure)]
    assert float(row["printed"]) == printed
    tolerance = 0.5 if (system, measure) in WHOLE_NUMBERS else 0.1
    assert abs(row["recomputed"] - printed) <= tolerance
    assert row["matches_printed_precision"]
    assert row["paper_inconsistency"] == ""


def test_paper_comparison_covers_every_printed_number_and_flags_the_categories_mean(paper):
    comparison = paper["comparison"]
    checked = {(s, m) for s, m, _ in PRINTED}
    rest = comparison[[(s, m) not in checked for s, m in zip(comparison["system"], comparison["measure"])]]
    assert set(rest["measure"]) == {"categories_per_edited_sentence"}
    overall = rest.set_index("system").loc["all"]
    assert overall["recomputed"] == pytest.approx(198 / 132)
    assert "193" in overall["paper_inconsistency"]  # 198 labels vs the 193 the per-system means imply
    assert rest[rest["system"] != "all"]["recomputed"].isna().all()


def test_paper_counts_add_up():
    counts = rp.paper_counts().droplevel("reader")
    assert counts.loc["all", "sentences"] == 165 == 62 + 59 + 44
    assert counts.loc["all", "edited"] == 132
    assert counts.loc["all", "labels"] == 198
    assert [counts.loc[s, "sentences"] / 10 for s in ("chexagent", "sae_rad", "nearest_neighbour")] == [6.2, 5.9, 4.4]


def test_categories_sd_only_the_sample_sd_reproduces_chexagent(paper):
    check = paper["categories"].set_index(["system", "ddof"])
    assert not check.loc[("chexagent", 0), "feasible"] and check.loc[("chexagent", 1), "feasible"]
    assert check.loc[("sae_rad", 0), "feasible"] and check.loc[("sae_rad", 1), "feasible"]
    assert not check.loc[("nearest_neighbour", 0), "feasible"]
    assert not check.loc[("nearest_neighbour", 1), "feasible"]
    assert check.loc[("all (alone)", 1), "label_totals"] == [193]
    table = rp.categories_sd_feasibility(52, 1.35, 0.71)
    row = table[table["ddof"] == 1].iloc[0]
    values = np.repeat([1, 2, 3], [41, 4, 7])  # the example the check reports
    assert row["example"] == "41 x 1, 4 x 2, 7 x 3"
    assert round(values.mean(), 2) == 1.35 and round(values.std(ddof=1), 2) == 0.71


def test_paper_fisher_equals_scipy_and_is_not_significant(paper):
    fisher = paper["fisher"].set_index(["outcome", "denominator", "comparator"])
    row = fisher.loc[("significant", "all sentences", "others pooled")]
    assert (row["focus_count"], row["focus_total"], row["comparator_count"], row["comparator_total"]) == (3, 59, 13, 106)
    table = [[3, 56], [13, 93]]
    assert row["p_one_sided"] == pytest.approx(stats.fisher_exact(table, alternative="less").pvalue, abs=1e-12)
    assert row["p_two_sided"] == pytest.approx(stats.fisher_exact(table).pvalue, abs=1e-12)
    edited = fisher.loc[("significant", "edited sentences", "others pooled")]
    assert (edited["focus_count"], edited["focus_total"], edited["comparator_count"]) == (3, 45, 13)
    assert edited["paper_claim"]
    assert (paper["fisher"]["p_one_sided"] > 0.05).all()


def test_paper_has_no_category_severity_counts():
    with pytest.raises(ValueError, match="Figure 20"):
        ra.category_severity_table(rp.paper_counts())


# ---------------------------------------------------------------------------
# Hand-made exports

UNBLINDING = {
    "schema": "saerad-reader-study-unblinding/1", "page_id": "page-abc", "seed": 7,
    "cases": {
        "case-1": {"study_id": 1, "system": "sae_rad", "config": "no_aux"},
        "case-2": {"study_id": 1, "system": "nearest_neighbour", "config": "-"},
        "case-3": {"study_id": 2, "system": "sae_rad", "config": "no_aux"},
        "case-4": {"study_id": 2, "system": "nearest_neighbour", "config": "-"},
    },
}
KEEP = ("keep", [], None)
MARKS = {
    "case-1": [KEEP, ("edit", ["omission"], "minor"), ("delete", ["misclassification", "other"], "significant")],
    "case-2": [("edit", ["other"], "none"), ("edit", ["overspecific", "incorrect location"], "minor"), KEEP,
               ("delete", ["misclassification"], "significant")],
    "case-3": [KEEP, KEEP],
    "case-4": [("edit", ["other"], "none"), ("edit", ["omission", "misclassification"], "significant")],
}


def make_export(marks=MARKS, reader="r1", page_id="page-abc", seed=7) -> dict:
    cases = []
    for case_id, sentences in marks.items():
        cases.append({"case_id": case_id, "complete": True, "sentences": [
            {"index": k, "text": f"{case_id} sentence {k}.", "action": action,
             "edited_text": "changed" if action == "edit" else None,
             "error_categories": list(categories), "clinical_significance": significance}
            for k, (action, categories, significance) in enumerate(sentences)]})
    return {"schema": "saerad-reader-study-export/1", "study_seed": seed, "page_id": page_id,
            "reader": {"id": reader, "role": "test"}, "started_at": None,
            "exported_at": "2025-01-01T00:00:00Z", "cases": cases}


@pytest.fixture()
def export_files(tmp_path):
    unblinding = tmp_path / "unblinding.json"
    unblinding.write_text(json.dumps(UNBLINDING))
    export = tmp_path / "r1.json"
    export.write_text(json.dumps(make_export()))
    return export, unblinding


def _value(summary, system, measure):
    return summary.set_index(["system", "measure"]).loc[(system, measure)]


def test_read_exports_long_table(export_files):
    export, unblinding = export_files
    long = ra.read_exports([export], unblinding)
    assert len(long) == 11 and list(long.columns) == ra.LONG_COLUMNS
    row = long[(long["case_id"] == "case-1") & (long["sentence"] == 2)].iloc[0]
    assert (row["system"], row["study_id"], row["action"], row["edited"], row["deleted"]) == (
        "sae_rad", 1, "delete", True, True)
    assert row["categories"] == ("misclassification", "other") and row["significance"] == "significant"
    assert row["source"] == str(export)


def test_summary_shares_and_intervals(export_files):
    long = ra.read_exports(export_files[0], export_files[1])
    summary = ra.summary_table(long)
    expected = {
        ("sae_rad", "edited_or_deleted"): (2, 5), ("nearest_neighbour", "edited_or_deleted"): (5, 6),
        ("all", "edited_or_deleted"): (7, 11), ("sae_rad", "deleted"): (1, 5),
        ("sae_rad", "impact_significant"): (1, 2), ("nearest_neighbour", "impact_none"): (2, 5),
        ("all", "impact_significant"): (3, 7), ("all", "significant_of_all_sentences"): (3, 11),
        ("nearest_neighbour", "category:other"): (2, 7), ("all", "category:misclassification"): (3, 10),
        ("all", "category:omission"): (2, 10), ("all", "severity_within_category:misclassification:significant"): (3, 3),
    }
    for (system, measure), (count, total) in expected.items():
        row = _value(summary, system, measure)
        assert (row["count"], row["total"]) == (count, total), (system, measure)
        assert row["value"] == pytest.approx(count / total)
        ci = stats.binomtest(count, total).proportion_ci(method="wilson")
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
        assert row["ci_low"] <= row["value"] <= row["ci_high"]
    assert _value(summary, "sae_rad", "sentences_per_report")["value"] == 2.5
    assert _value(summary, "all", "edits_per_report")["value"] == pytest.approx(7 / 4)
    per_sentence = _value(summary, "all", "categories_per_edited_sentence")
    k = np.array([1, 2, 1, 2, 1, 1, 2])
    assert per_sentence["value"] == pytest.approx(k.mean())
    assert per_sentence["sd"] == pytest.approx(k.std(ddof=1))
    assert per_sentence["ci_low"] < per_sentence["value"] < per_sentence["ci_high"]
    assert set(summary["reader"]) == {"r1"}


def test_fisher_on_hand_made_table(export_files):
    long = ra.read_exports(export_files[0], export_files[1])
    fisher = ra.fisher_tests(long).set_index(["outcome", "denominator"])
    assert set(fisher["comparator"]) == {"nearest_neighbour"}  # one other system: no pooled row
    for denominator, table in (("all sentences", [[1, 4], [2, 4]]), ("edited sentences", [[1, 1], [2, 3]])):
        row = fisher.loc[("significant", denominator)]
        assert row["p_one_sided"] == pytest.approx(stats.fisher_exact(table, alternative="less").pvalue)
        assert row["p_two_sided"] == pytest.approx(stats.fisher_exact(table).pvalue)
        assert row["odds_ratio"] == pytest.approx(stats.fisher_exact(table).statistic)


def test_figure_20_style_chart(export_files):
    long = ra.read_exports(export_files[0], export_files[1])
    table = ra.category_severity_table(long)
    nn = table[(table["system"] == "nearest_neighbour")].set_index(["category", "significance"])["count"]
    assert nn[("misclassification", "significant")] == 2 and nn[("other", "none")] == 2
    figure = ra.error_type_figure(long)
    assert isinstance(figure, plt.Figure) and len(figure.axes) == 3
    plt.close(figure)


def test_identical_readers_agree_perfectly(tmp_path):
    exports = [make_export(reader="a"), make_export(reader="b")]
    long = ra.read_exports(exports, UNBLINDING)
    agreement = ra.reader_agreement(long).set_index("variable")
    assert (agreement["kappa"] == 1.0).all() and (agreement["agreement"] == 1.0).all()
    assert agreement.loc["action", "n"] == 11 and agreement.loc["significance", "n"] == 7
    assert ra.summary_table(long, by_reader=True)["reader"].isin(["a", "b"]).all()
    with pytest.warns(UserWarning, match="by_reader"):
        ra.fisher_tests(long)


def test_kappa_equals_sklearn_when_readers_differ():
    marks = copy.deepcopy(MARKS)
    marks["case-3"] = [("edit", ["other"], "minor"), KEEP]
    marks["case-4"][1] = ("delete", ["omission"], "minor")
    long = ra.read_exports([make_export(reader="a"), make_export(marks, reader="b")], UNBLINDING)
    agreement = ra.reader_agreement(long).set_index("variable")
    a, b = long[long["reader"] == "a"], long[long["reader"] == "b"]
    assert agreement.loc["action", "kappa"] == pytest.approx(cohen_kappa_score(a["action"], b["action"]))
    assert agreement.loc["action", "agreement"] == pytest.approx(9 / 11)
    assert agreement.loc["significance", "n"] == 7
    assert agreement.loc["significance", "agreement"] == pytest.approx(6 / 7)


def test_page_id_mismatch_names_the_files(tmp_path, export_files):
    export, unblinding = export_files
    other = tmp_path / "other.json"
    other.write_text(json.dumps(make_export(page_id="another-page")))
    with pytest.raises(ValueError, match=r"other\.json: page_id 'another-page' does not match the unblinding "
                                         r"file .*unblinding\.json"):
        ra.read_exports([export, other], unblinding)
    wrong_seed = tmp_path / "seed.json"
    wrong_seed.write_text(json.dumps(make_export(seed=8)))
    with pytest.raises(ValueError, match=r"seed\.json: study_seed 8"):
        ra.read_exports(wrong_seed, unblinding)


def test_bad_exports_and_unblinding_are_named(tmp_path, export_files):
    export, unblinding = export_files
    broken = make_export()
    broken["cases"][0]["sentences"][1]["clinical_significance"] = "severe"
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=r"broken\.json: .*cases/0/sentences/1/clinical_significance"):
        ra.read_exports(path, unblinding)
    unknown = make_export({"case-9": [KEEP]})
    with pytest.raises(ValueError, match="case_id 'case-9' is not in the unblinding file"):
        ra.read_exports(unknown, unblinding)
    with pytest.raises(ValueError, match="reader 'r1' also exported"):
        ra.read_exports([export, export], unblinding)
    bad = tmp_path / "bad_unblinding.json"
    bad.write_text(json.dumps({"page_id": "page-abc", "seed": 7, "cases": {"case-1": {"study_id": 1}}}))
    with pytest.raises(ValueError, match=r"bad_unblinding\.json: field cases/case-1/system"):
        ra.read_exports(export, bad)


# ---------------------------------------------------------------------------
# The simulated reader on a tiny world

FACTS = {
    "There is a small right pneumothorax.": [("pneumothorax", True)],
    "The heart is enlarged.": [("cardiomegaly", True)],
    "Heart size is normal.": [("cardiomegaly", False)],
    "No pleural effusion or pneumothorax.": [("pleural_effusion", False), ("pneumothorax", False)],
    "Left lower lobe consolidation.": [("consolidation", True)],
    "No acute cardiopulmonary process.": [],
    "A pacemaker is present.": [("pacemaker", True)],
}
PLANTED = {10: {"pneumothorax", "cardiomegaly"}, 20: {"pacemaker"}}
GENERATED = [
    (10, "sae_rad", "no_aux", ["No pleural effusion or pneumothorax.", "The heart is enlarged."]),
    (10, "nearest_neighbour", "-", ["Heart size is normal.", "Left lower lobe consolidation.",
                                    "Something the corpus never says."]),
    (20, "sae_rad", "no_aux", ["A pacemaker is present.", "No acute cardiopulmonary process."]),
    (20, "nearest_neighbour", "-", ["There is a small right pneumothorax."]),
]
# case -> [(action, categories, significance)] the rules give.
EXPECTED = {
    "case-1": [("edit", ["misclassification"], "significant"), ("keep", [], None)],
    "case-2": [("edit", ["misclassification"], "minor"), ("delete", ["misclassification"], "significant"),
               ("edit", ["omission"], "significant")],
    "case-3": [("keep", [], None), ("keep", [], None)],
    "case-4": [("edit", ["misclassification", "omission"], "significant")],
}


def write_tiny_facts(path: Path) -> Path:
    """synthcxr-report-facts.jsonl.gz: the corpus sentences as one study's report (SynthCXR's layout)."""
    sentences = [{"text": text, "section": "findings",
                  "facts": [{"finding": f, "present": p, "certainty": "definite", "attributes": {},
                             "comparison": None} for f, p in facts]} for text, facts in FACTS.items()]
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"study_id": 99, "subject_id": 990, "sentences": sentences}) + "\n")
    return path


def write_tiny_truth(path: Path) -> Path:
    """ground_truth.csv: a planted PA image and an empty lateral per study."""
    return write_ground_truth(path, PLANTED)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_world")
    facts = SentenceFacts.from_synthcxr(write_tiny_facts(folder / "synthcxr-report-facts.jsonl.gz"))
    truth = study_truth(write_tiny_truth(folder / "ground_truth.csv"))
    generated = [{"study_id": s, "system": system, "config": config, "report": " ".join(texts),
                  "reference": "", "reason": None, "sentences": [{"text": t, "feature_ids": []} for t in texts]}
                 for s, system, config, texts in GENERATED]
    unblinding = {"page_id": "tiny", "seed": 3, "cases": {
        f"case-{k}": {"study_id": s, "system": system, "config": config, "n_sentences": len(texts)}
        for k, (s, system, config, texts) in enumerate(GENERATED, start=1)}}
    return folder, facts, truth, generated, unblinding


def test_simulated_reader_follows_the_rules(tiny_world, tmp_path):
    _, facts, truth, generated, unblinding = tiny_world
    export = sim.simulate_reader(generated, unblinding, facts, truth, "oracle", exported_at="2025-01-01T00:00:00Z")
    ra.check_export(export)
    got = {case["case_id"]: [(s["action"], s["error_categories"], s["clinical_significance"])
                             for s in case["sentences"]] for case in export["cases"]}
    assert got == EXPECTED
    case4 = next(c for c in export["cases"] if c["case_id"] == "case-4")
    assert "pacemaker" in case4["sentences"][0]["edited_text"] and "omitted pacemaker" in case4["comment"]
    path = sim.write_export(export, tmp_path / "oracle.json")
    assert json.loads(path.read_text()) == export
    long = ra.read_exports(path, unblinding)
    assert long.groupby("system")["edited"].sum().to_dict() == {"nearest_neighbour": 4, "sae_rad": 1}


def test_simulated_reader_noise_is_seeded_and_valid(tiny_world):
    _, facts, truth, generated, unblinding = tiny_world
    noisy = [sim.simulate_reader(generated, unblinding, facts, truth, "noisy", seed=1, error_rate=0.5,
                                 exported_at="2025-01-01T00:00:00Z") for _ in range(2)]
    assert noisy[0] == noisy[1]
    ra.check_export(noisy[0])
    oracle = sim.simulate_reader(generated, unblinding, facts, truth, "oracle", exported_at="2025-01-01T00:00:00Z")
    agreement = ra.reader_agreement(ra.read_exports([oracle, noisy[0]], unblinding)).set_index("variable")
    assert agreement.loc["action", "agreement"] < 1
    with pytest.raises(ValueError, match="error_rate"):
        sim.simulate_reader(generated, unblinding, facts, truth, "x", error_rate=2)


def test_simulated_reader_names_a_missing_report(tiny_world):
    _, facts, truth, generated, unblinding = tiny_world
    with pytest.raises(ValueError, match="case-4 .*has no report in generated"):
        sim.simulate_reader(generated[:3], unblinding, facts, truth, "x")
