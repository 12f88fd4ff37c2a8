"""Tables 1 and 2 as long data frames with bootstrap intervals, paired differences, and their book views."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from saerad.evaluation.paper_values import PAPER_SAE_RAD, paper_table1, paper_table2
from saerad.evaluation.schema import (CONFIG_LABELS, NN_LABEL, NOT_MEASURED, ORACLE_METHOD, TABLE1_METRICS,
                                      TABLE2_METRICS, TABLE_COLUMNS, table_row)
from saerad.evaluation.scoring import ScoringSet, SystemScores, prefill
from saerad.metrics.bootstrap import bootstrap_ci, paired_difference



def table1(scores: Sequence[SystemScores], n_resamples: int = 1000, seed: int = 0,
           include_paper: bool = True) -> pd.DataFrame:
    """Table 1: every metric of every system with a 95 % bootstrap interval over its studies (in %).

    Parameters
    ----------
    scores
        From :func:`score_system`, one per system/config.
    include_paper
        Append :func:`paper_table1` (``source="paper"``).
    """
    rows = []
    for system in scores:
        for measure in system.measures:
            if measure.na is not None:
                rows.append(table_row(system.label, measure.metric, source=NOT_MEASURED, method=measure.method,
                                      n_studies=system.n_studies, note=measure.na))
                continue
            prefill(measure.statistic, system.n_studies, n_resamples, seed)
            value, low, high = bootstrap_ci(measure.statistic, n_studies=system.n_studies,
                                            n_resamples=n_resamples, seed=seed)
            rows.append(table_row(system.label, measure.metric, 100 * value, 100 * low, 100 * high, "measured",
                                  measure.method, system.n_studies, measure.note))
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    if include_paper:
        table = pd.concat([table, paper_table1()], ignore_index=True)
    return _integer_counts(table)


def paired_differences(scores: Sequence[SystemScores], sets: Mapping[str, ScoringSet], baseline: str = NN_LABEL,
                       n_resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Each system minus ``baseline`` on the same resampled studies: difference (in points), CI, bootstrap p.

    Both systems must have been scored on the same studies (``generated.jsonl``
    has a line for every test study and system, so they are); otherwise the
    comparison raises rather than pair unrelated studies.
    """
    by_label = {s.label: s for s in scores}
    if baseline not in by_label:
        raise ValueError(f"paired_differences: no system {baseline!r} (have {list(by_label)})")
    base = by_label[baseline]
    base_measures = {(m.metric, m.method): m for m in base.measures if m.na is None}
    rows = []
    for system in scores:
        if system.label == baseline:
            continue
        if not np.array_equal(sets[system.label].study_ids, sets[baseline].study_ids):
            raise ValueError(f"paired_differences: {system.label!r} and {baseline!r} were scored on different "
                             "studies; pairing needs the same studies in the same order")
        for measure in system.measures:
            other = base_measures.get((measure.metric, measure.method))
            if measure.na is not None or other is None:
                continue
            for statistic in (measure.statistic, other.statistic):
                prefill(statistic, system.n_studies, n_resamples, seed)
            result = paired_difference(measure.statistic, other.statistic, n_studies=system.n_studies,
                                       n_resamples=n_resamples, seed=seed)
            rows.append({"comparison": f"{system.label} − {baseline}", "metric": measure.metric,
                         "method": measure.method, "difference": 100 * result.difference,
                         "ci_low": 100 * result.ci_low, "ci_high": 100 * result.ci_high,
                         "p_value": result.p_value, "n_studies": system.n_studies, "n_resamples": n_resamples})
    return pd.DataFrame(rows, columns=["comparison", "metric", "method", "difference", "ci_low", "ci_high",
                                       "p_value", "n_studies", "n_resamples"])


