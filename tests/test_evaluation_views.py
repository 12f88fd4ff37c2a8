"""The metrics chapter's side-by-side views of Tables 1 and 2: ours next to the paper's."""

from __future__ import annotations

import math

import pandas as pd

from saerad.evaluation import NN_LABEL, ORACLE_METHOD, paper_table1, paper_table2
from saerad.evaluation.schema import NOT_MEASURED, table_row
from saerad.evaluation.tables import paper_other_systems, table1_side_by_side, table2_side_by_side

SAE = "SAE-Rad (offline composer)"


def _table1():
    rows = [table_row(SAE, "Ma-5", 40.0, 35.0, 45.0, method="rule labeler", n_studies=10),
            table_row(NN_LABEL, "Ma-5", 30.0, 25.0, 35.0, method="rule labeler", n_studies=10),
            table_row(SAE, "Ma-5", source=NOT_MEASURED, method="CheXbert", note="n/a: no checkpoint"),
            table_row(SAE, "BL4", 2.0, 1.0, 3.0, method="pycocoevalcap", n_studies=10)]
    return pd.concat([pd.DataFrame(rows), paper_table1()], ignore_index=True)


def test_table1_puts_the_paper_value_beside_ours_on_the_row_of_its_method():
    view = table1_side_by_side(_table1())
    assert list(view.columns) == ["metric", "method", SAE, "SAE-Rad (paper)", "nearest neighbour",
                                  "nearest neighbour (paper)"]
    rows = view.set_index(["metric", "method"])
    assert rows.loc[("Ma-5", "rule labeler"), SAE] == "40.0 [35.0, 45.0]"
    assert math.isnan(rows.loc[("Ma-5", "rule labeler"), "SAE-Rad (paper)"])  # the paper used CheXbert
    assert rows.loc[("Ma-5", "CheXbert"), SAE] == "n/a"
    assert rows.loc[("Ma-5", "CheXbert"), "SAE-Rad (paper)"] == 47.2
    assert rows.loc[("BL4", "word overlap"), "nearest neighbour (paper)"] == 3.1  # same family as pycocoevalcap
    assert rows.loc[("BL4", "word overlap"), "nearest neighbour"] == ""


def test_paper_other_systems_is_one_row_per_metric():
    other = paper_other_systems(_table1())
    assert list(other.columns) == ["metric", "method", "SAE-Rad", "CheXagent", "MAIRA-1", "MAIRA-2"]
    assert len(other) == 9 and other.iloc[0]["metric"] == "RadFact F1"
    assert other.set_index("metric").loc["BL4", "MAIRA-2"] == 23.1


def test_table2_pairs_sweep_sizes_with_the_papers():
    labels = {name: f"SAE-Rad {name} (offline composer)" for name in ("x4", "x8", "x16", "x4_dense", "x8_dense",
                                                                      "x16_dense")}
    rows = []
    for number, label in enumerate([*labels.values(), SAE]):
        for metric, value in (("RadFact precision", 50.0 + number), ("RadFact recall", 40.0),
                              ("RadFact F1", 44.0 + number)):
            rows.append(table_row(label, metric, value, value - 1, value + 1, method=ORACLE_METHOD, n_studies=10))
    rows.append(table_row("SAE-Rad (with indication)", "RadFact F1", source=NOT_MEASURED, note="n/a: offline"))
    table = pd.concat([pd.DataFrame(rows), paper_table2()], ignore_index=True)
    view = table2_side_by_side(table, labels, ORACLE_METHOD, main_label=SAE).set_index("ours")
    assert view.loc["x4", "paper"] == "x32" and view.loc["x8", "paper"] == "x64" and view.loc["x16", "paper"] == "x128"
    assert view.loc["x8 dense", "paper"] == "x64 dense"
    assert view.loc["x8", "F1"] == 45.0 and view.loc["x8", "paper_F1"] == 33.83
    assert view.loc["x8", "ours_F1_ci"] == "[44.0, 46.0]"
    assert view.loc["main SAE", "F1"] == 50.0 and view.loc["main SAE", "measured"]
    assert not view.loc["with indication", "measured"] and view.loc["with indication", "paper_F1"] == 35.18
