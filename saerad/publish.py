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
#: Static pages a profile's stages write (relative to its artifacts root), where the book serves them
#: (relative to ``book/extra``, which the book copies to the site's root), and whether a page the profile
#: lacks is removed there: the reader-study review page, the feature atlas (a folder, built by the features
#: chapter) and the atlas's citation counts (written later, by the reports chapter, over the atlas's
#: placeholder, which stays when the reports chapter has not run).
EXTRA_PAGES: tuple[tuple[str, str, bool], ...] = (
    ("reader_study/review_page/review.html", "reader-study/review.html", True),
    ("features/atlas", "atlas", True),
    ("reports/atlas/citations.js", "atlas/citations.js", False),
)


class PublishError(RuntimeError):
    """The profile has nothing to publish, or a chapter belongs to another profile."""


def chapter_label(notebook_path: str | os.PathLike) -> dict[str, Any]:
    """What the pipeline wrote into an executed chapter's metadata (profile, stage, fingerprint)."""
    import nbformat

    return dict(nbformat.read(str(notebook_path), as_version=4).metadata.get(CHAPTER_METADATA, {}))


def publish_chapters(profile: str, artifacts_root: str | os.PathLike, chapters_dir: str | os.PathLike,
                     notebooks: Sequence[str], extra_dir: str | os.PathLike | None = None) -> dict[str, Any]:
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
    extra_dir
        Where the book picks up static pages (``book/extra``): each of :data:`EXTRA_PAGES` the profile has
        replaces the one there, and one it lacks is removed (so no page of another profile stays).
        None leaves them alone.

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

    if extra_dir is not None:
        publish_extra_pages(artifacts_root, extra_dir)

    marker = {"profile": profile, "artifacts_root": str(artifacts_root), "chapters": present,
              "missing": [name for name in notebooks if name not in present]}
    write_json(chapters_dir / MARKER_NAME, marker)
    return marker


def publish_extra_pages(artifacts_root: str | os.PathLike, extra_dir: str | os.PathLike) -> None:
    """Publish each of :data:`EXTRA_PAGES` of ``artifacts_root`` into ``extra_dir``, in order."""
    for source_name, target_name, remove_when_absent in EXTRA_PAGES:
        if remove_when_absent or (Path(artifacts_root) / source_name).exists():
            publish_page(Path(artifacts_root) / source_name, Path(extra_dir) / target_name)


def publish_page(source: Path, target: Path) -> None:
    """Replace ``target`` (a file or a folder) by a copy of ``source``; remove it when ``source`` is absent.

    A folder is copied beside the target under a dot-name, then swapped in, so a reader of the book never
    sees half of one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_file():
        with atomic_path(target) as temporary:
            shutil.copyfile(source, temporary)
        return
    old = target.with_name(f".{target.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if source.is_dir():
        staged = target.with_name(f".{target.name}.publishing")
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(source, staged)
        if target.exists():
            os.replace(target, old)
        os.replace(staged, target)
    elif target.is_dir():
        os.replace(target, old)
    elif target.exists():
        target.unlink()
    shutil.rmtree(old, ignore_errors=True)


def published_profile(chapters_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of the chapters published in ``chapters_dir``, or None when none are."""
    path = Path(chapters_dir) / MARKER_NAME
    return read_json(path) if path.exists() else None
