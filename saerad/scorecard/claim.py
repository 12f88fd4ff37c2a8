"""One claim of the paper, and how it is checked against a run's artifacts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from saerad.scorecard.artifacts import ArtifactMissing, Artifacts
from saerad.scorecard.verdicts import NOT_RUN, Outcome
from saerad.stage_records import RECORD_NAME


@dataclass(frozen=True)
class Claim:
    """A testable claim of the paper.

    Attributes
    ----------
    id
        Short stable name (the CSV's key).
    claim
        The claim in our own words.
    where
        Where the paper makes it (``"Table 3"``, ``"Abstract"``, ...).
    paper
        The paper's figure for it, formatted from the paper's numbers held as data.
    section
        Label of the book section that measures it (:data:`saerad.scorecard.links.SECTIONS`).
    rule
        The verdict rule in words, with its thresholds.
    measure
        Reads the artifacts and returns an :class:`Outcome`; may raise
        :class:`ArtifactMissing`.
    """

    id: str
    claim: str
    where: str
    paper: str
    section: str
    rule: str
    measure: Callable[[Artifacts], Outcome]

    def evaluate(self, artifacts: Artifacts) -> Outcome:
        """The claim's outcome; "not run" (with the missing artifact named) when an artifact is missing."""
        try:
            return self.measure(artifacts)
        except ArtifactMissing as missing:
            if missing.name == RECORD_NAME:
                return Outcome(NOT_RUN, NOT_RUN, missing.why)
            return Outcome(NOT_RUN, NOT_RUN, f"{missing.why}: {missing.stage}/{missing.name}")


def number(value: float, digits: int = 1) -> str:
    """A number for the table (``n/a`` when not finite), with thousands separators."""
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    return f"{float(value):,.{digits}f}"


def percent(share: float, digits: int = 1) -> str:
    """A share (0 to 1) as a percentage."""
    return f"{number(100 * float(share), digits)} %"


def interval(value: float, low: float, high: float, digits: int = 1) -> str:
    """``value [low, high]``."""
    return f"{number(value, digits)} [{number(low, digits)}, {number(high, digits)}]"
