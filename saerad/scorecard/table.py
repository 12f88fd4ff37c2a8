"""The scorecard as a table: every claim evaluated against one run's artifacts, written as CSV."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from saerad.io import write_table
from saerad.scorecard.artifacts import Artifacts
from saerad.scorecard.claim import Claim
from saerad.scorecard.links import SECTIONS, section_href
from saerad.scorecard.verdicts import VERDICTS

#: Columns of ``scorecard.csv``, in order.
COLUMNS = ("id", "claim", "where", "paper", "ours", "verdict", "reason", "rule", "section", "href")


def all_claims() -> tuple[Claim, ...]:
    """Every claim, in the order of the page: SAE, features and reports, scores, images, readers."""
    from saerad.scorecard import claims_images, claims_metrics, claims_readers, claims_reports, claims_sae

    claims = (claims_sae.CLAIMS + claims_reports.CLAIMS + claims_metrics.CLAIMS + claims_images.CLAIMS
              + claims_readers.CLAIMS)
    ids = [claim.id for claim in claims]
    duplicates = sorted({name for name in ids if ids.count(name) > 1})
    if duplicates:
        raise ValueError(f"claim ids must be unique; repeated: {duplicates}")
    unknown = sorted({claim.section for claim in claims} - set(SECTIONS))
    if unknown:
        raise ValueError(f"claims link to unknown section labels {unknown}; add them to saerad.scorecard.links.SECTIONS")
    return claims


def build_scorecard(artifacts_root: str | Path, claims: tuple[Claim, ...] | None = None,
                    notebooks_dir: str | Path | None = None) -> pd.DataFrame:
    """Evaluate every claim against ``artifacts_root`` (``artifacts/<profile>``).

    Parameters
    ----------
    artifacts_root
        The profile's artifacts; a missing artifact makes its claims "not run".
    claims
        Default :func:`all_claims`.
    notebooks_dir
        Chapter notebooks whose labels the links use (default ``notebooks/``).

    Returns
    -------
    DataFrame
        One row per claim with :data:`COLUMNS`.
    """
    artifacts = Artifacts(artifacts_root)
    rows = []
    for claim in claims if claims is not None else all_claims():
        outcome = claim.evaluate(artifacts)
        rows.append({"id": claim.id, "claim": claim.claim, "where": claim.where, "paper": claim.paper,
                     "ours": outcome.ours, "verdict": outcome.verdict, "reason": outcome.reason, "rule": claim.rule,
                     "section": claim.section, "href": section_href(claim.section, notebooks_dir)})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def verdict_counts(scorecard: pd.DataFrame) -> pd.Series:
    """How many claims got each verdict (every verdict listed, zero included), in :data:`VERDICTS` order."""
    unknown = set(scorecard["verdict"]) - set(VERDICTS)
    if unknown:
        raise ValueError(f"scorecard: unknown verdict(s) {sorted(unknown)}; expected {VERDICTS}")
    return scorecard["verdict"].value_counts().reindex(list(VERDICTS), fill_value=0).astype(int)


def write_scorecard(scorecard: pd.DataFrame, stage_dir: str | Path) -> Path:
    """Write ``<stage_dir>/scorecard.csv`` atomically and return its path."""
    missing = [column for column in COLUMNS if column not in scorecard.columns]
    if missing:
        raise ValueError(f"scorecard lacks column(s) {missing}; expected {list(COLUMNS)}")
    return write_table(Path(stage_dir) / "scorecard.csv", scorecard[list(COLUMNS)])
