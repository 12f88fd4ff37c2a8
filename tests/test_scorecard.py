"""The scorecard: verdict rules, claims read from hand-made artifacts, "not run", the HTML table, the links, the page."""

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from saerad.counterfactual import axioms
from saerad.pipeline import REPO_ROOT, STAGES
from saerad.scorecard import (NOT_REPRODUCED, NOT_RUN, NOT_TESTABLE, PARTLY, REPRODUCED, SECTIONS, VERDICTS,
                              all_claims, build_scorecard, scorecard_html, section_href, verdict_counts,
                              write_scorecard)
from saerad.scorecard import links, verdicts
from saerad.scorecard.verdicts import (combine, count_rule, factor_rule, interval_rule, single_run_rule,
                                       significance_rule, threshold_rule)

# ---------------------------------------------------------------------------------------------- verdict rules


@pytest.mark.parametrize("estimate, low, high, sign, significantly, expected", [
    (2.0, 0.5, 3.5, +1, False, REPRODUCED),
    (-2.0, -3.5, -0.5, +1, False, NOT_REPRODUCED),      # the interval lies on the other side
    (1.0, -0.5, 2.5, +1, False, PARTLY),                # right estimate, interval includes 0
    (1.0, -0.5, 2.5, +1, True, NOT_REPRODUCED),         # ... and the paper said "significantly"
    (-1.0, -2.5, 0.5, +1, False, NOT_REPRODUCED),       # estimate the wrong way
    (-2.0, -3.0, -1.0, -1, False, REPRODUCED),          # a claimed decrease
    (2.0, 1.0, 3.0, -1, False, NOT_REPRODUCED),
])
def test_interval_rule_branches(estimate, low, high, sign, significantly, expected):
    verdict, reason = interval_rule(estimate, low, high, sign, significantly)
    assert verdict == expected
    assert f"[{low:.2f}, {high:.2f}]" in reason


def test_interval_rule_refuses_bad_input():
    with pytest.raises(ValueError, match="claimed_sign"):
        interval_rule(1.0, 0.0, 2.0, 0)
    with pytest.raises(ValueError, match="finite"):
        interval_rule(float("nan"), 0.0, 2.0, 1)


@pytest.mark.parametrize("focus, other, p, lower, significantly, expected", [
    (0.05, 0.15, 0.01, True, False, REPRODUCED),
    (0.05, 0.15, 0.20, True, False, PARTLY),
    (0.05, 0.15, 0.20, True, True, NOT_REPRODUCED),
    (0.20, 0.15, 0.90, True, False, NOT_REPRODUCED),
    (0.20, 0.15, 0.01, False, False, REPRODUCED),
])
def test_significance_rule_branches(focus, other, p, lower, significantly, expected):
    assert significance_rule(focus, other, p, claimed_lower=lower, says_significantly=significantly)[0] == expected


@pytest.mark.parametrize("ours, theirs, lower, expected, word", [
    (13.0, 15.0, True, REPRODUCED, "lower"),
    (14.95, 15.0, True, NOT_REPRODUCED, "tie"),          # within 1 %: a tie
    (16.0, 15.0, True, NOT_REPRODUCED, "not lower"),
    (0.90, 0.85, False, REPRODUCED, "higher"),
])
def test_single_run_rule_branches(ours, theirs, lower, expected, word):
    verdict, reason = single_run_rule(ours, theirs, lower)
    assert verdict == expected and word in reason


@pytest.mark.parametrize("value, higher, expected", [
    (0.85, True, REPRODUCED), (0.6, True, PARTLY), (0.3, True, NOT_REPRODUCED),
    (0.05, False, REPRODUCED), (0.2, False, PARTLY), (0.9, False, NOT_REPRODUCED),
])
def test_threshold_rule_branches(value, higher, expected):
    bars = (0.8, 0.5) if higher else (0.1, 0.25)
    assert threshold_rule(value, *bars, higher_is_better=higher)[0] == expected


@pytest.mark.parametrize("value, expected", [(1500.0, REPRODUCED), (400.0, REPRODUCED), (300.0, PARTLY),
                                             (50.0, NOT_REPRODUCED), (20_000.0, NOT_REPRODUCED)])
def test_factor_rule_is_symmetric_in_ratio(value, expected):
    assert factor_rule(value, 1000.0, 2.5, 10.0)[0] == expected


