"""Analysis of the reader study (Section 5.4, Appendix E): exports -> Appendix E.1's figures, with uncertainty.

One implementation path
-----------------------
Every figure is computed from a *counts frame*: one row per (reader, system)
holding additive counts (reports, sentences, kept / edited / deleted
sentences, clinical impact of edited sentences, error-category labels, labels
by category and severity, and the sufficient statistics n, sum and sum of
squares of the number of categories per edited sentence).  Two producers
feed it:

* :func:`count_sentences` aggregates the long table of :func:`read_exports`
  (one row per reader, case and sentence);
* :func:`paper_counts` reads ``paper_counts.json``, the counts the paper prints
  in Appendix E.1 (NaN where the paper gives none, e.g. per-system categories).

and one consumer computes shares, Wilson intervals, means and tests from it:
:func:`summary_table`, :func:`fisher_tests`, :func:`category_severity_table`
and :func:`error_type_figure`.  The pooled row ``system == "all"`` is the sum
of the system rows, so "overall" figures are never computed separately.
:func:`analyse_paper_counts` therefore checks the paper's printed percentages
with exactly the code that analyses real exports.

Definitions (Appendix E.1's)
----------------------------
* *edited* = the reader edited **or deleted** the sentence (E.1's "edits");
  unreviewed sentences (action ``null``) are counted but left out of every
  share.
* Clinical impact is a share of edited sentences that carry a significance.
* Error categories are counted on edited sentences only; a category share is
  a share of all category *labels* (E.1: 105 / 198 = 53.03 % "other"), not of
  sentences.  Labels on kept sentences are ignored.
* Categories per edited sentence: mean and sample standard deviation
  (``ddof=1``; only the sample sd can reproduce CheXagent's printed
  1.35 +/- 0.71 from 52 integer counts, see :func:`categories_sd_feasibility`).
* Intervals: 95 % Wilson score intervals for shares
  (``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``), a
  t-interval for the mean number of categories.  They treat sentences (and
  labels) as independent, which sentences of one report and labels of one
  sentence are not; with one reader and 10 reports per system they are
  optimistic, not conservative.
* Pooling readers (``by_reader=False`` with several readers) counts each case
  once per reader; use ``by_reader=True`` for per-reader figures and tests.
"""

from __future__ import annotations

import itertools
import math
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from saerad.io import read_json
from saerad.reader_study.schema import read_unblinding

SCHEMA_ID = "saerad-reader-study-export/1"

ACTIONS: tuple[str, ...] = ("keep", "edit", "delete")
SIGNIFICANCE: tuple[str, ...] = ("none", "minor", "significant")
CATEGORIES: tuple[str, ...] = ("omission", "misclassification", "overspecific", "incorrect location", "other")
ALL = "all"
POOLED_READERS = "pooled"
FOCUS = "sae_rad"
SYSTEM_LABELS = {
    "sae_rad": "SAE-Rad",
    "chexagent": "CheXagent",
    "nearest_neighbour": "Baseline (nearest neighbour)",
    ALL: "All systems",
}

LONG_COLUMNS = [
    "reader", "reader_role", "source", "case_id", "study_id", "system", "config", "complete",
    "sentence", "text", "action", "reviewed", "edited", "deleted", "categories", "n_categories",
    "significance",
]
_SEVERITY_LEVELS = SIGNIFICANCE + ("unrated",)
COUNT_COLUMNS = (
    ["reports", "sentences", "reviewed", "kept", "edited", "deleted"]
    + [f"impact_{s}" for s in _SEVERITY_LEVELS]
    + ["labels"] + [f"cat:{c}" for c in CATEGORIES]
    + [f"catsev:{c}:{s}" for c in CATEGORIES for s in _SEVERITY_LEVELS]
    + ["k_n", "k_sum", "k_sumsq"]
)


# ---------------------------------------------------------------------------
# Reading and checking


