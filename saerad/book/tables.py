"""One formatter for every table the book shows.

A chapter calls :func:`show_table` with the full-precision table. The table is written to
``<stage_dir>/<name>.csv`` unchanged (the CSV is the artifact a reader takes numbers from), and what the
page shows is an HTML table with

- no index column;
- numbers rounded to what they mean (three decimals for scores, thousands separators for counts),
  percentages as percentages and p-values as ``< 0.001``;
- missing values as "—", or "n/a: <reason>" where the chapter gives one;
- the paper's values in the column right after ours, under a header that says "paper";
- a link to the CSV (the book's build copies the CSVs next to the pages, ``_tables/<stage>/<name>.csv``).

The HTML is wrapped in ``<div class="saerad-table">``, which the book's style sheet lets scroll inside the
text column with a sticky first column, so the row labels stay in view when a table is wide.

Examples
--------
>>> table = pd.DataFrame({"finding": ["edema"], "auroc": [0.98765], "paper_auroc": [0.9], "share": [0.25]})
>>> html = show_table(table, percent=["share"], paper={"auroc": "paper_auroc"}).to_html()
>>> "0.988" in html and "25.0 %" in html and "paper" in html
True
"""

from __future__ import annotations

import html
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

#: What a missing value shows when the chapter gives no reason.
MISSING = "—"
#: Where the book's build puts the CSVs, relative to a chapter page (``book/chapters/<chapter>.html``).
CSV_URL_ROOT = "../../_tables"

Formatter = Callable[[Any], str]


def format_pvalue(value: Any) -> str:
    """A p-value as a reader expects it: ``< 0.001``, else three decimals; never ``p = 0``."""
    if _is_missing(value):
        return MISSING
    value = float(value)
    if value < 0.001:
        return "< 0.001"
    return f"{value:.3f}"


def format_percent(value: Any, decimals: int = 1) -> str:
    """A share in [0, 1] as a percentage: ``0.234`` → ``23.4 %``."""
    if _is_missing(value):
        return MISSING
    return f"{float(value) * 100:.{decimals}f} %"


def format_number(value: Any, decimals: int | None = None) -> str:
    """Integers with thousands separators; other numbers rounded to ``decimals`` (default by magnitude).

    Without ``decimals``: three decimals below 10, two below 100, one below 1,000, none above; never
    scientific notation, except for magnitudes below 0.0005 that are not zero, which keep two significant
    digits (``2.4e-05``) rather than printing as ``0.000``.
    """
    if _is_missing(value):
        return MISSING
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, numbers.Integral):
        return f"{int(value):,}"
    value = float(value)
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if decimals is None:
        magnitude = abs(value)
        if magnitude == 0:
            return "0"
        if magnitude < 0.0005:
            return f"{value:.1e}"
        decimals = 3 if magnitude < 10 else 2 if magnitude < 100 else 1 if magnitude < 1000 else 0
    return f"{value:,.{decimals}f}"


def _is_missing(value: Any) -> bool:
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    try:
        return bool(isinstance(value, float) and math.isnan(value)) or bool(
            isinstance(value, np.floating) and np.isnan(value)
        )
    except TypeError:
        return False


def _whole_numbers(column: pd.Series) -> bool:
    """True for a float column whose present values are all whole numbers (counts with gaps)."""
    if not pd.api.types.is_float_dtype(column):
        return False
    present = column.dropna()
    return len(present) > 0 and bool(np.all(np.isfinite(present))) and bool(np.all(present == np.round(present))) \
        and bool(np.all(np.abs(present) >= 1) or np.all(present == 0))


def _header(name: Any) -> str:
    text = str(name)
    return text.replace("_", " ") if text.islower() or "_" in text else text


@dataclass
class BookTable:
    """A formatted table: ``to_html()`` gives what the page shows, ``data`` the full-precision table."""

    data: pd.DataFrame
    cells: list[list[str]]
    headers: list[str]
    paper_columns: set[str] = field(default_factory=set)
    numeric_columns: set[str] = field(default_factory=set)
    raw_html_columns: set[str] = field(default_factory=set)
    csv_url: str | None = None
    caption: str | None = None
    css_class: str = ""

    def to_html(self) -> str:
        columns = [str(column) for column in self.data.columns]

        def classes(column: str) -> str:
            names = [name for name, present in (("paper", column in self.paper_columns),
                                                  ("num", column in self.numeric_columns)) if present]
            return f' class="{" ".join(names)}"' if names else ""

        head = "".join(f"<th{classes(c)}>{html.escape(h)}</th>" for c, h in zip(columns, self.headers))
        body = []
        for row in self.cells:
            cells = "".join(
                f"<td{classes(c)}>{value if c in self.raw_html_columns else html.escape(value)}</td>"
                for c, value in zip(columns, row)
            )
            body.append(f"<tr>{cells}</tr>")
        caption = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        source = (f'<p class="saerad-table-source"><a href="{html.escape(self.csv_url)}">'
                  f'{html.escape(self.csv_url.rsplit("/", 1)[-1])}</a> (full precision)</p>' if self.csv_url else "")
        table_class = " ".join(filter(None, ["saerad", self.css_class]))
        return (f'<div class="saerad-table"><table class="{table_class}">{caption}<thead><tr>{head}</tr></thead>'
                f'<tbody>{"".join(body)}</tbody></table>{source}</div>')

    def _repr_html_(self) -> str:
        return self.to_html()

    def __len__(self) -> int:
        return len(self.data)


