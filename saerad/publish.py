"""Publish one profile's executed chapters as the book's chapters.

Each profile keeps its executed chapters beside its artifacts
(``<artifacts_root>/chapters/``). ``book/chapters/`` (what ``_toc.yml`` lists and
jupyter-book builds) is a copy of ONE profile's chapters, replaced as a whole,
with ``published.json`` saying which profile it is. So the book never mixes two
profiles, and a second profile's run never reads the first one's chapters.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Sequence

from saerad.io import atomic_path, read_json, write_json

#: The marker beside the published chapters.
MARKER_NAME = "published.json"
#: The executed chapters of a profile, relative to its artifacts root.
EXECUTED_CHAPTERS = "chapters"
#: Metadata key the pipeline writes into each executed chapter.
CHAPTER_METADATA = "saerad"


class PublishError(RuntimeError):
    """The profile has nothing to publish, or a chapter belongs to another profile."""


def chapter_label(notebook_path: str | os.PathLike) -> dict[str, Any]:
    """What the pipeline wrote into an executed chapter's metadata (profile, stage, fingerprint)."""
    import nbformat

    return dict(nbformat.read(str(notebook_path), as_version=4).metadata.get(CHAPTER_METADATA, {}))


def publish_chapters(profile: str, artifacts_root: str | os.PathLike, chapters_dir: str | os.PathLike,
                     notebooks: Sequence[str], review_page_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Replace the chapters in ``chapters_dir`` by ``profile``'s executed chapters.

    Parameters
    ----------
    profile
        The profile whose chapters are published; each chapter's metadata must name it.
    artifacts_root
        That profile's artifacts folder (its chapters are under ``chapters/``).
    chapters_dir
        Where the book reads its chapters (``book/chapters``).
    notebooks
        Chapter file names in book order (:data:`saerad.pipeline.STAGES`).
    review_page_dir
        Where the book serves the reader-study review page (``book/extra/reader-study``); the profile's
        page (``reader_study/review_page/review.html``) replaces the one there. None leaves it alone.

    Returns
    -------
    dict
        The marker written to ``chapters_dir/published.json``.
    """
    artifacts_root, chapters_dir = Path(artifacts_root), Path(chapters_dir)
    source = artifacts_root / EXECUTED_CHAPTERS
    present = [name for name in notebooks if (source / name).is_file()]
    if not present:
        raise PublishError(f"profile {profile!r} has no executed chapters in {source}: run "
                           f"`python -m saerad.pipeline --profile {profile}` first")
    for name in present:
        labelled = chapter_label(source / name).get("profile")
        if labelled != profile:
            raise PublishError(f"{source / name} was executed for profile {labelled!r}, not {profile!r}")

    chapters_dir.mkdir(parents=True, exist_ok=True)
    # Copies first (the slow part) under dot-names the book ignores, then the swap, then the marker:
    # an interruption leaves the book with fewer chapters, never with another profile's.
    staged = []
    for name in present:
        temporary = chapters_dir / f".{Path(name).stem}.publishing.ipynb"
        shutil.copyfile(source / name, temporary)
        staged.append((temporary, chapters_dir / name))
    (chapters_dir / MARKER_NAME).unlink(missing_ok=True)
    for old in chapters_dir.glob("[!.]*.ipynb"):
        if old.name not in present:
            old.unlink()
    for temporary, final in staged:
        os.replace(temporary, final)

    if review_page_dir is not None:
        page = artifacts_root / "reader_study" / "review_page" / "review.html"
        target = Path(review_page_dir) / "review.html"
        if page.is_file():
            with atomic_path(target) as temporary:
                shutil.copyfile(page, temporary)
        else:
            target.unlink(missing_ok=True)

    marker = {"profile": profile, "artifacts_root": str(artifacts_root), "chapters": present,
              "missing": [name for name in notebooks if name not in present]}
    write_json(chapters_dir / MARKER_NAME, marker)
    return marker


def published_profile(chapters_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of the chapters published in ``chapters_dir``, or None when none are."""
    path = Path(chapters_dir) / MARKER_NAME
    return read_json(path) if path.exists() else None