def check_export(export: Mapping, source: str = "<export>") -> None:
    """Raise ValueError naming ``source`` and the offending field unless ``export`` keeps the contract.

    The contract is :func:`saerad.reader_study.schema.validate_export`'s:
    ``export_schema.json`` plus unique case ids, sentence indices ``0..n-1``
    and ``complete`` exactly when every sentence has an action.
    """
    from saerad.reader_study.schema import validate_export

    try:
        validate_export(export)
    except ValueError as error:
        message = str(error)
        message = message[len("export: "):] if message.startswith("export: ") else message
        raise ValueError(f"{source}: {message}") from None


def read_exports(
    paths: str | Path | Mapping | Sequence[str | Path | Mapping],
    unblinding: str | Path | Mapping,
) -> pd.DataFrame:
    """Join reader exports with the unblinding file: one row per (reader, case, sentence).

    Parameters
    ----------
    paths
        Export files (``*.json`` downloaded from the review page or written by
        :func:`saerad.reader_study.simulated.write_export`), or export objects.
    unblinding
        The unblinding file written beside the review page, or its contents.

    Every export is validated (:func:`check_export`); its ``page_id`` and
    ``study_seed`` must be the unblinding file's, its case ids known to it and
    reader ids unique across the exports.  Errors name the file and the
    field.

    Returns
    -------
    DataFrame
        Columns :data:`LONG_COLUMNS`: ``reader``, ``reader_role``, ``source``
        (file), ``case_id``, ``study_id``, ``system``, ``config``,
        ``complete``, ``sentence`` (index), ``text``, ``action`` (None when
        unreviewed), ``reviewed``, ``edited`` (edit or delete), ``deleted``,
        ``categories`` (tuple in :data:`CATEGORIES` order), ``n_categories``,
        ``significance``.
    """
    mapping, unblinding_source = read_unblinding(unblinding)
    if isinstance(paths, (str, Path, Mapping)):
        paths = [paths]
    rows: list[dict] = []
    readers: dict[str, str] = {}
    for position, item in enumerate(paths):
        if isinstance(item, Mapping):
            export, source = item, f"<export {position}>"
        else:
            source = str(item)
            if not Path(item).exists():
                raise FileNotFoundError(f"reader-study export {source} does not exist")
            export = read_json(item)
        check_export(export, source)
        if export["page_id"] != mapping["page_id"]:
            raise ValueError(
                f"{source}: page_id {export['page_id']!r} does not match the unblinding file {unblinding_source} "
                f"(page_id {mapping['page_id']!r}): the export comes from a different review page")
        if export["study_seed"] != mapping["seed"]:
            raise ValueError(
                f"{source}: study_seed {export['study_seed']} does not match the unblinding file "
                f"{unblinding_source} (seed {mapping['seed']})")
        reader = export["reader"]["id"]
        if reader in readers:
            raise ValueError(f"{source}: reader {reader!r} also exported {readers[reader]}; "
                             "keep one export per reader")
        readers[reader] = source
        for case in export["cases"]:
            case_id = case["case_id"]
            if case_id not in mapping["cases"]:
                raise ValueError(f"{source}: case_id {case_id!r} is not in the unblinding file {unblinding_source}")
            truth = mapping["cases"][case_id]
            for sentence in case["sentences"]:
                action = sentence["action"]
                categories = tuple(c for c in CATEGORIES if c in sentence["error_categories"])
                rows.append({
                    "reader": reader, "reader_role": export["reader"].get("role", ""), "source": source,
                    "case_id": case_id, "study_id": truth["study_id"], "system": truth["system"],
                    "config": truth["config"], "complete": bool(case["complete"]),
                    "sentence": int(sentence["index"]), "text": sentence["text"], "action": action,
                    "reviewed": action is not None, "edited": action in ("edit", "delete"),
                    "deleted": action == "delete", "categories": categories, "n_categories": len(categories),
                    "significance": sentence["clinical_significance"],
                })
    return pd.DataFrame(rows, columns=LONG_COLUMNS)


