"""Claims about the scores of the reports: Table 1, Table 2, Figure 3 and Appendix G (metrics chapter)."""

from __future__ import annotations

import re

import pandas as pd

from saerad.evaluation.paper_values import PAPER_SAE_RAD, paper_table1, paper_table2
from saerad.evaluation.schema import CONFIG_LABELS, LLM_JUDGE_METHOD, NN_LABEL, NOT_MEASURED, ORACLE_METHOD
from saerad.scorecard import paper_claims
from saerad.scorecard.artifacts import Artifacts
from saerad.scorecard.claim import Claim, interval, number, percent
from saerad.scorecard.verdicts import (NOT_REPRODUCED, PARTLY, REPRODUCED, Outcome, combine, count_rule,
                                       interval_rule, not_testable)

_PAPER_T1 = paper_table1().set_index(["system", "metric"])["value"]
_PAPER_T2 = paper_table2().set_index(["system", "metric"])["value"]
CHEXPERT_METRICS = ("Ma-5", "Ma-14", "Mi-5", "Mi-14")
LEXICAL_METRICS = ("BL4", "RG-L")
_NO_CHEXAGENT = "CheXagent's reports for the same test studies (the book does not run CheXagent)"
_NO_MAIRA = "MAIRA-1 and MAIRA-2, which are not public (the paper quotes their own papers' numbers)"


def _paper_pair(metric: str) -> str:
    return f"{number(_PAPER_T1[(PAPER_SAE_RAD, metric)])} vs {number(_PAPER_T1[(NN_LABEL, metric)])}"


def _is_main_sae_rad(label: str) -> bool:
    """SAE-Rad's features-only reports: the offline composer's, or a language model's 'no auxiliary text'."""
    return label == "SAE-Rad (offline composer)" or label.endswith(f", {CONFIG_LABELS['no_aux']})")


def _method_rank(method: str) -> int:
    """Which measurement of a metric speaks for it: the paper's kind of judge first, then the exact oracle."""
    if method.startswith(LLM_JUDGE_METHOD) or method == "CheXbert":
        return 0
    if method == ORACLE_METHOD:
        return 1
    return 2


def _differences(artifacts: Artifacts) -> pd.DataFrame:
    table = artifacts.csv("metrics", "paired_differences.csv",
                          ("comparison", "metric", "method", "difference", "ci_low", "ci_high"))
    main = table["comparison"].map(lambda text: _is_main_sae_rad(text.split(" − ")[0]) and text.endswith(NN_LABEL))
    return table[main]


def _best_difference(differences: pd.DataFrame, metric: str) -> pd.Series | None:
    rows = differences[differences["metric"] == metric]
    if rows.empty:
        return None
    return rows.iloc[rows["method"].map(_method_rank).argsort()].iloc[0]


def _na_note(artifacts: Artifacts, metric: str) -> str:
    table1 = artifacts.csv("metrics", "table1.csv", ("metric", "source", "note"))
    notes = table1[(table1["metric"] == metric) & (table1["source"] == NOT_MEASURED)]["note"]
    return _needs(notes.iloc[0]) if len(notes) else f"a measurement of {metric}"


def _needs(note: str) -> str:
    """What an "n/a: needs ..." note of the metrics tables says is needed, without the prefix."""
    return note.removeprefix("n/a: ").removeprefix("needs ")


def _versus_baseline(metrics: tuple[str, ...], claimed_sign: int):
    """SAE-Rad minus the nearest neighbour, metric by metric, from the paired bootstrap (:func:`interval_rule`)."""

    def measure(artifacts: Artifacts) -> Outcome:
        differences = _differences(artifacts)
        parts, verdicts, reasons, needs = [], [], [], []
        for metric in metrics:
            row = _best_difference(differences, metric)
            if row is None:
                needs.append(_na_note(artifacts, metric))
                reasons.append(f"{metric}: not measured, needs {needs[-1]}")
                continue
            verdict, reason = interval_rule(row["difference"], row["ci_low"], row["ci_high"], claimed_sign)
            verdicts.append(verdict)
            parts.append(f"{metric} {float(row['difference']):+.1f} [{float(row['ci_low']):+.1f}, "
                         f"{float(row['ci_high']):+.1f}] ({row['method']})")
            reasons.append(f"{metric}: {verdict}, {reason}")
        if not verdicts:
            return not_testable("; ".join(needs))
        return Outcome("SAE-Rad minus baseline, points: " + "; ".join(parts), combine(verdicts), "; ".join(reasons))

    return measure


def _not_testable(needs: str):
    return lambda artifacts: not_testable(needs)


def _table2(artifacts: Artifacts) -> pd.DataFrame:
    return artifacts.csv("metrics", "table2.csv", ("system", "metric", "value", "ci_low", "ci_high", "source", "method"))


