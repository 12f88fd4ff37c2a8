"""The paper's own reader-study numbers (Appendix E.1), run through the same analysis as real exports.

``paper_counts.json`` holds the counts the paper prints (and, as strings, the
percentages it prints); :func:`paper_counts` turns them into the counts frame
of :mod:`saerad.reader_study.analysis`, so :func:`analyse_paper_counts` checks
the printed percentages with exactly the code that analyses exports, and tests
the paper's "significantly fewer errors" claim with :func:`fisher_tests`.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from saerad.io import read_json
from saerad.reader_study.analysis import (ALL, COUNT_COLUMNS, SIGNIFICANCE, with_all_row, fisher_tests,
                                          summary_table)

PAPER_COUNTS_PATH = Path(__file__).with_name("paper_counts.json")


def load_paper_counts(path: str | Path | None = None) -> dict:
    """The paper's Appendix E.1 numbers (``paper_counts.json``) as a dict."""
    return read_json(PAPER_COUNTS_PATH if path is None else path)


def paper_counts(path: str | Path | None = None) -> pd.DataFrame:
    """The counts frame of the paper's reader study (NaN where the paper prints no count).

    Per system: reports, sentences, edited (edited or deleted), kept and the
    clinical impact of edited sentences.  Category counts exist only for
    ``all`` (198 labels), so there ``k_sum`` is the label total (each label
    belongs to one edited sentence) and ``k_sumsq`` is unknown.
    """
    paper = load_paper_counts(path)
    reader = paper.get("reader", "paper")
    rows = {}
    for system, data in paper["systems"].items():
        row = dict.fromkeys(COUNT_COLUMNS, np.nan)
        row.update(reports=data["reports"], sentences=data["sentences"], reviewed=data["sentences"],
                   edited=data["edited"], kept=data["sentences"] - data["edited"], k_n=data["edited"])
        for level in SIGNIFICANCE:
            row[f"impact_{level}"] = data["impact"][level]
        row["impact_unrated"] = data["edited"] - sum(data["impact"].values())
        rows[(reader, system)] = row
    counts = pd.DataFrame.from_dict(rows, orient="index")[COUNT_COLUMNS].astype(float)
    counts.index = pd.MultiIndex.from_tuples(counts.index, names=["reader", "system"])
    overall = paper["overall"]
    known = {"labels": overall["category_labels"], "k_sum": overall["category_labels"]}
    known.update({f"cat:{c}": n for c, n in overall["categories"].items()})
    counts = with_all_row(counts, {reader: known})
    # The paper's own overall totals must be what its per-system counts add up to.
    total = counts.loc[(reader, ALL)]
    for column, printed in (("reports", overall["reports"]), ("sentences", overall["sentences"]),
                            ("edited", overall["edited"]), ("kept", overall["kept"])):
        if total[column] != printed:
            raise ValueError(f"paper_counts: per-system {column} add up to {total[column]:g}, "
                             f"but the overall count is {printed}")
    for level, printed in overall["impact"].items():
        if total[f"impact_{level}"] != printed:
            raise ValueError(f"paper_counts: per-system impact '{level}' adds up to "
                             f"{total[f'impact_{level}']:g}, but the overall count is {printed}")
    if sum(overall["categories"].values()) != overall["category_labels"]:
        raise ValueError("paper_counts: the category counts do not add up to category_labels")
    return counts



def _decimals(printed: str) -> int:
    return len(printed.split(".")[1]) if "." in printed else 0


def _round_or_truncate(value: float, decimals: int) -> tuple[float, float]:
    scale = 10 ** decimals
    # Half-up rounding and truncation, computed on a decimal scale with a tiny guard against float noise.
    rounded = math.floor(value * scale + 0.5 + 1e-9) / scale
    truncated = math.floor(value * scale + 1e-9) / scale
    return rounded, truncated


