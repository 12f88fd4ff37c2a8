"""The book checker's rules, each on a small hand-written page that breaks it (one Chromium for all pages),
the book's style sheet against those rules, the CSV copy of the tables, and the book's configuration."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image

from saerad.book.check import (
    REPORT_TOTALS,
    check_book,
    internal_words,
    link_problem,
    pandas_truncations,
    raw_reprs,
    report_totals,
    toc_pages,
)
from saerad.book_check import find_chromium

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None,
                                    reason="no system chromium on PATH (`make browser` installs it)")

# Every page has a 600 px text column, as the theme's article has.
_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>t</title>{head}
<style>body {{ margin: 0; font: 16px sans-serif; }} article.bd-article {{ width: 600px; padding: 0 20px; }}
td, th {{ padding: 2px 8px; }}</style></head>
<body><nav>Contents</nav><main class="bd-main"><div class="bd-content"><article class="bd-article">{body}</article>
</div></main></body></html>"""

_WIDE_ROW = "".join(f"<td>value number {k}</td>" for k in range(14))
_WIDE_HEAD = "<th>finding</th>" + "".join(f"<th>measure {k}</th>" for k in range(1, 14))


def _table(attrs: str = "") -> str:
    return (f"<table {attrs}><thead><tr>{_WIDE_HEAD}</tr></thead>"
            f"<tbody><tr><td>row label</td>{_WIDE_ROW[len('<td>value number 0</td>'):]}</tr></tbody></table>")


def _sticky(table: str) -> str:
    """The table with a sticky first cell in every row."""
    return (table.replace("<th>finding</th>", '<th style="position: sticky; left: 0">finding</th>')
            .replace("<td>row label</td>", '<td style="position: sticky; left: 0">row label</td>'))


_SCROLLING_STICKY = f'<div style="overflow-x: auto">{_sticky(_table())}</div>'



def _scorecard_row(claim: str, verdict: str, section: str) -> str:
    return (f'<tr><td class="claim">{claim}</td><td class="paper">1</td><td class="ours">1</td>'
            f'<td class="verdict">{verdict}</td><td class="section">{section}</td></tr>')


