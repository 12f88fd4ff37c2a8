"""Atomic file writing and small table/JSON helpers.

Every artifact is written to a temporary file in the destination folder and
then renamed over the final name, so an interrupted stage never leaves a
half-written file behind and never destroys the previous complete version.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path that replaces ``path`` only if the block succeeds.

    Parameters
    ----------
    path
        Final destination. Its parent folder is created if needed.

    Yields
    ------
    Path
        A temporary file name in the same folder (same file system, so the
        final ``os.replace`` is atomic). It keeps the suffix of ``path`` so
        that libraries choosing a format by extension still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes)
    )
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        # mkstemp creates the file private (0600), and some writers (safetensors) make their own 0600 file:
        # give the result the permissions a plain open() would, after the writer is done with it.
        os.chmod(temporary, 0o666 & ~_UMASK)
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, because the umask is per process and
    # setting it while other threads create files (the LLM cache's workers) would give those files its value.
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_UMASK = _read_umask()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write ``payload`` as indented, key-sorted JSON, atomically."""
    return write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=_json_default) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming the file in the error if it is malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def read_jsonl(path: str | os.PathLike, required: Sequence[str] = ()) -> Iterator[tuple[int, dict]]:
    """``(line number, record)`` for every non-blank line of a JSON Lines file.

    A name ending in ``.gz`` is read through gzip. Line numbers start at 1,
    so callers can name the line in their own checks of a record's values.

    Raises
    ------
    ValueError
        ``path:line`` and what is wrong, for a line that is not a JSON object
        or an object lacking one of the ``required`` fields.
    """
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number}: not valid JSON ({error})") from error
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
            missing = [name for name in required if name not in record]
            if missing:
                raise ValueError(f"{path}:{number}: record lacks field(s) {missing}; expected {list(required)}")
            yield number, record


def write_table(path: str | os.PathLike, table: pd.DataFrame, index: bool = False) -> Path:
    """Write a table as CSV atomically (gzip-compressed if the name ends in .gz)."""
    with atomic_path(path) as temporary:
        compression = "gzip" if str(path).endswith(".gz") else None
        # mtime=0 keeps gzip output byte-identical between runs.
        if compression:
            compression = {"method": "gzip", "mtime": 0}
        table.to_csv(temporary, index=index, compression=compression)
    return Path(path)


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Save a NumPy array atomically."""
    with atomic_path(path) as temporary:
        np.save(temporary, array)
    return Path(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def book_table(table: pd.DataFrame, stage_dir: str | os.PathLike, name: str, index: bool = False) -> pd.DataFrame:
    """Write a table shown in the book as ``<stage_dir>/<name>.csv`` and return it for display.

    Every table of the book is also an artifact, so a reader can take the
    numbers without scraping HTML.
    """
    write_table(Path(stage_dir) / f"{name}.csv", table, index=index)
    return table