def categories_sd_feasibility(
    n: int, mean: float, sd: float, decimals: int = 2, max_categories: int = 5, min_categories: int = 0,
) -> pd.DataFrame:
    """Which integer data reproduce a printed ``mean +/- sd`` of categories per sentence?

    For ``ddof`` 0 (population sd) and 1 (sample sd), every (sum, sum of
    squares) of ``n`` integers in ``[min_categories, max_categories]`` whose
    mean and sd round to the printed values, with one example distribution
    (``"count x categories"``).  An empty result for a ddof means no data
    give the printed numbers with that ddof.
    """
    rows = []
    tolerance = 0.5 * 10 ** -decimals + 1e-12
    sums = [s for s in range(n * min_categories, n * max_categories + 1) if abs(s / n - mean) <= tolerance]
    for ddof in (0, 1):
        for total in sums:
            low_var = max(sd - tolerance, 0.0) ** 2 * (n - ddof)
            high_var = (sd + tolerance) ** 2 * (n - ddof)
            base = total * total / n
            for sumsq in range(math.ceil(base + low_var), math.floor(base + high_var) + 1):
                # Prefer an example where every edited sentence has a category.
                example = None
                if min_categories < 1 <= max_categories - 2:
                    example = _distribution(n, total, sumsq, 1, max_categories)
                if example is None:
                    example = _distribution(n, total, sumsq, min_categories, max_categories)
                if example is not None:
                    rows.append({"n": n, "printed_mean": mean, "printed_sd": sd, "ddof": ddof, "sum": total,
                                 "sumsq": sumsq, "mean": total / n,
                                 "sd": math.sqrt((sumsq - base) / (n - ddof)),
                                 "example": ", ".join(f"{c} x {k}" for k, c in sorted(example.items()) if c)})
    return pd.DataFrame(rows, columns=["n", "printed_mean", "printed_sd", "ddof", "sum", "sumsq", "mean", "sd",
                                       "example"])


def _distribution(n: int, total: int, sumsq: int, low: int, high: int) -> dict[int, int] | None:
    """Counts of each value in [low, high] (n values) with the given sum and sum of squares, or None."""
    if (sumsq - total) % 2:
        return None  # k^2 and k have the same parity
    values = list(range(low, high + 1))
    if len(values) < 3:
        raise ValueError("categories_sd_feasibility: needs at least 3 possible values")
    free, fixed = values[:3], values[3:]
    inverse = np.linalg.inv(np.array([[1, 1, 1], free, [v * v for v in free]], dtype=float))
    # Choose the counts of the larger values, solve for the three smallest (a 3 x 3 linear system).
    for counts in itertools.product(*(range(n + 1) for _ in fixed)):
        rest = np.array([n - sum(counts), total - sum(c * v for c, v in zip(counts, fixed)),
                         sumsq - sum(c * v * v for c, v in zip(counts, fixed))], dtype=float)
        if (rest < 0).any():
            continue
        solution = inverse @ rest
        rounded = np.round(solution)
        if np.allclose(solution, rounded, atol=1e-6) and (rounded >= 0).all():
            return {**dict(zip(free, map(int, rounded))), **dict(zip(fixed, counts))}
    return None


def paper_categories_check(path: str | Path | None = None) -> pd.DataFrame:
    """The paper's ``mean +/- sd`` categories per edited sentence against integer data and its 198 labels.

    One row per system and ddof: how many (sum, sum of squares) reproduce the
    printed numbers, and the implied label totals; plus rows ``all (from
    systems)`` checking whether feasible per-system data add up to the printed
    overall 1.46 +/- 0.67, and ``all (198 labels)`` for the label total the
    category counts give.
    """
    paper = load_paper_counts(path)
    printed = paper["categories_per_edited_sentence"]
    edited = {s: d["edited"] for s, d in paper["systems"].items()}
    n_all = sum(edited.values())
    rows, feasible = [], {}
    for system, n in edited.items():
        table = categories_sd_feasibility(n, printed[system]["mean"], printed[system]["sd"])
        for ddof in (0, 1):
            found = table[table["ddof"] == ddof]
            feasible[(system, ddof)] = list(zip(found["sum"], found["sumsq"]))
            rows.append({"system": system, "ddof": ddof, "n": n, "printed": f"{printed[system]['mean']} +/- "
                         f"{printed[system]['sd']}", "feasible": len(found) > 0,
                         "label_totals": sorted(set(found["sum"])), "sumsq": sorted(set(found["sumsq"])),
                         "example": found["example"].iloc[0] if len(found) else ""})
    mean_all, sd_all = printed[ALL]["mean"], printed[ALL]["sd"]
    for ddof in (0, 1):
        combos = []
        for parts in itertools.product(*(feasible[(s, ddof)] for s in edited)):
            total, sumsq = sum(p[0] for p in parts), sum(p[1] for p in parts)
            sd = math.sqrt(max(sumsq - total ** 2 / n_all, 0) / (n_all - ddof))
            combos.append((total, sumsq, round(total / n_all, 2) == mean_all and abs(sd - sd_all) <= 0.005))
        rows.append({"system": "all (from systems)", "ddof": ddof, "n": n_all, "printed": f"{mean_all} +/- {sd_all}",
                     "feasible": any(c[2] for c in combos),
                     "label_totals": sorted({c[0] for c in combos}), "sumsq": sorted({c[1] for c in combos}),
                     "example": "" if combos else "no per-system data reproduce every system's printed numbers"})
        overall = categories_sd_feasibility(n_all, mean_all, sd_all)
        found = overall[overall["ddof"] == ddof]
        rows.append({"system": "all (alone)", "ddof": ddof, "n": n_all, "printed": f"{mean_all} +/- {sd_all}",
                     "feasible": len(found) > 0, "label_totals": sorted(set(found["sum"])),
                     "sumsq": sorted(set(found["sumsq"])), "example": found["example"].iloc[0] if len(found) else ""})
    labels = paper["overall"]["category_labels"]
    rows.append({"system": f"all ({labels} labels)", "ddof": np.nan, "n": n_all, "printed": f"{mean_all}",
                 "feasible": round(labels / n_all, 2) == mean_all, "label_totals": [labels], "sumsq": [],
                 "example": f"{labels} / {n_all} = {labels / n_all:.3f}"})
    return pd.DataFrame(rows)


