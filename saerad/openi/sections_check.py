"""The MIMIC-CXR section parser on real report text, checked against Open-i's own section labels.

Open-i stores each report already cut into COMPARISON, INDICATION, FINDINGS
and IMPRESSION. We write every report back out in MIMIC-CXR's free-text
layout (a centred title, then each section as a line ``" NAME:"`` followed by
its text wrapped at 78 characters, every line indented by one space, sections
separated by a blank line) and ask :func:`saerad.mimic.sections.split_sections`
to cut it again. Where the parser's sections differ from the labels, the real
text contains something the parser takes for a header (an upper-case phrase
and a colon at the start of a wrapped line), or a section it cannot see.
"""

from __future__ import annotations

import textwrap

import pandas as pd

from saerad.mimic.sections import clean_text, extract_findings, extract_indication, section_text, split_sections

#: The four Open-i sections and the names the parser gives them.
SECTIONS = {"COMPARISON": "comparison", "INDICATION": "indication", "FINDINGS": "findings", "IMPRESSION": "impression"}


def mimic_layout(sections: dict[str, str | None], width: int = 78) -> str:
    """One report in MIMIC-CXR's free-text layout (sections in Open-i's order, empty ones kept as headers)."""
    lines = ["                                 FINAL REPORT"]
    for label in SECTIONS:
        text = sections.get(label)
        lines.append(f" {label}:")
        if isinstance(text, str) and text.strip():
            lines.extend(" " + line for line in textwrap.wrap(text, width - 1, break_on_hyphens=False, break_long_words=False))
        lines.append(" ")
    return "\n".join(lines) + "\n"


def _outcome(expected: str | None, found: str | None) -> str:
    expected = clean_text(expected) if isinstance(expected, str) and expected.strip() else None
    if expected is None:
        return "absent, none found" if found is None else "absent, text found"
    if found is None:
        return "missed"
    return "same text" if clean_text(found) == expected else "different text"


def section_agreement(reports: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Parse every report in MIMIC-CXR layout and compare with Open-i's sections.

    Parameters
    ----------
    reports
        :func:`saerad.openi.reports.read_reports`'s table.

    Returns
    -------
    (summary, details)
        ``summary``: one row per section (and one for the training text, findings
        else impression, and one for the indication as :func:`extract_indication`
        reads it) with the count of reports in each outcome: ``same text``,
        ``different text``, ``missed``, ``absent, none found``, ``absent, text found``.
        ``details``: one row per report and section whose outcome is not agreement,
        with the expected and parsed text and the headers the parser saw.
    """
    readable = reports[reports["problem"].isna()]
    counts: dict[str, dict[str, int]] = {}
    details = []
    for row in readable.itertuples(index=False):
        labelled = {label: getattr(row, name) for label, name in SECTIONS.items()}
        text = mimic_layout(labelled)
        parsed = split_sections(text, last_paragraph_fallback=False)
        headers = "; ".join(section.header for section in parsed if section.header)
        checks = [(label, labelled[label], section_text(parsed, name)) for label, name in SECTIONS.items()]
        expected_training = labelled["FINDINGS"] if isinstance(labelled["FINDINGS"], str) else labelled["IMPRESSION"]
        checks.append(("training text (findings, else impression)", expected_training, extract_findings(text)[0]))
        checks.append(("indication as the loader reads it", labelled["INDICATION"], extract_indication(text)))
        for name, expected, found in checks:
            outcome = _outcome(expected, found)
            counts.setdefault(name, {})
            counts[name][outcome] = counts[name].get(outcome, 0) + 1
            if outcome in ("different text", "missed", "absent, text found"):
                details.append({"report_id": row.report_id, "section": name, "outcome": outcome,
                                "expected": expected, "parsed": found, "headers_seen": headers})
    outcomes = ["same text", "different text", "missed", "absent, none found", "absent, text found"]
    summary = pd.DataFrame([{"section": name, **{o: counts[name].get(o, 0) for o in outcomes}} for name in counts])
    return summary, pd.DataFrame(details, columns=["report_id", "section", "outcome", "expected", "parsed",
                                                   "headers_seen"])
