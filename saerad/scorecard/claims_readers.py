"""Claims of the reader study (Section 5.4, Appendix E): the paper's own counts re-tested, and simulated readers."""

from __future__ import annotations

import pandas as pd

from saerad.params import stage_parameters
from saerad.reader_study.paper import load_paper_counts
from saerad.scorecard import paper_claims
from saerad.scorecard.artifacts import Artifacts
from saerad.scorecard.claim import Claim, number, percent
from saerad.scorecard.verdicts import (NOT_REPRODUCED, PARTLY, REPRODUCED, Outcome, combine, not_testable,
                                       significance_rule, threshold_rule)

SIMULATED_SOURCE = "simulated reader (SynthCXR truth)"
READER_EXPORT_SOURCE = "reader export"
#: The systems the simulated readers compare SAE-Rad with (the demo has no CheXagent).
COMPARATOR = "nearest_neighbour"
#: "Almost half": a rate ratio at most this is reproduced; below 1 (fewer, not half) is partly.
HALF_RATE_RATIOS = (paper_claims.SIGNIFICANT_ERROR_RATE_RATIO + 0.1, 0.999)
_IMPACT_OUTCOMES = (("clinical impact (minor or significant)", "errors with clinical impact"),
                    ("significant", "significant errors"))
#: A simulated reader edits only sentences that contradict the planted findings and grades each by its finding,
#: so nearly every edit it makes has clinical impact: its rates are compared per sentence of the report, not per
#: edited sentence (where both systems would sit near 100 %).
SIMULATED_DENOMINATOR = "all sentences"
_STYLE_EDITS = ("real readers' exports (reader_study.exports_dir): the simulated readers edit only sentences that "
                "contradict the planted findings and grade each by its finding, so the edits without clinical "
                "impact that make the paper's majority (style, wording) cannot occur")
_NO_SIMULATION = ("simulated readers, which need SynthCXR's planted findings and sentence facts (or real readers' "
                  "exports, whose tests the chapter shows but does not save)")

_PAPER = load_paper_counts()
_PRINTED = _PAPER["printed"]
_SYSTEMS = _PAPER["systems"]


def _exact_reader(artifacts: Artifacts) -> str:
    """The simulated reader with the smallest error rate (the one who reads the planted truth exactly)."""
    rates = stage_parameters(artifacts.root, "reader_study")["simulated_error_rates"]
    return f"simulated-{min(range(len(rates)), key=rates.__getitem__) + 1}"


def _simulated_fisher(artifacts: Artifacts) -> pd.DataFrame | None:
    artifacts.stage_record("reader_study")
    if not (artifacts.root / "reader_study" / "simulated_fisher.csv").exists():
        return None
    table = artifacts.csv("reader_study", "simulated_fisher.csv",
                          ("reader", "outcome", "denominator", "comparator", "focus_rate", "comparator_rate",
                           "p_one_sided"))
    return table[table["reader"] == _exact_reader(artifacts)]


def _fisher_row(table: pd.DataFrame, outcome: str, denominator: str, comparator: str) -> pd.Series:
    rows = table[(table["outcome"] == outcome) & (table["denominator"] == denominator)
                 & (table["comparator"] == comparator)]
    if rows.empty:
        raise ValueError(f"reader study Fisher table: no row for {outcome!r} / {denominator!r} / {comparator!r}")
    return rows.iloc[0]


def _untestable_counts(row: pd.Series) -> Outcome | None:
    """Rates of 0 of 0 sentences (a reader who edited none) cannot be compared: say so instead of failing."""
    if row[["focus_rate", "comparator_rate", "p_one_sided"]].astype(float).notna().all():
        return None
    return not_testable(f"sentences to compare: {row['outcome']} of {row['denominator']} has no total for one side "
                        f"({int(row['focus_total'])} and {int(row['comparator_total'])} sentences)")


def _rates(row: pd.Series) -> str:
    return (f"{int(row['focus_count'])}/{int(row['focus_total'])} ({percent(row['focus_rate'])}) vs "
            f"{int(row['comparator_count'])}/{int(row['comparator_total'])} ({percent(row['comparator_rate'])}), "
            f"p = {row['p_one_sided']:.2g}")