PAGES = {
    # Everything right: a wide table that scrolls with a sticky first column, a narrow table, a folded input,
    # a 2x image shown at half its size, an exercise with a folded solution, legitimate uses of "bar".
    "book/chapters/good": f"""
      <h2 id="sec-a">A section</h2>
      {_SCROLLING_STICKY}
      <table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>
      <div class="cell"><details class="hide above-input"><summary>Show code cell source</summary>
        <div class="cell_input"><div class="highlight"><pre>import numpy as np</pre></div></div></details>
        <div class="cell_output"><img src="../images/retina.png" style="width: 40px"></div></div>
      <div class="highlight-bash"><div class="highlight">
        <pre>make book  # a session of PosixPath( in prose code</pre></div></div>
      <div class="admonition exercise"><p class="admonition-title">Exercise 1.1</p><p>Do it.</p></div>
      <details class="sd-dropdown solution"><summary>Solution</summary><p>Done.</p></details>
      <p>The bar chart shows grey bars; error bar: 95 % interval.</p>""",
    "book/chapters/wide": f"""
      {_table('id="plain"')}
      <div style="overflow-x: auto">{_table('id="unsticky"')}</div>
      <div style="position: relative">{_sticky(_table('id="only-sticky"'))}</div>""",
    "book/chapters/code": """
      <div class="cell"><div class="cell_input"><div class="highlight"><pre>
print("hello")
x = 1</pre></div></div></div>
      <div class="cell"><details class="hide above-input" open><summary>Hide</summary>
        <div class="cell_input"><div class="highlight"><pre>opened_by_default()</pre></div></div></details></div>
      <div class="cell"><div class="highlight"><pre>bare_highlight()</pre></div></div>
      <div class="cell"><div class="cell_input" style="display: none"><pre>hidden_by_css()</pre></div></div>
      <table><tr><td>t</td></tr></table>""",
    "book/chapters/reprs": """
      <div class="cell_output"><div class="output text_plain"><pre>PosixPath('/data/x.csv')</pre></div>
      <div class="output text_plain"><pre>&lt;Figure size 640x480 with 1 Axes&gt;</pre></div>
      <div class="output text_plain"><pre>Name: auroc, dtype: float64</pre></div></div>
      <table><tr><td>t</td></tr></table>""",
    "book/chapters/truncated": """
      <div class="cell_output"><div class="output text_html"><table class="dataframe">
        <tr><th>0</th><td>1</td></tr><tr><th>...</th><td>...</td></tr><tr><th>99</th><td>2</td></tr></table>
        <p>100 rows × 2 columns</p></div></div>""",
    "book/chapters/upscaled": """
      <div class="cell_output"><img src="../images/small.png" style="width: 200px">
      <img src="../images/diagram.svg" style="width: 300px"></div><table><tr><td>t</td></tr></table>""",
    "book/chapters/exercises": """
      <div class="admonition exercise"><p class="admonition-title">Exercise 2.1</p></div>
      <details class="sd-dropdown solution"><summary>Solution 2.1</summary><p>ok</p></details>
      <div class="admonition exercise"><p class="admonition-title">Exercise 2.2</p></div>
      <div class="admonition exercise"><p class="admonition-title">Exercise 2.3</p></div>
      <details class="sd-dropdown solution" open><summary>Solution 2.3</summary><p>open</p></details>
      <table><tr><td>t</td></tr></table>""",
    "book/chapters/words": """
      <p>The reading session ended.</p><p>The bar is 0.8 here.</p><p>An issue remains.</p>
      <p>Bars of the chart.</p><table><tr><td>t</td></tr></table>""",
    "book/chapters/no_table": "<p>Only prose.</p>",
    "book/chapters/js_error": "<table><tr><td>t</td></tr></table><script>undefinedFunction()</script>",
    "book/glossary": "<p>A page without a table passes.</p>",
    "book/scorecard": "<table class=\"scorecard\"><thead><tr><th>claim</th><th>paper</th><th>ours</th>"
                      "<th>verdict</th><th>section</th></tr></thead><tbody>"
                      + _scorecard_row("resolves", "holds", '<a href="chapters/good.html#sec-a">2</a>')
                      + _scorecard_row("no verdict", " ", '<a href="chapters/good.html">2</a>')
                      + _scorecard_row("no link", "holds", "2")
                      + _scorecard_row("missing page", "holds", '<a href="chapters/absent.html">2</a>')
                      + _scorecard_row("missing anchor", "holds", '<a href="chapters/good.html#sec-z">2</a>')
                      + "</tbody></table>",
    "book/empty_scorecard": "<p>No scorecard table here.</p>",
    # The book's style sheet, on the formatter's HTML, a pandas frame and a Markdown table of a prose page.
    "book/styled": """
      <div class="saerad-table"><table class="saerad"><thead><tr>{head}</tr></thead>
        <tbody><tr><td>label</td>{row}</tr></tbody></table>
        <p class="saerad-table-source"><a href="x.csv">x.csv</a></p></div>
      <div class="cell_output"><div class="output text_html"><div><table class="dataframe">
        <thead><tr>{head}</tr></thead><tbody><tr><th>0</th>{row}</tr></tbody></table></div></div>
        <img src="images/small.png"></div>
      <div class="pst-scrollable-table-container"><table class="table"><thead><tr>{head}</tr></thead>
        <tbody><tr><td>label</td>{row}</tr></tbody></table></div>""".format(
        head=_WIDE_HEAD.replace("<th>", '<th class="num">'),
        row=_WIDE_ROW[len("<td>value number 0</td>"):].replace("<td>", '<td class="num">')),
}


def _write_site(root: Path) -> Path:
    html = root / "html"
    (html / "book" / "images").mkdir(parents=True)
    Image.new("RGB", (80, 10), "white").save(html / "book/images/retina.png")
    Image.new("RGB", (40, 10), "white").save(html / "book/images/small.png")
    (html / "book/images/diagram.svg").write_text(
        '<svg xmlns="http://www.w3.org/2000/svg" width="20" height="10"><rect width="20" height="10"/></svg>')
    shutil.copy(REPO_ROOT / "book/_static/saerad.css", html / "saerad.css")
    for page, body in PAGES.items():
        path = html / f"{page}.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        depth = "../" * page.count("/")
        head = f'<link rel="stylesheet" href="{depth}saerad.css">' if page == "book/styled" else ""
        path.write_text(_PAGE.format(head=head, body=body), encoding="utf-8")
    return html


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    if CHROMIUM is None:
        pytest.skip("no system chromium on PATH (`make browser` installs it)")
    html = _write_site(tmp_path_factory.mktemp("site"))
    table = check_book(html, list(PAGES) + ["book/chapters/not_built"])
    return {row["page"]: row for row in table.to_dict("records")}, table


