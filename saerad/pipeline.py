"""Run the book's chapters in order with papermill.

Usage::

    python -m saerad.pipeline --profile demo
    python -m saerad.pipeline --profile demo --only encode --set encode.batch_size=32
    python -m saerad.pipeline --profile paper --from encode --set dataset_root=/data/mimic-cxr-jpg
    python -m saerad.pipeline --profile paper --publish     # show that profile's chapters in the book

Each stage is one notebook of ``notebooks/``. Everything a profile's run writes
lives under its artifacts root (``artifacts/<profile>``, or ``--set
artifacts_root=...``)::

    <root>/<stage>/              the stage's artifacts
    <root>/<stage>/stage.json    its record (saerad.stage_records): status, parameters, fingerprint, seconds
    <root>/chapters/<notebook>   the executed chapter

A notebook is executed into a temporary file and renamed over the executed
chapter only when every cell succeeded, so a failing stage never replaces a
good chapter (the partly executed notebook is ``<root>/<stage>/failed.ipynb``).
The record is rewritten as ``running`` before the stage executes, so a failed,
interrupted or killed run is never taken for a finished one. A stage is
skipped ("up to date") when its record is ``ok`` for the same notebook,
parameters (after the notebook's defaults), package code and the records of the
stages it reads (``Stage.reads``; each of those records holds, in turn, the
fingerprints of what it read), and its declared outputs exist; ``--force`` runs
it anyway. So a change re-runs the stages that read what changed, and no other:
``--set reports.tau=1.5`` re-runs reports, metrics, the reader study and the
scorecard, not the counterfactual chapter, which never opens the reports. After a successful
run the profile's chapters are published as a whole into ``book/chapters/``
(:mod:`saerad.publish`), so the book shows one profile; a profile that lacks a
chapter the book lists is not published (the book stays as it was, and a line
says why).

The bookkeeping is written here rather than taken from a build tool such as
doit or make: those record a task's success only after it ends and keep it
until a later run completes or fails in-process, so a killed run leaves the
previous success in place (the failure this module's records exist to
prevent); and the records must be per-profile JSON files the chapters read
(:func:`saerad.params.stage_parameters`). What is needed is about a hundred lines.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from saerad import stage_records as records
from saerad.paths import REPO_ROOT, display_path, project_path
from saerad.features.preflight import check_planned_protection
from saerad.io import read_json, write_json
from saerad.preflight import PreflightError, check_stage
from saerad.params import (
    EXECUTION_ONLY_PARAMETERS,
    ParameterError,
    load_profile,
    parse_overrides,
    resolve_parameters,
    stage_schema,
    with_defaults,
)
from saerad.publish import (CHAPTER_METADATA, EXECUTED_CHAPTERS, PublishError, PublishIncomplete, listed_chapters,
                            publish_chapters)

Outputs = Sequence[str] | Callable[[Mapping[str, Any]], Sequence[str]]


@dataclass(frozen=True)
class Stage:
    """One chapter of the book and the artifacts folder it owns.

    ``outputs`` are a few key files (or non-empty folders) the stage writes, relative to its folder, or a
    function of the stage's parameters giving them; a stage missing one is not up to date.

    ``reads`` names the earlier stages whose artifacts or parameters the chapter opens (directly: what
    those stages read is in their own fingerprints). None: every stage before it, the safe default for a
    new chapter. A stage left out here is not re-run when that stage changes, so a chapter that starts
    reading another stage's folder must add it (tests/test_stage_reads.py checks the notebooks' paths).

    ``requires`` names the read stages the chapter cannot run without, when opened by hand
    (:func:`saerad.upstream.require_upstream`); None: every stage it reads, directly or through another.
    A chapter that shows "not run" for a stage that has not run (the scorecard) requires none.
    """

    name: str
    notebook: str
    title: str
    outputs: Outputs = ()
    reads: tuple[str, ...] | None = None
    requires: tuple[str, ...] | None = None

    def declared_outputs(self, parameters: Mapping[str, Any]) -> list[str]:
        return list(self.outputs(parameters) if callable(self.outputs) else self.outputs)


def _data_outputs(parameters: Mapping[str, Any]) -> list[str]:
    tables = ["images.csv", "studies.csv", "priors.csv", "dataset.json"]
    # SynthCXR's images are generated into the stage's folder; MIMIC-CXR's stay in dataset_root.
    return tables + (["synthcxr/files"] if parameters.get("source") == "synthcxr" else [])


#: The chapters in run order. A stage may read the artifacts of the stages
#: before it, never those after it.
STAGES: tuple[Stage, ...] = (
    Stage("data", "00_data.ipynb", "Data: SynthCXR and the MIMIC-CXR loader", _data_outputs, reads=()),
    Stage("encode", "01_encode.ipynb", "Image encoder class tokens",
          ("class_tokens.npy", "tokens_index.csv", "scale.json"), reads=("data",)),
    Stage("sae", "02_sae.ipynb", "The sparse autoencoder",
          ("sae_rad_main/cfg.json", "sae_rad_main/sae_weights.safetensors", "main_sae.csv"),
          reads=("data", "encode")),
    Stage("features", "03_features.ipynb", "Reading the features",
          ("activations.npz", "activations_index.csv", "feature_stats.csv", "descriptions.jsonl", "summary.json"),
          reads=("data", "encode", "sae")),
    Stage("reports", "04_reports.ipynb", "Writing reports from features", ("generated.jsonl", "summary.json"),
          reads=("data", "encode", "sae", "features")),
    Stage("metrics", "05_metrics.ipynb", "Scoring the reports: Tables 1 and 2",
          ("table1.csv", "table2.csv", "summary.json"), reads=("data", "encode", "sae", "features", "reports")),
    Stage("counterfactuals", "06_counterfactual.ipynb", "Counterfactual images",
          ("decoder/decoder.safetensors", "axioms.csv", "summary.json"), reads=("data", "encode", "sae", "features")),
    Stage("reader_study", "07_reader_study.ipynb", "The reader study",
          ("review_page/review.html", "summary.csv", "summary.json"), reads=("data", "reports")),
    Stage("real_reports", "09_real_reports.ipynb", "Real reports: the report-reading tools on Open-i",
          ("real_reports_labeler.csv", "summary.json"), reads=()),
    # The scorecard reads every chapter's results (reads=None: all stages before it), and marks a claim
    # "not run" when its chapter has not run, so it requires none of them.
    Stage("scorecard", "08_scorecard.ipynb", "Does SAE-Rad hold up?", ("scorecard.csv",), requires=()),
)

#: Where the book reads its chapters, and where it picks up the static pages (reader study, feature atlas).
BOOK_CHAPTERS_DIR = REPO_ROOT / "book" / "chapters"
BOOK_EXTRA_DIR = REPO_ROOT / "book" / "extra"
#: The book's table of contents: the chapters it lists must all be there before a profile is published.
BOOK_TOC = REPO_ROOT / "_toc.yml"

#: What a user sees on Ctrl-C instead of a traceback.
INTERRUPTED_MESSAGE = "interrupted; the stage's record says so; re-run to resume"


class StageFailed(RuntimeError):
    """A notebook cell raised; carries the stage, the cell and the error."""


class ProfileBusy(RuntimeError):
    """Another pipeline run holds the profile's artifacts."""