def _fewer_edits(artifacts: Artifacts) -> Outcome:
    fisher = _simulated_fisher(artifacts)
    if fisher is None:
        return not_testable(_NO_SIMULATION)
    row = _fisher_row(fisher, "edited_or_deleted", "all sentences", COMPARATOR)
    if (untestable := _untestable_counts(row)) is not None:
        return untestable
    verdict, reason = significance_rule(row["focus_rate"], row["comparator_rate"], row["p_one_sided"])
    paper = _fisher_row(artifacts.csv("reader_study", "paper_fisher.csv"), "edited_or_deleted", "all sentences",
                        "others pooled")
    return Outcome(f"sentences edited, simulated reader: SAE-Rad {_rates(row)}", verdict,
                   f"{reason}; on the paper's own counts SAE-Rad has {number(100 * (1 - paper['rate_ratio']))} % "
                   f"fewer, one-sided p = {paper['p_one_sided']:.2g}")


def _impact_tests(table: pd.DataFrame, comparator: str, denominator: str) -> Outcome:
    verdicts, parts, reasons = [], [], []
    for outcome, words in _IMPACT_OUTCOMES:
        row = _fisher_row(table, outcome, denominator, comparator)
        if (untestable := _untestable_counts(row)) is not None:
            return untestable
        verdict, reason = significance_rule(row["focus_rate"], row["comparator_rate"], row["p_one_sided"],
                                    says_significantly=True)
        verdicts.append(verdict)
        parts.append(f"{words} per {'sentence' if denominator == 'all sentences' else 'edited sentence'} {_rates(row)}")
        reasons.append(f"{words}: {reason}")
    return Outcome("; ".join(parts), combine(verdicts), "; ".join(reasons) + " (Fisher's exact test, one-sided)")


def _significant_paper_counts(artifacts: Artifacts) -> Outcome:
    # Per edited sentence, as the paper prints its rates.
    return _impact_tests(artifacts.csv("reader_study", "paper_fisher.csv"), "others pooled", "edited sentences")


def _significant_simulated(artifacts: Artifacts) -> Outcome:
    fisher = _simulated_fisher(artifacts)
    if fisher is None:
        return not_testable(_NO_SIMULATION)
    return _impact_tests(fisher, COMPARATOR, SIMULATED_DENOMINATOR)


def _half_rate(artifacts: Artifacts) -> Outcome:
    fisher = _simulated_fisher(artifacts)
    if fisher is None:
        return not_testable(_NO_SIMULATION)
    row = _fisher_row(fisher, "significant", SIMULATED_DENOMINATOR, COMPARATOR)
    if (untestable := _untestable_counts(row)) is not None:
        return untestable
    if not row["comparator_rate"] > 0:
        return Outcome(f"significant errors: {_rates(row)}", NOT_REPRODUCED,
                       "the comparator has no significant error, so no rate can be half of it")
    ratio = row["focus_rate"] / row["comparator_rate"]
    verdict, reason = threshold_rule(ratio, *HALF_RATE_RATIOS, higher_is_better=False, what="rate ratio")
    return Outcome(f"rate ratio {number(ratio, 2)} ({_rates(row)})", verdict, reason)


def _mostly_no_impact(artifacts: Artifacts) -> Outcome:
    """Real readers only (see ``_STYLE_EDITS``); each reader's share of edits without impact, combined."""
    artifacts.stage_record("reader_study")
    summary = artifacts.csv("reader_study", "summary.csv", ("source", "reader", "system", "measure", "value",
                                                             "ci_low", "ci_high", "count", "total"))
    rows = summary[(summary["source"] == READER_EXPORT_SOURCE) & (summary["system"] == "all")
                   & (summary["measure"] == "impact_none") & (summary["total"] > 0)]
    if rows.empty:
        return not_testable(_STYLE_EDITS)
    verdicts, parts = [], []
    for row in rows.itertuples():
        if row.ci_low > 0.5:
            verdicts.append(REPRODUCED)
        elif row.value > 0.5:
            verdicts.append(PARTLY)
        else:
            verdicts.append(NOT_REPRODUCED)
        parts.append(f"{row.reader}: {int(row.count)} of {int(row.total)} edited sentences ({percent(row.value)}, "
                     f"95 % interval {percent(row.ci_low)} to {percent(row.ci_high)})")
    return Outcome("; ".join(parts), combine(verdicts),
                   "per reader: the 95 % interval above one half reproduced, the estimate only partly")