def test_count_rule_and_combine():
    assert count_rule(3, 3)[0] == REPRODUCED
    assert count_rule(1, 3)[0] == PARTLY
    assert count_rule(0, 3)[0] == NOT_REPRODUCED
    with pytest.raises(ValueError):
        count_rule(4, 3)
    assert combine([REPRODUCED, REPRODUCED]) == REPRODUCED
    assert combine([NOT_REPRODUCED, NOT_REPRODUCED]) == NOT_REPRODUCED
    assert combine([REPRODUCED, NOT_REPRODUCED]) == PARTLY
    assert combine([PARTLY]) == PARTLY
    assert combine([NOT_TESTABLE]) == NOT_TESTABLE
    assert combine([REPRODUCED, NOT_TESTABLE]) == REPRODUCED


def test_outcome_refuses_an_unknown_verdict():
    with pytest.raises(ValueError, match="unknown verdict"):
        verdicts.Outcome("1", "confirmed", "")


# ------------------------------------------------------------------------------------- a hand-made world


def _stage(root: Path, stage: str, status: str = "ok", parameters: dict | None = None) -> Path:
    folder = root / stage
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stage.json").write_text(json.dumps({"stage": stage, "status": status,
                                                   "parameters": parameters or {}}))
    return folder


def _csv(folder: Path, name: str, rows: list[dict]) -> None:
    pd.DataFrame(rows).to_csv(folder / name, index=False)


SAE_RAD = "SAE-Rad (offline composer)"
BASELINE = "Baseline (nearest neighbour)"


