"""Split a MIMIC-CXR free-text report into named sections.

This follows the rules of the official MIMIC-CXR section parser (the
``section_parser.py`` of the MIT-LCP ``mimic-cxr`` code), re-expressed here:

* a section starts at a line that begins with one space and an upper-case
  header followed by a colon (``"\\n FINDINGS:"``); the text before the first
  header is the ``preamble``;
* header names are lower-cased and normalised: frequent variants and
  misspellings map to a canonical name, a header containing a main section
  name (``impression``, ``findings``, ``history``, ``comparison``,
  ``addendum``) takes that name, and a header that describes the whole study
  (``"CHEST, PA AND LATERAL"``) counts as ``findings``;
* empty ``findings``/``impression`` sections are dropped;
* if neither ``findings`` nor ``impression`` exists, the last paragraph
  (paragraphs are separated by ``"\\n \\n"``) may serve as
  ``last_paragraph``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Canonical name -> header variants seen in MIMIC-CXR (including the
# misspellings the official parser lists).
_VARIANTS: dict[str, tuple[str, ...]] = {
    "preamble": ("preamble",),
    "impression": (
        "impression", "conclusion", "findings and impression", "findings/impression",
        "findings/ impression", "impresson", "imprression", "imoression", "impressoin",
        "imprssion", "impresion", "imperssion", "mpression", "impession",
    ),
    "findings": (
        "findings", "finding", "findins", "findindgs", "findgings", "findngs", "findnings",
        "finidngs", "reference findings", "chest, two views",
    ),
    "comparison": (
        "comparison", "comparisons", "reference exam", "comparison exam", "comparison film",
        "comparision", "comparsion", "comparrison", "comparisions",
    ),
    "indication": (
        "indication", "reason for examination", "reason for exam", "clinical indication", "idication",
        # The official table sends "ndication" to impression; it is plainly a
        # clipped "indication", so we keep it with the indication.
        "ndication",
    ),
    "history": ("history", "clinical history", "clinical information", "patient history", "pfi"),
    "examination": ("examination", "exam", "type of examination"),
    "technique": ("technique",),
    "notification": ("notification",),
    "recommendations": ("recommendation(s)", "recommendations", "recommendation"),
    "addendum": ("addendum",),
    "date": ("date",),
    "comment": ("comment",),
    "wet read": ("wet read", "wetread"),
}
_CANONICAL = {variant: name for name, variants in _VARIANTS.items() for variant in variants}
_MAIN_SECTIONS = ("impression", "findings", "history", "comparison", "addendum")
# Headers that name the radiograph itself introduce the description of it.
_STUDY_DESCRIPTION = re.compile(
    r"(chest|portable|pa and lateral|lateral and pa|ap and lateral|lateral and ap|frontal and|"
    r"two views|frontal view|pa view|ap view|one view|lateral view|bone window|frontal upright|"
    r"frontal semi-upright|ribs|pa and lat)"
)
_HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s", re.DOTALL)
_PARAGRAPH_BREAK = "\n \n"


@dataclass(frozen=True)
class Section:
    """One section of a report: canonical name, raw header, text, offset."""

    name: str
    header: str
    text: str
    start: int


def normalise_section_name(header: str) -> str:
    """Map a raw header (any case) to its canonical section name."""
    name = header.lower().strip()
    if name in _CANONICAL:
        return _CANONICAL[name]
    for main in _MAIN_SECTIONS:
        if main in name:
            return main
    if _STUDY_DESCRIPTION.search(name):
        return "findings"
    return name


def split_sections(text: str, last_paragraph_fallback: bool = True) -> list[Section]:
    """Split report ``text`` into :class:`Section` objects, in order.

    Parameters
    ----------
    text
        The report as stored in MIMIC-CXR (``sXXXXXXXX.txt``).
    last_paragraph_fallback
        When the report has neither findings nor impression, add a
        ``last_paragraph`` section made of every paragraph of the last
        section but its first.
    """
    sections: list[Section] = []
    match = _HEADER.search(text)
    if match is None:
        sections.append(Section("full report", "", text, 0))
    else:
        sections.append(Section("preamble", "", text[: match.start(1)], 0))
        while match is not None:
            header = match.group(1)
            body_start = match.end()
            # Looking for the next header only after the end of this line
            # avoids cutting a section at a colon inside its first line.
            line_end = text.find("\n", body_start)
            search_from = body_start + (line_end - body_start if line_end != -1 else 0)
            match = _HEADER.search(text, search_from)
            body_end = match.start() if match is not None else len(text)
            sections.append(Section(normalise_section_name(header), header, text[body_start:body_end], body_start))

    sections = [
        section for section in sections
        if not (section.name in ("findings", "impression") and section.text.strip() == "")
    ]
    names = {section.name for section in sections}
    if last_paragraph_fallback and not names & {"findings", "impression"}:
        last = sections[-1]
        if _PARAGRAPH_BREAK in last.text:
            first, *rest = last.text.split(_PARAGRAPH_BREAK)
            sections[-1] = Section(last.name, last.header, first, last.start)
            sections.append(
                Section("last_paragraph", "", _PARAGRAPH_BREAK.join(rest), last.start + len(first) + len(_PARAGRAPH_BREAK))
            )
    return sections


def clean_text(text: str) -> str:
    """Collapse the report's line wrapping and indentation into single spaces."""
    return " ".join(text.split())


def section_text(sections: list[Section], name: str) -> str | None:
    """Cleaned text of the last non-empty section called ``name`` (as the official scripts take the last)."""
    for section in reversed(sections):
        if section.name == name and section.text.strip():
            return clean_text(section.text)
    return None


def extract_findings(text: str, use_last_paragraph: bool = False) -> tuple[str | None, str | None]:
    """The text SAE-Rad learns from: findings, else impression.

    Parameters
    ----------
    text
        Full report.
    use_last_paragraph
        Also accept the official parser's ``last_paragraph`` fallback. The
        paper discards studies with neither findings nor impression, so the
        profiles leave this off.

    Returns
    -------
    (text, source)
        ``source`` is ``"findings"``, ``"impression"``, ``"last_paragraph"``
        or None (then ``text`` is None too).
    """
    sections = split_sections(text, last_paragraph_fallback=use_last_paragraph)
    candidates = ("findings", "impression", "last_paragraph") if use_last_paragraph else ("findings", "impression")
    for name in candidates:
        found = section_text(sections, name)
        if found:
            return found, name
    return None, None


def extract_indication(text: str) -> str | None:
    """The reason for the study: the indication section, else the history."""
    sections = split_sections(text, last_paragraph_fallback=False)
    return section_text(sections, "indication") or section_text(sections, "history")
