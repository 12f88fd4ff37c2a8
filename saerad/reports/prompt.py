"""The prompt that asks a language model to write the findings from active features (Appendix B.5).

The structure follows Appendix B.5, reworded: an expert persona; up to three
of the patient's earlier reports, each with how long before the current study
it was written (years, days, hours and minutes, as the paper formats it);
the indication; the descriptions of the active features with their
importance scores (:mod:`saerad.reports.active`); and the instructions
(weigh high scores more, settle conflicts by score or by majority, never say
"feature", one paragraph of at most five to six sentences, findings only).

Three configurations, the ablation of Table 2:

``no_aux``              features only
``indication``          features + the indication of the current study
``indication_priors``   features + indication + up to three prior reports

Earlier reports come from ``data/priors.csv`` (``study_id, prior_rank,
prior_study_id, hours_before, prior_report``; rank 1 is the most recent)
and the indication from ``data/studies.csv``; :func:`prior_reports_by_study`
reads the former.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import pandas as pd

CONFIGS: tuple[str, ...] = ("no_aux", "indication", "indication_priors")
MAX_PRIORS = 3

PERSONA = (
    "You are a senior radiologist who reads chest radiographs. You write the findings section of the "
    "report for the chest X-ray described below."
)

INTRODUCTION = {
    "no_aux": (
        "You cannot see the image. Instead you receive short descriptions of visual patterns that an image "
        "analysis model detected in it, each with an importance score between 0 and 1: the higher the score, "
        "the more strongly the pattern is expressed in this image."
    ),
    "indication": (
        "You cannot see the image. Instead you receive short descriptions of visual patterns that an image "
        "analysis model detected in it, each with an importance score between 0 and 1: the higher the score, "
        "the more strongly the pattern is expressed in this image. You also receive the clinical indication "
        "(the reason the radiograph was requested)."
    ),
    "indication_priors": (
        "You cannot see the image. Instead you receive short descriptions of visual patterns that an image "
        "analysis model detected in it, each with an importance score between 0 and 1: the higher the score, "
        "the more strongly the pattern is expressed in this image. You also receive the clinical indication "
        "(the reason the radiograph was requested) and up to three earlier radiology reports of the same "
        "patient, when there are any. Use the earlier reports only where they help to interpret the current "
        "findings (for example to call something new, stable or improved), and never quote their dates or times."
    ),
}

INSTRUCTIONS = (
    "Write the findings section for the current radiograph only. Give more weight to descriptions with "
    "higher importance scores. Some descriptions may be wrong or only loosely related to the image: when "
    "they disagree, follow the higher scores or the majority. Do not list the descriptions one by one and "
    "never use the word 'feature'. Write one continuous paragraph of no more than five to six sentences, "
    "concise and in the usual style of a findings section. Reply with the findings only: no heading, no "
    "introduction, no impression and no closing remarks."
)


@dataclass(frozen=True)
class PriorReport:
    """An earlier report of the same patient and how long before the current study it was written."""

    text: str
    hours_before: float


def format_elapsed(hours: float) -> str:
    """``hours`` as "Y years, D days, H hours and M minutes" (a year = 365 days, minutes rounded).

    >>> format_elapsed(64.47)
    '0 years, 2 days, 16 hours and 28 minutes'
    """
    if not isinstance(hours, (int, float)) or not math.isfinite(hours) or hours < 0:
        raise ValueError(f"hours_before must be a finite number >= 0, got {hours!r}")
    minutes = int(round(hours * 60))
    years, minutes = divmod(minutes, 365 * 24 * 60)
    days, minutes = divmod(minutes, 24 * 60)
    whole_hours, minutes = divmod(minutes, 60)
    return f"{years} years, {days} days, {whole_hours} hours and {minutes} minutes"


def prior_reports_by_study(priors: pd.DataFrame | str | Path, max_priors: int = MAX_PRIORS) -> dict[int, list[PriorReport]]:
    """Earlier reports per study, most recent first, at most ``max_priors`` each.

    Parameters
    ----------
    priors
        The data stage's ``priors.csv`` (or its path).
    """
    source = str(priors) if not isinstance(priors, pd.DataFrame) else "priors table"
    table = pd.read_csv(priors) if not isinstance(priors, pd.DataFrame) else priors
    required = ["study_id", "prior_rank", "hours_before", "prior_report"]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise ValueError(f"{source}: missing columns {missing}; expected {required}")
    result: dict[int, list[PriorReport]] = {}
    for row in table.sort_values(["study_id", "prior_rank"]).itertuples(index=False):
        if not isinstance(row.prior_report, str) or not row.prior_report.strip():
            continue
        reports = result.setdefault(int(row.study_id), [])
        if len(reports) < max_priors:
            reports.append(PriorReport(row.prior_report.strip(), float(row.hours_before)))
    return result


def report_prompt_text(
    features: Sequence[tuple[str, float]],
    config: str = "no_aux",
    indication: str | None = None,
    priors: Iterable[PriorReport] = (),
) -> tuple[str, str]:
    """The (system, user) messages of the report prompt.

    Parameters
    ----------
    features
        ``(description, importance)`` pairs of the active features,
        strongest first. The description is the text completing
        "This feature represents ..." (common.md's ``description`` field).
    config
        One of :data:`CONFIGS`; decides which auxiliary inputs are shown.
        Inputs a configuration does not use are ignored, so every config
        can be called with the same arguments.
    indication, priors
        The current study's indication and earlier reports (most recent first).
    """
    if config not in CONFIGS:
        raise ValueError(f"config must be one of {CONFIGS}, got {config!r}")
    if not features:
        raise ValueError("a report prompt needs at least one active feature description")
    parts: list[str] = [INTRODUCTION[config], ""]
    if config == "indication_priors":
        priors = list(priors)[:MAX_PRIORS]
        parts.append("<patient_history>")
        if not priors:
            parts.append("No earlier reports are available for this patient.")
        for number, prior in enumerate(priors, start=1):
            parts += [
                "<past_report>",
                f"Earlier report {number}, written {format_elapsed(prior.hours_before)} before the current radiograph:",
                prior.text,
                "</past_report>",
            ]
        parts += ["</patient_history>", ""]
    parts.append("<current_chest_x_ray>")
    for number, (description, importance) in enumerate(features, start=1):
        if not 0.0 <= importance <= 1.0:
            raise ValueError(f"importance scores must lie in [0, 1], got {importance!r} for item {number}")
        text = description.strip()
        parts += [
            f"<finding_{number}>",
            f"Importance score {importance:.2f}: this pattern represents {text}",
            f"</finding_{number}>",
        ]
    parts += ["</current_chest_x_ray>", ""]
    if config in ("indication", "indication_priors"):
        stated = indication.strip() if isinstance(indication, str) and indication.strip() else "Not given."
        parts += ["<indication>", stated, "</indication>", ""]
    parts.append(INSTRUCTIONS)
    return PERSONA, "\n".join(parts)


def build_report_prompt(
    features: Sequence[tuple[str, float]],
    config: str = "no_aux",
    indication: str | None = None,
    priors: Iterable[PriorReport] = (),
    key: str = "",
    max_tokens: int = 512,
):
    """:func:`report_prompt_text` wrapped in a :class:`saerad.llm.Prompt` (temperature 0)."""
    from saerad.llm import Prompt

    system, user = report_prompt_text(features, config, indication, priors)
    return Prompt(user=user, system=system, max_tokens=max_tokens, temperature=0.0, key=key)


def descriptions_with_scores(active, descriptions: Mapping[int, object]) -> list[tuple[str, float]]:
    """``(description, importance)`` of the active features that have a usable description.

    ``active`` is a list of :class:`saerad.reports.active.ActiveFeature`;
    features without a description or whose description was flagged are
    left out (they carry no trustworthy text).
    """
    pairs = []
    for item in active:
        record = descriptions.get(item.feature)
        if record is None or getattr(record, "status", "ok") != "ok":
            continue
        text = getattr(record, "description", "")
        if isinstance(text, str) and text.strip():
            pairs.append((text.strip(), float(item.importance)))
    return pairs
