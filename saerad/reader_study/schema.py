"""The contract of the reader study's export: ``export_schema.json`` and its validator.

The review page (:mod:`saerad.reader_study.page`) downloads one JSON file per
reader; the simulated reader writes the same format; the analysis reads it.
:func:`validate_export` checks a file or an in-memory object against the JSON
Schema (draft 2020-12, ``date-time`` formats checked) plus the rules a schema
cannot state: case ids are unique, a case's sentence indices are
``0..n-1`` in order, and ``complete`` is true exactly when every sentence has
an action.

The error categories and clinical significance levels are read from the
schema, so the page and the analysis share one list (Appendix E: MAIRA-2's
taxonomy without "incorrect progression"; several categories per sentence).
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import jsonschema

from saerad.io import read_json

SCHEMA_PATH = Path(__file__).with_name("export_schema.json")
EXPORT_SCHEMA_ID = "saerad-reader-study-export/1"
_MAX_REPORTED = 5


@lru_cache(maxsize=1)
def export_schema() -> dict:
    """The export JSON Schema, as a dict (read once)."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _sentence_properties() -> dict:
    return export_schema()["properties"]["cases"]["items"]["properties"]["sentences"]["items"]["properties"]


ERROR_CATEGORIES: tuple[str, ...] = tuple(_sentence_properties()["error_categories"]["items"]["enum"])
CLINICAL_SIGNIFICANCE: tuple[str, ...] = tuple(
    level for level in _sentence_properties()["clinical_significance"]["enum"] if level is not None
)
ACTIONS: tuple[str, ...] = tuple(action for action in _sentence_properties()["action"]["enum"] if action is not None)


def validate_export(export: Mapping[str, Any] | str | os.PathLike) -> dict:
    """Check one reader's export against the schema; return it as a dict.

    Parameters
    ----------
    export
        The parsed export, or the path of a JSON file holding it.

    Returns
    -------
    dict
        The export (read from the file when a path was given).

    Raises
    ------
    ValueError
        When the file is not JSON or the export breaks the contract. The
        message names the file (or ``export`` for an object) and the path of
        the failing field, e.g. ``cases/2/sentences/0/error_categories``.
    """
    if isinstance(export, (str, os.PathLike)):
        source = str(export)
        try:
            export = json.loads(Path(export).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{source}: not valid JSON ({error})") from error
    else:
        source = "export"
    validator = jsonschema.Draft202012Validator(export_schema(), format_checker=jsonschema.FormatChecker())
    errors = sorted(validator.iter_errors(export), key=lambda error: [str(part) for part in error.absolute_path])
    problems = [f"{_field_path(error.absolute_path)}: {_short(error.message)}" for error in errors]
    if not problems:
        problems = _consistency_problems(export)
    if problems:
        shown = "; ".join(problems[:_MAX_REPORTED])
        more = f" (and {len(problems) - _MAX_REPORTED} more)" if len(problems) > _MAX_REPORTED else ""
        raise ValueError(f"{source}: not a valid reader-study export: {shown}{more}")
    return dict(export)


def _consistency_problems(export: Mapping[str, Any]) -> list[str]:
    """The rules of the contract that JSON Schema cannot express."""
    problems = []
    seen: dict[str, int] = {}
    for number, case in enumerate(export["cases"]):
        case_id = case["case_id"]
        if case_id in seen:
            problems.append(f"cases/{number}/case_id: {case_id!r} already used by cases/{seen[case_id]}")
        seen.setdefault(case_id, number)
        indices = [sentence["index"] for sentence in case["sentences"]]
        if indices != list(range(len(indices))):
            problems.append(f"cases/{number}/sentences: indices {indices} are not 0..{len(indices) - 1} in order")
        marked_all = all(sentence["action"] is not None for sentence in case["sentences"])
        if case["complete"] != marked_all:
            problems.append(
                f"cases/{number}/complete: is {case['complete']} but "
                f"{'every' if marked_all else 'not every'} sentence has an action"
            )
    return problems


def _field_path(path) -> str:
    return "/".join(str(part) for part in path) or "(top level)"


def _short(message: str, limit: int = 200) -> str:
    return message if len(message) <= limit else message[: limit - 3] + "..."


def read_unblinding(unblinding: str | Path | Mapping) -> tuple[dict, str]:
    """The unblinding mapping and a name for it in messages (the file, or ``<unblinding dict>``).

    Expected: ``{"page_id": str, "seed": int, "cases": {case_id: {"study_id": int,
    "system": str, "config": str}}}``.
    """
    if isinstance(unblinding, Mapping):
        data, source = dict(unblinding), "<unblinding dict>"
    else:
        source = str(unblinding)
        if not Path(unblinding).exists():
            raise FileNotFoundError(f"unblinding file {source} does not exist")
        data = read_json(unblinding)
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: the unblinding file must be a JSON object with page_id, seed and cases")
    for key, kind in (("page_id", str), ("seed", int), ("cases", Mapping)):
        if not isinstance(data.get(key), kind) or isinstance(data.get(key), bool):
            raise ValueError(f"{source}: field {key!r} is missing or not a {kind.__name__} "
                             f"(got {data.get(key)!r})")
    for case_id, case in data["cases"].items():
        if not isinstance(case, Mapping):
            raise ValueError(f"{source}: cases/{case_id} is not an object")
        for key, kind in (("study_id", (int, str)), ("system", str), ("config", str)):
            if not isinstance(case.get(key), kind) or isinstance(case.get(key), bool):
                raise ValueError(f"{source}: field cases/{case_id}/{key} is missing or of the wrong type "
                                 f"(got {case.get(key)!r})")
    return dict(data), source