def analyse_paper_counts(path: str | Path | None = None) -> dict[str, Any]:
    """Recompute Appendix E.1 from the paper's counts with the export code path, beside the printed values.

    Returns
    -------
    dict
        ``counts`` (counts frame), ``summary`` (:func:`summary_table`),
        ``comparison`` (one row per printed number: ``system, measure,
        printed, decimals, recomputed`` in printed units (percent for
        shares), ``abs_difference``, ``within_0_1`` (difference <= 0.1),
        ``matches_printed_precision`` (the recomputed value rounded or
        truncated to the printed decimals is the printed value),
        ``paper_inconsistency`` (why not, else ``""``)), ``fisher``
        (:func:`fisher_tests`), ``categories`` (:func:`paper_categories_check`)
        and ``notes`` (list of str: what does not add up).
    """
    paper = load_paper_counts(path)
    reader = paper.get("reader", "paper")
    counts = paper_counts(path)
    summary = summary_table(counts)
    fisher = fisher_tests(counts)
    categories = paper_categories_check(path)
    lookup = summary.set_index(["system", "measure"])
    rows = []
    for system, printed_values in paper["printed"].items():
        for measure, printed in printed_values.items():
            decimals = _decimals(printed)
            note = ""
            if system == "sae_rad_vs_others":
                edits = fisher[(fisher["outcome"] == "edited_or_deleted") & (fisher["comparator"] == "others pooled")]
                recomputed = 100 * (1 - float(edits["rate_ratio"].iloc[0]))
            elif (system, measure) in lookup.index:
                entry = lookup.loc[(system, measure)]
                recomputed = float(entry["value"]) * (100 if entry["unit"] == "share" else 1)
            else:
                recomputed = float("nan")
                note = "not recomputable: the paper prints no per-system category counts"
            difference = abs(recomputed - float(printed))
            matches = bool(np.isfinite(recomputed) and float(printed) in _round_or_truncate(recomputed, decimals))
            if np.isfinite(recomputed) and not matches:
                note = f"the counts give {recomputed:.{decimals + 2}f}, which does not print as {printed}"
                if measure == "categories_per_edited_sentence" and system == ALL:
                    note += (f" ({paper['overall']['category_labels']} category labels / "
                             f"{paper['overall']['edited']} edited sentences; the printed per-system means x "
                             "edited sentences imply 70 + 70 + 53 = 193 labels)")
            rows.append({"system": system, "measure": measure, "printed": printed, "decimals": decimals,
                         "recomputed": recomputed, "abs_difference": difference,
                         "within_0_1": bool(difference <= 0.1 + 1e-9),
                         "matches_printed_precision": matches, "paper_inconsistency": note})
    comparison = pd.DataFrame(rows)
    notes = [f"{r.system} {r.measure}: {r.paper_inconsistency}" for r in comparison.itertuples()
             if r.paper_inconsistency]
    for row in categories.itertuples():
        if row.feasible:
            continue
        if pd.isna(row.ddof):
            notes.append(f"categories per edited sentence: the category counts give {row.example} labels per "
                         f"edited sentence, which does not print as {row.printed}")
        else:
            notes.append(f"categories per edited sentence, {row.system}: printed {row.printed} is not reproduced by "
                         f"any integer data with ddof={int(row.ddof)}")
    return {"reader": reader, "counts": counts, "summary": summary, "comparison": comparison, "fisher": fisher,
            "categories": categories, "notes": notes}

