"""Train independent SAEs side by side, one worker process each, with the same weights as one after another.

Matrices of a few hundred by a few thousand entries keep one core busy but parallelise poorly inside one
product, so on a small CPU two SAEs trained at once on one thread each finish sooner than the same two
trained in turn on two threads each. A run's weights depend on its seed, its data and the number of
threads its products were computed with (a sum split over two threads adds in another order); they do
not depend on which process trains it or on what trains beside it. So at the same ``threads_per_run``,
:func:`train_jobs` with one worker and with several write byte-identical weights (a test checks it).

Every run keeps its own checkpoint folder: a killed run resumes from its last checkpoint, and one that
is already finished is not trained again. After :func:`train_jobs`, the chapter measures each run with
:func:`saerad.sae.experiments.train_and_evaluate`, which then only loads it.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from saerad.sae.experiments import Run, train_and_evaluate, train_run
from saerad.sae.train import TrainConfig, TrainResult


@dataclass(frozen=True, eq=False)
class TrainingJob:
    """One SAE to train: the run, its tokens, its optimisation settings and the folder above its own.

    ``purpose`` says which part of the chapter reads it and ``detail`` what the run changes (both shown in
    the chapter's list of runs).
    """

    run: Run
    train_tokens: np.ndarray
    test_tokens: np.ndarray
    train_config: TrainConfig
    stage_dir: Path
    purpose: str = ""
    detail: str = ""

    @property
    def out_dir(self) -> Path:
        return Path(self.stage_dir) / self.run.name

    @property
    def cost(self) -> float:
        """Relative training time: steps x dictionary size (the products grow with both)."""
        return float(self.train_config.steps * self.run.expansion_factor)

    def train_and_evaluate(self) -> tuple[dict, TrainResult]:
        """Train (or load, if finished) and measure: :func:`saerad.sae.experiments.train_and_evaluate`."""
        return train_and_evaluate(self.run, self.train_tokens, self.test_tokens, self.train_config, self.stage_dir)

    def same_run_as(self, other: "TrainingJob") -> bool:
        return (self.run == other.run and self.train_config == other.train_config
                and np.array_equal(self.train_tokens, other.train_tokens)
                and np.array_equal(self.test_tokens, other.test_tokens))


def default_workers() -> int:
    """The cores this process may use (the affinity mask where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@contextmanager
def torch_threads(count: int):
    """Run the block with ``count`` intra-op threads, then restore the previous count."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _exit_with_parent(parent_pid: int, interval: float = 0.5) -> None:
    """Worker initialiser: end this process when the one that started it is gone.

    A pipeline killed with SIGKILL takes its kernel with it, but not the kernel's worker processes: they
    would go on training into the stage's folders, under a record that a later run writes for other
    settings. A daemon thread watches the parent (Linux re-parents an orphan, so its parent id changes).
    """
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _train_one(job: TrainingJob, threads: int) -> tuple[float, float]:
    """Worker: train one job on ``threads`` threads; returns its name, its training seconds and wall time."""
    started = time.perf_counter()
    with torch_threads(threads):
        result = train_run(job.run, job.train_tokens, job.test_tokens, job.train_config, job.stage_dir)
    return result.seconds, time.perf_counter() - started


def distinct_jobs(jobs: Sequence[TrainingJob]) -> tuple[list[TrainingJob], list[TrainingJob]]:
    """Split ``jobs`` into the ones to train at once and the later ones that would share a folder.

    Two jobs of the same folder and the same run are one job. Two jobs of the same folder and other
    settings cannot train at once (the second replaces the first): the later one is returned in the
    second list, for the chapter's own cell to train when it reaches it.
    """
    kept: dict[Path, TrainingJob] = {}
    clashing = []
    for job in jobs:
        first = kept.get(job.out_dir)
        if first is None:
            kept[job.out_dir] = job
        elif not first.same_run_as(job):
            clashing.append(job)
    return list(kept.values()), clashing


def train_jobs(jobs: Sequence[TrainingJob], workers: int | None = None, threads_per_run: int = 1,
               log: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Train every job (resuming or skipping finished ones), ``workers`` at a time.

    Parameters
    ----------
    jobs
        The runs; duplicates of one folder are trained once (see :func:`distinct_jobs`).
    workers
        Processes training at once; None: one per core. ``1`` trains in this process, in turn.
    threads_per_run
        Torch intra-op threads of each run. Weights are byte-identical for any ``workers`` at the same
        ``threads_per_run``.
    log
        Called with a line per finished run (e.g. ``print``); None: silent.

    Returns
    -------
    pandas.DataFrame
        A row per trained job, in the order given: ``name``, ``purpose``, ``detail``, ``preset``,
        ``expansion_factor``, ``steps``, ``training_tokens``, ``train_seconds`` (the run's own training
        time, summed over resumptions) and ``wall_seconds`` (this call's time for it; near zero for a run
        found finished). Its ``attrs`` hold the ``workers`` that trained at once and ``threads_per_run``.

    Raises
    ------
    RuntimeError
        Naming the run that failed and its folder; the other runs keep their checkpoints.
    """
    if threads_per_run < 1:
        raise ValueError(f"threads_per_run must be at least 1, got {threads_per_run}")
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1 (or None: one per core), got {workers}")
    distinct, clashing = distinct_jobs(jobs)
    if clashing and log:
        log("left for their own cells (they share a folder with another run of other settings): "
            + ", ".join(job.run.name for job in clashing))
    # Longest first, so that no long run starts last while the other workers sit idle.
    ordered = sorted(distinct, key=lambda job: -job.cost)
    # By folder: two runs of one name in different folders (a variant's own folder) are two runs.
    finished: dict[Path, tuple[float, float]] = {}

    def record(job: TrainingJob, train_seconds: float, wall_seconds: float) -> None:
        finished[job.out_dir] = (train_seconds, wall_seconds)
        if log:
            log(f"[{len(finished)}/{len(ordered)}] {job.run.name}: trained in {train_seconds:.0f} s")

    def failed(job: TrainingJob, error: BaseException) -> RuntimeError:
        return RuntimeError(f"training the SAE {job.run.name!r} ({job.out_dir}) failed: "
                            f"{type(error).__name__}: {error}")

    if workers == 1 or len(ordered) <= 1:
        for job in ordered:
            try:
                outcome = _train_one(job, threads_per_run)
            except Exception as error:
                raise failed(job, error) from error
            record(job, *outcome)
    else:
        # "spawn", not "fork": a forked child of a process whose OpenMP pool already ran can hang.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(ordered)), mp_context=context,
                                 initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
            futures = {pool.submit(_train_one, job, threads_per_run): job for job in ordered}
            for future in as_completed(futures):
                error = future.exception()
                if error is not None:
                    for other in futures:
                        other.cancel()  # runs already training go on to their end; each keeps its checkpoints
                    raise failed(futures[future], error) from error
                record(futures[future], *future.result())
    rows = []
    for job in distinct:
        train_seconds, wall_seconds = finished[job.out_dir]
        rows.append({"name": job.run.name, "purpose": job.purpose, "detail": job.detail, "preset": job.run.preset,
                     "expansion_factor": job.run.expansion_factor, "steps": job.train_config.steps,
                     "training_tokens": len(job.train_tokens), "train_seconds": train_seconds,
                     "wall_seconds": wall_seconds})
    table = pd.DataFrame(rows)
    table.attrs.update(workers=1 if workers == 1 else min(workers, max(len(ordered), 1)),
                       threads_per_run=threads_per_run)
    return table
