"""Run the book's chapters in order with papermill.

Usage::

    python -m saerad.pipeline --profile demo
    python -m saerad.pipeline --profile demo --only encode --set encode.batch_size=32
    python -m saerad.pipeline --profile paper --from encode --set dataset_root=/data/mimic-cxr-jpg

Each stage is one notebook of ``notebooks/``. It is executed into a
temporary file and moved into ``book/chapters/`` only when every cell
succeeded, so a failing stage never replaces a good executed chapter. Its
artifacts go to ``artifacts/<profile>/<stage>/`` together with
``stage.json`` (parameters, timings, fingerprint). A stage whose notebook,
parameters, package code and upstream stages are unchanged is skipped
unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saerad.io import read_json, write_json
from saerad.params import (
    ParameterError,
    load_profile,
    notebook_parameters,
    parse_overrides,
    resolve_parameters,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Stage:
    """One chapter of the book and the artifacts folder it owns."""

    name: str
    notebook: str
    title: str


#: The chapters in run order. A stage may read the artifacts of the stages
#: before it, never those after it.
STAGES: tuple[Stage, ...] = (
    Stage("data", "00_data.ipynb", "Data: SynthCXR and the MIMIC-CXR loader"),
    Stage("encode", "01_encode.ipynb", "Image encoder class tokens"),
    Stage("sae", "02_sae.ipynb", "The sparse autoencoder"),
    Stage("features", "03_features.ipynb", "Reading the features"),
    Stage("reports", "04_reports.ipynb", "Writing reports from features"),
    Stage("metrics", "05_metrics.ipynb", "Scoring the reports: Tables 1 and 2"),
    Stage("counterfactuals", "06_counterfactual.ipynb", "Counterfactual images"),
    Stage("reader_study", "07_reader_study.ipynb", "The reader study"),
)


class StageFailed(RuntimeError):
    """A notebook cell raised; carries the stage, the cell and the error."""


def stage_names() -> list[str]:
    return [stage.name for stage in STAGES]


def select_stages(only: list[str] | None, start: str | None, stages: tuple[Stage, ...] = STAGES) -> list[Stage]:
    """The stages to run for ``--only`` / ``--from`` (all by default)."""
    names = [stage.name for stage in stages]
    for name in (only or []) + ([start] if start else []):
        if name not in names:
            raise ParameterError(f"unknown stage {name!r}; stages are {names}")
    if only and start:
        raise ParameterError("give --only or --from, not both")
    if only:
        return [stage for stage in stages if stage.name in only]
    if start:
        return list(stages[names.index(start):])
    return list(stages)


def package_fingerprint() -> str:
    """Hash of the package sources, so code changes invalidate cached stages."""
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "saerad").rglob("*.py")):
        digest.update(path.relative_to(REPO_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def stage_fingerprint(notebook: Path, parameters: dict[str, Any], upstream: list[str], package: str) -> str:
    digest = hashlib.sha256()
    digest.update(notebook.read_bytes())
    digest.update(json.dumps(parameters, sort_keys=True, default=str).encode())
    digest.update(package.encode())
    for fingerprint in upstream:
        digest.update(fingerprint.encode())
    return digest.hexdigest()


def run(
    profile: str,
    only: list[str] | None = None,
    start: str | None = None,
    assignments: list[str] | None = None,
    force: bool = False,
    timeout: int = 1800,
    artifacts_base: Path | None = None,
    chapters_dir: Path | None = None,
    stages: tuple[Stage, ...] = STAGES,
    notebooks_dir: Path | None = None,
    params_dir: Path | None = None,
) -> dict[str, str]:
    """Validate all parameters, then execute the selected stages in order.

    Returns
    -------
    dict
        Stage name to ``"ran"`` or ``"up to date"``.
    """
    artifacts_base = Path(artifacts_base or REPO_ROOT / "artifacts")
    chapters_dir = Path(chapters_dir or REPO_ROOT / "book" / "chapters")
    notebooks_dir = Path(notebooks_dir or REPO_ROOT / "notebooks")
    profile_data = load_profile(Path(params_dir or REPO_ROOT / "params") / f"{profile}.yaml")
    artifacts_root = artifacts_base / profile
    schemas = {stage.name: notebook_parameters(notebooks_dir / stage.notebook) for stage in stages}
    # Everything is validated before the first cell runs.
    resolved = resolve_parameters(
        profile, profile_data, schemas, parse_overrides(assignments or []), _display_path(artifacts_root)
    )
    selected = select_stages(only, start, stages)
    package = package_fingerprint()

    outcome: dict[str, str] = {}
    fingerprints: list[str] = []
    for position, stage in enumerate(stages):
        stage_dir = artifacts_root / stage.name
        record_path = stage_dir / "stage.json"
        parameters = resolved[stage.name]
        fingerprint = stage_fingerprint(notebooks_dir / stage.notebook, parameters, fingerprints, package)
        if stage not in selected:
            record = read_json(record_path) if record_path.exists() else None
            if record is None and position < stages.index(selected[0]):
                raise StageFailed(
                    f"stage {selected[0].name!r} needs the artifacts of {stage.name!r}, which has not run "
                    f"for profile {profile!r}: run `python -m saerad.pipeline --profile {profile} --from {stage.name}`"
                )
            fingerprints.append(record["fingerprint"] if record else fingerprint)
            continue
        chapter = chapters_dir / stage.notebook
        if not force and record_path.exists() and chapter.exists():
            record = read_json(record_path)
            if record.get("fingerprint") == fingerprint and record.get("status") == "ok":
                print(f"[{stage.name}] up to date (use --force to re-run)", flush=True)
                outcome[stage.name] = "up to date"
                fingerprints.append(fingerprint)
                continue
        print(f"[{stage.name}] running {stage.notebook} -> {_display_path(chapter)}", flush=True)
        started = time.perf_counter()
        _execute(stage, notebooks_dir / stage.notebook, parameters, chapters_dir, stage_dir, timeout)
        elapsed = time.perf_counter() - started
        write_json(
            record_path,
            {
                "stage": stage.name,
                "notebook": stage.notebook,
                "profile": profile,
                "parameters": parameters,
                "fingerprint": fingerprint,
                "status": "ok",
                "seconds": round(elapsed, 1),
            },
        )
        print(f"[{stage.name}] done in {elapsed:.1f} s", flush=True)
        outcome[stage.name] = "ran"
        fingerprints.append(fingerprint)
    return outcome


def _execute(
    stage: Stage, notebook: Path, parameters: dict[str, Any], chapters_dir: Path, stage_dir: Path, timeout: int
) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    chapters_dir.mkdir(parents=True, exist_ok=True)
    stage_dir.mkdir(parents=True, exist_ok=True)
    final = chapters_dir / stage.notebook
    # A dot-name keeps the half-executed copy out of the book's sources.
    temporary = chapters_dir / f".{stage.notebook}.running.ipynb"
    try:
        papermill.execute_notebook(
            str(notebook),
            str(temporary),
            parameters=parameters,
            cwd=str(REPO_ROOT),
            kernel_name="python3",
            execution_timeout=timeout,
            progress_bar=sys.stderr.isatty(),
            log_output=False,
        )
    except PapermillExecutionError as error:
        failed = stage_dir / "failed.ipynb"
        if temporary.exists():
            os.replace(temporary, failed)
        raise StageFailed(
            f"stage {stage.name!r} ({stage.notebook}) failed in cell {error.cell_index} "
            f"(execution count {error.exec_count}): {error.ename}: {error.evalue}\n"
            f"  the partly executed notebook is {_display_path(failed)}; "
            f"{_display_path(final)} was left as it was"
        ) from None
    except BaseException:
        if temporary.exists():
            temporary.unlink()
        raise
    os.replace(temporary, final)


def _display_path(path: Path) -> str:
    path = Path(path).resolve()
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m saerad.pipeline",
        description="Execute the SAE-Rad book's chapters in order with papermill.",
    )
    parser.add_argument("--profile", default="demo", help="params/<profile>.yaml (default: demo)")
    parser.add_argument("--only", action="append", metavar="STAGE", help=f"run only this stage (repeatable): {stage_names()}")
    parser.add_argument("--from", dest="start", metavar="STAGE", help="run this stage and every later one")
    parser.add_argument("--set", dest="assignments", action="append", default=[], metavar="[STAGE.]KEY=VALUE",
                        help="override a parameter; a bare KEY applies to every stage that declares it")
    parser.add_argument("--force", action="store_true", help="re-run stages even when up to date")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds allowed per cell (default 1800)")
    parser.add_argument("--list", action="store_true", help="list stages and their parameters, then exit")
    args = parser.parse_args(argv)

    try:
        if args.list:
            for stage in STAGES:
                print(f"{stage.name}: notebooks/{stage.notebook} — {stage.title}")
                for parameter in notebook_parameters(REPO_ROOT / "notebooks" / stage.notebook).values():
                    print(f"    {parameter.name} = {parameter.default!r}  ({parameter.type_name}) {parameter.help}")
            return 0
        run(args.profile, args.only, args.start, args.assignments, args.force, args.timeout)
    except (ParameterError, StageFailed) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ParameterError) else 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
