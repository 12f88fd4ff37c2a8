"""Sphinx extension: the "show source" and "suggest edit" links of a chapter open its notebook in the repository.

A chapter page is built from the executed copy ``book/chapters/<chapter>.ipynb``, which the pipeline writes
and the repository does not hold (it is git-ignored); the chapter's source is ``notebooks/<chapter>.ipynb``.
The themes build both links from the page's path, so for a chapter whose notebook exists this points them
at ``notebooks/`` instead. (The page's download button still offers the executed ``.ipynb``, outputs
included.)
"""

from pathlib import Path

CHAPTERS = "book/chapters/"
NOTEBOOKS = "notebooks/"


def _rewrite_repository_urls(buttons, old: str, new: str) -> None:
    """Rewrite the links to the repository only: the download button's link to the built ``_sources`` copy
    of the executed notebook stays."""
    for button in buttons or []:
        if isinstance(button, dict):
            url = button.get("url")
            if isinstance(url, str) and url.startswith(("https://", "http://")):
                button["url"] = url.replace(old, new)
            _rewrite_repository_urls(button.get("buttons"), old, new)


def _point_chapters_at_notebooks(app, pagename, templatename, context, doctree):
    suffix = context.get("page_source_suffix")
    if not pagename.startswith(CHAPTERS) or suffix != ".ipynb":
        return
    name = pagename[len(CHAPTERS):] + suffix
    if not (Path(app.srcdir) / NOTEBOOKS / name).is_file():
        return
    old, new = f"/{pagename}{suffix}", f"/{NOTEBOOKS}{name}"
    # sphinx-book-theme's header buttons, already built from the page's path (html-page-context, priority 501)
    _rewrite_repository_urls(context.get("header_buttons"), old, new)
    # pydata-sphinx-theme's link function, which its "edit this page" template calls while rendering
    edit_link = context.get("get_edit_provider_and_url")
    if edit_link is not None:
        def notebook_edit_link():
            provider, url = edit_link()
            return provider, url.replace(old, new)

        context["get_edit_provider_and_url"] = notebook_edit_link


def setup(app):
    # After both themes' html-page-context handlers (priorities 500 and 501) have run.
    app.connect("html-page-context", _point_chapters_at_notebooks, priority=502)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