# ---------------------------------------------------------------------------
# Counts: the single currency of every figure


def _reader_key(long: pd.DataFrame) -> str:
    readers = long["reader"].unique()
    return str(readers[0]) if len(readers) == 1 else POOLED_READERS


def count_sentences(long: pd.DataFrame, by_reader: bool = False) -> pd.DataFrame:
    """Aggregate the long table into the counts frame (index reader, system; ``all`` = sum of systems).

    With ``by_reader=False`` readers are pooled (reader ``pooled``, or the one
    reader's id); each case then counts once per reader.
    """
    missing = [c for c in LONG_COLUMNS if c not in long.columns]
    if missing:
        raise ValueError(f"count_sentences: the table lacks columns {missing} (expected read_exports' output)")
    if long.empty:
        raise ValueError("count_sentences: no sentences (empty exports?)")
    table = long.copy()
    table["_report"] = table["reader"].astype(str) + "\x00" + table["case_id"].astype(str)
    if not by_reader:
        table["reader"] = _reader_key(long)
    edited = table["edited"].astype(bool)
    significance = table["significance"].where(table["significance"].isin(SIGNIFICANCE), "unrated")
    frame = pd.DataFrame({
        "reader": table["reader"], "system": table["system"],
        "reviewed": table["reviewed"].astype(int),
        "kept": (table["action"] == "keep").astype(int),
        "edited": edited.astype(int),
        "deleted": table["deleted"].astype(int),
    })
    frame["sentences"] = 1
    for level in _SEVERITY_LEVELS:
        frame[f"impact_{level}"] = (edited & (significance == level)).astype(int)
    n_categories = table["n_categories"].where(edited, 0).astype(int)
    frame["labels"] = n_categories
    for category in CATEGORIES:
        has = edited & table["categories"].map(lambda cats, c=category: c in cats)
        frame[f"cat:{category}"] = has.astype(int)
        for level in _SEVERITY_LEVELS:
            frame[f"catsev:{category}:{level}"] = (has & (significance == level)).astype(int)
    frame["k_n"] = edited.astype(int)
    frame["k_sum"] = n_categories
    frame["k_sumsq"] = n_categories ** 2
    counts = frame.groupby(["reader", "system"], sort=False).sum()
    counts["reports"] = table.groupby(["reader", "system"], sort=False)["_report"].nunique()
    return with_all_row(counts[COUNT_COLUMNS].astype(float))


def with_all_row(counts: pd.DataFrame, overall: Mapping[str, Mapping[str, float]] | None = None) -> pd.DataFrame:
    """Append ``system == all`` per reader as the column-wise sum (NaN if any system's count is unknown)."""
    parts = []
    for reader, block in counts.groupby(level="reader", sort=False):
        block = block.drop(index=ALL, level="system", errors="ignore")
        total = block.sum(axis=0, skipna=False, min_count=1)
        total[block.isna().any(axis=0)] = np.nan
        if overall and reader in overall:
            for column, value in overall[reader].items():
                total[column] = value
        total.name = (reader, ALL)
        parts.append(pd.concat([block, total.to_frame().T]))
    result = pd.concat(parts)
    result.index = pd.MultiIndex.from_tuples(result.index, names=["reader", "system"])
    return result


def _as_counts(data: pd.DataFrame, by_reader: bool) -> pd.DataFrame:
    if isinstance(data.index, pd.MultiIndex) and list(data.index.names) == ["reader", "system"]:
        return data
    return count_sentences(data, by_reader=by_reader)


# ---------------------------------------------------------------------------
# Shares, means and intervals


