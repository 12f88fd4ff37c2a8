"""The book's one table formatter and its parameters table."""

import numpy as np
import pandas as pd
import pytest

from saerad.book.parameters import parameter_table
from saerad.book.tables import format_number, format_percent, format_pvalue, show_table


def test_numbers_are_rounded_to_meaning_never_scientific_or_nan():
    assert format_number(0.375) == "0.375"
    assert format_number(3.750000e-01) == "0.375"
    assert format_number(12.3456) == "12.35"
    assert format_number(1234.5) == "1,234"  # rounded half to even, no decimals above 1,000
    assert format_number(1234) == "1,234"
    assert format_number(np.int64(2048)) == "2,048"
    assert format_number(float("nan")) == "—"
    assert format_number(2.4e-5) == "2.4e-05"  # not 0.000
    assert format_number(0.0) == "0"
    assert format_number(True) == "yes"
    assert format_pvalue(0.0) == "< 0.001" and format_pvalue(0.0004) == "< 0.001"
    assert format_pvalue(0.0312) == "0.031"
    assert format_percent(0.234) == "23.4 %"


def test_table_has_no_index_paper_column_next_to_ours_and_csv_keeps_full_precision(tmp_path):
    table = pd.DataFrame({"finding": ["edema", "nodule"], "auroc": [0.987654, np.nan], "n": [10, 3],
                          "note": ["", "x"], "paper_auroc": [0.9, 0.8]},
                         index=[7, 8])
    shown = show_table(table, tmp_path / "features", "alignment", paper={"auroc": "paper_auroc"},
                       missing={"auroc": "n/a: no test image"})
    html = shown.to_html()
    # our column, then the paper's, labelled as the paper's
    assert shown.headers[:3] == ["finding", "auroc", "paper auroc"]
    assert '<th class="paper num">paper auroc</th>' in html
    assert "0.988" in html and "n/a: no test image" in html and ">7<" not in html  # no index column
    saved = pd.read_csv(tmp_path / "features" / "alignment.csv")
    assert saved["auroc"].iloc[0] == pytest.approx(0.987654)  # the CSV is not rounded
    assert shown.csv_url == "../../_tables/features/alignment.csv" and shown.csv_url in html


def test_counts_with_gaps_show_as_counts_and_html_is_escaped():
    shown = show_table(pd.DataFrame({"dead": [394.0, np.nan], "sentence": ["<b>x</b>", "ok"]}))
    assert shown.cells == [["394", "<b>x</b>"], ["—", "ok"]]  # escaped when written as HTML, below
    assert "&lt;b&gt;x&lt;/b&gt;" in shown.to_html()
    trusted = show_table(pd.DataFrame({"sentence": ["<b>x</b>"]}), html_columns=["sentence"])
    assert "<td><b>x</b></td>" in trusted.to_html()


def test_a_format_naming_a_missing_column_is_an_error_that_names_it():
    with pytest.raises(KeyError, match="'aurok'"):
        show_table(pd.DataFrame({"auroc": [0.5]}), percent=["aurok"])
    with pytest.raises(KeyError, match="paper"):
        show_table(pd.DataFrame({"auroc": [0.5]}), paper={"auroc": "paper_auroc"})


def test_parameter_table_marks_the_values_that_differ_from_the_notebook_defaults():
    from saerad.params import notebook_parameters
    from saerad.paths import REPO_ROOT

    defaults = {name: p.default for name, p in notebook_parameters(REPO_ROOT / "notebooks/01_encode.ipynb").items()}
    namespace = dict(defaults, batch_size=defaults["batch_size"] * 2)
    shown = parameter_table("01_encode.ipynb", namespace)
    assert shown.changed == ["batch_size"]
    assert "1 differ from the defaults (batch_size)" in shown.to_html()
    del namespace["seed"]
    with pytest.raises(KeyError, match="seed"):
        parameter_table("01_encode.ipynb", namespace)
