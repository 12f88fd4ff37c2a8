"""Does SAE-Rad hold up? Every testable claim of the paper against one run's artifacts (the ``08`` chapter).

Modules
-------
verdicts
    The five verdicts and the rules that give them (interval, test, threshold, factor, count).
artifacts
    Reads other stages' artifacts; a missing one raises :class:`ArtifactMissing` ("not run").
paper_claims
    Numbers the paper states in its text that no other module holds (each with its citation).
claim
    :class:`Claim`: text, the paper's figure, the rule, the section, and the function that measures it.
claims_sae, claims_reports, claims_metrics, claims_images, claims_readers
    The claims, by chapter.
links
    The chapter sections (MyST labels) the claims link to.
table
    :func:`build_scorecard` (one row per claim), :func:`verdict_counts`, :func:`write_scorecard`.
html
    :func:`scorecard_html`, the page's table.
"""

from saerad.scorecard.artifacts import ArtifactMissing, Artifacts
from saerad.scorecard.claim import Claim
from saerad.scorecard.html import scorecard_html, verdict_class
from saerad.scorecard.links import SECTIONS, section_href
from saerad.scorecard.table import COLUMNS, all_claims, build_scorecard, verdict_counts, write_scorecard
from saerad.scorecard.verdicts import (NOT_REPRODUCED, NOT_RUN, NOT_TESTABLE, PARTLY, REPRODUCED, VERDICTS,
                                       Outcome)

__all__ = [
    "ArtifactMissing", "Artifacts", "Claim", "COLUMNS", "NOT_REPRODUCED", "NOT_RUN", "NOT_TESTABLE", "Outcome",
    "PARTLY", "REPRODUCED", "SECTIONS", "VERDICTS", "all_claims", "build_scorecard", "scorecard_html",
    "section_href", "verdict_class", "verdict_counts", "write_scorecard",
]
