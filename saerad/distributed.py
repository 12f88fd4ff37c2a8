"""Data-parallel helpers for ``torchrun``: who am I, which rows are mine, is my shard done.

A stage that runs data-parallel (the encode stage's class tokens, the
features chapter's SAE activations) follows one pattern:

1. :func:`rank_from_env` reads ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``,
   which ``torchrun`` sets for every process (one node or several, with any
   rendezvous backend), and :func:`init_process_group` joins the group
   (``gloo`` on CPU, ``nccl`` on CUDA).
2. Each rank computes its share of the rows (:func:`assign_groups`: whole
   studies; :func:`assign_chunks`: whole chunks) and writes its result to
   ``shards/shard-<rank>-of-<world>.*`` atomically, then a completeness
   marker (:class:`ShardFiles`). A shard whose marker matches the run's
   manifest is skipped, so a killed job resumes.
3. After a barrier, rank 0 checks that every shard is complete and merges
   them into the artifact a single process would have written.

The shard files must be on a file system every rank can see (one node: any
disk; several nodes: a shared one), because rank 0 reads them all.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import torch

from saerad.io import read_json, write_json

#: Test hook: ``"<rank>:<n>"`` makes that rank raise after writing ``n`` parts of its shard,
#: as a killed process would stop (used to check that a restart resumes).
FAIL_AFTER_PARTS_ENV = "SAERAD_FAIL_AFTER_PARTS"


class ShardError(RuntimeError):
    """A shard is missing, incomplete or from another run."""


@dataclass(frozen=True)
class RankInfo:
    """This process's place in the job.

    ``launched`` is True when the numbers came from ``torchrun`` (a process
    group can be joined) and False when given by hand (e.g. one Slurm array
    task per shard), in which case there is no barrier and the merge is a
    separate step.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False

    def __post_init__(self):
        if self.world_size < 1:
            raise ValueError(f"world size must be at least 1, got {self.world_size}")
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in 0..{self.world_size - 1}, got {self.rank}")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def label(self) -> str:
        return f"{self.rank}-of-{self.world_size}"


def rank_from_env(environ: Mapping[str, str] | None = None) -> RankInfo:
    """Rank, world size and local rank from the variables ``torchrun`` sets (one process without them)."""
    environ = os.environ if environ is None else environ

    def number(name: str, default: int) -> int:
        text = environ.get(name)
        if text is None or text == "":
            return default
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"environment variable {name}={text!r} is not an integer") from None

    launched = "RANK" in environ and "WORLD_SIZE" in environ
    return RankInfo(number("RANK", 0), number("WORLD_SIZE", 1), number("LOCAL_RANK", 0), launched)