def table2(scores: Sequence[SystemScores], configs_expected: Sequence[str] = tuple(CONFIG_LABELS),
           sets: Mapping[str, ScoringSet] | None = None, missing_reason: str = "", n_resamples: int = 1000,
           seed: int = 0, include_paper: bool = True) -> pd.DataFrame:
    """Table 2: RadFact precision / recall / F1 (in %) of each SAE-Rad configuration.

    Measured rows come from the RadFact judge and, on SynthCXR, the oracle.  A
    configuration of ``configs_expected`` absent from ``generated.jsonl``
    gets n/a rows saying so (``missing_reason`` explains why, e.g. no LLM);
    this needs ``sets`` (:func:`scoring_sets`), which says each system's configuration.
    F1 is the harmonic mean of mean precision and mean recall, as in the paper.
    """
    from saerad.metrics.radfact import radfact_summary

    rows = []
    present = {sets[s.label].config for s in scores if sets is not None and s.label in sets}
    for system in scores:
        if sets is not None and sets[system.label].system != "sae_rad":
            continue
        if sets is None and not system.label.startswith("SAE-Rad"):
            continue
        for method, table in _radfact_tables(system):
            if table is None:
                continue
            summary = radfact_summary(table.assign(system=system.label), n_resamples=n_resamples, seed=seed)
            for record, metric in zip(summary.to_dict("records"), TABLE2_METRICS):
                rows.append(table_row(system.label, metric, record["value"], record["ci_low"], record["ci_high"],
                                      "measured", method, system.n_studies))
    for config in configs_expected if sets is not None else ():  # without sets the configs are unknown
        if config in present:
            continue
        reason = f"n/a: no '{config}' reports in generated.jsonl" + (f" ({missing_reason})" if missing_reason else "")
        for metric in TABLE2_METRICS:
            rows.append(table_row(f"SAE-Rad ({CONFIG_LABELS[config]})", metric, source=NOT_MEASURED, note=reason))
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
    if include_paper:
        table = pd.concat([table, paper_table2()], ignore_index=True)
    return _integer_counts(table)


def _integer_counts(table: pd.DataFrame) -> pd.DataFrame:
    """``n_studies`` as a nullable integer (paper rows have none), so the CSV reads 485, not 485.0."""
    return table.assign(n_studies=table["n_studies"].astype("Int64"))


def _radfact_tables(system: SystemScores):
    return [(system.radfact_method, system.radfact), (ORACLE_METHOD, system.oracle)]


def cell_text(record: Mapping, digits: int = 1) -> str:
    """``value [ci_low, ci_high]``, a bare value (paper numbers), or ``n/a``."""
    value, low, high = (float(record[k]) for k in ("value", "ci_low", "ci_high"))
    if record.get("source") == NOT_MEASURED or not np.isfinite(value):
        return "n/a"
    if np.isfinite(low) and np.isfinite(high):
        return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"
    return f"{value:.{digits}f}"


def method_family(method: str) -> str:
    """The row a method's numbers go to in :func:`table1_view`.

    ``"LLM judge (Llama3-70B-Instruct)"`` -> ``"LLM judge"`` (the paper's judge
    and ours share a row) and the paper's unnamed BLEU/ROUGE/METEOR
    implementation shares the ``pycocoevalcap`` row; every other method keeps
    its own row.
    """
    if method.startswith("LLM judge"):
        return "LLM judge"
    if method.startswith("word overlap") or method == "pycocoevalcap":
        return "word overlap"
    return method


SOURCE_HEADINGS = {"measured": "measured here", NOT_MEASURED: "measured here", "paper": "reported in the paper"}


