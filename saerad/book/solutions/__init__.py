"""Worked solutions of the book's exercises, computed by real runs and shown in collapsed drop-downs.

Each exercise asks the reader to change something and look at what moves. Its solution is a function
that does exactly that run (with the changed parameters) on the profile's artifacts and returns the
numbers the solution's text talks about. ``make solutions`` runs them all::

    python -m saerad.book.solutions --profile demo            # every solution that is not up to date
    python -m saerad.book.solutions --only 02.1 --force       # one exercise, even if up to date

and stores each result, with the parameters and a fingerprint of what produced it, in
``book/solutions/<profile>/<exercise>.json`` (small: numbers only; committed, so the book shows them
without re-running). A chapter calls :func:`glue_solution`, which glues every number under
``sol-<exercise>-<key>`` for the solution's Markdown text and a status line under
``sol-<exercise>-status``: when it was computed, or that it is stale (its function, its parameters or
the parameters of the chapters it reads changed since) or not run yet. Changes elsewhere in the package
do not mark a solution stale; re-run ``make solutions`` after changing a method.

A solution is registered with :func:`solution` in the module of its chapter
(``saerad/book/solutions/ch02_sae.py`` and so on).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from saerad.paths import REPO_ROOT, project_path

#: Where solution results are kept, one folder per profile.
SOLUTIONS_DIR = REPO_ROOT / "book" / "solutions"
FORMAT = 1


@dataclass(frozen=True)
class Solution:
    """One exercise's solution run.

    Attributes
    ----------
    exercise
        ``"<chapter number>.<exercise number>"``, e.g. ``"02.1"``.
    keys
        The numbers (or short texts) the solution's prose uses; ``compute`` must return exactly these.
    reads
        The stages whose artifacts it reads (their parameters are part of the fingerprint).
    parameters
        What the exercise changes, shown on the page (e.g. ``{"sae.l1_coefficient": 5.0}``).
    compute
        ``compute(artifacts_root, parameters) -> {key: value}``; values are numbers, strings, or lists of
        flat dicts (small tables).
    """

    exercise: str
    keys: tuple[str, ...]
    reads: tuple[str, ...]
    parameters: Mapping[str, Any]
    compute: Callable[[Path, Mapping[str, Any]], dict[str, Any]] = field(compare=False)


_REGISTRY: dict[str, Solution] = {}


def solution(exercise: str, keys: tuple[str, ...] | list[str], reads: tuple[str, ...] | list[str],
             **parameters: Any) -> Callable:
    """Decorator registering ``compute`` as the solution of ``exercise`` (see :class:`Solution`).

    Parameter names may not contain dots as keyword arguments; write ``sae__l1_coefficient=5`` for
    ``sae.l1_coefficient``.
    """

    def register(compute: Callable) -> Callable:
        if exercise in _REGISTRY and _REGISTRY[exercise].compute is not compute:
            raise ValueError(f"solution {exercise!r} is registered twice")
        shown = {name.replace("__", "."): value for name, value in parameters.items()}
        _REGISTRY[exercise] = Solution(exercise, tuple(keys), tuple(reads), shown, compute)
        return compute

    return register


def registry() -> dict[str, Solution]:
    """Every registered solution, by exercise, after importing the chapters' solution modules."""
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("ch"):
            importlib.import_module(f"{__name__}.{module.name}")
    return dict(sorted(_REGISTRY.items()))


def read_stages(entry: Solution) -> list[str]:
    """The stages a solution depends on: those it reads, and every stage those read in turn (run order).

    A solution that reads only the counterfactual stage's artifacts still depends on the SAE that stage
    used, so a new encoder or SAE must make it stale even though no counterfactual parameter changed.
    """
    from saerad.pipeline import STAGES, needed_stages

    by_name = {stage.name: stage for stage in STAGES}
    direct = [by_name[name] for name in entry.reads]
    wanted = set(entry.reads) | needed_stages(direct)
    return [stage.name for stage in STAGES if stage.name in wanted]


def fingerprint(entry: Solution, artifacts_root: str | Path) -> str:
    """Hash of the solution's function, its parameters, and the parameters of the stages it depends on."""
    from saerad.params import EXECUTION_ONLY_PARAMETERS, stage_parameters

    digest = hashlib.sha256()
    digest.update(inspect.getsource(entry.compute).encode())
    digest.update(json.dumps(dict(entry.parameters), sort_keys=True, default=str).encode())
    for stage in read_stages(entry):
        settings = {name: value for name, value in stage_parameters(artifacts_root, stage).items()
                    if name not in EXECUTION_ONLY_PARAMETERS}
        digest.update(stage.encode())
        digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def result_path(exercise: str, profile: str, solutions_dir: str | Path | None = None) -> Path:
    return Path(solutions_dir or SOLUTIONS_DIR) / profile / f"{exercise}.json"


def run_solution(entry: Solution, artifacts_root: str | Path, profile: str,
                 solutions_dir: str | Path | None = None) -> dict[str, Any]:
    """Compute one solution and store it (atomically) with its parameters and fingerprint."""
    import time
    from datetime import datetime, timezone

    from saerad.io import write_json

    root = project_path(artifacts_root)
    started = time.perf_counter()
    values = entry.compute(root, dict(entry.parameters))
    unknown, absent = set(values) - set(entry.keys), set(entry.keys) - set(values)
    if unknown or absent:
        raise ValueError(f"solution {entry.exercise}: compute returned keys {sorted(values)}; expected exactly "
                         f"{sorted(entry.keys)} (missing {sorted(absent)}, unexpected {sorted(unknown)})")
    record = {
        "format": FORMAT, "exercise": entry.exercise, "profile": profile,
        "parameters": dict(entry.parameters), "fingerprint": fingerprint(entry, root),
        "values": values, "seconds": round(time.perf_counter() - started, 1),
        # JSON objects are written with sorted keys; a table's column order is kept here.
        "columns": {key: list(value[0]) for key, value in values.items()
                    if isinstance(value, list) and value and isinstance(value[0], dict)},
        "computed": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
    }
    write_json(result_path(entry.exercise, profile, solutions_dir), record)
    return record