def write_world(root: Path, dead_features: int = 0, conerly_l0: float = 15.0) -> Path:
    """Artifacts of every stage in the formats the chapters write, with values chosen per test."""
    sae = _stage(root, "sae")
    _csv(sae, "main_sae.csv", [{"name": "sae_rad_main", "expansion_factor": 8, "d_sae": 2048, "l0": 14.0,
                                "explained_variance": 0.86, "dead_features": dead_features}])
    _csv(sae, "table3.csv", [{"architecture": "conerly", "l0": conerly_l0, "explained_variance": 0.84},
                             {"architecture": "sae_rad", "l0": 14.0, "explained_variance": 0.86}])
    _csv(sae, "table5.csv", [
        {"name": "x4", "expansion_factor": 4, "l0": 16.0, "explained_variance": 0.80},
        {"name": "x8", "expansion_factor": 8, "l0": 14.0, "explained_variance": 0.84},
        {"name": "x16", "expansion_factor": 16, "l0": 14.5, "explained_variance": 0.88},   # L0 rises: 1 of 2 steps
        {"name": "x4_dense", "expansion_factor": 4, "l0": 30.0, "explained_variance": 0.85},
        {"name": "x8_dense", "expansion_factor": 8, "l0": 28.0, "explained_variance": 0.83},  # EV falls
        {"name": "x16_dense", "expansion_factor": 16, "l0": 26.0, "explained_variance": 0.92}])
    features = _stage(root, "features")
    (features / "summary.json").write_text(json.dumps({"mean_l0": 14.2, "images": 3500, "described": 900,
                                                       "median_explanation_auroc": 0.7, "recovered_fraction": 0.55}))
    _csv(features, "finding_alignment.csv", [
        {"finding": "pacemaker", "best_feature": 11, "auroc": 0.97, "prevalence": 0.1},
        {"finding": "pleural_effusion", "best_feature": 12, "auroc": 0.85, "prevalence": 0.2}])
    reports = _stage(root, "reports")
    _csv(reports, "finding_f1_against_truth.csv", [
        {"system": "nearest_neighbour", "config": "no_aux", "macro_f1": 0.5, "micro_f1": 0.6},
        {"system": "sae_rad", "config": "no_aux", "macro_f1": 0.75, "micro_f1": 0.8}])
    _csv(reports, "table4.csv", [
        {"quantity": "active training parameters", "demo_measured": 1e6, "paper_shape_counted": 75.6e6,
         "paper_estimate": 76e6},
        {"quantity": "training TFLOP", "demo_measured": 1.0, "paper_shape_counted": 240_000.0,
         "paper_estimate": 60_000.0},
        {"quantity": "inference TFLOP per report", "demo_measured": 0.001, "paper_shape_counted": 0.09,
         "paper_estimate": 0.1}])
    metrics = _stage(root, "metrics")
    comparison = f"{SAE_RAD} − {BASELINE}"
    difference = lambda metric, method, value, low, high: {  # noqa: E731
        "comparison": comparison, "metric": metric, "method": method, "difference": value, "ci_low": low,
        "ci_high": high, "p_value": 0.01}
    _csv(metrics, "paired_differences.csv", [
        difference("Ma-5", "rule labeler", 8.0, 3.0, 12.0), difference("Ma-14", "rule labeler", 6.0, 1.0, 9.0),
        difference("Mi-5", "rule labeler", 5.0, -1.0, 9.0), difference("Mi-14", "rule labeler", 4.0, 1.0, 7.0),
        difference("RadFact F1", "offline approximation", -3.0, -6.0, 1.0),
        difference("RadFact F1", "oracle (SynthCXR facts)", 5.0, 2.0, 8.0),
        difference("BL4", "pycocoevalcap", -4.0, -6.0, -2.0), difference("RG-L", "pycocoevalcap", -3.0, -5.0, -1.0),
        difference("MTR", "pycocoevalcap", 1.0, -1.0, 3.0)])
    _csv(metrics, "table1.csv", [
        {"system": SAE_RAD, "metric": "RGER", "value": None, "ci_low": None, "ci_high": None,
         "source": "not measured", "method": "RadGraph", "n_studies": 100,
         "note": "n/a: needs a local RadGraph model (radgraph_model)"}])
    sweep = [("x4", 30.0, 28.0, 32.0), ("x8", 40.0, 37.0, 43.0), ("x16", 33.0, 31.0, 35.0),
             ("x4_dense", 29.0, 27.0, 31.0), ("x8_dense", 41.0, 38.0, 44.0), ("x16_dense", 30.0, 28.0, 32.0)]
    table2 = [{"system": f"SAE-Rad {sae} (offline composer)", "metric": "RadFact F1", "value": value, "ci_low": low,
               "ci_high": high, "source": "measured", "method": "oracle (SynthCXR facts)", "n_studies": 100, "note": ""}
              for sae, value, low, high in sweep]
    table2 += [{"system": "SAE-Rad (with indication)", "metric": metric, "value": None, "ci_low": None,
                "ci_high": None, "source": "not measured", "method": None, "n_studies": None,
                "note": "n/a: no 'indication' reports in generated.jsonl (the offline composer writes only ...)"}
               for metric in ("RadFact precision", "RadFact recall", "RadFact F1")]
    _csv(metrics, "table2.csv", table2)
    _csv(metrics, "appendix_g_scores.csv", [
        {"system": SAE_RAD, "judged_against": "reference report", "metric": "precision", "value": 60.0,
         "ci_low": 55.0, "ci_high": 65.0, "n_studies": 100},
        {"system": SAE_RAD, "judged_against": "planted truth", "metric": "precision", "value": 80.0,
         "ci_low": 76.0, "ci_high": 84.0, "n_studies": 100}])
    _csv(metrics, "appendix_g_sentences.csv", [{"system": SAE_RAD, "true_not_entailed": 42,
                                                "share_of_true_sentences_penalised": 0.2}])
    counterfactuals = _stage(root, "counterfactuals")
    row = lambda finding, measure, value, n=10, N=10: {  # noqa: E731
        "feature": 3 if finding == "pacemaker" else 4, "finding": finding, "measure": measure, "value": value,
        "n": n, "N": N, "note": ""}
    _csv(counterfactuals, "axioms.csv", [
        row("pacemaker", axioms.ADD_TEST, 0.001, 9, 10), row("cardiomegaly", axioms.ADD_TEST, 0.4, 3, 5),
        row("pacemaker", axioms.REMOVE_TEST, 0.01, 8, 8), row("cardiomegaly", axioms.REMOVE_TEST, 0.02, 7, 8),
        row("pacemaker", "off-target: cardiomegaly decision changed", 0.05, 1, 20),
        row("cardiomegaly", "off-target: pacemaker decision changed", 0.2, 4, 20),
        row("pacemaker", axioms.NULL_DISTANCE, 0.0), row("cardiomegaly", axioms.NULL_DISTANCE, 0.0),
        row("pacemaker", axioms.EFFECT_SIZE, 0.05), row("cardiomegaly", axioms.EFFECT_SIZE, 0.04),
        row("pacemaker", axioms.CYCLE_DISTANCE, 0.005), row("cardiomegaly", axioms.CYCLE_DISTANCE, 0.02),
        row("pacemaker", axioms.SEGMENTATION_IOU, 0.6), row("cardiomegaly", axioms.SEGMENTATION_IOU, 0.3)])
    _csv(counterfactuals, "classifiers.csv", [
        {"finding": "pacemaker", "auroc_real_test": 0.99, "auroc_reconstructions": 0.9, "note": ""},
        {"finding": "cardiomegaly", "auroc_real_test": 0.95, "auroc_reconstructions": 0.7, "note": ""}])
    readers = _stage(root, "reader_study", parameters={"simulated_error_rates": [0.1, 0.0]})
    fisher = lambda reader, outcome, denominator, comparator, a, n, b, m, p: {  # noqa: E731
        "reader": reader, "outcome": outcome, "denominator": denominator, "focus": "sae_rad", "comparator": comparator,
        "focus_count": a, "focus_total": n, "focus_rate": a / n, "comparator_count": b, "comparator_total": m,
        "comparator_rate": b / m, "rate_ratio": (a / n) / (b / m), "p_one_sided": p}
    _csv(readers, "paper_fisher.csv", [
        fisher("paper-ST3", "significant", "edited sentences", "others pooled", 3, 45, 13, 87, 0.13),
        fisher("paper-ST3", "clinical impact (minor or significant)", "edited sentences", "others pooled",
               14, 45, 37, 87, 0.14),
        fisher("paper-ST3", "edited_or_deleted", "all sentences", "others pooled", 45, 59, 87, 106, 0.24)])
    simulated = []
    for reader, p in (("simulated-1", 0.5), ("simulated-2", 0.001)):  # simulated-2 reads exactly (rate 0.0)
        simulated += [
            fisher(reader, "significant", "all sentences", "nearest_neighbour", 2, 100, 10, 100, p),
            fisher(reader, "clinical impact (minor or significant)", "all sentences", "nearest_neighbour",
                   10, 100, 30, 100, p),
            fisher(reader, "significant", "edited sentences", "nearest_neighbour", 2, 10, 10, 30, 0.9),
            fisher(reader, "clinical impact (minor or significant)", "edited sentences", "nearest_neighbour",
                   10, 10, 30, 30, 1.0),
            fisher(reader, "edited_or_deleted", "all sentences", "nearest_neighbour", 100, 300, 120, 300, 0.03)]
    _csv(readers, "simulated_fisher.csv", simulated)
    _csv(readers, "summary.csv", [
        {"source": "simulated reader (SynthCXR truth)", "reader": "simulated-2", "system": "all",
         "measure": "impact_none", "unit": "share", "count": 0, "total": 100, "value": 0.0, "ci_low": 0.0,
         "ci_high": 0.04, "sd": None}])
    return root


