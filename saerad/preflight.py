"""Checks a stage makes before it does any work.

The pipeline calls :func:`check_stage` before it executes a chapter, and a chapter
calls it again in its first cell (so a notebook opened by hand is checked too).
A check raises :class:`PreflightError` with a message naming the setting to change;
nothing has been written when it does. Stages register their checks with
:func:`register`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

Check = Callable[[Mapping[str, Any], Path], None]


class PreflightError(RuntimeError):
    """A stage cannot run with these settings; the message says which setting to change."""


_CHECKS: dict[str, list[Check]] = {}


def register(stage: str) -> Callable[[Check], Check]:
    """Decorator: run ``check(parameters, artifacts_root)`` before ``stage`` starts."""

    def decorate(check: Check) -> Check:
        _CHECKS.setdefault(stage, []).append(check)
        return check

    return decorate


def _load_stage_checks() -> None:
    # Imported for their @register side effect; kept here so that the pipeline needs one import.
    import saerad.features.preflight  # noqa: F401


def check_stage(stage: str, parameters: Mapping[str, Any], artifacts_root: str | Path) -> None:
    """Run every check registered for ``stage``; raise :class:`PreflightError` on the first failure."""
    _load_stage_checks()
    for check in _CHECKS.get(stage, []):
        check(parameters, Path(artifacts_root))


def check_notebook(stage: str, namespace: Mapping[str, Any]) -> None:
    """The chapter's own call, in its first cell after the parameters: ``check_notebook("features", globals())``.

    ``namespace`` holds the chapter's parameters (its ``globals()``), ``artifacts_root`` among them; the checks
    are those the pipeline runs before it executes the chapter.
    """
    if "artifacts_root" not in namespace:
        raise PreflightError(f"stage {stage!r}: the chapter's parameters have no artifacts_root")
    check_stage(stage, namespace, namespace["artifacts_root"])
