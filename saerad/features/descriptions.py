"""Feature descriptions on disk: one JSON object per line, one line per live feature.

The record keeps everything needed to audit a description: the prompt that was sent, the raw
reply, which backend and model wrote it, the parsed description and the statements it makes
(the description split into sentences, each with the findings it asserts or denies). A feature
whose reply could not be parsed is kept with ``status = "flagged"`` and the reason, never
dropped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from saerad.io import atomic_path, read_jsonl
from saerad.text import split_sentences

Findings = frozenset  # of (finding name, present) pairs


@dataclass(frozen=True)
class Statement:
    """One sentence of a description and the findings it asserts (present) or denies (absent)."""

    text: str
    findings: Findings = field(default_factory=frozenset)


@dataclass(frozen=True)
class FeatureDescription:
    feature: int
    status: str  # "ok" or "flagged"
    description: str  # the text after "This feature represents"; "" when flagged
    statements: tuple[Statement, ...] = ()
    backend: str = ""
    model: str = ""
    prompt: str = ""
    reply: str | None = None
    flag_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def statements_from_description(description: str, finding_key: Callable[[str], set] | None) -> tuple[Statement, ...]:
    """Split a description into sentence statements, each written as a stand-alone report sentence."""
    statements = []
    for sentence in split_sentences(description):
        text = sentence[0].upper() + sentence[1:]
        if text[-1] not in ".!?":
            text += "."
        findings = frozenset(finding_key(text)) if finding_key is not None else frozenset()
        statements.append(Statement(text, findings))
    return tuple(statements)


def _record(description: FeatureDescription) -> dict:
    record = asdict(description)
    record["statements"] = [
        {"text": statement.text, "findings": sorted([name, bool(present)] for name, present in statement.findings)}
        for statement in description.statements
    ]
    return record


def write_descriptions(path: str | Path, descriptions: Iterable[FeatureDescription]) -> Path:
    """Write the JSONL file atomically, sorted by feature id."""
    rows = sorted(descriptions, key=lambda description: description.feature)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            for description in rows:
                handle.write(json.dumps(_record(description), ensure_ascii=False) + "\n")
    return Path(path)


def read_descriptions(path: str | Path) -> dict[int, FeatureDescription]:
    """Read a descriptions file into ``{feature: FeatureDescription}``.

    Raises
    ------
    ValueError
        Naming the line and field when a record is malformed.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the features stage first")
    descriptions: dict[int, FeatureDescription] = {}
    required = ("feature", "status", "description", "statements")
    for number, record in read_jsonl(path, required):
        if record["status"] not in ("ok", "flagged"):
            raise ValueError(f"{path}:{number}: field 'status' is {record['status']!r}; expected 'ok' or 'flagged'")
        statements = tuple(
            Statement(item["text"], frozenset((name, bool(present)) for name, present in item.get("findings", [])))
            for item in record["statements"]
        )
        description = FeatureDescription(
            feature=int(record["feature"]), status=record["status"], description=record["description"],
            statements=statements, backend=record.get("backend", ""), model=record.get("model", ""),
            prompt=record.get("prompt", ""), reply=record.get("reply"), flag_reason=record.get("flag_reason"),
        )
        descriptions[description.feature] = description
    return descriptions