@pytest.fixture
def world(tmp_path):
    return write_world(tmp_path / "artifacts" / "demo")


def _verdicts(root) -> dict[str, str]:
    table = build_scorecard(root)
    return dict(zip(table["id"], table["verdict"]))


def test_claims_read_the_hand_made_world(world):
    table = build_scorecard(world).set_index("id")
    got = table["verdict"].to_dict()
    assert got["no-dead-features"] == REPRODUCED
    assert got["table3-l0"] == REPRODUCED and got["table3-explained-variance"] == REPRODUCED
    assert got["table5-dense"] == PARTLY                        # x8's dense variant explains less
    assert got["table5-size-variance"] == REPRODUCED and got["table5-size-l0"] == PARTLY
    assert got["title-15-features"] == REPRODUCED
    assert got["figure2-monosemantic"] == PARTLY               # 0.55: between the bars
    assert got["figure2-examples"] == PARTLY                   # effusion AUROC 0.85 < 0.9
    assert got["descriptions-explain"] == PARTLY
    assert got["abstract-reports-agree"] == REPRODUCED
    assert got["table4-training-compute"] == PARTLY           # 1e8 / 240,000 = 417x: within 10x of 1000, not 2x
    assert got["table4-parameters"] == REPRODUCED and got["table4-inference"] == REPRODUCED
    assert got["table1-chexpert"] == PARTLY                    # Mi-5's interval includes 0
    assert got["table1-radfact"] == REPRODUCED                 # the oracle speaks, not the offline approximation
    assert "oracle" in table.loc["table1-radfact", "ours"]
    assert got["table1-lexical"] == REPRODUCED and got["table1-meteor"] == PARTLY
    assert got["table1-rger"] == NOT_TESTABLE and "RadGraph" in table.loc["table1-rger", "reason"]
    assert got["table1-chexagent"] == NOT_TESTABLE and got["table1-maira"] == NOT_TESTABLE
    assert got["table2-middle-size"] == REPRODUCED            # x8 37-43 above x4's and x16's intervals
    assert got["table2-dense-worse"] == PARTLY                 # x8_dense is better
    assert got["table2-indication"] == NOT_TESTABLE and "offline composer" in table.loc["table2-indication", "reason"]
    assert got["table2-priors"] == NOT_TESTABLE
    assert got["figure3-extra-findings"] == REPRODUCED and got["appendix-g-underestimate"] == REPRODUCED
    assert got["appendix-d-decoder"] == PARTLY                 # cardiomegaly AUROC 0.7 on reconstructions
    assert got["figure4-add"] == PARTLY and got["figure4-remove"] == REPRODUCED
    assert got["axiom-specific"] == PARTLY                     # worst off-target rate 0.2
    assert got["axiom-composability"] == REPRODUCED
    assert got["axiom-reversibility"] == PARTLY                # cardiomegaly keeps half of its change
    assert got["figure4-segmentation"] == PARTLY
    assert got["reader-significant-paper-counts"] == NOT_REPRODUCED   # p = 0.13 and 0.14: not significant
    assert got["reader-significant-simulated"] == REPRODUCED   # the exact reader (simulated-2), p = 0.001
    assert got["reader-fewer-edits"] == REPRODUCED
    assert got["reader-half-rate"] == REPRODUCED               # 0.02 / 0.10
    assert got["reader-mostly-no-impact"] == NOT_TESTABLE      # simulated readers never make style edits
    assert NOT_RUN not in got.values()