_NO_SWEEP = "the SAE sweep scored by the metrics chapter (metrics.score_sae_sweep = True)"


def _sweep_f1(artifacts: Artifacts) -> tuple[pd.DataFrame, str] | None:
    """RadFact F1 of each SAE of the sweep (``x4``, ``x8_dense``, ...) by the preferred method, and that method.

    None when the metrics chapter scored no sweep (``score_sae_sweep = False``).
    """
    table = _table2(artifacts)
    rows = table[(table["metric"] == "RadFact F1") & (table["source"] == "measured")].copy()
    rows["sae"] = rows["system"].str.extract(r"^SAE-Rad (x\d+(?:_dense)?) \(", expand=False)
    rows = rows.dropna(subset=["sae"])
    if rows.empty:
        return None
    method = min(rows["method"].unique(), key=_method_rank)
    rows = rows[rows["method"] == method].copy()
    rows["factor"] = rows["sae"].str.extract(r"x(\d+)", expand=False).astype(int)
    rows["dense"] = rows["sae"].str.endswith("_dense")
    return rows, method


def _middle_size_best(artifacts: Artifacts) -> Outcome:
    sweep = _sweep_f1(artifacts)
    if sweep is None:
        return not_testable(_NO_SWEEP)
    rows, method = sweep
    sparse = rows[~rows["dense"]].sort_values("factor")
    if len(sparse) < 3:
        raise ValueError("metrics/table2.csv: the sweep needs three sparse sizes")
    middle = sparse.iloc[1:-1]
    best = sparse.loc[sparse["value"].idxmax()]
    ours = "; ".join(f"{row.sae} {interval(row.value, row.ci_low, row.ci_high)}" for row in sparse.itertuples())
    if best["sae"] not in set(middle["sae"]):
        return Outcome(ours, NOT_REPRODUCED, f"{best['sae']} has the highest F1 ({method})")
    others = sparse[sparse["sae"] != best["sae"]]
    if best["ci_low"] > others["ci_high"].max():
        return Outcome(ours, REPRODUCED, f"{best['sae']} is highest and its interval lies above the others' ({method})")
    return Outcome(ours, PARTLY, f"{best['sae']} is highest but the 95 % intervals overlap ({method})")


def _dense_worse(artifacts: Artifacts) -> Outcome:
    sweep = _sweep_f1(artifacts)
    if sweep is None:
        return not_testable(_NO_SWEEP)
    rows, method = sweep
    by_sae = rows.set_index("sae")
    sizes = sorted(factor for factor in rows.loc[~rows["dense"], "factor"] if f"x{factor}_dense" in by_sae.index)
    if not sizes:
        raise ValueError("metrics/table2.csv: no size of the sweep has both a sparse and a dense SAE")
    holding = sum(by_sae.loc[f"x{size}_dense", "value"] < by_sae.loc[f"x{size}", "value"] for size in sizes)
    ours = "; ".join(f"x{size}: {number(by_sae.loc[f'x{size}', 'value'])} sparse vs "
                     f"{number(by_sae.loc[f'x{size}_dense', 'value'])} dense" for size in sizes)
    verdict, reason = count_rule(holding, len(sizes), "sizes (dense F1 below sparse)")
    return Outcome(ours, verdict, f"{reason}; point estimates of one run each ({method})")


def _auxiliary(config: str):
    """Table 2's auxiliary-text rows: measurable only when a language model wrote the reports."""

    def measure(artifacts: Artifacts) -> Outcome:
        table = _table2(artifacts)
        label = CONFIG_LABELS[config]
        rows = table[table["system"].str.endswith(f"{label})")]
        measured = rows[rows["source"] == "measured"]
        if measured.empty:
            notes = rows["note"].dropna() if "note" in rows else pd.Series(dtype=str)
            found = f" (here: {notes.iloc[0].removeprefix('n/a: ')})" if len(notes) else ""
            return not_testable(f"reports written {label} by a language model (reports.composer_backend){found}")
        base = table[table["system"].map(_is_main_sae_rad) & (table["source"] == "measured")]
        method = min(measured["method"].unique(), key=_method_rank)

        def value(frame: pd.DataFrame, metric: str) -> float:
            return float(frame[(frame["metric"] == metric) & (frame["method"] == method)]["value"].iloc[0])

        with_aux = {metric: value(measured, metric) for metric in ("RadFact precision", "RadFact recall", "RadFact F1")}
        without = {metric: value(base, metric) for metric in with_aux}
        ours = "; ".join(f"{metric.removeprefix('RadFact ')} {number(without[metric])} -> {number(with_aux[metric])}"
                         for metric in with_aux)
        if config == "indication":
            holds = [with_aux["RadFact F1"] > without["RadFact F1"], with_aux["RadFact recall"] > without["RadFact recall"],
                     with_aux["RadFact precision"] < without["RadFact precision"]]
            verdict, reason = count_rule(sum(holds), 3, "parts (F1 up, recall up, precision down)")
        else:
            others = table[table["system"].str.startswith("SAE-Rad") & (table["metric"] == "RadFact F1")
                           & (table["source"] == "measured") & (table["method"] == method)]
            best = others.loc[others["value"].idxmax(), "system"]
            verdict = REPRODUCED if best in set(rows["system"]) else NOT_REPRODUCED
            reason = f"highest F1: {best}"
        return Outcome(ours, verdict, f"{reason} ({method}; point estimates)")

    return measure