def wilson_interval(count: float, total: float, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of count / total (NaN when unknown or total is 0)."""
    if not (np.isfinite(count) and np.isfinite(total)) or total <= 0:
        return float("nan"), float("nan")
    ci = stats.binomtest(int(round(count)), int(round(total))).proportion_ci(
        confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def _share_row(count, total, confidence) -> dict:
    value = count / total if np.isfinite(count) and np.isfinite(total) and total > 0 else float("nan")
    low, high = wilson_interval(count, total, confidence)
    return {"unit": "share", "count": count, "total": total, "value": value, "ci_low": low, "ci_high": high,
            "sd": float("nan")}


def _mean_row(total_sum, n, sumsq, confidence) -> dict:
    value = total_sum / n if np.isfinite(total_sum) and np.isfinite(n) and n > 0 else float("nan")
    sd = low = high = float("nan")
    if np.isfinite(value) and np.isfinite(sumsq) and n >= 2:
        sd = math.sqrt(max(sumsq - total_sum ** 2 / n, 0.0) / (n - 1))
        half = stats.t.ppf(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
        low, high = value - half, value + half
    return {"unit": "mean", "count": total_sum, "total": n, "value": value, "ci_low": low, "ci_high": high,
            "sd": sd}


def _measures(row: pd.Series, confidence: float) -> list[dict]:
    g = row.get
    rated = g("edited") - g("impact_unrated")
    out = [
        {"measure": "sentences_per_report", **_mean_row(g("sentences"), g("reports"), float("nan"), confidence)},
        {"measure": "edits_per_report", **_mean_row(g("edited"), g("reports"), float("nan"), confidence)},
        {"measure": "unreviewed", **_share_row(g("sentences") - g("reviewed"), g("sentences"), confidence)},
        {"measure": "edited_or_deleted", **_share_row(g("edited"), g("reviewed"), confidence)},
        {"measure": "kept", **_share_row(g("kept"), g("reviewed"), confidence)},
        {"measure": "deleted", **_share_row(g("deleted"), g("reviewed"), confidence)},
    ]
    for level in SIGNIFICANCE:
        out.append({"measure": f"impact_{level}", **_share_row(g(f"impact_{level}"), rated, confidence)})
    out.append({"measure": "impact_unrated", **_share_row(g("impact_unrated"), g("edited"), confidence)})
    out.append({"measure": "significant_of_all_sentences",
                **_share_row(g("impact_significant"), g("reviewed"), confidence)})
    for category in CATEGORIES:
        out.append({"measure": f"category:{category}", **_share_row(g(f"cat:{category}"), g("labels"), confidence)})
    out.append({"measure": "categories_per_edited_sentence",
                **_mean_row(g("k_sum"), g("k_n"), g("k_sumsq"), confidence)})
    for category in CATEGORIES:
        for level in _SEVERITY_LEVELS:
            count = g(f"catsev:{category}:{level}")
            if level == "unrated" and not (np.isfinite(count) and count > 0):
                continue
            out.append({"measure": f"severity_within_category:{category}:{level}",
                        **_share_row(count, g(f"cat:{category}"), confidence)})
    return out


def summary_table(data: pd.DataFrame, by_reader: bool = False, confidence: float = 0.95) -> pd.DataFrame:
    """Appendix E.1's figures per system and overall, with intervals, as a tidy table.

    Parameters
    ----------
    data
        The long table of :func:`read_exports`, or a counts frame
        (:func:`count_sentences`, :func:`paper_counts`).
    by_reader
        One block per reader instead of pooling readers.

    Returns
    -------
    DataFrame
        Columns ``reader, system, measure, unit, count, total, value, ci_low,
        ci_high, sd``.  ``unit`` is ``share`` (value = count / total in [0, 1],
        Wilson interval) or ``mean`` (value = count / total; for
        ``categories_per_edited_sentence`` with the sample sd and a
        t-interval).  Measures: ``sentences_per_report``, ``edits_per_report``,
        ``unreviewed``, ``edited_or_deleted``, ``kept``, ``deleted``,
        ``impact_none|minor|significant`` (of rated edited sentences),
        ``impact_unrated``, ``significant_of_all_sentences``,
        ``category:<c>`` (of all labels), ``categories_per_edited_sentence``,
        ``severity_within_category:<c>:<level>`` (of the labels of c).  Rows
        whose count is unknown (the paper's per-system categories) are left
        out.
    """
    counts = _as_counts(data, by_reader)
    rows = []
    for (reader, system), row in counts.iterrows():
        for measure in _measures(row, confidence):
            if np.isfinite(measure["count"]):
                rows.append({"reader": reader, "system": system, **measure})
    return pd.DataFrame(rows, columns=["reader", "system", "measure", "unit", "count", "total", "value",
                                       "ci_low", "ci_high", "sd"])


def category_severity_table(data: pd.DataFrame, by_reader: bool = False) -> pd.DataFrame:
    """Error-category labels by clinical significance (Figure 20's data), per system and overall.

    Columns ``reader, system, category, significance, count, share_of_labels``
    (share of the system's labels).  Raises when the counts are unknown (the
    paper prints none: its Figure 20 is an image).
    """
    counts = _as_counts(data, by_reader)
    rows = []
    for (reader, system), row in counts.iterrows():
        for category in CATEGORIES:
            for level in _SEVERITY_LEVELS:
                count = row[f"catsev:{category}:{level}"]
                if level == "unrated" and count == 0:
                    continue
                rows.append({"reader": reader, "system": system, "category": category, "significance": level,
                             "count": count,
                             "share_of_labels": count / row["labels"] if row["labels"] > 0 else float("nan")})
    table = pd.DataFrame(rows)
    if table.empty or table["count"].isna().all():
        raise ValueError("category_severity_table: no category x severity counts (the paper prints none; "
                         "its Figure 20 is an image) - pass reader exports")
    return table


# ---------------------------------------------------------------------------
# Tests of the paper's claims


_OUTCOMES = (
    # outcome, denominator, count column, total columns (total = a - b)
    ("significant", "all sentences", "impact_significant", ("reviewed", None)),
    ("significant", "edited sentences", "impact_significant", ("edited", "impact_unrated")),
    ("clinical impact (minor or significant)", "all sentences", ("impact_minor", "impact_significant"),
     ("reviewed", None)),
    ("clinical impact (minor or significant)", "edited sentences", ("impact_minor", "impact_significant"),
     ("edited", "impact_unrated")),
    ("edited_or_deleted", "all sentences", "edited", ("reviewed", None)),
)


def _outcome_counts(row: pd.Series, count_columns, total_columns) -> tuple[float, float]:
    count_columns = (count_columns,) if isinstance(count_columns, str) else count_columns
    count = sum(row[c] for c in count_columns)
    total = row[total_columns[0]] - (row[total_columns[1]] if total_columns[1] else 0.0)
    return float(count), float(total)


def _claim(outcome: str, denominator: str) -> str:
    if outcome == "significant" and denominator == "edited sentences":
        return ("Section 5.4 / E.1: 'significant clinical impact error rates are almost half' - the printed "
                "rates (6.6 % vs 15.3 % / 14.2 %) are shares of edited sentences")
    if outcome.startswith("clinical impact") and denominator == "edited sentences":
        return "Section 5.4: 'significantly fewer errors with clinical impact' (no test reported)"
    if outcome == "edited_or_deleted":
        return "Section 5.4 / E.1: 'SAE-Rad had 7% fewer edits than other models'"
    return ""


def fisher_tests(data: pd.DataFrame, focus: str = FOCUS, by_reader: bool = False) -> pd.DataFrame:
    """Fisher's exact test of "``focus`` has fewer ..." against each other system and the others pooled.

    Outcomes: significant-impact sentences out of all sentences and out of
    (rated) edited sentences; minor-or-significant likewise; edited-or-deleted
    out of all sentences.  The 2 x 2 table is ``[[focus yes, focus no],
    [other yes, other no]]``; ``p_one_sided`` is ``alternative="less"`` (the
    focus system has lower odds), ``p_two_sided`` the usual two-sided p.
    ``paper_claim`` names the claim of the paper a row tests.  Sentences are
    treated as independent (they are clustered in reports), and pooled
    readers count each case once per reader: prefer ``by_reader=True`` with
    several readers.
    """
    counts = _as_counts(data, by_reader)
    rows = []
    for reader, block in counts.groupby(level="reader", sort=False):
        block = block.droplevel("reader")
        systems = [s for s in block.index if s != ALL]
        if focus not in systems:
            raise ValueError(f"fisher_tests: no system {focus!r} (systems: {systems})")
        others = [s for s in systems if s != focus]
        if not others:
            raise ValueError(f"fisher_tests: only {focus!r}; nothing to compare with")
        if reader == POOLED_READERS:
            warnings.warn("fisher_tests: pooling several readers counts each case once per reader; "
                          "use by_reader=True", stacklevel=2)
        comparators = [(s, [s]) for s in others] + ([("others pooled", others)] if len(others) > 1 else [])
        for outcome, denominator, count_columns, total_columns in _OUTCOMES:
            a, n = _outcome_counts(block.loc[focus], count_columns, total_columns)
            for name, members in comparators:
                pairs = [_outcome_counts(block.loc[s], count_columns, total_columns) for s in members]
                b, m = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
                row = {"reader": reader, "outcome": outcome, "denominator": denominator, "focus": focus,
                       "comparator": name, "focus_count": a, "focus_total": n, "comparator_count": b,
                       "comparator_total": m}
                if n > 0 and m > 0 and all(np.isfinite([a, n, b, m])):
                    table = [[int(a), int(n - a)], [int(b), int(m - b)]]
                    row.update(
                        focus_rate=a / n, comparator_rate=b / m,
                        rate_ratio=(a / n) / (b / m) if b > 0 else float("nan"),
                        odds_ratio=float(stats.fisher_exact(table).statistic),
                        p_one_sided=float(stats.fisher_exact(table, alternative="less").pvalue),
                        p_two_sided=float(stats.fisher_exact(table, alternative="two-sided").pvalue))
                row["paper_claim"] = _claim(outcome, denominator)
                rows.append(row)
    columns = ["reader", "outcome", "denominator", "focus", "comparator", "focus_count", "focus_total",
               "focus_rate", "comparator_count", "comparator_total", "comparator_rate", "rate_ratio",
               "odds_ratio", "p_one_sided", "p_two_sided", "paper_claim"]
    return pd.DataFrame(rows).reindex(columns=columns)


def reader_agreement(long: pd.DataFrame) -> pd.DataFrame:
    """Pairwise agreement between readers on the sentences both reviewed.

    Variables: ``action`` (keep / edit / delete), ``edited`` (keep vs edit or
    delete) and ``significance`` (on sentences both readers edited and
    rated).  Returns ``reader_a, reader_b, variable, n, agreement`` (raw share
    of identical labels) and ``kappa`` (Cohen's, ``sklearn.metrics.cohen_kappa_score``;
    NaN when undefined, e.g. both readers used one label only).  Sentences
    are matched by case and index; their texts must agree.
    """
    from sklearn.metrics import cohen_kappa_score

    readers = list(dict.fromkeys(long["reader"]))
    rows = []
    for a, b in itertools.combinations(readers, 2):
        both = long[long["reader"] == a].merge(long[long["reader"] == b], on=["case_id", "sentence"],
                                                 how="inner", suffixes=("_a", "_b"))
        differ = both[both["text_a"] != both["text_b"]]
        if len(differ):
            case, index = differ["case_id"].iloc[0], differ["sentence"].iloc[0]
            raise ValueError(f"reader_agreement: readers {a!r} and {b!r} saw different text for case {case!r} "
                             f"sentence {index} ({differ['text_a'].iloc[0]!r} vs {differ['text_b'].iloc[0]!r})")
        reviewed = both[both["reviewed_a"] & both["reviewed_b"]]
        rated = reviewed[reviewed["edited_a"] & reviewed["edited_b"]
                         & reviewed["significance_a"].isin(SIGNIFICANCE) & reviewed["significance_b"].isin(SIGNIFICANCE)]
        for variable, table, x, y in (
            ("action", reviewed, reviewed["action_a"], reviewed["action_b"]),
            ("edited", reviewed, reviewed["edited_a"], reviewed["edited_b"]),
            ("significance", rated, rated["significance_a"], rated["significance_b"]),
        ):
            x, y = list(map(str, x)), list(map(str, y))
            kappa = float("nan")
            if len(x) and len(set(x) | set(y)) > 1:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    kappa = float(cohen_kappa_score(x, y))
            rows.append({"reader_a": a, "reader_b": b, "variable": variable, "n": len(x),
                         "agreement": float(np.mean(np.array(x) == np.array(y))) if x else float("nan"),
                         "kappa": kappa})
    return pd.DataFrame(rows, columns=["reader_a", "reader_b", "variable", "n", "agreement", "kappa"])


# ---------------------------------------------------------------------------
# Figure 20


def error_type_figure(data: pd.DataFrame, by_reader: bool = False, systems: Sequence[str] | None = None):
    """Figure 20-style chart: error-category labels by clinical significance, one panel per system.

    Returns a matplotlib Figure: bars are categories, colours the clinical
    significance, columns the systems (SAE-Rad first, all systems last) and,
    with ``by_reader=True``, one row per reader.
    """
    import matplotlib.pyplot as plt

    from saerad.plots import TEXT_WIDTH_INCHES

    table = category_severity_table(data, by_reader=by_reader)
    rank = {FOCUS: 0, ALL: 2}
    columns = sorted(dict.fromkeys(table["system"]), key=lambda s: rank.get(s, 1))
    if systems is not None:
        columns = [s for s in columns if s in systems]
    readers = list(dict.fromkeys(table["reader"]))
    levels = [lv for lv in _SEVERITY_LEVELS if lv in set(table["significance"])]
    colours = {"none": "#8da0cb", "minor": "#fdb863", "significant": "#d7301f", "unrated": "#bbbbbb"}
    # At most the book's text width, so the 9-point labels are not shrunk on the page.
    width = min(TEXT_WIDTH_INCHES, 2.3 * len(columns) + 0.7)
    figure, axes = plt.subplots(len(readers), len(columns), figsize=(width, 3.0 * len(readers) + 0.5),
                                sharey=True, squeeze=False)
    bar_width = 0.8 / max(len(levels), 1)
    x = np.arange(len(CATEGORIES))
    for row, reader in enumerate(readers):
        for column, system in enumerate(columns):
            axis = axes[row][column]
            block = table[(table["reader"] == reader) & (table["system"] == system)]
            for k, level in enumerate(levels):
                values = [block[(block["category"] == c) & (block["significance"] == level)]["count"].sum()
                          for c in CATEGORIES]
                axis.bar(x + (k - (len(levels) - 1) / 2) * bar_width, values, bar_width, label=level,
                         color=colours[level])
            label = SYSTEM_LABELS.get(system, system).replace("Baseline (nearest neighbour)", "Nearest neighbour")
            axis.set_title(label + (f" ({reader})" if by_reader else ""), fontsize=10)
            axis.set_xticks(x, list(CATEGORIES), rotation=40, ha="right", fontsize=9)
            axis.tick_params(axis="y", labelsize=9)
        axes[row][0].set_ylabel("error-category labels", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.6 / figure.get_figheight()))
    figure.legend(handles, labels, title="clinical impact", fontsize=9, title_fontsize=9, loc="upper center",
                  ncol=max(len(levels), 1), frameon=False, bbox_to_anchor=(0.5, 1.0))
    return figure