def solution_status(entry: Solution, artifacts_root: str | Path, profile: str,
                    solutions_dir: str | Path | None = None) -> tuple[str, dict[str, Any] | None]:
    """``("current" | "stale" | "not run", record or None)``."""
    from saerad.io import read_json

    path = result_path(entry.exercise, profile, solutions_dir)
    if not path.exists():
        return "not run", None
    record = read_json(path)
    if record.get("fingerprint") != fingerprint(entry, artifacts_root):
        return "stale", record
    return "current", record


def _format_value(value: Any, columns: list[str] | None = None) -> Any:
    from saerad.book.tables import format_number, show_table

    if isinstance(value, list):
        import pandas as pd

        table = pd.DataFrame(value)
        return show_table(table[columns] if columns and set(columns) == set(table.columns) else table)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_number(value)
    return str(value)


def glue_solution(exercise: str, artifacts_root: str | Path, profile: str,
                  solutions_dir: str | Path | None = None) -> str:
    """Glue a solution's numbers (``sol-<exercise>-<key>``) and status (``sol-<exercise>-status``).

    Every key is glued even when the solution has not been run (as "n/a: not run"), so the chapter's
    Markdown always resolves. Returns the status.
    """
    from myst_nb import glue

    entry = registry().get(exercise)
    if entry is None:
        raise KeyError(f"no solution is registered for exercise {exercise!r}; known: {sorted(registry())}")
    status, record = solution_status(entry, artifacts_root, profile, solutions_dir)
    changed = ", ".join(f"{name}={value!r}" for name, value in entry.parameters.items()) or "no parameter change"
    if status == "current":
        line = (f"Computed by `make solutions` on {record['computed']} ({record['seconds']:.0f} s, {changed}) "
                f"for the {profile} profile.")
    elif status == "stale":
        line = (f"Stale: computed on {record['computed']} ({changed}), but the solution's code or the "
                f"parameters of the chapters it reads have changed since; the numbers below may no longer "
                f"match. Run `make solutions` to refresh them.")
    else:
        line = f"Not run yet for the {profile} profile: `make solutions` computes it ({changed})."
    from IPython.display import Markdown

    glue(f"sol-{exercise}-status", Markdown(line), display=False)  # the chapters place it with {glue:md}
    values = record["values"] if record else {}
    orders = record.get("columns", {}) if record else {}
    for key in entry.keys:
        value = values.get(key)
        glue(f"sol-{exercise}-{key}", "n/a: not run" if value is None else _format_value(value, orders.get(key)),
             display=False)
    return status


def main(argv: list[str] | None = None) -> int:
    import argparse
    import os
    from concurrent.futures import ProcessPoolExecutor

    parser = argparse.ArgumentParser(prog="python -m saerad.book.solutions",
                                     description="Compute the worked solutions of the book's exercises.")
    parser.add_argument("--profile", default="demo")
    parser.add_argument("--artifacts-root", default=None, help="default: artifacts/<profile>")
    parser.add_argument("--only", action="append", metavar="EXERCISE", help="e.g. 02.1 (repeatable)")
    parser.add_argument("--force", action="store_true", help="recompute solutions that are up to date")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="solutions computed at once, one thread each (default: the machine's cores)")
    parser.add_argument("--list", action="store_true")
    args = parser.parse_args(argv)
    artifacts_root = project_path(args.artifacts_root or f"artifacts/{args.profile}")
    entries = registry()
    if args.list:
        for name, entry in entries.items():
            status, _ = solution_status(entry, artifacts_root, args.profile)
            print(f"{name}: {status}; changes {dict(entry.parameters)}; reads {list(entry.reads)}")
        return 0
    unknown = sorted(set(args.only or []) - set(entries))
    if unknown:
        print(f"error: no solution for {unknown}; known: {sorted(entries)}")
        return 2
    selected = [entries[name] for name in (args.only or entries)]
    todo = [entry for entry in selected
            if args.force or solution_status(entry, artifacts_root, args.profile)[0] != "current"]
    print(f"{len(todo)} of {len(selected)} solutions to compute ({args.jobs} at a time)", flush=True)
    if not todo:
        return 0
    failures = 0
    with ProcessPoolExecutor(max_workers=max(1, min(args.jobs, len(todo))), initializer=_one_thread) as pool:
        futures = {entry.exercise: pool.submit(_run_by_name, entry.exercise, str(artifacts_root), args.profile)
                   for entry in todo}
        for name, future in futures.items():
            try:
                record = future.result()
                print(f"[{name}] done in {record['seconds']:.0f} s", flush=True)
            except Exception as error:  # report every failing solution, then fail
                failures += 1
                print(f"[{name}] failed: {type(error).__name__}: {error}", flush=True)
    return 1 if failures else 0


def _one_thread() -> None:
    # The solutions' matrices are small and parallelise poorly inside one product (a shared 2-core machine
    # ran 300 SAE steps in 115 s on two threads against 19 s on one): one thread each, several at once.
    import torch

    torch.set_num_threads(1)


def _run_by_name(exercise: str, artifacts_root: str, profile: str) -> dict[str, Any]:
    return run_solution(registry()[exercise], artifacts_root, profile)