def _appendix_g(artifacts: Artifacts) -> Outcome:
    scores = artifacts.csv("metrics", "appendix_g_scores.csv", ("system", "judged_against", "metric", "value"))
    precision = scores[scores["system"].map(_is_main_sae_rad) & (scores["metric"] == "precision")]
    precision = precision.set_index("judged_against")
    reference, truth = precision.loc["reference report"], precision.loc["planted truth"]
    ours = (f"SAE-Rad precision {interval(reference['value'], reference['ci_low'], reference['ci_high'])} against the "
            f"reference, {interval(truth['value'], truth['ci_low'], truth['ci_high'])} against the image")
    if truth["ci_low"] > reference["ci_high"]:
        return Outcome(ours, REPRODUCED, "the interval against the image lies above the one against the reference")
    if truth["value"] > reference["value"]:
        return Outcome(ours, PARTLY, "higher against the image, but the 95 % intervals overlap")
    return Outcome(ours, NOT_REPRODUCED, "precision is not higher against the image than against the reference")


def _appendix_g_missing(artifacts: Artifacts) -> Outcome | None:
    """Appendix G needs the oracle: not testable without SynthCXR (the metrics chapter then writes no table)."""
    artifacts.stage_record("metrics")
    if not (artifacts.root / "metrics" / "appendix_g_scores.csv").exists():
        return not_testable("SynthCXR's sentence facts and planted truth (MIMIC-CXR has neither)")
    return None


def _with_oracle(measure):
    def guarded(artifacts: Artifacts) -> Outcome:
        return _appendix_g_missing(artifacts) or measure(artifacts)

    return guarded


def _extra_true_findings(artifacts: Artifacts) -> Outcome:
    sentences = artifacts.csv("metrics", "appendix_g_sentences.csv",
                              ("system", "true_not_entailed", "share_of_true_sentences_penalised"))
    row = sentences[sentences["system"].map(_is_main_sae_rad)].iloc[0]
    count = int(row["true_not_entailed"])
    ours = (f"{count:,} SAE-Rad sentences are true of the image but not in the reference "
            f"({percent(row['share_of_true_sentences_penalised'])} of its true sentences)")
    verdict = REPRODUCED if count > 0 else NOT_REPRODUCED
    return Outcome(ours, verdict, f"{count:,} such sentences (the claim needs at least one)")


def _paper_t2(system: str) -> str:
    return number(_PAPER_T2[(f"SAE-Rad {system}", "RadFact F1")], 2)


def _paper_chexagent_gain() -> str:
    sae_rad, chexagent = _PAPER_T1[(PAPER_SAE_RAD, "Ma-14")], _PAPER_T1[("CheXagent", "Ma-14")]
    return (f"+{number(paper_claims.CHEXAGENT_MACRO_F1_14_GAIN_PERCENT, 0)} % on Ma-14 ({number(sae_rad)} vs "
            f"{number(chexagent)})")