def test_a_claim_turns_with_its_artifact(tmp_path):
    root = write_world(tmp_path / "a", dead_features=393, conerly_l0=14.05)
    got = _verdicts(root)
    assert got["no-dead-features"] == NOT_REPRODUCED
    assert got["table3-l0"] == NOT_REPRODUCED                  # 14.0 vs 14.05: a tie within 1 %


def test_every_claim_is_not_run_without_artifacts(tmp_path):
    table = build_scorecard(tmp_path / "nothing")
    always_untestable = {"abstract-competitive", "table1-chexagent", "table1-maira"}
    assert set(table.loc[table["verdict"] == NOT_TESTABLE, "id"]) == always_untestable
    rest = table[~table["id"].isin(always_untestable)]
    assert (rest["verdict"] == NOT_RUN).all() and (rest["ours"] == NOT_RUN).all()
    assert rest["reason"].str.contains("has not run for this profile").all()
    assert not rest["ours"].str.contains(r"\d").any()          # no number at all, never a stale one


def test_unfinished_stage_and_missing_file_read_not_run(world):
    _stage(world, "sae", status="running")                     # a run in progress: its old files do not count
    (world / "metrics" / "table2.csv").unlink()
    table = build_scorecard(world).set_index("id")
    assert table.loc["table3-l0", "verdict"] == NOT_RUN
    assert "has not finished" in table.loc["table3-l0", "reason"]
    assert table.loc["table2-middle-size", "verdict"] == NOT_RUN
    assert "metrics/table2.csv" in table.loc["table2-middle-size", "reason"]
    assert table.loc["table1-chexpert", "verdict"] == PARTLY   # the rest of the stage still counts


def test_malformed_artifact_names_the_file(world):
    _csv(world / "sae", "main_sae.csv", [{"name": "x", "l0": 3.0}])
    with pytest.raises(ValueError, match=r"main_sae\.csv.*dead_features"):
        build_scorecard(world)


def test_scorecard_csv_and_counts(world, tmp_path):
    table = build_scorecard(world)
    path = write_scorecard(table, tmp_path / "scorecard")
    written = pd.read_csv(path)
    assert list(written["id"]) == list(table["id"]) and len(written) >= 20
    counts = verdict_counts(table)
    assert list(counts.index) == list(VERDICTS) and counts.sum() == len(table)
    assert counts[NOT_RUN] == 0 and counts[REPRODUCED] > 0
    with pytest.raises(ValueError, match="unknown verdict"):
        verdict_counts(table.assign(verdict="confirmed"))


