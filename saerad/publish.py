"""Publish one profile's executed chapters as the book's chapters.

Each profile keeps its executed chapters beside its artifacts
(``<artifacts_root>/chapters/``). ``book/chapters/`` (what ``_toc.yml`` lists and
jupyter-book builds) is a copy of ONE profile's chapters, replaced as a whole,
with ``published.json`` saying which profile it is. So the book never mixes two
profiles, and a second profile's run never reads the first one's chapters.

Two rules keep what the book shows whole:

- a profile is published only when it holds every chapter the book's table of contents
  (``_toc.yml``) lists in ``book/chapters``: a run of a few stages (into another
  ``artifacts_root``, say) leaves the book as it was and says so (:class:`PublishIncomplete`),
  rather than replacing a complete book by those few chapters, which jupyter-book could not build;
- publishing holds a lock on the book's folder (:func:`book_lock`), so two pipelines of
  different profiles or artifacts roots (each holding only its own root's lock) publish one
  after the other, never into each other's copy.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Iterator, Sequence

from saerad.io import atomic_path, read_json, write_json
from saerad.paths import display_path

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


#: The lock publishing holds, in the folder above the chapters (``book/``).
BOOK_LOCK_NAME = ".publish.lock"
#: Seconds a publication waits for another one to finish (copying ten chapters takes a second or two).
BOOK_LOCK_TIMEOUT = 120.0


class PublishError(RuntimeError):
    """The profile has nothing to publish, or a chapter belongs to another profile."""


class PublishIncomplete(PublishError):
    """The profile lacks chapters the book lists; nothing was published."""


@contextlib.contextmanager
def book_lock(chapters_dir: str | os.PathLike, timeout: float | None = None) -> Iterator[None]:
    """Hold the book's folder (the parent of ``chapters_dir``) while publishing; wait for another publication.

    An OS file lock (``filelock``): released when the process ends, however it ends. Raises
    :class:`PublishError` when another publication holds it for longer than ``timeout`` seconds
    (default :data:`BOOK_LOCK_TIMEOUT`).
    """
    from filelock import FileLock, Timeout

    folder = Path(chapters_dir).parent
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(folder / BOOK_LOCK_NAME), timeout=BOOK_LOCK_TIMEOUT if timeout is None else timeout)
    try:
        lock.acquire()
    except Timeout:
        raise PublishError(f"another pipeline has been publishing into {folder} for {lock.timeout:g} s; "
                           f"{Path(chapters_dir).name} was not updated: publish again when it has finished") from None
    try:
        yield
    finally:
        lock.release()


def listed_chapters(toc_path: str | os.PathLike, chapters_dir: str | os.PathLike) -> list[str]:
    """File names (``00_data.ipynb``) of the chapters the table of contents lists in ``chapters_dir``, in book order.

    ``_toc.yml`` names its pages relative to its own folder; a page in another folder is not a published chapter.
    """
    from saerad.book.check import toc_pages

    toc_path = Path(toc_path)
    if not toc_path.is_file():
        return []
    chapters_dir = Path(chapters_dir).resolve()
    return [f"{Path(page).name}.ipynb" for page in toc_pages(toc_path)
            if (toc_path.parent / page).parent.resolve() == chapters_dir]


def chapter_label(notebook_path: str | os.PathLike) -> dict[str, Any]:
    """What the pipeline wrote into an executed chapter's metadata (profile, stage, fingerprint)."""
    import nbformat

    return dict(nbformat.read(str(notebook_path), as_version=4).metadata.get(CHAPTER_METADATA, {}))


def publish_chapters(profile: str, artifacts_root: str | os.PathLike, chapters_dir: str | os.PathLike,
                     notebooks: Sequence[str], extra_dir: str | os.PathLike | None = None,
                     required: Sequence[str] = ()) -> dict[str, Any]:
    """Replace the chapters in ``chapters_dir`` by ``profile``'s executed chapters, holding :func:`book_lock`.

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
    required
        Chapters that must all be present (those the book's ``_toc.yml`` lists: :func:`listed_chapters`);
        when one is missing, :class:`PublishIncomplete` is raised and nothing is changed.

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
    _check_complete(profile, artifacts_root, chapters_dir, present, required)
    for name in present:
        labelled = chapter_label(source / name).get("profile")
        if labelled != profile:
            raise PublishError(f"{source / name} was executed for profile {labelled!r}, not {profile!r}")
    with book_lock(chapters_dir):
        return _replace_chapters(profile, artifacts_root, chapters_dir, notebooks, present, extra_dir)


def _check_complete(profile: str, artifacts_root: Path, chapters_dir: Path, present: Sequence[str],
                    required: Sequence[str]) -> None:
    """Raise :class:`PublishIncomplete` when ``present`` lacks one of the ``required`` chapters."""
    missing = [name for name in required if name not in present]
    if not missing:
        return
    from saerad.upstream import pipeline_command

    held = len(required) - len(missing)
    raise PublishIncomplete(
        f"{display_path(chapters_dir)} not updated: {display_path(artifacts_root)} holds {held} of the "
        f"{len(required)} chapters the book lists (missing: {', '.join(missing)}). Run the remaining stages "
        f"(`{pipeline_command(profile, [], artifacts_root)}`, with the same --set values), or publish a complete "
        f"profile (`python -m saerad.pipeline --profile PROFILE --publish`)")


def _replace_chapters(profile: str, artifacts_root: Path, chapters_dir: Path, notebooks: Sequence[str],
                      present: Sequence[str], extra_dir: str | os.PathLike | None) -> dict[str, Any]:
    """Swap ``present`` into ``chapters_dir`` (and the static pages into ``extra_dir``); write the marker."""
    source = artifacts_root / EXECUTED_CHAPTERS
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