def table1_view(table: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """Table 1 for reading: rows (metric, method), columns (measured here | reported in the paper, system).

    Putting methods in rows keeps numbers that were obtained differently
    apart: our rule labeler's CheXpert F1 never shares a cell row with the
    paper's CheXbert values, nor the offline RadFact approximation with the
    paper's Llama-3 judge.  Empty cells: that system has no such number.
    """
    cells: dict[tuple, dict] = {}
    columns: list[tuple] = []
    for record in table.to_dict("records"):
        row = (record["metric"], method_family(record["method"]))
        column = (SOURCE_HEADINGS[record["source"]], record["system"])
        if column not in columns:
            columns.append(column)
        cells.setdefault(row, {})[column] = cell_text(record, digits)
    metric_order = {m: k for k, m in enumerate(TABLE1_METRICS)}
    rows = sorted(cells, key=lambda r: (metric_order.get(r[0], len(metric_order)), list(cells).index(r)))
    columns.sort(key=lambda c: c[0] != SOURCE_HEADINGS["measured"])
    view = pd.DataFrame([[cells[r].get(c, "") for c in columns] for r in rows],
                        index=pd.MultiIndex.from_tuples(rows, names=["metric", "method"]),
                        columns=pd.MultiIndex.from_tuples(columns, names=["source", "system"]))
    return view


def table2_view(table: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """Table 2 for reading: rows (system, source · method), columns precision / recall / F1."""
    cells: dict[tuple, dict] = {}
    for record in table.to_dict("records"):
        source = SOURCE_HEADINGS[record["source"]]
        row = (record["system"], f"{source} · {record['method']}" if record["method"] else source)
        cells.setdefault(row, {})[record["metric"]] = cell_text(record, digits)
    rows = sorted(cells, key=lambda r: (not r[1].startswith(SOURCE_HEADINGS["measured"]), list(cells).index(r)))
    return pd.DataFrame([[cells[r].get(m, "") for m in TABLE2_METRICS] for r in rows],
                        index=pd.MultiIndex.from_tuples(rows, names=["system", "source · method"]),
                        columns=list(TABLE2_METRICS))


def na_reasons(table: pd.DataFrame) -> pd.DataFrame:
    """The distinct reasons behind the n/a cells of a long table."""
    na = table[table["source"] == NOT_MEASURED]
    return (na.groupby(["metric", "method", "note"], sort=False)["system"].agg(lambda s: ", ".join(dict.fromkeys(s)))
            .reset_index().rename(columns={"note": "reason", "system": "systems"}))


def direction_against_paper(differences: pd.DataFrame, paper: pd.DataFrame | None = None,
                            paper_system: str = PAPER_SAE_RAD, paper_baseline: str = NN_LABEL) -> pd.DataFrame:
    """Does each measured difference point the same way as the paper's SAE-Rad minus its baseline?

    Parameters
    ----------
    differences
        From :func:`paired_differences` (in points).
    paper
        The paper's Table 1 (default :func:`paper_table1`).

    Returns
    -------
    DataFrame
        ``metric, method, difference, ci_low, ci_high, paper_difference,
        measured_direction, paper_direction, agrees``: directions are
        ``"SAE-Rad ahead"``, ``"baseline ahead"`` or, for a measured interval
        that contains 0, ``"no clear difference"`` (``agrees`` is then None).
    """
    paper = paper_table1() if paper is None else paper
    values = paper.set_index(["system", "metric"])["value"]
    rows = []
    for record in differences.to_dict("records"):
        paper_difference = float(values[(paper_system, record["metric"])] - values[(paper_baseline, record["metric"])])
        if record["ci_low"] > 0:
            measured = "SAE-Rad ahead"
        elif record["ci_high"] < 0:
            measured = "baseline ahead"
        else:
            measured = "no clear difference"
        in_paper = "SAE-Rad ahead" if paper_difference > 0 else "baseline ahead"
        rows.append({"metric": record["metric"], "method": record["method"], "difference": record["difference"],
                     "ci_low": record["ci_low"], "ci_high": record["ci_high"], "paper_difference": paper_difference,
                     "measured_direction": measured, "paper_direction": in_paper,
                     "agrees": None if measured == "no clear difference" else measured == in_paper})
    return pd.DataFrame(rows)



def sae_sweep_pattern(table2: pd.DataFrame, labels_by_sae: Mapping[str, str], method: str) -> dict:
    """Does a measured SAE sweep show the paper's Table 2 pattern?

    The paper finds the middle expansion factor best (×64 between ×32 and
    ×128) and every dense SAE worse than the sparse one of the same size.

    Parameters
    ----------
    table2
        From :func:`table2`.
    labels_by_sae
        SAE folder name (``"x4"``, ``"x8_dense"``, ...) -> its system label in ``table2``.
    method
        Which measurement to read (e.g. the oracle, or the RadFact judge).

    Returns
    -------
    dict
        ``f1`` (folder -> RadFact F1), ``best`` (folder), ``middle_best``
        (True/False, None without three sparse sizes) and ``dense_worse``
        (factor -> True/False for every size with both variants).
    """
    rows = table2[(table2["metric"] == "RadFact F1") & (table2["method"] == method) & (table2["source"] == "measured")]
    value_of = rows.set_index("system")["value"]
    f1 = {sae: float(value_of[label]) for sae, label in labels_by_sae.items() if label in value_of.index}
    if not f1:
        raise ValueError(f"sae_sweep_pattern: no measured RadFact F1 by {method!r} for {list(labels_by_sae.values())}")
    sparse = sorted((sae for sae in f1 if not sae.endswith("_dense")), key=lambda sae: int(sae.strip("x")))
    middle_best = None
    if len(sparse) >= 3:
        inner = sparse[1:-1]
        middle_best = max(sparse, key=f1.get) in inner
    dense_worse = {sae: f1[f"{sae}_dense"] < f1[sae] for sae in sparse if f"{sae}_dense" in f1}
    return {"f1": f1, "best": max(f1, key=f1.get), "middle_best": middle_best, "dense_worse": dense_worse}


#: Paper systems of Table 1 that have no counterpart measured here (quoted beside ours in their own table).
PAPER_ONLY_SYSTEMS = ("CheXagent", "MAIRA-1", "MAIRA-2")


def _short_system(label: str) -> str:
    return "nearest neighbour" if label == NN_LABEL else label


def table1_side_by_side(table: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """Table 1 with each of our systems' column followed by the paper's value for the same system.

    Rows are (metric, method family) as in :func:`table1_view`, so a number measured with our rule labeler
    never shares a row with the paper's CheXbert number: where the paper used another method, its value sits
    on that method's row, next to our "n/a" or "—". Columns: ``metric``, ``method``, then per measured
    system its text (value and 95 % interval, or "n/a") and, after the last SAE-Rad configuration and after
    the baseline, the paper's SAE-Rad and baseline values (floats, NaN where the paper has none). The
    paper's other systems are in :func:`paper_other_systems`.
    """
    measured = table[table["source"] != "paper"]
    paper = table[table["source"] == "paper"]
    ours = list(dict.fromkeys(measured["system"]))
    sae_systems = [s for s in ours if s != NN_LABEL]
    columns: list[tuple[str, str]] = [("ours", s) for s in sae_systems] + [("paper", PAPER_SAE_RAD)]
    if NN_LABEL in ours:
        columns += [("ours", NN_LABEL), ("paper", NN_LABEL)]
    cells: dict[tuple, dict] = {}
    for record in measured.to_dict("records"):
        cells.setdefault((record["metric"], method_family(record["method"])), {})[("ours", record["system"])] = \
            cell_text(record, digits)
    for record in paper.to_dict("records"):
        if record["system"] in (PAPER_SAE_RAD, NN_LABEL):
            cells.setdefault((record["metric"], method_family(record["method"])), {})[("paper", record["system"])] = \
                float(record["value"])
    metric_order = {m: k for k, m in enumerate(TABLE1_METRICS)}
    rows = sorted(cells, key=lambda r: (metric_order.get(r[0], len(metric_order)), list(cells).index(r)))
    names = {column: (_short_system(column[1]) if column[0] == "ours" else
                      ("SAE-Rad (paper)" if column[1] == PAPER_SAE_RAD else "nearest neighbour (paper)"))
             for column in columns}
    records = []
    for row in rows:
        record = {"metric": row[0], "method": row[1]}
        for column in columns:
            value = cells[row].get(column)
            record[names[column]] = (float("nan") if value is None else value) if column[0] == "paper" else (value or "")
        records.append(record)
    return pd.DataFrame(records, columns=["metric", "method", *names.values()])


def paper_other_systems(table: pd.DataFrame, systems: Sequence[str] = PAPER_ONLY_SYSTEMS) -> pd.DataFrame:
    """The paper's Table 1 values of SAE-Rad and the systems not measured here, one row per metric."""
    paper = table[table["source"] == "paper"]
    wanted = [PAPER_SAE_RAD, *systems]
    wide = paper[paper["system"].isin(wanted)].pivot_table(index=["metric", "method"], columns="system",
                                                           values="value", aggfunc="first", sort=False)
    wide = wide[[s for s in wanted if s in wide.columns]].reset_index()
    order = {m: k for k, m in enumerate(TABLE1_METRICS)}
    wide = wide.sort_values("metric", key=lambda column: column.map(order), kind="stable").reset_index(drop=True)
    return wide.rename(columns={PAPER_SAE_RAD: "SAE-Rad"})


def _sweep_role(name: str) -> tuple[bool, int]:
    """(dense, expansion factor) of a sweep SAE folder name such as ``x8`` or ``x8_dense``."""
    dense = name.endswith("_dense")
    return dense, int(name.removesuffix("_dense").strip("x"))


def table2_side_by_side(table: pd.DataFrame, labels_by_sae: Mapping[str, str], method: str,
                        main_label: str | None = None) -> pd.DataFrame:
    """Table 2 with our SAE sweep next to the paper's rows of the same role.

    Our sweep's sparse SAEs, smallest to largest, stand beside the paper's ×32, ×64 and ×128 (and the
    dense ones beside the paper's dense ones); then the main SAE beside the paper's ×64; then the
    auxiliary-text rows (ours n/a unless a language model wrote reports). Returns ``ours, paper,
    precision, paper_precision, recall, paper_recall, F1, paper_F1`` (our values from ``method``, in %) and
    ``ours_F1_ci`` (the interval of our F1).
    """
    paper = table[table["source"] == "paper"].pivot_table(index="system", columns="metric", values="value",
                                                          aggfunc="first")
    ours = table[(table["source"] == "measured") & (table["method"] == method)]
    ours_values = ours.pivot_table(index="system", columns="metric", values="value", aggfunc="first")
    ours_ci = ours[ours["metric"] == "RadFact F1"].set_index("system")[["ci_low", "ci_high"]]
    paper_sizes = ("x32", "x64", "x128")
    pairs: list[tuple[str | None, str, str | None]] = []  # (our label, our name, paper system)
    for dense in (False, True):
        names = sorted((n for n in labels_by_sae if _sweep_role(n)[0] == dense), key=lambda n: _sweep_role(n)[1])
        for position, name in enumerate(names):
            paper_size = paper_sizes[round(position * (len(paper_sizes) - 1) / max(len(names) - 1, 1))] \
                if len(names) > 1 else "x64"
            pairs.append((labels_by_sae[name], name.replace("_", " "),
                          f"SAE-Rad {paper_size}{' dense' if dense else ''}"))
    if main_label is not None:
        pairs.append((main_label, "main SAE", "SAE-Rad x64"))
    for config, paper_system in (("with indication", "SAE-Rad x64 /w inds (row 8)"),
                                 ("with indication + prior reports", "SAE-Rad x64 /w inds + prev. reps")):
        label = next((s for s in dict.fromkeys(table["system"]) if s.endswith(f"{config})")), None)
        pairs.append((label, config, paper_system))
    records = []
    for label, name, paper_system in pairs:
        record = {"ours": name, "paper": paper_system.removeprefix("SAE-Rad ")}
        for metric, column in zip(TABLE2_METRICS, ("precision", "recall", "F1")):
            value = ours_values.loc[label, metric] if label in ours_values.index and metric in ours_values.columns \
                else float("nan")
            record[column] = float(value)
            record[f"paper_{column}"] = float(paper.loc[paper_system, metric]) if paper_system in paper.index \
                else float("nan")
        low, high = (ours_ci.loc[label] if label in ours_ci.index else (float("nan"), float("nan")))
        record["ours_F1_ci"] = (f"[{float(low):.1f}, {float(high):.1f}]" if np.isfinite(float(low)) else "")
        record["measured"] = label is not None and label in ours_values.index
        records.append(record)
    return pd.DataFrame(records, columns=["ours", "paper", "precision", "paper_precision", "recall", "paper_recall",
                                          "F1", "paper_F1", "ours_F1_ci", "measured"])