def _problems(row, check):
    return [message for message in row["problems"] if f": {check}: " in message]


@needs_chromium
def test_a_page_that_follows_every_rule_passes(checked):
    rows, _ = checked
    good = rows["book/chapters/good"]
    assert good["passed"], good["problems"]
    assert (good["tables"], good["figures"], good["exercises"], good["solutions"]) == (2, 1, 1, 1)
    assert rows["book/glossary"]["passed"], rows["book/glossary"]["problems"]


@needs_chromium
def test_a_wide_table_must_scroll_and_keep_its_first_column(checked):
    rows, _ = checked
    wide = rows["book/chapters/wide"]
    assert wide["wide_tables"] == 3 and not wide["passed"]
    messages = _problems(wide, "wide_tables")
    assert all("finding | measure 1 | measure 2" in message for message in messages)
    assert "no horizontally scrolling container" in messages[0] and "first column not sticky" in messages[0]
    assert "first column not sticky" in messages[1] and "no horizontally" not in messages[1]
    assert "no horizontally scrolling container" in messages[2] and "sticky" not in messages[2]


@needs_chromium
def test_code_inputs_count_unless_folded_or_hidden(checked):
    rows, _ = checked
    code = rows["book/chapters/code"]
    assert code["code_inputs"] == 3 and not code["passed"]
    text = " ".join(_problems(code, "code_inputs"))
    assert "print(\"hello\")" in text and "opened_by_default()" in text and "bare_highlight()" in text
    assert "x = 1" not in text and "hidden_by_css" not in text


@needs_chromium
def test_raw_reprs_in_outputs_fail_but_not_prose_code(checked):
    rows, _ = checked
    reprs = rows["book/chapters/reprs"]
    assert reprs["raw_reprs"] == 3 and not reprs["passed"]
    text = " ".join(_problems(reprs, "raw_reprs"))
    assert "PosixPath(" in text and "<Figure size" in text and "dtype:" in text


@needs_chromium
def test_pandas_truncation_is_found(checked):
    rows, _ = checked
    truncated = rows["book/chapters/truncated"]
    assert truncated["truncated_tables"] == 2 and not truncated["passed"]
    assert any("100 rows × 2 columns" in message for message in truncated["problems"])


@needs_chromium
def test_an_image_shown_above_its_natural_size_fails_but_not_a_vector_one(checked):
    rows, _ = checked
    upscaled = rows["book/chapters/upscaled"]
    assert upscaled["upscaled_images"] == 1 and upscaled["figures"] == 2
    assert "small.png (200 px shown, 40 px natural)" in " ".join(upscaled["problems"])


@needs_chromium
def test_each_exercise_needs_a_folded_solution(checked):
    rows, _ = checked
    exercises = rows["book/chapters/exercises"]
    assert (exercises["exercises"], exercises["solutions"]) == (3, 2)
    messages = _problems(exercises, "unsolved_exercises")
    assert len(messages) == 3 and exercises["unsolved_exercises"] == 3
    assert any('"Exercise 2.2": no folded solution' in m for m in messages)
    assert any("Solution 2.3" in m and "open by default" in m for m in messages)
    assert any('"Exercise 2.3": no folded solution' in m for m in messages)
    assert not any("Exercise 2.1" in m for m in messages)


@needs_chromium
def test_internal_words_on_the_page(checked):
    rows, _ = checked
    words = rows["book/chapters/words"]
    text = " ".join(_problems(words, "internal_words"))
    assert words["internal_words"] == 3, text
    assert "[session]" in text and "[bar is]" in text and "[issue]" in text


@needs_chromium
def test_a_chapter_without_a_table_a_javascript_error_or_a_page_not_built_fail(checked):
    rows, _ = checked
    assert not rows["book/chapters/no_table"]["passed"]
    assert any("shows no table" in m for m in rows["book/chapters/no_table"]["problems"])
    js = rows["book/chapters/js_error"]
    assert js["js_errors"] == 1 and not js["passed"]
    absent = rows["book/chapters/not_built"]
    assert absent["missing_pages"] == 1 and not absent["passed"]