def rank_device(device: str, info: RankInfo) -> str:
    """The device of this rank: ``"cuda"``/``"auto"`` become ``cuda:<local_rank>`` when CUDA is there."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return f"cuda:{info.local_rank}"
    return device


def init_process_group(info: RankInfo, device: str, timeout_s: float = 72 * 3600) -> bool:
    """Join the ``torchrun`` process group (``nccl`` for CUDA devices, else ``gloo``).

    ``timeout_s`` bounds how long a barrier waits: ranks that finish (or skip)
    their shard early wait there for the slowest one, which at paper scale
    can be hours, hence the long default. Returns True when a group was
    joined here (one process, or ranks given by hand, need none).
    """
    import torch.distributed as dist

    if not info.launched or info.world_size == 1 or dist.is_initialized():
        return False
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return True


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group if one was joined."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(info: RankInfo, device: str, timeout_s: float, join: bool = True) -> Iterator[bool]:
    """Join the group for the block (see :func:`init_process_group`) and leave it after; yields whether joined."""
    joined = init_process_group(info, device, timeout_s) if join else False
    try:
        yield joined
    finally:
        if joined:
            shutdown()


def merges_here(merge: bool | None, info: RankInfo, joined: bool) -> bool:
    """Whether this rank merges the shards.

    ``merge=None`` chooses: rank 0 merges when a barrier made every shard
    wait for the others (``torchrun``) or when there is only one rank; ranks
    given by hand (a Slurm array) leave the merge to a separate call.
    """
    if merge is not None:
        return merge
    return info.is_main and (joined or info.world_size == 1)


# -- who gets which rows -------------------------------------------------------------------------------------------


def assign_groups(group_ids: np.ndarray, world_size: int) -> list[np.ndarray]:
    """Split rows into ``world_size`` shards of whole groups (e.g. studies), balanced by row count.

    Groups are taken in order of first appearance and cut into contiguous
    runs, so with rows sorted by study (as the data stage writes them) each
    shard is one contiguous block of rows. Deterministic: depends only on
    ``group_ids`` and ``world_size``.

    Returns
    -------
    list of int64 arrays
        Rows of each rank, ascending. A rank may get none when there are
        fewer groups than ranks.
    """
    group_ids = np.asarray(group_ids)
    if group_ids.ndim != 1:
        raise ValueError(f"group ids must be one-dimensional, got shape {group_ids.shape}")
    if world_size < 1:
        raise ValueError(f"world size must be at least 1, got {world_size}")
    _, first, inverse, counts = np.unique(group_ids, return_index=True, return_inverse=True, return_counts=True)
    order = np.argsort(first, kind="stable")  # groups in order of first appearance
    rows_before = np.concatenate([[0], np.cumsum(counts[order])[:-1]])
    # A group goes to the rank in whose equal share of rows its middle lies, so each cut is off by
    # at most half a group and shard sizes differ by at most one group.
    middle_twice = 2 * rows_before + counts[order]
    rank_of_ordered = np.minimum((middle_twice * world_size) // max(2 * len(group_ids), 1), world_size - 1)
    rank_of_group = np.empty(len(counts), dtype=np.int64)
    rank_of_group[order] = rank_of_ordered
    rank_of_row = rank_of_group[inverse.reshape(-1)]
    return [np.flatnonzero(rank_of_row == rank).astype(np.int64) for rank in range(world_size)]


def assign_chunks(n_rows: int, chunk_size: int, world_size: int) -> list[tuple[int, int]]:
    """Split ``range(n_rows)`` into ``world_size`` row ranges made of whole chunks of ``chunk_size``.

    Chunk boundaries stay where a single process puts them (multiples of
    ``chunk_size``), so every chunk is computed on exactly the same inputs
    whatever the number of ranks. Returns ``(start, stop)`` per rank.
    """
    if chunk_size < 1 or world_size < 1:
        raise ValueError(f"chunk size and world size must be positive, got {chunk_size} and {world_size}")
    n_chunks = -(-n_rows // chunk_size)
    bounds = [min(n_rows, (n_chunks * rank // world_size) * chunk_size) for rank in range(world_size + 1)]
    return [(bounds[rank], bounds[rank + 1]) for rank in range(world_size)]


# -- shard files ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardFiles:
    """The files of one rank's shard in ``directory``.

    ``data`` holds the result, ``index`` what rows it covers, ``marker`` is
    written last and holds the run's manifest: a shard counts as complete
    only when its marker exists and matches.
    """

    directory: Path
    rank: int
    world_size: int
    suffix: str = ".npy"

    @property
    def stem(self) -> str:
        return f"shard-{self.rank}-of-{self.world_size}"

    @property
    def data(self) -> Path:
        return self.directory / f"{self.stem}{self.suffix}"

    @property
    def index(self) -> Path:
        return self.directory / f"{self.stem}.index.json"

    @property
    def marker(self) -> Path:
        return self.directory / f"{self.stem}.complete.json"

    @property
    def parts(self) -> Path:
        """Folder of finished parts of an unfinished shard (resume inside a shard)."""
        return self.directory / f"{self.stem}.parts"

    def is_complete(self, manifest: dict) -> bool:
        """True when data, index and a marker whose manifest equals ``manifest`` all exist."""
        if not (self.marker.exists() and self.data.exists() and self.index.exists()):
            return False
        record = read_json(self.marker)
        return record.get("manifest") == manifest and record.get("data_bytes") == self.data.stat().st_size

    def mark_complete(self, manifest: dict, **details) -> None:
        """Write the marker (after data and index are in place)."""
        if not (self.data.exists() and self.index.exists()):
            raise ShardError(f"{self.stem}: data or index missing in {self.directory}; cannot mark it complete")
        write_json(self.marker, {"manifest": manifest, "data_bytes": self.data.stat().st_size, **details})

    def require_complete(self, manifest: dict) -> None:
        """Raise :class:`ShardError` naming what is wrong when the shard is not complete."""
        if self.is_complete(manifest):
            return
        if not self.marker.exists():
            raise ShardError(
                f"{self.marker} is missing: rank {self.rank} of {self.world_size} has not finished its shard "
                f"(all ranks must write to a file system rank 0 can read)"
            )
        raise ShardError(f"{self.marker}: the shard was written by another run (encoder, rows or settings differ) "
                         f"or its data file changed; rerun rank {self.rank}")


def maybe_fail(info: RankInfo, parts_done: int) -> None:
    """Raise when :data:`FAIL_AFTER_PARTS_ENV` asks this rank to die after ``parts_done`` parts."""
    request = os.environ.get(FAIL_AFTER_PARTS_ENV, "")
    if not request:
        return
    rank_text, _, count_text = request.partition(":")
    if int(rank_text) == info.rank and parts_done >= int(count_text or 1):
        raise RuntimeError(f"rank {info.rank} stopped after {parts_done} part(s) ({FAIL_AFTER_PARTS_ENV}={request})")
