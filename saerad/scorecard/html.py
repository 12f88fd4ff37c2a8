"""The scorecard as an HTML table for the book page (its own small renderer: one row per claim)."""

from __future__ import annotations

from html import escape

import pandas as pd

from saerad.scorecard.links import SECTIONS
from saerad.scorecard.verdicts import VERDICTS

HEADINGS = ("Claim", "The paper", "This run", "Verdict", "Measured in")


def verdict_class(verdict: str) -> str:
    """CSS class of a verdict, e.g. ``verdict-not-reproduced``."""
    if verdict not in VERDICTS:
        raise ValueError(f"unknown verdict {verdict!r}; expected one of {VERDICTS}")
    return "verdict-" + verdict.replace(" ", "-")


#: Colours of the verdicts (background of the verdict cell); the page's text says them in words too.
STYLE = """<style>
table.scorecard { border-collapse: collapse; font-size: 0.85em; width: 100%; }
table.scorecard th, table.scorecard td { border-bottom: 1px solid #ddd; padding: 0.35em 0.5em; text-align: left;
  vertical-align: top; }
table.scorecard td.claim .where { color: #666; font-size: 0.9em; display: block; }
table.scorecard td.verdict .label { font-weight: 600; display: block; }
table.scorecard td.verdict .reason { font-size: 0.9em; }
table.scorecard td.verdict-reproduced { background: #dff0d8; }
table.scorecard td.verdict-partly { background: #fcf3d0; }
table.scorecard td.verdict-not-reproduced { background: #f6d5d5; }
table.scorecard td.verdict-not-testable-in-this-profile { background: #eeeeee; }
table.scorecard td.verdict-not-run { background: #ffffff; border: 1px dashed #999; }
</style>"""


def scorecard_html(scorecard: pd.DataFrame, style: bool = True) -> str:
    """``<div class="saerad-table"><table class="scorecard">`` with one row per claim.

    Each row's cells carry the classes ``claim``, ``paper``, ``ours``,
    ``verdict`` (plus :func:`verdict_class`) and ``section`` (a link to the
    chapter section that measures the claim). Every text is escaped.
    """
    required = ("id", "claim", "where", "paper", "ours", "verdict", "reason", "rule", "section", "href")
    missing = [column for column in required if column not in scorecard.columns]
    if missing:
        raise ValueError(f"scorecard lacks column(s) {missing}")
    rows = []
    for record in scorecard.to_dict("records"):
        verdict = record["verdict"]
        rows.append(
            f'<tr id="claim-{escape(record["id"])}">'
            f'<td class="claim">{escape(record["claim"])}<span class="where">{escape(record["where"])}</span></td>'
            f'<td class="paper">{escape(record["paper"])}</td>'
            f'<td class="ours">{escape(record["ours"])}</td>'
            f'<td class="verdict {verdict_class(verdict)}" title="rule: {escape(record["rule"])}">'
            f'<span class="label">{escape(verdict)}</span><span class="reason">{escape(record["reason"])}</span></td>'
            f'<td class="section"><a href="{escape(record["href"])}">{escape(_section_text(record["section"]))}</a></td>'
            "</tr>")
    head = "".join(f"<th>{escape(heading)}</th>" for heading in HEADINGS)
    return ((STYLE if style else "") + '<div class="saerad-table"><table class="scorecard">'
            f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


_CHAPTERS = {"02_sae.ipynb": "SAE", "03_features.ipynb": "Features", "04_reports.ipynb": "Reports",
             "05_metrics.ipynb": "Metrics", "06_counterfactual.ipynb": "Counterfactuals",
             "07_reader_study.ipynb": "Reader study"}


def _section_text(label: str) -> str:
    """The link's text: chapter and heading of the section (the label itself if unknown)."""
    section = SECTIONS.get(label)
    if section is None:
        return label
    return f"{_CHAPTERS.get(section.notebook, section.page)}: {section.heading}"