@needs_chromium
def test_scorecard_rows_need_a_verdict_and_a_resolving_link(checked):
    rows, _ = checked
    card = rows["book/scorecard"]
    messages = _problems(card, "scorecard_problems")
    assert card["scorecard_problems"] == 4, messages
    joined = " ".join(messages)
    assert "'no verdict': no verdict" in joined and "'no link': no link in its section cell" in joined
    assert "'missing page'" in joined and "points to no page" in joined
    assert "'missing anchor'" in joined and "no element with id 'sec-z'" in joined
    assert "'resolves'" not in joined
    empty = rows["book/empty_scorecard"]
    assert empty["scorecard_problems"] == 1 and "no table with class 'scorecard'" in " ".join(empty["problems"])


@needs_chromium
def test_the_book_style_sheet_makes_wide_tables_scroll_with_sticky_labels(checked):
    rows, _ = checked
    styled = rows["book/styled"]
    assert styled["tables"] == 3 and styled["wide_tables"] == 0 and styled["upscaled_images"] == 0
    assert styled["passed"], styled["problems"]


@needs_chromium
def test_report_totals_add_up_the_pages(checked):
    _, table = checked
    totals = report_totals(table)
    assert set(totals) == set(REPORT_TOTALS)
    assert totals["wide_tables"] == 3 and totals["code_inputs"] == 3 and totals["raw_reprs"] == 3
    assert totals["exercises"] == 4 and totals["solutions"] == 3


def test_internal_words_rule_spares_figure_bars():
    assert internal_words("A bar chart; the grey bars show counts; each bar for a finding; error bar: 95 %.") == []
    flagged = internal_words("It clears the bar. The bar of 0.8. Recall bar ≥ 0.7. Sessions, issues.")
    assert [f.split(":")[0] for f in flagged] == ["issue", "session", "bar", "bar", "bar"]
    assert internal_words("tissue and obsession and crowbar") == []


def test_text_rules_find_reprs_and_truncation():
    assert raw_reprs("<matplotlib.lines.Line2D object at 0x7f>") and raw_reprs("nothing here") == []
    assert pandas_truncations("[500 rows x 3 columns]") and pandas_truncations("  ...   ...\n")
    assert pandas_truncations("rows and columns ... of text") == []


