"""A stage's ``stage.json`` record and the rule that says whether the stage is up to date.

The record is kept the way a build system keeps its state, so that it can never
vouch for artifacts a later, unfinished run has half replaced:

- before a stage executes, its record is rewritten with status ``running`` and the
  fingerprint and parameters being attempted (so a killed process leaves ``running``);
- a cell error leaves ``failed`` (with the error), Ctrl-C ``interrupted``, success ``ok``;
- a stage is up to date only when its record is ``ok``, the recorded fingerprint is
  the one it would run with now, and every declared output exists;
- a stage never runs on, nor is up to date over, an upstream stage whose record is
  not ``ok`` (the fingerprint chain covers upstream stages that re-ran with other inputs).

Records hold the parameters after the notebook's defaults were merged in, so a
reader (:func:`saerad.params.stage_parameters`) sees every value the stage ran with.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Iterable

from saerad.io import read_json, write_json

RECORD_NAME = "stage.json"
RUNNING, OK, FAILED, INTERRUPTED = "running", "ok", "failed", "interrupted"
#: Not written to disk: what :func:`read_record` returns for a record that is not valid JSON.
UNREADABLE = "unreadable"


def read_record(stage_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The stage's record, or None when the stage never started."""
    path = Path(stage_dir) / RECORD_NAME
    if not path.exists():
        return None
    try:
        record = read_json(path)
    except ValueError as error:
        # A record cut short (a full disk, an editor) vouches for nothing: the stage runs again.
        return {"status": UNREADABLE, "error": str(error)}
    if not isinstance(record, dict):
        return {"status": UNREADABLE, "error": f"{path}: expected a JSON object, got {type(record).__name__}"}
    return record


def mark_running(stage_dir: str | os.PathLike, record: dict[str, Any]) -> dict[str, Any]:
    """Write ``record`` with status ``running`` before the stage executes; return what was written."""
    started = {**record, "status": RUNNING, "seconds": 0.0, "pid": os.getpid(),
               "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    started.pop("error", None)
    write_json(Path(stage_dir) / RECORD_NAME, started)
    return started


def mark_finished(stage_dir: str | os.PathLike, record: dict[str, Any], status: str, seconds: float,
                  error: str | None = None) -> None:
    """Rewrite the running record with its outcome: ``ok``, ``failed`` or ``interrupted``."""
    finished = {**record, "status": status, "seconds": round(seconds, 1)}
    finished.pop("pid", None)
    if error:
        finished["error"] = error
    write_json(Path(stage_dir) / RECORD_NAME, finished)


def missing_outputs(stage_dir: str | os.PathLike, outputs: Iterable[str]) -> list[str]:
    """The declared outputs (paths relative to the stage folder) that are absent; a folder must not be empty."""
    missing = []
    for name in outputs:
        path = Path(stage_dir) / name
        if not path.exists() or (path.is_dir() and not any(path.iterdir())):
            missing.append(name)
    return missing


def not_ok_reason(record: dict[str, Any] | None) -> str | None:
    """Why a record does not vouch for its stage's artifacts (None when it does)."""
    if record is None:
        return "it has not run"
    status = record.get("status")
    if status == OK:
        return None
    if status == RUNNING:
        return f"its last run (pid {record.get('pid', '?')}, started {record.get('started', '?')}) did not finish"
    if status == INTERRUPTED:
        return "its last run was interrupted"
    if status == FAILED:
        return f"its last run failed (the error is in {RECORD_NAME})"
    if status == UNREADABLE:
        return f"its record is unreadable ({record.get('error', '?')})"
    return f"its record has an unknown status {status!r}"


def stale_reason(record: dict[str, Any] | None, fingerprint: str, missing: list[str],
                 parameters: dict[str, Any] | None = None, upstream: dict[str, str] | None = None) -> str | None:
    """Why a stage must run (None when it is up to date).

    Parameters
    ----------
    record
        The stage's record (:func:`read_record`).
    fingerprint
        What the stage would run with now: notebook, parameters, package and the fingerprints of the stages
        it reads.
    missing
        Its declared outputs that are absent (:func:`missing_outputs`).
    parameters, upstream
        The parameters and read stages' fingerprints it would run with, to name what changed.
    """
    problem = not_ok_reason(record)
    if problem:
        return problem
    if record.get("fingerprint") != fingerprint:
        return _what_changed(record, parameters, upstream)
    if missing:
        return f"output(s) missing: {', '.join(missing)}"
    return None


def _what_changed(record: dict[str, Any], parameters: dict[str, Any] | None,
                  upstream: dict[str, str] | None) -> str:
    """The parameters or read stages that differ from the record, else the code."""
    import json

    def same(a: Any, b: Any) -> bool:
        return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)

    from saerad.params import EXECUTION_ONLY_PARAMETERS

    recorded = record.get("parameters", {})
    changed = sorted(name for name in set(recorded) | set(parameters or {})
                     if parameters is not None and name not in EXECUTION_ONLY_PARAMETERS
                     and not same(recorded.get(name), parameters.get(name)))
    if changed:
        return "parameter(s) changed: " + ", ".join(
            f"{name} {recorded.get(name)!r} -> {parameters.get(name)!r}" for name in changed)
    if upstream is not None and "upstream" in record:
        stages = sorted(name for name in set(record["upstream"]) | set(upstream)
                        if record["upstream"].get(name) != upstream.get(name))
        if stages:
            return "a stage it reads changed: " + ", ".join(stages)
    return "its notebook or the package code changed"
