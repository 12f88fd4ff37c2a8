"""A chapter opened by hand stops at once, with a short message, when what it reads is not there.

The pipeline runs the stages in order and checks, before each, that the stages it reads finished
(:mod:`saerad.pipeline`). A chapter opened in JupyterLab (``make lab``) or executed by papermill
outside the pipeline has no such guard: it would create its artifacts folder, then fail deep inside
with a ``FileNotFoundError``. Each chapter therefore calls, first thing in its setup cell::

    require_upstream("features", artifacts_root, profile)

which reads the records of the stages the chapter needs (``Stage.reads`` and ``Stage.requires`` of
:data:`saerad.pipeline.STAGES`) and raises :class:`UpstreamMissing`, naming each stage that is
missing or not ``ok`` and the pipeline command that makes it, before anything is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from saerad import stage_records as records
from saerad.paths import REPO_ROOT, display_path, project_path


class UpstreamMissing(RuntimeError):
    """A chapter's upstream artifacts are missing or unfinished; the message says which and how to make them.

    In a notebook it is shown as its message alone, without a traceback (IPython's ``_render_traceback_``):
    the traceback would only point into this module.
    """

    def _render_traceback_(self) -> list[str]:
        return [f"{type(self).__name__}: {line}" if number == 0 else line
                for number, line in enumerate(str(self).splitlines())]


def required_stages(stage_name: str, stages: Sequence | None = None) -> list[str]:
    """The stages whose finished artifacts chapter ``stage_name`` needs, in run order.

    ``Stage.requires`` when given (with what those stages read in turn), else every stage the chapter reads,
    directly or through another: the stages the pipeline itself checks before it runs the chapter.
    """
    from saerad.pipeline import STAGES, needed_stages

    stages = tuple(stages or STAGES)
    by_name = {stage.name: stage for stage in stages}
    if stage_name not in by_name:
        raise ValueError(f"unknown stage {stage_name!r}; stages are {list(by_name)}")
    stage = by_name[stage_name]
    if stage.requires is None:
        needed = needed_stages([stage], stages)
    else:
        needed = set(stage.requires) | needed_stages([by_name[name] for name in stage.requires], stages)
    return [other.name for other in stages if other.name in needed]


def upstream_problems(artifacts_root: str | os.PathLike, stage_name: str,
                      stages: Sequence | None = None) -> dict[str, str]:
    """Required stage name to why its artifacts cannot be read (empty when every one is there and ``ok``).

    A stage is a problem when its record (``<artifacts_root>/<stage>/stage.json``) is missing or not ``ok``,
    when a declared output is missing, or when it was made from an earlier run of a stage it reads.
    """
    from saerad.pipeline import STAGES

    stages = tuple(stages or STAGES)
    root = project_path(artifacts_root)
    required = required_stages(stage_name, stages)
    recorded = {name: records.read_record(root / name) for name in required}
    problems = {stage.name: _problem(stage, root, recorded, stages) for stage in stages if stage.name in required}
    return {name: problem for name, problem in problems.items() if problem}


def _problem(stage, root: Path, recorded: dict, stages: Sequence) -> str | None:
    """Why ``stage``'s artifacts in ``root`` cannot be read (None when they can); ``recorded``: records by stage."""
    from saerad.pipeline import stage_reads

    record = recorded[stage.name]
    problem = records.not_ok_reason(record)
    if problem:
        return problem
    missing = records.missing_outputs(root / stage.name, stage.declared_outputs(record.get("parameters", {})))
    if missing:
        return f"output(s) missing: {', '.join(missing)}"
    # The fingerprints it was made from must be those of the records of what it reads now.
    made_from = record.get("upstream", {})
    outdated = [name for name in stage_reads(stage, stages) if name in made_from and recorded.get(name)
                and recorded[name].get("fingerprint") != made_from[name]]
    return f"it was made from an earlier run of {', '.join(map(repr, outdated))}" if outdated else None


def pipeline_command(profile: str, stage_names: Sequence[str], artifacts_root: str | os.PathLike) -> str:
    """The pipeline command that runs ``stage_names`` of ``profile`` into ``artifacts_root``."""
    command = f"python -m saerad.pipeline --profile {profile}" + "".join(f" --only {name}" for name in stage_names)
    root = project_path(artifacts_root)
    if root.resolve() != (REPO_ROOT / "artifacts" / profile).resolve():
        command += f" --set artifacts_root={display_path(root)}"
    return command


def require_upstream(stage_name: str, artifacts_root: str | os.PathLike, profile: str,
                     stages: Sequence | None = None) -> None:
    """Raise :class:`UpstreamMissing` unless every stage chapter ``stage_name`` needs has finished in ``artifacts_root``.

    Parameters
    ----------
    stage_name
        The chapter's stage (:data:`saerad.pipeline.STAGES`).
    artifacts_root, profile
        The chapter's parameters of those names; relative roots are taken from the repository root.
    stages
        The stage table (default :data:`saerad.pipeline.STAGES`).

    Nothing is written, whatever the outcome.
    """
    from saerad.pipeline import STAGES

    stages = tuple(stages or STAGES)
    problems = upstream_problems(artifacts_root, stage_name, stages)
    if not problems:
        return
    # Every required stage from the first one with a problem on: a stage re-run makes those after it stale.
    required = required_stages(stage_name, stages)
    to_run = required[min(required.index(name) for name in problems):]
    notebook = next(stage.notebook for stage in stages if stage.name == stage_name)
    lines = [f"{notebook} cannot run: stages it reads have not finished in "
             f"{display_path(artifacts_root)} (nothing has been written)"]
    lines += [f"  {name}: {problem}" for name, problem in problems.items()]
    lines.append(f"Run them first: {pipeline_command(profile, to_run, artifacts_root)}")
    raise UpstreamMissing("\n".join(lines))