#: The lock a run holds on its artifacts folder, and the note beside it saying who holds it.
LOCK_NAME = ".pipeline.lock"
LOCK_OWNER_NAME = ".pipeline.owner.json"


@contextlib.contextmanager
def profile_lock(artifacts_root: Path, profile: str):
    """Hold the profile's artifacts for this run; raise :class:`ProfileBusy` if another run holds them.

    Two runs of one profile would overwrite each other's artifacts and records. The lock is an OS file
    lock (``filelock``), so it is released when the process ends, however it ends (a killed run leaves
    no stale lock behind).
    """
    from datetime import datetime, timezone

    from filelock import FileLock, Timeout

    artifacts_root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(artifacts_root / LOCK_NAME), timeout=0)
    owner_path = artifacts_root / LOCK_OWNER_NAME
    try:
        lock.acquire()
    except Timeout:
        owner = read_json(owner_path) if owner_path.exists() else {}
        raise ProfileBusy(
            f"another pipeline run of profile {profile!r} is using {display_path(artifacts_root)}"
            + (f" (process {owner.get('pid')}, started {owner.get('started')}: {owner.get('command')})" if owner else "")
            + ": wait for it to finish or stop it; two runs of one profile would overwrite each other's artifacts"
        ) from None
    try:
        write_json(owner_path, {"pid": os.getpid(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                                "command": " ".join(sys.argv)})
        yield
    finally:
        owner_path.unlink(missing_ok=True)
        lock.release()


def stage_names() -> list[str]:
    return [stage.name for stage in STAGES]


def stage_reads(stage: Stage, stages: Sequence[Stage] = STAGES) -> list[str]:
    """The stages ``stage`` reads directly: its declared ``reads``, or every stage before it."""
    names = [other.name for other in stages]
    before = names[: names.index(stage.name)]
    if stage.reads is None:
        return before
    unknown = [name for name in stage.reads if name not in before]
    if unknown:
        raise ValueError(f"stage {stage.name!r} reads {unknown}, which are not stages run before it ({before})")
    return list(stage.reads)


def needed_stages(selected: Sequence[Stage], stages: Sequence[Stage] = STAGES) -> set[str]:
    """Every stage whose artifacts the ``selected`` ones read, directly or through another stage."""
    by_name = {stage.name: stage for stage in stages}
    needed: set[str] = set()
    pending = [name for stage in selected for name in stage_reads(stage, stages)]
    while pending:
        name = pending.pop()
        if name not in needed:
            needed.add(name)
            pending.extend(stage_reads(by_name[name], stages))
    return needed


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
    """Hash of what a stage's results depend on (execution-only parameters, such as where the artifacts
    live or how many processes train, are left out: :data:`saerad.params.EXECUTION_ONLY_PARAMETERS`)."""
    digest = hashlib.sha256()
    digest.update(notebook.read_bytes())
    digest.update(json.dumps({name: value for name, value in parameters.items()
                              if name not in EXECUTION_ONLY_PARAMETERS}, sort_keys=True, default=str).encode())
    digest.update(package.encode())
    for fingerprint in upstream:
        digest.update(fingerprint.encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Plan:
    """A profile's parameters, validated and completed with the notebooks' defaults, and where its run writes."""

    profile: str
    artifacts_root: Path
    parameters: dict[str, dict[str, Any]]


def plan(
    profile: str,
    assignments: list[str] | None = None,
    artifacts_base: Path | None = None,
    stages: tuple[Stage, ...] = STAGES,
    notebooks_dir: Path | None = None,
    params_dir: Path | None = None,
) -> Plan:
    """Validate a profile and its ``--set`` values against the notebooks; nothing is written.

    Every value is checked for the type of its notebook default and for the range or choices declared in
    :mod:`saerad.parameter_constraints`; the first problem raises :class:`ParameterError` naming the stage,
    the parameter, the value and what is expected.

    ``artifacts_root`` defaults to ``<artifacts_base>/<profile>``; a profile or ``--set artifacts_root=...``
    may move it, for every stage at once: records and executed chapters go there too.
    """
    artifacts_base = Path(artifacts_base or REPO_ROOT / "artifacts")
    notebooks_dir = Path(notebooks_dir or REPO_ROOT / "notebooks")
    profile_data = load_profile(Path(params_dir or REPO_ROOT / "params") / f"{profile}.yaml")
    schemas = {stage.name: stage_schema(stage.name, notebooks_dir / stage.notebook) for stage in stages}
    resolved = resolve_parameters(
        profile, profile_data, schemas, parse_overrides(assignments or []), display_path(artifacts_base / profile)
    )
    roots = {str(values["artifacts_root"]) for values in resolved.values()}
    if len(roots) > 1:
        raise ParameterError(
            f"artifacts_root must be the same for every stage, got {sorted(roots)}: "
            "set it without a stage prefix (--set artifacts_root=/path)"
        )
    names = {values["profile"] for values in resolved.values()}
    if names != {profile}:
        raise ParameterError(f"parameter 'profile' is the profile's name ({profile!r}), got {sorted(names)}: "
                             "choose the profile with --profile")
    parameters = {name: with_defaults(schemas[name], values) for name, values in resolved.items()}
    return Plan(profile, project_path(roots.pop()), parameters)


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
    toc_path: Path | None = None,
) -> dict[str, str]:
    """Validate all parameters, execute the selected stages in order, then publish the profile's chapters.

    Parameters
    ----------
    artifacts_base
        Folder holding ``<profile>/`` (default ``artifacts/``), unless ``artifacts_root`` is set.
    chapters_dir
        Where the profile's executed chapters are published for the book (default ``book/chapters``; only
        then are the static pages, the reader-study review page and the feature atlas, published to
        ``book/extra`` too).
    toc_path
        The book's table of contents (default ``_toc.yml``): the chapters are published only when the
        profile holds every one it lists in ``chapters_dir``; otherwise the book is left as it was and a
        line says why (the stages' work is done; the run does not fail for it).

    Returns
    -------
    dict
        Stage name to ``"ran"`` or ``"up to date"``.
    """
    extra_dir = BOOK_EXTRA_DIR if chapters_dir is None else None
    chapters_dir = Path(chapters_dir or BOOK_CHAPTERS_DIR)
    notebooks_dir = Path(notebooks_dir or REPO_ROOT / "notebooks")
    # Everything is validated before the first cell runs.
    planned = plan(profile, assignments, artifacts_base, stages, notebooks_dir, params_dir)
    root = planned.artifacts_root
    selected = select_stages(only, start, stages)
    last = max(stages.index(stage) for stage in selected)
    # Data protection for every language-model stage of this run, before the first stage does any work.
    check_planned_protection({stage.name: planned.parameters[stage.name] for stage in selected
                              if stage.name in planned.parameters}
                             | {"data": planned.parameters.get("data", {})}, root,
                             data_runs=any(stage.name == "data" for stage in selected))
    with profile_lock(root, profile):
        package = package_fingerprint()

        needed = needed_stages(selected, stages)
        outcome: dict[str, str] = {}
        fingerprints: dict[str, str] = {}
        for stage in stages[: last + 1]:
            stage_dir = root / stage.name
            parameters = planned.parameters[stage.name]
            record = records.read_record(stage_dir)
            if stage not in selected:
                if stage.name not in needed:
                    continue
                # Not run now, but a selected stage reads its artifacts: they must be complete, and made from
                # the current runs of the stages they were read from.
                problem = records.not_ok_reason(record) or _missing_text(
                    stage, stage_dir, {**parameters, **record.get("parameters", {})})
                outdated = [] if problem else [
                    name for name in stage_reads(stage, stages)
                    if name in record.get("upstream", {}) and record["upstream"][name] != fingerprints[name]]
                if outdated:
                    problem = f"they were made from an earlier run of {', '.join(map(repr, outdated))}"
                if problem:
                    needing = next(later.name for later in selected if stage.name in needed_stages([later], stages))
                    raise StageFailed(
                        f"stage {needing!r} needs the artifacts of {stage.name!r} for profile {profile!r}, but {problem}: "
                        f"run `python -m saerad.pipeline --profile {profile} --from {stage.name}`"
                        + (" (with the same --set values)" if outdated else ""))
                fingerprints[stage.name] = record["fingerprint"]
                continue
            reads = stage_reads(stage, stages)
            fingerprint = stage_fingerprint(notebooks_dir / stage.notebook, parameters,
                                            [fingerprints[name] for name in reads], package)
            chapter = root / EXECUTED_CHAPTERS / stage.notebook
            missing = records.missing_outputs(stage_dir, stage.declared_outputs(parameters))
            missing += [] if chapter.exists() else [f"the executed chapter {display_path(chapter)}"]
            reason = "--force" if force else records.stale_reason(
                record, fingerprint, missing, parameters, {name: fingerprints[name] for name in reads})
            if reason is None:
                print(f"[{stage.name}] up to date (use --force to re-run)", flush=True)
                outcome[stage.name] = "up to date"
                fingerprints[stage.name] = fingerprint
                continue
            check_stage(stage.name, parameters, root)
            print(f"[{stage.name}] running {stage.notebook} ({reason}) -> {display_path(chapter)}", flush=True)
            base = {"stage": stage.name, "notebook": stage.notebook, "profile": profile, "parameters": parameters,
                    "fingerprint": fingerprint, "upstream": {name: fingerprints[name] for name in reads}}
            seconds = _run_stage(stage, notebooks_dir / stage.notebook, parameters, stage_dir, chapter, base, timeout)
            print(f"[{stage.name}] done in {seconds:.1f} s", flush=True)
            outcome[stage.name] = "ran"
            fingerprints[stage.name] = fingerprint

        _publish_after_run(profile, root, chapters_dir, stages, extra_dir, Path(toc_path or BOOK_TOC))
        return outcome


def _publish_after_run(profile: str, root: Path, chapters_dir: Path, stages: Sequence[Stage],
                       extra_dir: Path | None, toc_path: Path) -> None:
    """Publish the run's profile, or say in one line why the book was left as it was."""
    try:
        marker = publish_chapters(profile, root, chapters_dir, [stage.notebook for stage in stages], extra_dir,
                                  required=listed_chapters(toc_path, chapters_dir))
    except PublishIncomplete as incomplete:
        print(incomplete, flush=True)
        return
    missing = f" (not yet run: {', '.join(marker['missing'])})" if marker["missing"] else ""
    print(f"published {len(marker['chapters'])} chapters of profile {profile!r} to {display_path(chapters_dir)}"
          f"{missing}", flush=True)


def publish(profile: str, assignments: list[str] | None = None, **locations: Any) -> dict[str, Any]:
    """Publish ``profile``'s executed chapters into ``book/chapters`` without running anything.

    Raises :class:`saerad.publish.PublishIncomplete`, changing nothing, when the profile lacks a chapter the
    table of contents (``toc_path``, default ``_toc.yml``) lists.
    """
    chapters_dir = Path(locations.pop("chapters_dir", None) or BOOK_CHAPTERS_DIR)
    extra_dir = BOOK_EXTRA_DIR if chapters_dir == BOOK_CHAPTERS_DIR else None
    toc_path = Path(locations.pop("toc_path", None) or BOOK_TOC)
    planned = plan(profile, assignments, **locations)
    return publish_chapters(profile, planned.artifacts_root, chapters_dir,
                            [stage.notebook for stage in locations.get("stages", STAGES)], extra_dir,
                            required=listed_chapters(toc_path, chapters_dir))


def _missing_text(stage: Stage, stage_dir: Path, parameters: Mapping[str, Any]) -> str | None:
    missing = records.missing_outputs(stage_dir, stage.declared_outputs(parameters))
    return f"output(s) missing: {', '.join(missing)}" if missing else None


def _run_stage(stage: Stage, notebook: Path, parameters: dict[str, Any], stage_dir: Path, chapter: Path,
               base: dict[str, Any], timeout: int) -> float:
    """Execute one stage, keeping its record truthful from start to end; return its seconds."""
    stage_dir.mkdir(parents=True, exist_ok=True)
    running = records.mark_running(stage_dir, base)
    started = time.perf_counter()
    try:
        _execute(stage, notebook, parameters, chapter, stage_dir, timeout)
    except KeyboardInterrupt:
        records.mark_finished(stage_dir, running, records.INTERRUPTED, time.perf_counter() - started)
        raise
    except BaseException as error:
        text = str(error) if isinstance(error, StageFailed) else f"{type(error).__name__}: {error}"
        records.mark_finished(stage_dir, running, records.FAILED, time.perf_counter() - started, text)
        raise
    seconds = time.perf_counter() - started
    records.mark_finished(stage_dir, running, records.OK, seconds)
    # A failed.ipynb beside a successful run would describe an error that no longer exists.
    (stage_dir / "failed.ipynb").unlink(missing_ok=True)
    return seconds


def _execute(stage: Stage, notebook: Path, parameters: dict[str, Any], chapter: Path, stage_dir: Path,
             timeout: int) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

    chapter.parent.mkdir(parents=True, exist_ok=True)
    # A dot-name keeps the half-executed copy out of the book's sources.
    temporary = chapter.with_name(f".{chapter.name}.running.ipynb")
    try:
        with _signals_stop_the_kernel():
            papermill.execute_notebook(
                str(notebook),
                str(temporary),
                parameters=parameters,
                cwd=str(REPO_ROOT),
                kernel_name="python3",
                execution_timeout=timeout,
                progress_bar=sys.stderr.isatty(),
                log_output=False,
                **_kernel_options(),
            )
    except PapermillExecutionError as error:
        if error.ename == "KeyboardInterrupt":
            if temporary.exists():
                temporary.unlink()
            raise KeyboardInterrupt from None
        failed = stage_dir / "failed.ipynb"
        if temporary.exists():
            os.replace(temporary, failed)
        raise StageFailed(
            f"stage {stage.name!r} ({stage.notebook}) failed in cell {error.cell_index} "
            f"(execution count {error.exec_count}): {error.ename}: {error.evalue}\n"
            f"  the partly executed notebook is {display_path(failed)}; "
            f"{display_path(chapter)} was left as it was"
        ) from None
    except BaseException:
        if temporary.exists():
            temporary.unlink()
        raise
    missing = records.missing_outputs(stage_dir, stage.declared_outputs(parameters))
    if missing:
        failed = stage_dir / "failed.ipynb"
        os.replace(temporary, failed)
        raise StageFailed(
            f"stage {stage.name!r} ({stage.notebook}) ran every cell but did not write its declared output(s) "
            f"{missing} in {display_path(stage_dir)}\n  the executed notebook is {display_path(failed)}; "
            f"{display_path(chapter)} was left as it was"
        )
    hide_parameter_cells(temporary)
    label_chapter(temporary, {"profile": parameters["profile"], "stage": stage.name,
                              "artifacts_root": str(parameters["artifacts_root"])})
    os.replace(temporary, chapter)


class Interrupted(KeyboardInterrupt):
    """The run was stopped by a signal (Ctrl-C's SIGINT, or SIGTERM); ``signum`` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def _signals_stop_the_kernel() -> Iterator[None]:
    """On SIGINT or SIGTERM, kill the kernel's process group, then raise :class:`Interrupted` to unwind papermill.

    The kernel runs in its own session, so the terminal's Ctrl-C reaches only this process; left alone,
    the kernel would be shut down mid-cell (printing a traceback of its closed sockets), or, after a
    SIGTERM, keep running without anyone waiting for it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        import psutil

        for child in psutil.Process().children():
            try:
                if os.getpgid(child.pid) == child.pid:  # a session leader: the kernel and its workers
                    os.killpg(child.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        raise Interrupted(signum)

    previous = {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _kernel_options() -> dict[str, Any]:
    """Encrypt the kernel's loopback traffic (CurveZMQ) where pyzmq can (:mod:`saerad.kernel_encryption`).

    ipykernel warns "Kernel is running over TCP without encryption" at every start otherwise; with keys
    provisioned by the kernel manager the traffic is encrypted and the warning has no cause.
    """
    from saerad.kernel_encryption import kernel_manager_config

    return kernel_manager_config()


#: Tags of the cells that hold parameters: the notebook's defaults and papermill's injected values.
#: The chapter shows the values it ran with as one table instead (saerad.book.parameters).
PARAMETER_CELL_TAGS = ("parameters", "injected-parameters")


def hide_parameter_cells(executed: Path) -> None:
    """Tag the parameter cells of an executed notebook ``remove-cell`` so the book does not show them."""
    import nbformat

    notebook = nbformat.read(str(executed), as_version=4)
    for cell in notebook.cells:
        tags = cell.metadata.setdefault("tags", [])
        if any(tag in tags for tag in PARAMETER_CELL_TAGS) and "remove-cell" not in tags:
            tags.append("remove-cell")
    nbformat.write(notebook, str(executed))


def label_chapter(executed: Path, label: dict[str, Any]) -> None:
    """Write which profile and stage an executed chapter belongs to into its metadata (``saerad``)."""
    import nbformat

    notebook = nbformat.read(str(executed), as_version=4)
    notebook.metadata[CHAPTER_METADATA] = label
    nbformat.write(notebook, str(executed))


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
    parser.add_argument("--publish", action="store_true",
                        help="run nothing; make book/chapters the profile's executed chapters (what the book shows)")
    args = parser.parse_args(argv)

    try:
        if args.list:
            for stage in STAGES:
                print(f"{stage.name}: notebooks/{stage.notebook} — {stage.title}")
                for parameter in stage_schema(stage.name, REPO_ROOT / "notebooks" / stage.notebook).values():
                    print(f"    {parameter.name} = {parameter.default!r}  ({parameter.expected}) {parameter.help}")
            return 0
        if args.publish:
            if args.only or args.start or args.force:
                raise ParameterError("--publish runs no stage: give it only --profile and --set")
            marker = publish(args.profile, args.assignments)
            print(f"book/chapters now holds profile {args.profile!r}: {len(marker['chapters'])} chapters"
                  + (f" (not yet run: {', '.join(marker['missing'])})" if marker["missing"] else ""))
            return 0
        run(args.profile, args.only, args.start, args.assignments, args.force, args.timeout)
    except KeyboardInterrupt as interruption:
        print(INTERRUPTED_MESSAGE, file=sys.stderr)
        return 128 + getattr(interruption, "signum", signal.SIGINT)
    except (ParameterError, StageFailed, PreflightError, PublishError, ProfileBusy) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2 if isinstance(error, ParameterError) else 1
    except OSError as error:  # e.g. an artifacts folder that cannot be written: the path and the reason
        print(f"error: {error.strerror or error}: {error.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