def _paper_edits() -> str:
    shares = ", ".join(f"{_SYSTEMS[system]['edited']}/{_SYSTEMS[system]['sentences']}"
                       for system in ("sae_rad", "chexagent", "nearest_neighbour"))
    return f"{_PRINTED['sae_rad_vs_others']['fewer_edits_relative']} % fewer (edited: SAE-Rad, CheXagent, baseline {shares})"


def _paper_significant() -> str:
    sae_rad = _SYSTEMS["sae_rad"]["impact"]["significant"], _SYSTEMS["sae_rad"]["edited"]
    others = [_SYSTEMS[s]["impact"]["significant"] for s in ("chexagent", "nearest_neighbour")]
    edited = [_SYSTEMS[s]["edited"] for s in ("chexagent", "nearest_neighbour")]
    return (f"significant: {sae_rad[0]}/{sae_rad[1]} edited sentences vs {sum(others)}/{sum(edited)} for the others "
            f"(printed {_PRINTED['sae_rad']['impact_significant']} % vs {_PRINTED['chexagent']['impact_significant']} % "
            f"and {_PRINTED['nearest_neighbour']['impact_significant']} %); no test reported")


CLAIMS = (
    Claim("reader-fewer-edits",
          "A radiologist edits fewer of SAE-Rad's sentences than of the other systems'",
          "Section 5.4; Appendix E.1",
          _paper_edits(),
          "sec-reader-simulated",
          "simulated reader, share of sentences edited, SAE-Rad vs nearest neighbour: lower with one-sided Fisher "
          "p < 0.05 reproduced; lower only: partly",
          _fewer_edits),
    Claim("reader-significant-paper-counts",
          "SAE-Rad's reports have significantly fewer errors with clinical impact, particularly significant ones "
          "(tested on the paper's own counts)",
          "Section 5.4; Appendix E.1",
          _paper_significant(),
          "sec-reader-significance",
          "both rates (clinical impact; significant) lower with one-sided Fisher p < 0.05 against the others pooled: "
          "reproduced; the claim says 'significantly', so a lower rate with p >= 0.05 is not reproduced",
          _significant_paper_counts),
    Claim("reader-significant-simulated",
          "The same claim with simulated readers who know each image's planted findings",
          "Section 5.4",
          _paper_significant(),
          "sec-reader-simulated",
          "as above, SAE-Rad against the nearest neighbour, per sentence of the report, by the exact simulated reader",
          _significant_simulated),
    Claim("reader-half-rate",
          "SAE-Rad's rate of significant errors is about half the other systems'",
          "Section 5.4; Appendix E.1",
          f"rate ratio about {paper_claims.SIGNIFICANT_ERROR_RATE_RATIO:g} ('almost half')",
          "sec-reader-simulated",
          f"simulated reader, significant errors per sentence, SAE-Rad over nearest neighbour: ratio "
          f"<= {HALF_RATE_RATIOS[0]:g} reproduced, below 1 partly",
          _half_rate),
    Claim("reader-mostly-no-impact",
          "Most edited sentences have no clinical impact",
          "Appendix E.1",
          f"{_PAPER['overall']['impact']['none']} of {_PAPER['overall']['edited']} "
          f"(printed {_PRINTED['all']['impact_none']} %)",
          "sec-reader-real",
          "real readers only, each reader over all systems: 95 % interval of the share above one half reproduced; "
          "estimate above only: partly",
          _mostly_no_impact),
)