def test_scorecard_links_resolve_only_inside_the_build(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book/a.html").write_text('<h1 id="top">A</h1>')
    cache = {}
    assert link_problem((tmp_path / "book/a.html").as_uri() + "#top", tmp_path, cache) is None
    assert "no element with id 'gone'" in link_problem((tmp_path / "book/a.html").as_uri() + "#gone", tmp_path, cache)
    assert "leaves the book" in link_problem("https://example.org/x.html", tmp_path, cache)
    assert "points to no page" in link_problem((tmp_path.parent / "outside.html").as_uri(), tmp_path, cache)


def test_toc_pages_lists_every_page_in_order(tmp_path):
    toc = tmp_path / "_toc.yml"
    toc.write_text(yaml.safe_dump({"format": "jb-book", "root": "book/intro", "parts": [
        {"caption": "P", "chapters": [{"file": "book/chapters/00_data"},
                                      {"file": "book/scorecard.md", "sections": [{"file": "book/sub"}]}]}]}))
    assert toc_pages(toc) == ["book/intro", "book/chapters/00_data", "book/scorecard", "book/sub"]
    toc.write_text("parts: []\n")
    with pytest.raises(ValueError, match="_toc.yml.*root"):
        toc_pages(toc)


def test_the_old_module_name_still_runs():
    result = subprocess.run([sys.executable, "-m", "saerad.book_check", "--help"], capture_output=True, text=True,
                            cwd=REPO_ROOT, timeout=60)
    assert result.returncode == 0 and "--report" in result.stdout


# ---------------------------------------------------------------------------------------------------------
# The CSVs of the tables, copied into the build (book/_ext/table_csvs.py)


def _load_extension(name: str):
    spec = importlib.util.spec_from_file_location(f"_book_ext_{name}", REPO_ROOT / "book/_ext" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _chapter(path: Path, artifacts_root) -> None:
    metadata = {"papermill": {"parameters": {"artifacts_root": artifacts_root}}} if artifacts_root else {}
    path.write_text(json.dumps({"cells": [], "metadata": metadata, "nbformat": 4, "nbformat_minor": 5}))


def test_table_csvs_copies_the_stage_csvs_the_chapters_ran_with(tmp_path):
    table_csvs = _load_extension("table_csvs")
    book = tmp_path / "book_root"
    chapters = book / "book/chapters"
    chapters.mkdir(parents=True)
    stage = book / "artifacts/demo/metrics"
    (stage / "per_finding").mkdir(parents=True)
    (stage / "per_finding/deeper").mkdir()
    (stage / "table1.csv").write_text("a,b\n1,2\n")
    (stage / "per_finding/edema.csv").write_text("x\n1\n")
    (stage / "per_finding/deeper/too_deep.csv").write_text("x\n1\n")
    (stage / "stage.json").write_text("{}")
    (stage / "huge.csv").write_bytes(b"0" * (table_csvs.MAX_CSV_BYTES + 1))
    other = tmp_path / "elsewhere/profile/data"  # an absolute artifacts root, outside the book
    other.mkdir(parents=True)
    (other / "images.csv").write_text("i\n1\n")
    (other.parent / "metrics").mkdir()
    (other.parent / "metrics/table1.csv").write_text("from the second root\n")
    _chapter(chapters / "00_data.ipynb", "artifacts/demo")
    _chapter(chapters / "01_more.ipynb", str(other.parent))
    _chapter(chapters / "02_same.ipynb", "artifacts/demo")
    _chapter(chapters / "03_unexecuted.ipynb", None)
    _chapter(chapters / ".04_running.ipynb", "nowhere")

    out = tmp_path / "html"
    written = table_csvs.copy_table_csvs(chapters, book, out)
    copied = sorted(p.relative_to(out / "_tables").as_posix() for p in written)
    assert copied == ["data/images.csv", "metrics/per_finding/edema.csv", "metrics/table1.csv"]
    assert (out / "_tables/metrics/table1.csv").read_text() == "a,b\n1,2\n"  # the first chapter's root wins
    assert not list((out / "_tables").rglob(".*"))

    _chapter(chapters / "05_bad.ipynb", 3)
    with pytest.raises(ValueError, match="05_bad.ipynb.*artifacts_root"):
        table_csvs.copy_table_csvs(chapters, book, out)
    (chapters / "05_bad.ipynb").write_text("not json")
    with pytest.raises(ValueError, match="05_bad.ipynb: not a notebook"):
        table_csvs.copy_table_csvs(chapters, book, out)


def test_book_configuration_registers_the_style_sheet_extensions_and_repository():
    config = yaml.safe_load((REPO_ROOT / "_config.yml").read_text(encoding="utf-8"))
    sphinx = config["sphinx"]
    assert sphinx["recursive_update"] is True  # else sphinx.config's theme options drop the repository's
    assert {"table_csvs", "chapter_sources", "fold_code_inputs", "unique_scripts"} <= set(sphinx["local_extensions"])
    for name in sphinx["local_extensions"]:
        assert (REPO_ROOT / sphinx["local_extensions"][name] / f"{name}.py").is_file(), name
    static = sphinx["config"]["html_static_path"]
    for name in sphinx["config"]["html_css_files"] + sphinx["config"]["html_js_files"]:
        assert any((REPO_ROOT / folder / name).is_file() for folder in static), name
    assert config["repository"]["url"].startswith("https://github.com/")
    assert config["html"]["use_repository_button"] is True and config["html"]["use_issues_button"] is False
    assert sphinx["config"]["html_theme_options"]["use_download_button"] is True


# ---------------------------------------------------------------------------------------------------------
# The real configuration, style sheet and extensions, in a strict build of a two-page book


def _tiny_chapter(path: Path, artifacts_root: Path, table_html: str) -> None:
    import nbformat

    notebook = nbformat.v4.new_notebook()
    notebook.metadata["papermill"] = {"parameters": {"artifacts_root": str(artifacts_root)}}
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    hidden = nbformat.v4.new_code_cell("show_table(scores, stage_dir, 'scores')", metadata={"tags": ["hide-input"]})
    hidden.outputs = [nbformat.v4.new_output("display_data", data={"text/html": table_html, "text/plain": "t"})]
    removed = nbformat.v4.new_code_cell("print(1)", metadata={"tags": ["remove-input"]})
    removed.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    untagged = nbformat.v4.new_code_cell("untagged_cell_is_folded()")  # folded by book/_ext/fold_code_inputs.py
    untagged.outputs = [nbformat.v4.new_output("stream", name="stdout", text="2\n")]
    output_hidden = nbformat.v4.new_code_cell("output_hidden()", metadata={"tags": ["hide-output"]})
    output_hidden.outputs = [nbformat.v4.new_output("stream", name="stdout", text="3\n")]
    notebook.cells = [nbformat.v4.new_markdown_cell("# A tiny chapter\n\n## Scores\n\nThe scores."), hidden, removed,
                      untagged, output_hidden]
    nbformat.write(notebook, path)


@pytest.mark.slow
def test_a_strict_build_with_the_book_configuration_passes_the_check(tmp_path):
    import pandas as pd

    from saerad.book.tables import show_table

    root = tmp_path / "book_root"
    (root / "book/chapters").mkdir(parents=True)
    (root / "book/extra").mkdir()
    (root / "notebooks").mkdir()
    shutil.copy(REPO_ROOT / "_config.yml", root / "_config.yml")
    shutil.copy(REPO_ROOT / "book/references.bib", root / "book/references.bib")
    for folder in ("_ext", "_static"):
        shutil.copytree(REPO_ROOT / "book" / folder, root / "book" / folder,
                        ignore=shutil.ignore_patterns("__pycache__"))
    (root / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "book/intro", "parts": [
        {"caption": "Chapters", "chapters": [{"file": "book/chapters/00_tiny"}]}]}))
    (root / "book/intro.md").write_text(
        "# Front\n\n:::{admonition} Exercise 1.1\n:class: exercise\nCount the scores.\n:::\n\n"
        ":::{dropdown} Solution\n:class-container: solution\nTwelve.\n:::\n\n"
        "| finding | " + " | ".join(f"a long measure name {k}" for k in range(12)) + " |\n"
        "|---|" + "---|" * 12 + "\n| edema | " + " | ".join(f"0.{k}00" for k in range(12)) + " |\n")
    artifacts = tmp_path / "artifacts/demo"
    scores = pd.DataFrame({"finding": ["pleural effusion", "edema"],
                           **{f"measure_with_a_name_{k}": [0.123456, 0.5] for k in range(12)},
                           "paper_measure_with_a_name_0": [0.9, 0.8]})
    table = show_table(scores, artifacts / "metrics", "scores",
                       paper={"measure_with_a_name_0": "paper_measure_with_a_name_0"})
    _tiny_chapter(root / "book/chapters/00_tiny.ipynb", artifacts, table.to_html())
    shutil.copy(root / "book/chapters/00_tiny.ipynb", root / "notebooks/00_tiny.ipynb")

    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    build = subprocess.run([str(jupyter_book), "build", str(root), "--warningiserror", "--keep-going", "--builder",
                            "html"], capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    html = root / "_build/html"
    chapter = (html / "book/chapters/00_tiny.html").read_text(encoding="utf-8")
    assert (html / "_tables/metrics/scores.csv").read_text() == (artifacts / "metrics/scores.csv").read_text()
    assert 'href="../../_tables/metrics/scores.csv"' in chapter
    assert "_static/saerad.css" in chapter and "_static/saerad.js" in chapter
    assert "https://github.com/saerad-book/saerad-book" in chapter
    assert "/blob/main/notebooks/00_tiny.ipynb" in chapter and "/edit/main/notebooks/00_tiny.ipynb" in chapter
    assert "main/book/chapters/00_tiny.ipynb" not in chapter  # the executed copy is not in the repository
    assert "_sources/book/chapters/00_tiny.ipynb" in chapter  # the download button offers the notebook
    assert chapter.count('<details class="admonition hide above-input">') == 3  # hidden, untagged, output_hidden
    assert "untagged_cell_is_folded" in chapter and "print(1)" not in chapter
    if CHROMIUM is None:
        pytest.skip("no system chromium on PATH (`make browser` installs it): the book built, not rendered")
    checked = check_book(html, ["book/intro", "book/chapters/00_tiny"])
    assert checked["passed"].all(), checked["problems"].tolist()
    assert checked["tables"].tolist() == [1, 1] and checked["exercises"].tolist() == [1, 0]
