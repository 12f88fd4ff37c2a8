"""Numbers of a solution written as the prose and its tables show them.

A solution's values are glued with the book's number format, which picks decimals by magnitude (``2.9``
becomes ``2.900``). A value whose meaning fixes its precision (a mean of sentences, a percentage, an id) is
returned as text instead, formatted here.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def fixed(value: float, decimals: int) -> str:
    """``value`` with exactly ``decimals`` decimals and thousands separators; "—" when missing."""
    value = float(value)
    return "—" if value != value else f"{value:,.{decimals}f}"


def table_cells(rows: Sequence[Mapping[str, Any]], decimals: Mapping[str, int]) -> list[dict[str, Any]]:
    """``rows`` with the columns named in ``decimals`` written as text with that many decimals."""
    return [{key: fixed(value, decimals[key]) if key in decimals else value for key, value in row.items()}
            for row in rows]
