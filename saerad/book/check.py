"""Render the built book in headless Chromium and check what a reader sees on every page.

Usage (after ``make book``)::

    python -m saerad.book_check _build/html            # one row per page, a message per failure
    python -m saerad.book_check _build/html --report   # the same rows, then totals; always exits 0

Every page of ``_toc.yml`` (the front page, the chapters, the scorecard and the reference pages) is opened in
the system Chromium through Playwright (no browser is downloaded) in a 1,400 × 900 px window, and measured
as a reader would see it.  A page fails on:

- ``broken_images``: an image that did not load;
- ``error_outputs``: the output of a cell that raised (myst-nb marks it), or a traceback;
- ``js_errors`` / ``network_requests``: a JavaScript error, or a request that left the machine (the book
  must render offline);
- ``wide_tables``: a table wider than the text column that is not inside a container that scrolls
  horizontally (computed ``overflow-x`` auto or scroll, no wider than the column) with a sticky
  (``position: sticky``) first cell in every row;
- ``code_inputs``: a code cell's input that is displayed and not folded (myst-nb's ``hide-input`` folds it
  into a closed ``<details>``; ``remove-input`` drops it; both are fine);
- ``raw_reprs``: a Python repr where a reader expects a result (:data:`RAW_REPR_MARKERS`);
- ``truncated_tables``: pandas' truncation of a table (``N rows × M columns``, or a ``...`` cell);
- ``upscaled_images``: a raster image displayed wider than its natural size
  (CSS width > ``naturalWidth / devicePixelRatio`` + 1 px; the check runs at a device pixel ratio of 1, so
  a 2x image shown at half its natural width passes, and vector images are not measured);
- ``unsolved_exercises``: an exercise (an admonition with class ``exercise``) not followed, before the next
  exercise, by a solution: a ``<details class="solution">`` (a sphinx-design dropdown with
  ``:class-container: solution``) that is closed by default; a solution that is open, or not a
  ``<details>``, counts as missing and is named;
- ``internal_words``: a word of the team's, not of the book, in the page's text (:func:`internal_words`);
- ``scorecard_problems``: on a page with a ``table.scorecard`` (and on the scorecard page, whose file name
  ends in ``scorecard`` and which must have one), a row without a verdict, without a link in its
  ``section`` cell, or whose link does not resolve to a page of the build (and, with an anchor, to an
  element with that id).

A chapter (``book/chapters/...``) must also show at least one table, and every page of the table of
contents must be in the build (``missing_pages``).  Code inputs, prose code blocks, scripts and styles
are not part of the text the word and repr rules read; the text of folded content (solutions, hidden
outputs) is, since a reader can open it.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import unquote, urlsplit
from urllib.request import url2pathname

import pandas as pd
import yaml

#: The window every page is opened in (CSS pixels), at a device pixel ratio of 1.
WINDOW = {"width": 1400, "height": 900}
#: Where pages whose file starts so are chapters: they must show a table.
CHAPTER_PREFIX = "book/chapters/"
#: A page whose file name ends so (``book/scorecard``, ``book/chapters/08_scorecard``) is the scorecard: it
#: must hold a ``table.scorecard``.
SCORECARD_SUFFIX = "scorecard"
#: Text of a Python object's repr, which a page shows when a cell ends in an object instead of a result.
RAW_REPR_MARKERS = ("PosixPath(", "<Figure size", "<Axes", "dtype:", "<matplotlib", "object at 0x")
#: Problem counts; a page passes when all are 0 (and a chapter shows a table).
PROBLEM_COLUMNS = ("missing_pages", "broken_images", "error_outputs", "js_errors", "network_requests",
                   "wide_tables", "code_inputs", "raw_reprs", "truncated_tables", "upscaled_images",
                   "unsolved_exercises", "internal_words", "scorecard_problems")
CHECK_COLUMNS = ("page", "figures", "tables", "exercises", "solutions") + PROBLEM_COLUMNS + ("passed",)
#: What ``--report`` totals, with the words it prints.
REPORT_TOTALS = {
    "wide_tables": "tables wider than the text column (not scrolling with a sticky first column)",
    "code_inputs": "unfolded code inputs",
    "raw_reprs": "raw reprs in outputs",
    "truncated_tables": "truncated tables",
    "upscaled_images": "images shown above their natural size",
    "exercises": "exercises",
    "solutions": "solutions",
    "unsolved_exercises": "exercises without a folded solution",
    "internal_words": "internal words",
    "scorecard_problems": "scorecard problems",
}

_PANDAS_TRUNCATION = (
    re.compile(r"\b\d[\d,]* rows × \d[\d,]* columns\b"),          # the HTML repr's footer
    re.compile(r"\[\d[\d,]* rows x \d[\d,]* columns\]"),           # the text repr's footer
    re.compile(r"(?m)^[ \t]*\.\.\.(?:[ \t]+\.\.\.)+[ \t]*$"),      # a text repr's row of "..."
)

# The team's words (the preamble: never in front of a reader).  "issue" and "session" are flagged as whole
# words, singular or plural.  "bar" is also the bar of a bar chart, so it is flagged only where it is a
# threshold: "bar" followed by "is", "was", "of", ":", "≥" or ">=" ("the bar is 0.8", "bar: AUROC ≥ 0.7";
# "error bar:" is left alone), after a verb of reaching ("clears the bar", "meets our bar", "raise the
# bar"), or after "quality"/"acceptance"/"review". "bar chart", "bars", "the grey bars show" pass.
_BAR_THRESHOLD = re.compile(
    r"(?<!error )(?<!error-)\bbar\s*(?::|≥|>=|\b(?:is|was|of)\b)"
    r"|\b(?:clear|clears|cleared|clearing|meet|meets|met|meeting|pass|passes|passed|passing|raise|raises|raised"
    r"|set|sets|lower|lowers|lowered|reach|reaches|reached|miss|misses|missed)\s+(?:the|our|this|that|a)\s+bar\b"
    r"|\b(?:quality|acceptance|review)\s+bar\b",
    re.IGNORECASE,
)
INTERNAL_WORD_PATTERNS = {
    "issue": re.compile(r"\bissues?\b", re.IGNORECASE),
    "session": re.compile(r"\bsessions?\b", re.IGNORECASE),
    "bar": _BAR_THRESHOLD,
}

# What the page shows, measured in the browser. Returns counts, and for each finding the element it names
# (a table's first header cells, the code's first line, an image's file, a snippet of text).
_MEASURE = r"""() => {
  const article = document.querySelector('article.bd-article') || document.querySelector('article')
    || document.querySelector('main') || document.body;
  const squash = text => (text || '').replace(/\s+/g, ' ').trim();
  const short = (text, n) => { text = squash(text); return text.length > n ? text.slice(0, n - 1) + '…' : text; };
  const folded = el => el.closest('details:not([open])') !== null;
  const shown = el => el.getClientRects().length > 0 && !folded(el);
  const style = getComputedStyle(article);
  const column = article.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);

  const tableName = table => {
    const first = table.rows.length ? [...table.rows[0].cells].slice(0, 3).map(c => short(c.textContent, 24)) : [];
    return first.filter(Boolean).join(' | ') || short(table.textContent, 60) || '(empty table)';
  };
  const tables = [...article.querySelectorAll('table')];
  const wideTables = [], truncatedTables = [];
  for (const table of tables) {
    if ([...table.querySelectorAll('th, td')].some(c => /^(\.\.\.|…)$/.test(c.textContent.trim()))) {
      truncatedTables.push(tableName(table));
    }
    const width = table.getBoundingClientRect().width;
    if (width <= column + 1) continue;
    let scroller = null;
    for (let el = table.parentElement; el && el !== article; el = el.parentElement) {
      const overflow = getComputedStyle(el).overflowX;
      if (overflow === 'auto' || overflow === 'scroll') { scroller = el; break; }
    }
    const firstCells = [...table.rows].map(row => row.cells[0]).filter(Boolean);
    const sticky = firstCells.length > 0 && firstCells.every(c => getComputedStyle(c).position === 'sticky');
    const reasons = [];
    if (!scroller) reasons.push('no horizontally scrolling container');
    else if (scroller.getBoundingClientRect().width > column + 1) {
      reasons.push('its scrolling container is wider than the column');
    }
    if (!sticky) reasons.push('first column not sticky');
    if (reasons.length) {
      const size = `${Math.round(width)} px in a ${Math.round(column)} px column`;
      wideTables.push(`${tableName(table)} (${size}: ${reasons.join(', ')})`);
    }
  }

  const inputs = [...article.querySelectorAll('.cell_input')].concat(
    [...article.querySelectorAll('div.cell div.highlight')].filter(h => !h.closest('.cell_input, .cell_output')));
  const firstLine = el => short((el.textContent || '').split('\n').map(l => l.trim()).find(l => l) || '', 80);
  const codeInputs = inputs.filter(el => shown(el) && el.getBoundingClientRect().height > 0).map(firstLine);

  const images = [...document.querySelectorAll('article img, main img')];
  const loaded = i => i.complete && i.naturalWidth > 0;
  const source = i => i.currentSrc || i.src || '';
  const vector = i => /\.svgz?([?#]|$)/i.test(source(i)) || /^data:image\/svg/i.test(source(i));
  const ratio = window.devicePixelRatio || 1;
  const imageName = i => {
    if (source(i).startsWith('data:')) return short(`inline image "${i.alt || ''}"`, 60);
    const file = source(i).split(/[?#]/)[0].split('/').pop();
    try { return short(decodeURIComponent(file), 60); } catch (error) { return short(file, 60); }
  };
  const shownWidth = i => i.getBoundingClientRect().width;
  const upscaled = images.filter(i => loaded(i) && !vector(i) && shownWidth(i) > i.naturalWidth / ratio + 1)
    .map(i => `${imageName(i)} (${Math.round(shownWidth(i))} px shown, ${i.naturalWidth} px natural)`);

  const marks = [...article.querySelectorAll('.admonition.exercise, .solution')]
    .filter(el => !(el.parentElement && el.parentElement.closest('.solution')));
  let exercises = 0, solutions = 0, current = null;
  const unsolved = [];
  const close = () => {
    if (current && !current.solved) unsolved.push(`"${current.text}": no folded solution before the next exercise`);
  };
  for (const el of marks) {
    if (el.matches('.admonition.exercise')) {
      close();
      exercises += 1;
      const title = el.querySelector('.admonition-title');
      current = {text: short(title ? title.textContent : el.textContent, 60), solved: false};
    } else {
      solutions += 1;
      const collapsed = el.tagName === 'DETAILS' && !el.open;
      if (!collapsed) {
        const summary = el.querySelector('summary');
        const what = el.tagName === 'DETAILS' ? 'is open by default' : 'is not a folded <details>';
        unsolved.push(`solution "${short(summary ? summary.textContent : el.textContent, 40)}" ${what}`);
      } else if (current) {
        current.solved = true;
      }
    }
  }
  close();

  const scorecards = [...article.querySelectorAll('table.scorecard')].map(table => [...table.rows]
    .filter(row => row.querySelector('td'))
    .map(row => {
      const claim = row.querySelector('.claim');
      const verdict = row.querySelector('.verdict');
      const link = row.querySelector('.section a[href]');
      return {claim: short(claim ? claim.textContent : row.textContent, 60),
              verdict: verdict ? squash(verdict.textContent) : '',
              href: link ? link.href : null};
    }));

  // Reader text: what the article says, without code, scripts and styles. Text nodes are joined with a
  // space, so that words of adjacent cells or paragraphs do not run together.
  const clone = article.cloneNode(true);
  clone.querySelectorAll('script, style, noscript, .cell_input').forEach(el => el.remove());
  clone.querySelectorAll('div.highlight, div[class*="highlight-"], pre').forEach(el => {
    if (!el.closest('.cell_output')) el.remove();
  });
  const walker = document.createTreeWalker(clone, NodeFilter.SHOW_TEXT);
  const parts = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) parts.push(node.nodeValue);
  const readerText = parts.join(' ');

  // The chrome's visible text (navigation, header, footer): the body with the article hidden.
  const display = article.style.display;
  article.style.display = 'none';
  const chromeText = article === document.body ? '' : document.body.innerText;
  article.style.display = display;

  return {
    figures: images.filter(loaded).length,
    broken_images: images.filter(i => !loaded(i)).map(imageName),
    tables: tables.length,
    error_outputs: document.querySelectorAll('.output.error, .output.traceback, .cell_output .traceback').length,
    wide_tables: wideTables, truncated_tables: truncatedTables, code_inputs: codeInputs, upscaled_images: upscaled,
    exercises, solutions, unsolved_exercises: unsolved, scorecards, reader_text: readerText, chrome_text: chromeText,
  };
}"""


@dataclass
class PageReport:
    """What one page showed: counts per check and one message per failure."""

    page: str
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    needs_table: bool = False

    def add(self, check: str, messages: Iterable[str]) -> None:
        messages = list(messages)
        self.counts[check] = self.counts.get(check, 0) + len(messages)
        self.problems.extend(f"{self.page}: {check}: {message}" for message in messages)

    @property
    def passed(self) -> bool:
        if self.needs_table and self.counts.get("tables", 0) == 0:
            return False
        return all(self.counts.get(check, 0) == 0 for check in PROBLEM_COLUMNS)


def _snippet(text: str, start: int, end: int, context: int = 30) -> str:
    left = " ".join(text[max(0, start - context):start].split())
    right = " ".join(text[end:end + context].split())
    return f"…{left} [{' '.join(text[start:end].split())}] {right}…"


def internal_words(text: str) -> list[str]:
    """Each internal word in ``text``, as ``"word: …context…"`` (see the comment on the patterns)."""
    found = []
    for word, pattern in INTERNAL_WORD_PATTERNS.items():
        found.extend(f"{word}: {_snippet(text, m.start(), m.end())}" for m in pattern.finditer(text))
    return found


def raw_reprs(text: str) -> list[str]:
    """Each raw repr marker in ``text`` (:data:`RAW_REPR_MARKERS`), with its context."""
    found = []
    for marker in RAW_REPR_MARKERS:
        start = text.find(marker)
        while start >= 0:
            found.append(_snippet(text, start, start + len(marker)))
            start = text.find(marker, start + len(marker))
    return found


def pandas_truncations(text: str) -> list[str]:
    """Each mark of pandas' truncation in ``text`` (``N rows × M columns``, a row of ``...``)."""
    return [_snippet(text, m.start(), m.end()) for pattern in _PANDAS_TRUNCATION for m in pattern.finditer(text)]


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)


def _ids_of(path: Path, cache: dict[Path, set[str]]) -> set[str]:
    if path not in cache:
        parser = _Ids()
        parser.feed(path.read_text(encoding="utf-8", errors="replace"))
        cache[path] = parser.ids
    return cache[path]


def link_problem(href: str | None, html_root: Path, cache: dict[Path, set[str]]) -> str | None:
    """Why a scorecard link does not resolve inside the build at ``html_root``, or None when it does."""
    if not href:
        return "no link in its section cell"
    parts = urlsplit(href)
    if parts.scheme != "file":
        return f"link {href} leaves the book"
    target = Path(url2pathname(parts.path)).resolve()
    if target.is_dir():
        target = target / "index.html"
    if not target.is_relative_to(html_root) or not target.is_file():
        return f"link {href} points to no page of the build"
    anchor = unquote(parts.fragment)
    if anchor and anchor not in _ids_of(target, cache):
        return f"link {href}: {target.relative_to(html_root).as_posix()} has no element with id {anchor!r}"
    return None


def toc_pages(toc_path: str | Path = "_toc.yml") -> list[str]:
    """Every page of ``_toc.yml`` (the root, then each part's chapters and their sections), in book order."""
    toc = yaml.safe_load(Path(toc_path).read_text(encoding="utf-8"))
    if not isinstance(toc, dict) or "root" not in toc:
        raise ValueError(f"{toc_path}: expected a jupyter-book table of contents with a 'root' entry")
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return [str(Path(page).with_suffix("")) if Path(page).suffix in {".md", ".ipynb"} else page for page in pages]


def chapter_pages(toc_path: str | Path = "_toc.yml") -> list[str]:
    """Files of the executed chapters listed in ``_toc.yml`` (``book/chapters/...``), in book order."""
    return [page for page in toc_pages(toc_path) if page.startswith(CHAPTER_PREFIX)]


def find_chromium() -> str | None:
    """The system Chromium, or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _page_report(page: str, measured: dict, js_errors: list[str], network: list[str], html_root: Path,
                 ids_cache: dict[Path, set[str]], needs_table: bool, needs_scorecard: bool) -> PageReport:
    report = PageReport(page, needs_table=needs_table)
    report.counts.update(figures=measured["figures"], tables=measured["tables"], exercises=measured["exercises"],
                         solutions=measured["solutions"])
    report.add("broken_images", measured["broken_images"])
    report.add("error_outputs", ["cell output with an error or a traceback"] * measured["error_outputs"])
    report.add("js_errors", js_errors)
    report.add("network_requests", network)
    report.add("wide_tables", measured["wide_tables"])
    report.add("code_inputs", [f"code shown, first line: {line!r}" for line in measured["code_inputs"]])
    report.add("raw_reprs", raw_reprs(measured["reader_text"]))
    report.add("truncated_tables", [f"'...' cell in table {name}" for name in measured["truncated_tables"]]
               + pandas_truncations(measured["reader_text"]))
    report.add("upscaled_images", measured["upscaled_images"])
    report.add("unsolved_exercises", measured["unsolved_exercises"])
    report.add("internal_words", internal_words(measured["reader_text"]) + internal_words(measured["chrome_text"]))
    scorecard = []
    if needs_scorecard and not measured["scorecards"]:
        scorecard.append("no table with class 'scorecard'")
    for rows in measured["scorecards"]:
        for row in rows:
            if not row["verdict"]:
                scorecard.append(f"row {row['claim']!r}: no verdict")
            problem = link_problem(row["href"], html_root, ids_cache)
            if problem:
                scorecard.append(f"row {row['claim']!r}: {problem}")
    report.add("scorecard_problems", scorecard)
    if needs_table and measured["tables"] == 0:
        report.problems.append(f"{page}: tables: a chapter shows no table")
    return report


def inspect_pages(html_root: str | Path, pages: Sequence[str], chromium: str | None = None,
                  table_pages: Sequence[str] | None = None, scorecard_pages: Sequence[str] | None = None
                  ) -> list[PageReport]:
    """Open each page in one headless Chromium and measure it (see the module docstring).

    Parameters
    ----------
    html_root
        The built book (``_build/html``).
    pages
        Source paths without suffix, as in ``_toc.yml`` (``book/chapters/02_sae``).
    chromium
        Path of the browser; default :func:`find_chromium`.
    table_pages, scorecard_pages
        Pages that must show a table (default: those under ``book/chapters/``) and pages that must hold a
        ``table.scorecard`` (default: those whose file name ends in ``scorecard``).
    """
    from playwright.sync_api import sync_playwright

    html_root = Path(html_root).resolve()
    chromium = chromium or find_chromium()
    if chromium is None:
        raise RuntimeError("book_check needs the system chromium (make browser installs it)")
    if not html_root.is_dir():
        raise FileNotFoundError(f"book_check: {html_root} does not exist; build the book first (make book)")
    table_pages = set(page for page in pages if page.startswith(CHAPTER_PREFIX)) if table_pages is None \
        else set(table_pages)
    scorecard_pages = set(page for page in pages if page.rsplit("/", 1)[-1].endswith(SCORECARD_SUFFIX)) \
        if scorecard_pages is None else set(scorecard_pages)
    reports, ids_cache = [], {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport=WINDOW, device_scale_factor=1)
            for page_name in pages:
                if not (html_root / f"{page_name}.html").is_file():
                    report = PageReport(page_name, needs_table=page_name in table_pages)
                    report.add("missing_pages", [f"{page_name}.html is not in the build"])
                    reports.append(report)
                    continue
                page = context.new_page()
                js_errors, network = [], []
                page.on("pageerror", lambda error, sink=js_errors: sink.append(str(error)))
                page.on("request", lambda request, sink=network: sink.append(request.url)
                        if request.url.startswith(("http://", "https://")) else None)
                page.goto((html_root / f"{page_name}.html").as_uri(), wait_until="load")
                measured = page.evaluate(_MEASURE)
                page.close()
                reports.append(_page_report(page_name, measured, js_errors, network, html_root, ids_cache,
                                            page_name in table_pages, page_name in scorecard_pages))
        finally:
            browser.close()
    return reports


def check_book(html_root: str | Path, chapters: Sequence[str], chromium: str | None = None, **options
               ) -> pd.DataFrame:
    """One row per page: counts per check, ``passed``, and the failure messages in ``problems``.

    ``chapters`` are the pages to check (source paths without suffix); ``options`` go to
    :func:`inspect_pages`.
    """
    reports = inspect_pages(html_root, chapters, chromium, **options)
    rows = [{"page": r.page, **{c: r.counts.get(c, 0) for c in CHECK_COLUMNS[1:-1]}, "passed": r.passed,
             "problems": r.problems} for r in reports]
    return pd.DataFrame(rows, columns=list(CHECK_COLUMNS) + ["problems"])


def report_totals(table: pd.DataFrame) -> dict[str, int]:
    """The totals ``--report`` prints, keyed as :data:`REPORT_TOTALS`."""
    return {column: int(table[column].sum()) for column in REPORT_TOTALS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m saerad.book_check", description=__doc__.splitlines()[0])
    parser.add_argument("html_root", nargs="?", default="_build/html", help="the built book (default _build/html)")
    parser.add_argument("--toc", default="_toc.yml", help="the book's table of contents")
    parser.add_argument("--chapters-only", action="store_true", help="check only the pages under book/chapters/")
    parser.add_argument("--report", action="store_true",
                        help="print the totals per check and exit 0 (to measure a book, not to gate it)")
    args = parser.parse_args(argv)
    pages = chapter_pages(args.toc) if args.chapters_only else toc_pages(args.toc)
    table = check_book(args.html_root, pages)
    with pd.option_context("display.width", 250, "display.max_columns", None):
        print(table.drop(columns="problems").to_string(index=False))
    if args.report:
        print(f"\nTotals over {len(table)} pages ({int(table['passed'].sum())} pass):")
        for column, total in report_totals(table).items():
            print(f"  {REPORT_TOTALS[column]}: {total}")
        return 0
    problems = [message for messages in table["problems"] for message in messages]
    if problems:
        print(f"\n{len(problems)} problems:")
        print("\n".join(f"- {message}" for message in problems))
    return 0 if table["passed"].all() else 1


if __name__ == "__main__":
    sys.exit(main())