CLAIMS = (
    Claim("abstract-competitive",
          "SAE-Rad's radiology-specific scores are competitive with state-of-the-art report generators",
          "Abstract; Section 6",
          "Table 1: above CheXagent, below MAIRA-1/-2 (quoted)",
          "sec-metrics-table1",
          "not testable without the other systems' reports on the same studies",
          _not_testable(f"{_NO_CHEXAGENT}, and {_NO_MAIRA}")),
    Claim("table1-chexpert",
          "SAE-Rad scores higher CheXpert F1 than the nearest-neighbour baseline (macro and micro, 5 and 14 findings)",
          "Table 1",
          "; ".join(f"{metric} {_paper_pair(metric)}" for metric in CHEXPERT_METRICS),
          "sec-metrics-paired-differences",
          "per metric, the paired bootstrap 95 % interval of SAE-Rad minus baseline lies above 0; all four: "
          "reproduced, none: not reproduced, else partly",
          _versus_baseline(CHEXPERT_METRICS, +1)),
    Claim("table1-radfact",
          "SAE-Rad's RadFact F1 is higher than the baseline's",
          "Table 1",
          f"F1 {_paper_pair('RadFact F1')}",
          "sec-metrics-paired-differences",
          "paired bootstrap 95 % interval of the difference above 0: reproduced; estimate above 0 only: partly",
          _versus_baseline(("RadFact F1",), +1)),
    Claim("table1-lexical",
          "SAE-Rad scores lower than the baseline on BLEU-4 and ROUGE-L, since it does not copy the reports' style",
          "Table 1; Section 5.1",
          "; ".join(f"{metric} {_paper_pair(metric)}" for metric in LEXICAL_METRICS),
          "sec-metrics-paired-differences",
          "per metric, the 95 % interval of the difference lies below 0; both: reproduced, one: partly",
          _versus_baseline(LEXICAL_METRICS, -1)),
    Claim("table1-meteor",
          "SAE-Rad scores higher METEOR than the baseline",
          "Table 1",
          f"MTR {_paper_pair('MTR')}",
          "sec-metrics-paired-differences",
          "paired bootstrap 95 % interval of the difference above 0: reproduced; estimate above 0 only: partly",
          _versus_baseline(("MTR",), +1)),
    Claim("table1-rger",
          "SAE-Rad scores higher RGER than the baseline",
          "Table 1",
          f"RGER {_paper_pair('RGER')}",
          "sec-metrics-paired-differences",
          "paired bootstrap 95 % interval of the difference above 0: reproduced; estimate above 0 only: partly",
          _versus_baseline(("RGER",), +1)),
    Claim("table1-chexagent",
          "SAE-Rad beats CheXagent on the clinical metrics, by up to 52 % on macro-F1-14",
          "Table 1; Section 5.1",
          _paper_chexagent_gain(),
          "sec-metrics-table1",
          "not testable without CheXagent's reports",
          _not_testable(_NO_CHEXAGENT)),
    Claim("table1-maira",
          "SAE-Rad reaches about nine tenths of MAIRA-1's and MAIRA-2's clinical scores",
          "Table 1; Section 5.1",
          ", ".join(f"{number(share)} % of {name}" for name, share in paper_claims.MAIRA_SHARE_PERCENT.items()),
          "sec-metrics-table1",
          "not testable without MAIRA's reports",
          _not_testable(_NO_MAIRA)),
    Claim("table2-middle-size",
          "Of three dictionary sizes, the middle one gives the best RadFact F1",
          "Table 2; Section 5.2",
          f"F1 x32 {_paper_t2('x32')}, x64 {_paper_t2('x64')}, x128 {_paper_t2('x128')}",
          "sec-metrics-table2",
          "middle size highest and its 95 % interval above the others': reproduced; highest only: partly",
          _middle_size_best),
    Claim("table2-dense-worse",
          "Dense SAEs give lower RadFact F1 than sparse ones of the same size",
          "Table 2; Section 5.2",
          "; ".join(f"x{size}: {_paper_t2(f'x{size}')} vs {_paper_t2(f'x{size} dense')}"
                    for size in paper_claims.TABLE5_SIZES),
          "sec-metrics-table2",
          "count of sizes where the dense SAE's F1 is below the sparse one's: all, some, none",
          _dense_worse),
    Claim("table2-indication",
          "Telling the writer the indication raises RadFact F1 and recall but lowers precision",
          "Table 2; Section 5.2",
          f"P/R/F1 {_PAPER_T2[('SAE-Rad x64', 'RadFact precision')]:.2f}/"
          f"{_PAPER_T2[('SAE-Rad x64', 'RadFact recall')]:.2f}/{_paper_t2('x64')} -> rows 7 and 8 "
          f"(F1 {_paper_t2('x64 /w inds (row 7)')}, {_paper_t2('x64 /w inds (row 8)')})",
          "sec-metrics-table2",
          "three parts against the features-only reports: F1 up, recall up, precision down; all, some, none",
          _auxiliary("indication")),
    Claim("table2-priors",
          "Adding the indication and prior reports gives the best RadFact F1 of all configurations",
          "Table 2; Section 5.2",
          f"F1 {_paper_t2('x64 /w inds + prev. reps')}, the table's highest",
          "sec-metrics-table2",
          "reproduced if this configuration has the highest F1 of the SAE-Rad rows",
          _auxiliary("indication_priors")),
    Claim("figure3-extra-findings",
          "SAE-Rad also states true findings that the reference report leaves out",
          "Figure 3; Appendix C.1",
          "one example (a dialysis catheter), more in Figures 5-11",
          "sec-reports-side-by-side",
          "reproduced if at least one SAE-Rad sentence is true of the image and not entailed by the reference",
          _with_oracle(_extra_true_findings)),
    Claim("appendix-g-underestimate",
          "Judged against an incomplete reference, RadFact precision underestimates how correct the reports are",
          "Appendix G",
          "argued with one example (Figure 21); no number",
          "sec-metrics-appendix-g",
          "precision against the planted truth above precision against the reference: 95 % intervals apart: "
          "reproduced; estimates only: partly",
          _with_oracle(_appendix_g)),
)
