"""Render the built book in headless Chromium and check every chapter page.

Usage (after ``make book``)::

    python -m saerad.book_check _build/html

For each executed chapter of ``_toc.yml`` it opens the built HTML page in the
system Chromium (through Playwright; no browser is downloaded) and records
what a reader would see: figures (``img`` elements with a loaded, non-empty
image), tables, error outputs (a cell that raised, or a traceback), and the
page's JavaScript errors and requests that left the machine.  A chapter
passes when it has at least one table, every image it shows has loaded, and
there is no error output, no JavaScript error and no request to the network
(the book must render offline).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd
import yaml

CHECK_COLUMNS = ("chapter", "figures", "broken_images", "tables", "error_outputs", "js_errors", "network_requests",
                 "passed")
# What the page contains: figures, tables, and outputs of cells that raised (myst-nb marks them).
_MEASURE = """() => {
  const images = [...document.querySelectorAll('article img, main img')];
  return {
    figures: images.filter(i => i.complete && i.naturalWidth > 0).length,
    broken_images: images.filter(i => !(i.complete && i.naturalWidth > 0)).length,
    tables: document.querySelectorAll('article table, main table').length,
    error_outputs: document.querySelectorAll('.output.error, .output.traceback, .cell_output .traceback').length,
  };
}"""


def chapter_pages(toc_path: str | Path = "_toc.yml") -> list[str]:
    """Files of the executed chapters listed in ``_toc.yml`` (``book/chapters/...``), in book order."""
    toc = yaml.safe_load(Path(toc_path).read_text(encoding="utf-8"))
    files = [entry["file"] for part in toc.get("parts", []) for entry in part.get("chapters", [])]
    return [name for name in files if name.startswith("book/chapters/")]


def find_chromium() -> str | None:
    """The system Chromium, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def check_book(html_root: str | Path, chapters: Sequence[str], chromium: str | None = None) -> pd.DataFrame:
    """One row per chapter page: what rendered, and whether it passes (see the module docstring).

    Parameters
    ----------
    html_root
        The built book (``_build/html``).
    chapters
        Source paths without suffix, as in ``_toc.yml`` (``book/chapters/02_sae``).
    chromium
        Path of the browser; default :func:`find_chromium`.
    """
    from playwright.sync_api import sync_playwright

    html_root = Path(html_root).resolve()
    chromium = chromium or find_chromium()
    if chromium is None:
        raise RuntimeError("book_check needs the system chromium (make browser installs it)")
    rows = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            for chapter in chapters:
                page_path = html_root / f"{chapter}.html"
                if not page_path.exists():
                    raise FileNotFoundError(f"book_check: {page_path} does not exist; build the book first")
                page = browser.new_page()
                js_errors, network = [], []
                page.on("pageerror", lambda error, sink=js_errors: sink.append(str(error)))
                page.on("request", lambda request, sink=network: sink.append(request.url)
                        if request.url.startswith(("http://", "https://")) else None)
                page.goto(page_path.as_uri(), wait_until="load")
                measured = page.evaluate(_MEASURE)
                page.close()
                row = {"chapter": chapter, **measured, "js_errors": len(js_errors), "network_requests": len(network)}
                row["passed"] = bool(row["tables"] > 0 and row["broken_images"] == 0 and row["error_outputs"] == 0
                                     and not js_errors and not network)
                rows.append(row)
        finally:
            browser.close()
    return pd.DataFrame(rows, columns=list(CHECK_COLUMNS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m saerad.book_check", description=__doc__.splitlines()[0])
    parser.add_argument("html_root", nargs="?", default="_build/html", help="the built book (default _build/html)")
    parser.add_argument("--toc", default="_toc.yml", help="the book's table of contents")
    args = parser.parse_args(argv)
    table = check_book(args.html_root, chapter_pages(args.toc))
    print(table.to_string(index=False))
    return 0 if table["passed"].all() else 1


if __name__ == "__main__":
    sys.exit(main())