# ------------------------------------------------------------------------------------------------- HTML


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows, self.links, self._classes = [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and attrs.get("id", "").startswith("claim-"):
            self.rows.append({"id": attrs["id"], "cells": []})
        elif tag == "td" and self.rows:
            self.rows[-1]["cells"].append(attrs.get("class", ""))
        elif tag == "a":
            self.links.append(attrs["href"])


def test_html_has_every_row_with_verdict_class_and_link(world):
    table = build_scorecard(world)
    text = scorecard_html(table)
    assert '<div class="saerad-table"><table class="scorecard">' in text
    parser = _Cells()
    parser.feed(text)
    assert [row["id"] for row in parser.rows] == [f"claim-{claim}" for claim in table["id"]]
    for row, verdict in zip(parser.rows, table["verdict"]):
        classes = row["cells"]
        assert classes[:3] == ["claim", "paper", "ours"] and classes[4] == "section"
        assert classes[3] == f"verdict verdict-{verdict.replace(' ', '-')}"
    assert parser.links == list(table["href"])
    assert all(re.fullmatch(r"0[2-7]_[a-z_]+\.html#[a-z0-9-]+", href) for href in parser.links)


def test_html_escapes_text(world):
    table = build_scorecard(world)
    table.loc[0, "ours"] = "<script>alert(1)</script> & more"
    text = scorecard_html(table, style=False)
    assert "<script>" not in text and "&lt;script&gt;" in text


# ------------------------------------------------------------------------------------------------ links


def test_every_section_resolves_in_the_chapter_notebooks():
    for label, section in SECTIONS.items():
        href = section_href(label)
        page, anchor = href.split("#")
        assert page == section.page and (REPO_ROOT / "notebooks" / section.notebook).exists()
        assert anchor == label or anchor == links.heading_id(section.heading)


def test_links_prefer_the_label_and_fall_back_to_the_heading(tmp_path):
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# Title\n\n## Table 3: SAE-Rad against Conerly et al.\n\ntext")]
    nbformat.write(notebook, tmp_path / "02_sae.ipynb")
    assert section_href("sec-sae-table3", tmp_path) == "02_sae.html#table-3-sae-rad-against-conerly-et-al"
    notebook.cells[0].source = "(sec-sae-table3)=\n## Table 3: SAE-Rad against Conerly et al."
    nbformat.write(notebook, tmp_path / "02_sae.ipynb")
    assert section_href("sec-sae-table3", tmp_path) == "02_sae.html#sec-sae-table3"
    notebook.cells[0].source = "## Another heading"
    nbformat.write(notebook, tmp_path / "02_sae.ipynb")
    with pytest.raises(ValueError, match="neither the label"):
        section_href("sec-sae-table3", tmp_path)
    with pytest.raises(KeyError):
        section_href("sec-nowhere", tmp_path)


def test_claims_cover_the_paper_and_use_every_section():
    claims = all_claims()
    assert len(claims) >= 20
    assert {claim.section for claim in claims} == set(SECTIONS)
    where = " ".join(claim.where for claim in claims)
    for place in ("Abstract", "Title", "Table 1", "Table 2", "Table 3", "Table 4", "Table 5", "Figure 2", "Figure 3",
                  "Figure 4", "Appendix D", "Appendix E", "Appendix G", "Appendix B.3"):
        assert place in where, place


def test_the_scorecard_is_the_last_stage():
    assert STAGES[-1].name == "scorecard" and STAGES[-1].notebook == "08_scorecard.ipynb"


# ------------------------------------------------------------------------------------------------- page


@pytest.mark.slow
def test_the_page_runs_on_a_hand_made_world_and_writes_its_csv(tmp_path):
    import nbformat
    import papermill

    root = write_world(tmp_path / "artifacts" / "demo")
    (root / "reader_study" / "stage.json").unlink()            # one chapter not run: its rows read "not run"
    out = tmp_path / "08_scorecard.ipynb"
    papermill.execute_notebook(str(REPO_ROOT / "notebooks" / "08_scorecard.ipynb"), str(out),
                               parameters={"artifacts_root": str(root)}, cwd=str(REPO_ROOT), kernel_name="python3",
                               progress_bar=False)
    table = pd.read_csv(root / "scorecard" / "scorecard.csv")
    assert len(table) == len(all_claims())
    assert set(table.loc[table["id"].str.startswith("reader-"), "verdict"]) == {NOT_RUN}
    executed = nbformat.read(out, as_version=4)
    tags = {tag for cell in executed.cells for tag in cell.metadata.get("tags", [])}
    assert {"parameters", "remove-cell", "remove-input"} <= tags
    glued = {output["metadata"]["scrapbook"]["name"]: next(value for mime, value in output["data"].items()
                                                           if mime.endswith("text/plain"))
             for cell in executed.cells for output in cell.get("outputs", [])
             if output.get("metadata", {}).get("scrapbook")}
    assert glued["scorecard-not-run"] == str((table["verdict"] == NOT_RUN).sum())
    assert glued["scorecard-claims"] == str(len(table))
    markdown = " ".join(cell.source for cell in executed.cells if cell.cell_type == "markdown")
    for key in re.findall(r"\{glue:text\}`([^`]+)`", markdown):
        assert key in glued, key
    html = [output for cell in executed.cells for output in cell.get("outputs", []) if "text/html" in
            output.get("data", {})]
    assert len(html) == 1 and 'class="scorecard"' in html[0]["data"]["text/html"]


def test_counts_of_nothing_are_not_testable_rather_than_an_error(world):
    fisher = pd.read_csv(world / "reader_study" / "simulated_fisher.csv")
    empty = fisher["reader"] == "simulated-2"
    fisher.loc[empty, ["focus_count", "focus_total"]] = 0
    fisher.loc[empty, ["focus_rate", "rate_ratio", "p_one_sided"]] = float("nan")  # as fisher_tests leaves 0 of 0
    fisher.to_csv(world / "reader_study" / "simulated_fisher.csv", index=False)
    summary = json.loads((world / "features" / "summary.json").read_text())
    summary["median_explanation_auroc"] = float("nan")
    (world / "features" / "summary.json").write_text(json.dumps(summary))
    table = build_scorecard(world).set_index("id")
    for claim in ("reader-fewer-edits", "reader-significant-simulated", "reader-half-rate", "descriptions-explain"):
        assert table.loc[claim, "verdict"] == NOT_TESTABLE, claim
    assert "0 and 100 sentences" in table.loc["reader-half-rate", "reason"]


def test_auxiliary_text_rows_are_judged_when_a_language_model_wrote_them(world):
    judge = "LLM judge (llama)"
    rows = []
    for system, (precision, recall, f1) in {"SAE-Rad (claude, no auxiliary text)": (36.0, 32.0, 33.9),
                                            "SAE-Rad (claude, with indication)": (35.0, 28.2, 32.7),
                                            "SAE-Rad (claude, with indication + prior reports)": (37.3, 39.8, 38.5)
                                            }.items():
        for metric, value in zip(("RadFact precision", "RadFact recall", "RadFact F1"), (precision, recall, f1)):
            rows.append({"system": system, "metric": metric, "value": value, "ci_low": value - 2,
                         "ci_high": value + 2, "source": "measured", "method": judge, "n_studies": 60, "note": ""})
    _csv(world / "metrics", "table2.csv", rows)
    table = build_scorecard(world).set_index("id")
    assert table.loc["table2-indication", "verdict"] == PARTLY    # precision down, recall down, F1 down: 1 of 3
    assert "1 of 3" in table.loc["table2-indication", "reason"]
    assert table.loc["table2-priors", "verdict"] == REPRODUCED
    assert table.loc["table2-middle-size", "verdict"] == NOT_TESTABLE           # no sweep rows in this table2
    assert "score_sae_sweep" in table.loc["table2-dense-worse", "reason"]


def test_real_readers_decide_whether_most_edits_have_no_impact(world):
    summary = pd.read_csv(world / "reader_study" / "summary.csv")
    exports = pd.DataFrame([
        {"source": "reader export", "reader": reader, "system": "all", "measure": "impact_none", "unit": "share",
         "count": count, "total": 100, "value": count / 100, "ci_low": low, "ci_high": high, "sd": None}
        for reader, count, low, high in (("r1", 70, 0.6, 0.78), ("r2", 55, 0.45, 0.64))])
    pd.concat([summary, exports]).to_csv(world / "reader_study" / "summary.csv", index=False)
    table = build_scorecard(world).set_index("id")
    assert table.loc["reader-mostly-no-impact", "verdict"] == PARTLY          # r1 clearly, r2 only by estimate
    assert "r1: 70 of 100" in table.loc["reader-mostly-no-impact", "ours"]
    assert table.loc["reader-mostly-no-impact", "href"].endswith("#real-readers") or \
        table.loc["reader-mostly-no-impact", "href"].endswith("#sec-reader-real")
