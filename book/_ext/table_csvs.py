"""Sphinx extension: put the CSVs of the book's tables next to the pages that link them.

Each table a chapter shows links its full-precision CSV at ``../../_tables/<stage>/<name>.csv`` (chapters
are at ``book/chapters/<chapter>.html``; see ``saerad/book/tables.py``). When the HTML build has finished,
this copies, for every artifacts folder the executed chapters ran with, the ``*.csv`` files of each stage
folder (``<artifacts_root>/<stage>/*.csv``, and one level of subfolders) to ``<outdir>/_tables/<stage>/``.

Which artifacts: ``metadata.papermill.parameters.artifacts_root`` of each executed chapter in
``book/chapters/*.ipynb``, relative to the book's root (the repository root) when relative. Files over
:data:`MAX_CSV_BYTES` are left out (the chapters do not link them). A stage found under two artifacts
folders is copied from the first chapter's, in chapter order. Nothing is fetched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

#: Larger CSVs are not copied into the book.
MAX_CSV_BYTES = 5 * 1024 * 1024
#: Where the CSVs go, relative to the build's output folder.
TABLES_DIR = "_tables"


def artifacts_roots(chapters_dir: str | os.PathLike, book_root: str | os.PathLike) -> list[Path]:
    """The distinct artifacts folders the executed chapters in ``chapters_dir`` ran with, in chapter order.

    Raises
    ------
    ValueError
        A chapter that is not a notebook (JSON) or whose papermill ``artifacts_root`` is not a string.
    """
    roots: list[Path] = []
    for notebook in sorted(Path(chapters_dir).glob("*.ipynb")):
        if notebook.name.startswith("."):  # a half-executed copy of the runner
            continue
        try:
            metadata = json.loads(notebook.read_text(encoding="utf-8")).get("metadata", {})
        except json.JSONDecodeError as error:
            raise ValueError(f"{notebook}: not a notebook (invalid JSON: {error})") from error
        parameters = (metadata.get("papermill") or {}).get("parameters") or {}
        if "artifacts_root" not in parameters:
            continue  # a chapter not executed by papermill links no CSV
        value = parameters["artifacts_root"]
        if not isinstance(value, str) or not value:
            raise ValueError(f"{notebook}: metadata.papermill.parameters.artifacts_root should be a folder path, "
                             f"got {value!r}")
        root = Path(value) if Path(value).is_absolute() else Path(book_root) / value
        root = root.resolve()
        if root not in roots:
            roots.append(root)
    return roots


def table_csvs(roots: list[Path]) -> dict[str, Path]:
    """The CSVs to copy: path under ``_tables`` (``<stage>/<name>.csv``, ``<stage>/<sub>/<name>.csv``) to file."""
    chosen: dict[str, Path] = {}
    stages_taken: set[str] = set()
    for root in roots:
        if not root.is_dir():
            continue
        stages = sorted(path for path in root.iterdir() if path.is_dir() and not path.name.startswith("."))
        for stage in stages:
            if stage.name in stages_taken:
                continue
            stages_taken.add(stage.name)
            folders = [stage] + sorted(p for p in stage.iterdir() if p.is_dir() and not p.name.startswith("."))
            for folder in folders:
                for csv in sorted(folder.glob("*.csv")):
                    if csv.name.startswith(".") or not csv.is_file() or csv.stat().st_size > MAX_CSV_BYTES:
                        continue
                    chosen[csv.relative_to(root).as_posix()] = csv
    return chosen


def copy_table_csvs(chapters_dir: str | os.PathLike, book_root: str | os.PathLike,
                    outdir: str | os.PathLike) -> list[Path]:
    """Copy the chapters' table CSVs to ``<outdir>/_tables``; return the written files.

    Each file is written to a temporary name in its folder and then renamed, so a reader never gets half a
    CSV. Missing artifacts folders are skipped (the caller warns).
    """
    written = []
    target_root = Path(outdir) / TABLES_DIR
    for relative, source in table_csvs(artifacts_roots(chapters_dir, book_root)).items():
        target = target_root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        os.close(handle)
        try:
            shutil.copyfile(source, temporary)
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        written.append(target)
    return written


def _copy_after_build(app, exception):
    if exception is not None or app.builder.format != "html":
        return
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    book_root = Path(app.srcdir)
    chapters_dir = book_root / "book" / "chapters"
    roots = artifacts_roots(chapters_dir, book_root)
    for root in roots:
        if not root.is_dir():
            logger.warning(f"table_csvs: the chapters ran with artifacts in {root}, which does not exist; "
                           "the pages' links to their tables' CSVs will not resolve")
    written = copy_table_csvs(chapters_dir, book_root, app.outdir)
    logger.info(f"table_csvs: {len(written)} CSV files copied to {Path(app.outdir) / TABLES_DIR}")


def setup(app):
    app.connect("build-finished", _copy_after_build)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
