"""Tables and verdict words of the chapter "Real reports" (``notebooks/09_real_reports.ipynb``)."""

from __future__ import annotations

import math
from collections import Counter

import pandas as pd

from saerad.mimic.loader import CHEXPERT_OBSERVATIONS
from saerad.openi.evaluation import MACRO_LABEL
from saerad.openi.mesh import parse_term, read_mapping, term_observations
from saerad.openi.reports import NOT_INDEXED_TERM, split_terms


def interval_text(low: float, high: float, decimals: int = 2) -> str:
    """``"0.88–0.93"``, or ``"—"`` when the interval is undefined."""
    if not (isinstance(low, (int, float)) and isinstance(high, (int, float))) or math.isnan(low) or math.isnan(high):
        return "—"
    return f"{low:.{decimals}f}–{high:.{decimals}f}"


def direction_word(difference: float, tolerance: float = 0.005) -> str:
    """``"higher"``, ``"lower"`` or ``"unchanged"`` (within ``tolerance``)."""
    if difference != difference:
        return "not measurable"
    if abs(difference) <= tolerance:
        return "unchanged"
    return "higher" if difference > 0 else "lower"


def before_after(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """One row per observation (and the macro average): support, P/R/F1 of both rule versions, v2's F1 interval.

    ``before`` and ``after`` are :func:`saerad.openi.evaluation.agreement_table` results on the same reports.
    """
    if list(before["observation"]) != list(after["observation"]) or list(before["support"]) != list(after["support"]):
        raise ValueError("before and after must be agreement tables of the same reports")
    table = pd.DataFrame({
        "observation": before["observation"], "support": before["support"],
        "precision_v1": before["precision"], "precision_v2": after["precision"],
        "recall_v1": before["recall"], "recall_v2": after["recall"],
        "f1_v1": before["f1"], "f1_v2": after["f1"],
        "f1_v2_interval": [interval_text(lo, hi) for lo, hi in zip(after["f1_low"], after["f1_high"])],
        "f1_v1_interval": [interval_text(lo, hi) for lo, hi in zip(before["f1_low"], before["f1_high"])],
        "in_macro": before["in_macro"],
    })
    return table


def mapping_by_observation(reports: pd.DataFrame) -> pd.DataFrame:
    """For each CheXpert observation, the MeSH headings that map to it and how many reports carry one.

    Parameters
    ----------
    reports
        :func:`saerad.openi.reports.read_reports`'s table.
    """
    mapping = read_mapping()
    counts: dict[str, set] = {o: set() for o in CHEXPERT_OBSERVATIONS}
    for report_id, terms in zip(reports["report_id"], reports["mesh_major"]):
        for term in split_terms(terms):
            for observation in term_observations(term):
                counts[observation].add(report_id)
    rows = []
    for observation in CHEXPERT_OBSERVATIONS:
        mapped = mapping[mapping["observations"].str.split(";").map(lambda items: observation in items)]
        headings = [h if not q else f"{h} ({q})" for h, q in zip(mapped["heading"], mapped["qualifier"])]
        rows.append({"observation": observation, "mesh_headings": ", ".join(headings),
                     "reports": len(counts[observation])})
    return pd.DataFrame(rows)


def headings_without_counterpart(reports: pd.DataFrame) -> pd.DataFrame:
    """MeSH headings that map to no CheXpert observation, with how many reports carry each, most frequent first."""
    mapping = read_mapping()
    mapped = set(mapping.loc[mapping["observations"] != "", "heading"])
    counter: Counter = Counter()
    for terms in reports["mesh_major"]:
        headings = {parse_term(term)[0] for term in split_terms(terms)}
        counter.update(h for h in headings if h not in mapped and h != parse_term(NOT_INDEXED_TERM)[0])
    notes = mapping.drop_duplicates("heading").set_index("heading")["note"]
    rows = [{"heading": h, "reports": n, "note": notes.get(h, "")} for h, n in counter.most_common()]
    return pd.DataFrame(rows, columns=["heading", "reports", "note"])


def macro_row(table: pd.DataFrame) -> pd.Series:
    """The macro-average row of an agreement or before/after table."""
    return table.loc[table["observation"] == MACRO_LABEL].iloc[0]


def synthcxr_sentences_read_differently(n_patients: int = 200, seed: int = 0) -> pd.DataFrame:
    """SynthCXR report sentences that the v1 and v2 rules read differently, with how many studies use each.

    A freshly sampled world (no images rendered) stands for the demo's: the templates are the same.
    """
    from saerad.metrics.chexpert_rules import label_sentence, sentence_findings, sentence_rules_out_no_finding
    from saerad.synthcxr import SynthCXRConfig, sample_studies

    counts: Counter = Counter()
    studies = 0
    for record in sample_studies(SynthCXRConfig(n_patients=n_patients, seed=seed), render=False):
        studies += 1
        for sentence in {s["text"] for s in record.sentences}:
            if (label_sentence(sentence, "v1") != label_sentence(sentence, "v2")
                    or sentence_findings(sentence, "v1") != sentence_findings(sentence, "v2")
                    or sentence_rules_out_no_finding(sentence, "v1") != sentence_rules_out_no_finding(sentence, "v2")):
                counts[sentence] += 1
    rows = [{"sentence": s, "studies": n, "of_studies": studies} for s, n in counts.most_common()]
    return pd.DataFrame(rows, columns=["sentence", "studies", "of_studies"])
