"""Automated annotation of SAE features (Section 4.2, Appendix B.4).

For each live feature, the findings of its top-activating *training* studies go to a describer
(a language model through :mod:`saerad.llm`, or the offline describer of
:mod:`saerad.features.describer`) with the instructions below; the reply ends with one line
that starts with an asterisk, ``*This feature represents ...``, which is parsed here.

The instructions follow the structure of the paper's prompt in our own words: an expert
persona, the reports in order of activation, explicit step-by-step reasoning, one specific
description, and the asterisk line.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from saerad.features.descriptions import FeatureDescription, statements_from_description, write_descriptions
from saerad.llm import Prompt

ANNOTATION_SYSTEM = (
    "You are a radiologist with many years of experience reading chest radiographs, helping researchers "
    "understand what a unit inside an image model responds to."
)

ANNOTATION_INSTRUCTIONS = """\
A unit of a neural network that reads chest X-rays responds strongly to some images. Below are the
radiology reports of the images that activate it most, strongest first. Work out what these reports
have in common that the unit could be detecting.

Reason step by step, out loud: go through the reports one by one and note the findings, anatomy,
devices and wording that recur; count how many reports share each; weigh what is distinctive in chest
radiographs against what almost every report says.

Then give one explanation that is as specific as the reports allow. Join several elements with "and"
when they occur together; do not offer alternatives with "or"; do not explain what a disease is; use
only what the reports say.

Finish with exactly one line in this form, beginning with the asterisk and nothing before it:
*This feature represents <your specific description>.

Reports, strongest activation first:
"""

REPORT_HEADER = "Report number {number}:"
_REPORT_PATTERN = re.compile(r"^Report number (\d+):[ \t]*\n?(.*?)(?=^Report number \d+:|\Z)", re.M | re.S)
_ASTERISK_LINE = re.compile(r"^[ \t>\-]*\*{1,2}\s*this feature represents\b\s*:?\s*(.*)$", re.I | re.M)
_PLAIN_LINE = re.compile(r"this feature represents\b\s*:?\s*(.*)$", re.I | re.M)


def annotation_prompt(reports: Sequence[str]) -> Prompt:
    """The prompt for one feature, given the findings of its top-activating studies in order."""
    blocks = [f"{REPORT_HEADER.format(number=number)}\n{report.strip()}" for number, report in enumerate(reports, 1)]
    return Prompt(user=ANNOTATION_INSTRUCTIONS + "\n" + "\n\n".join(blocks) + "\n", system=ANNOTATION_SYSTEM,
                  max_tokens=1024, temperature=0.0)


def reports_in_prompt(prompt_text: str) -> list[str]:
    """The reports of an :func:`annotation_prompt`, in order (used by offline describers)."""
    return [match.group(2).strip() for match in _REPORT_PATTERN.finditer(prompt_text)]


def parse_description(reply: str | None) -> tuple[str | None, str | None]:
    """``(description, problem)`` from a describer's reply.

    The description is the text after the last ``*This feature represents`` line (continuing
    over following non-blank lines, as models wrap long lines); markdown bold markers and a
    final full stop are removed. A reply with the phrase but no asterisk is accepted with a
    note; a reply without the phrase gives ``(None, reason)``.
    """
    if reply is None or not reply.strip():
        return None, "empty reply"
    matches = list(_ASTERISK_LINE.finditer(reply))
    note = None
    if not matches:
        matches = list(_PLAIN_LINE.finditer(reply))
        note = "no asterisk before 'This feature represents'; took the last such sentence"
    if not matches:
        return None, "no line beginning '*This feature represents' in the reply"
    last = matches[-1]
    continuation = []
    for line in reply[last.end():].splitlines()[1:]:
        if not line.strip():
            break
        continuation.append(line.strip())
    text = " ".join([last.group(1).strip(), *continuation]).replace("**", "").strip()
    text = text.rstrip(" .")
    if not text or text.startswith("["):
        return None, "the asterisk line has no description"
    return text, note


def annotate_features(
    top_reports: dict[int, Sequence[str]],
    client,
    out_path: str | Path,
    finding_key: Callable[[str], set] | None = None,
    progress: bool = True,
    skipped: dict[int, str] | None = None,
) -> list[FeatureDescription]:
    """Describe every feature in ``top_reports`` and write the JSONL file.

    Parameters
    ----------
    top_reports
        ``{feature: findings texts of its top-activating studies, strongest first}``.
    client
        A :mod:`saerad.llm` client; its cache makes a re-run free and an interrupted run resume.
    out_path
        ``descriptions.jsonl``, written atomically at the end.
    finding_key
        ``sentence -> {(finding, present)}``, stored with each statement.
    skipped
        ``{feature: reason}`` for live features that cannot be sent to the describer (e.g. they fire
        on no training study); they are written as flagged records so that none goes missing.
    """
    features = sorted(top_reports)
    prompts = [annotation_prompt(top_reports[feature]) for feature in features]
    prompts = [Prompt(user=p.user, system=p.system, max_tokens=p.max_tokens, temperature=p.temperature,
                      key=f"feature-{feature}") for p, feature in zip(prompts, features)]
    completions = client.complete_many(prompts, progress=progress)
    descriptions = []
    for feature, prompt, completion in zip(features, prompts, completions):
        description, problem = parse_description(completion.text)
        if completion.error is not None:
            description, problem = None, f"request failed: {completion.error}"
        flagged = description is None
        descriptions.append(FeatureDescription(
            feature=feature,
            status="flagged" if flagged else "ok",
            description=description or "",
            statements=() if flagged else statements_from_description(description, finding_key),
            backend=completion.backend, model=completion.model, prompt=prompt.user, reply=completion.text,
            flag_reason=problem if flagged else None,
        ))
        if not flagged and problem:
            # A parse note is not a failure: the status stays ok, the note stays visible.
            descriptions[-1] = replace(descriptions[-1], flag_reason=problem)
    for feature, reason in (skipped or {}).items():
        if feature in top_reports:
            raise ValueError(f"feature {feature} is both described and skipped")
        descriptions.append(FeatureDescription(feature=feature, status="flagged", description="", flag_reason=reason))
    descriptions.sort(key=lambda description: description.feature)
    write_descriptions(out_path, descriptions)
    return descriptions


def description_table(descriptions: Sequence[FeatureDescription]) -> pd.DataFrame:
    """One row per feature: id, status, description, number of statements, reason if flagged."""
    return pd.DataFrame([{
        "feature": description.feature, "status": description.status, "description": description.description,
        "statements": len(description.statements), "flag_reason": description.flag_reason,
    } for description in descriptions])
