"""Where in the book each claim is measured: MyST labels on chapter headings, and the links to them.

The scorecard page and the chapters are all in ``book/chapters/``, so a link is
``<chapter>.html#<anchor>``. The anchor is the label written above the heading
(``(sec-sae-table3)=``) when the chapter's notebook has it, else the id that
Sphinx gives the heading itself, so that the link resolves either way while
labels are being added (``/work/notes/scorecard_labels.md`` lists them for the
chapters' authors).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from saerad.paths import REPO_ROOT


@dataclass(frozen=True)
class Section:
    """A section of a chapter that measures claims.

    Attributes
    ----------
    label
        The MyST label above its heading.
    notebook
        The chapter's notebook under ``notebooks/`` (its page is the same name with ``.html``).
    heading
        The heading's text, exactly as in the notebook (without the ``#`` marks).
    """

    label: str
    notebook: str
    heading: str

    @property
    def page(self) -> str:
        return Path(self.notebook).with_suffix(".html").name


#: Every section the scorecard links to, by label.
SECTIONS: dict[str, Section] = {section.label: section for section in (
    Section("sec-sae-training", "02_sae.ipynb", "Training SAE-Rad"),
    Section("sec-sae-dead-features", "02_sae.ipynb", "Feature density and dead features"),
    Section("sec-sae-table3", "02_sae.ipynb", "Table 3: SAE-Rad against Conerly et al."),
    Section("sec-sae-table5", "02_sae.ipynb", "Table 5: size and sparsity"),
    Section("sec-features-active", "03_features.ipynb", "Every image through the SAE, sparsely"),
    Section("sec-features-explanation-scores", "03_features.ipynb",
            "Do the descriptions predict anything? Explanation scores"),
    Section("sec-features-ground-truth", "03_features.ipynb", "Ground truth: which feature is the pacemaker?"),
    Section("sec-reports-truth", "04_reports.ipynb", "Against the truth of the image"),
    Section("sec-reports-side-by-side", "04_reports.ipynb", "Side by side"),
    Section("sec-reports-table4", "04_reports.ipynb", "Table 4: what SAE-Rad costs, counted"),
    Section("sec-metrics-table1", "05_metrics.ipynb", "Table 1"),
    Section("sec-metrics-paired-differences", "05_metrics.ipynb", "Is the difference real?"),
    Section("sec-metrics-table2", "05_metrics.ipynb", "Table 2"),
    Section("sec-metrics-appendix-g", "05_metrics.ipynb", "Appendix G, measured: when the reference is the problem"),
    Section("sec-counterfactual-decoder", "06_counterfactual.ipynb", "A decoder from class tokens to images"),
    Section("sec-counterfactual-figure4", "06_counterfactual.ipynb", "Figure 4: adding, removing, segmenting"),
    Section("sec-counterfactual-axioms", "06_counterfactual.ipynb", "Measuring the axioms"),
    Section("sec-reader-significance", "07_reader_study.ipynb",
            'Is "significantly fewer significant errors" significant?'),
    Section("sec-reader-simulated", "07_reader_study.ipynb", "Simulated readers on SynthCXR"),
    Section("sec-reader-real", "07_reader_study.ipynb", "Real readers"),
)}


def heading_id(heading: str) -> str:
    """The id Sphinx gives a section with this title (docutils' ``make_id``)."""
    from docutils.nodes import make_id

    return make_id(heading)


@lru_cache(maxsize=None)
def _markdown_lines(notebook: Path, modified: float) -> tuple[str, ...]:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return tuple(line.rstrip() for cell in cells if cell["cell_type"] == "markdown"
                 for line in "".join(cell["source"]).splitlines())


def notebook_labels(notebook: Path) -> set[str]:
    """The MyST labels ``(name)=`` written in the Markdown cells of a notebook."""
    notebook = Path(notebook)
    labels = set()
    for line in _markdown_lines(notebook, notebook.stat().st_mtime):
        match = re.fullmatch(r"\(([A-Za-z0-9_.:-]+)\)=", line.strip())
        if match:
            labels.add(match.group(1))
    return labels


def notebook_headings(notebook: Path) -> set[str]:
    """The text of every Markdown heading of a notebook."""
    notebook = Path(notebook)
    return {re.sub(r"^#+\s*", "", line).strip() for line in _markdown_lines(notebook, notebook.stat().st_mtime)
            if re.match(r"#{1,6}\s", line)}


def section_href(label: str, notebooks_dir: str | Path | None = None) -> str:
    """The link from the scorecard page to a section: ``<page>#<label>``, or ``#<heading id>`` until the label exists.

    Raises
    ------
    KeyError
        For a label not in :data:`SECTIONS`.
    ValueError
        When the notebook has neither the label nor the heading (the link would not resolve).
    """
    if label not in SECTIONS:
        raise KeyError(f"unknown section label {label!r}; known: {sorted(SECTIONS)}")
    section = SECTIONS[label]
    notebook = Path(notebooks_dir or REPO_ROOT / "notebooks") / section.notebook
    if not notebook.exists():
        raise ValueError(f"{notebook}: the chapter of section {label!r} does not exist")
    if label in notebook_labels(notebook):
        return f"{section.page}#{label}"
    if section.heading in notebook_headings(notebook):
        return f"{section.page}#{heading_id(section.heading)}"
    raise ValueError(f"{notebook}: has neither the label ({label})= nor the heading {section.heading!r}; "
                     "update saerad/scorecard/links.py SECTIONS")