def show_table(
    table: pd.DataFrame | pd.Series,
    stage_dir: str | os.PathLike | None = None,
    name: str | None = None,
    *,
    columns: Mapping[str, str] | None = None,
    formats: Mapping[str, str | Formatter] | None = None,
    percent: Sequence[str] = (),
    pvalues: Sequence[str] = (),
    decimals: Mapping[str, int] | None = None,
    paper: Mapping[str, str] | Sequence[str] | None = None,
    missing: str | Mapping[str, str] = MISSING,
    html_columns: Sequence[str] = (),
    index: bool = False,
    caption: str | None = None,
    css_class: str = "",
    write_csv: bool = True,
) -> BookTable:
    """Write ``table`` as ``<stage_dir>/<name>.csv`` (full precision) and return it formatted for the page.

    Parameters
    ----------
    table
        The table as computed. A Series becomes two columns (its index and its values).
    stage_dir, name
        Where the CSV goes (``artifacts/<profile>/<stage>``) and its name without ``.csv``. Without them
        nothing is written and the page shows no CSV link.
    columns
        Header text for some columns (default: the column name with underscores as spaces).
    formats
        Per column, a format string (``"{:.2f}"``) or a function of the value.
    percent, pvalues
        Columns holding shares in [0, 1] (shown as ``23.4 %``) and p-values (``< 0.001``).
    decimals
        Per column, the number of decimals (overrides the rounding by magnitude).
    paper
        The paper's columns: a mapping ``our column -> paper column`` (the paper column is moved right after
        ours) or a list of paper columns left in place. Their header gets "(paper)" unless it already says
        "paper".
    missing
        Text for a missing value: one text for all columns, or per column (e.g.
        ``{"auroc": "n/a: finding absent from the test split"}``); "—" elsewhere.
    html_columns
        Columns whose values are trusted HTML (thumbnails, coloured sentences) and are not escaped.
    index
        Keep the index as the first column (for tables whose index is a label).
    caption, css_class
        A caption above the table, and an extra class on the ``<table>``.
    write_csv
        Set False for a table that is only a view of a CSV written elsewhere (then give no ``name``).
    """
    if isinstance(table, pd.Series):
        table = table.reset_index()
    if index:
        table = table.reset_index()
    data = table.copy()
    data.columns = [str(column) for column in data.columns]
    if stage_dir is not None and name is not None and write_csv:
        from saerad.io import write_table

        write_table(Path(stage_dir) / f"{name}.csv", table, index=False)

    paper_columns: set[str] = set()
    if isinstance(paper, Mapping):
        order = [c for c in data.columns if c not in set(paper.values())]
        for ours, theirs in paper.items():
            if ours not in data.columns or theirs not in data.columns:
                raise KeyError(f"show_table: paper={{{ours!r}: {theirs!r}}} names a column the table lacks; "
                               f"columns are {list(data.columns)}")
            order.insert(order.index(ours) + 1, theirs)
        data = data[order]
        paper_columns = set(paper.values())
    elif paper:
        missing_columns = [c for c in paper if c not in data.columns]
        if missing_columns:
            raise KeyError(f"show_table: paper columns {missing_columns} are not in the table; columns are "
                           f"{list(data.columns)}")
        paper_columns = set(paper)

    formats = dict(formats or {})
    decimals = dict(decimals or {})
    for column in list(formats) + list(decimals) + list(percent) + list(pvalues) + list(html_columns):
        if column not in data.columns:
            raise KeyError(f"show_table: a format names column {column!r}, which the table lacks; columns are "
                           f"{list(data.columns)}")

    def formatter(column: str) -> Formatter:
        if column in formats:
            spec = formats[column]
            return (lambda v, s=spec: MISSING if _is_missing(v) else s.format(v)) if isinstance(spec, str) else spec
        if column in percent:
            return lambda v: format_percent(v, decimals.get(column, 1))
        if column in pvalues:
            return format_pvalue
        if column in decimals:
            return lambda v: format_number(v, decimals[column])
        if _whole_numbers(data[column]):
            # A count column with a missing value is stored as floats; show it as counts.
            return lambda v: format_number(int(v)) if isinstance(v, (numbers.Number, np.number)) else str(v)
        return lambda v: format_number(v) if isinstance(v, (numbers.Number, np.number)) else (
            MISSING if _is_missing(v) else str(v))

    def missing_text(column: str) -> str:
        if isinstance(missing, Mapping):
            return missing.get(column, MISSING)
        return missing

    cells = []
    numeric = {c for c in data.columns if pd.api.types.is_numeric_dtype(data[c]) and
               not pd.api.types.is_bool_dtype(data[c])}
    numeric |= set(percent) | set(pvalues)
    format_of = {column: formatter(column) for column in data.columns}
    for row in data.itertuples(index=False, name=None):
        cells.append([missing_text(c) if _is_missing(v) else format_of[c](v) for c, v in zip(data.columns, row)])

    headers = []
    for column in data.columns:
        text = (columns or {}).get(column, _header(column))
        if column in paper_columns and "paper" not in text.lower():
            text = f"{text} (paper)"
        headers.append(text)

    csv_url = None
    if stage_dir is not None and name is not None:
        csv_url = f"{CSV_URL_ROOT}/{Path(stage_dir).name}/{name}.csv"
    return BookTable(data=data, cells=cells, headers=headers, paper_columns=paper_columns,
                     numeric_columns=numeric, raw_html_columns=set(html_columns), csv_url=csv_url,
                     caption=caption, css_class=css_class)
