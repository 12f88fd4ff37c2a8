"""The papermill runner and its stage records, on two tiny notebooks made by the test."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

from saerad.params import ParameterError
from saerad.pipeline import INTERRUPTED_MESSAGE, Stage, StageFailed, publish, run
from saerad.publish import PublishError, PublishIncomplete, published_profile

STAGES = (Stage("first", "00_first.ipynb", "First", ("value.txt",)), Stage("second", "01_second.ipynb", "Second"))
# The first notebook writes its artifact, then may fail (crash_at) or hang (hang_at) with it half replaced.
FIRST = """import os, time
from pathlib import Path
Path(artifacts_root, 'first').mkdir(parents=True, exist_ok=True)
Path(artifacts_root, 'first', 'value.txt').write_text(str(value * 2 + seed))
if value == crash_at:
    raise RuntimeError('crashed after writing')
if value == hang_at:
    Path(artifacts_root, 'first', 'kernel.pid').write_text(str(os.getpid()))
    time.sleep(120)
"""
SECOND = """from pathlib import Path
doubled = int(Path(artifacts_root, 'first', 'value.txt').read_text())
if fail:
    raise RuntimeError(f'asked to fail after reading {doubled}')
Path(artifacts_root, 'second').mkdir(parents=True, exist_ok=True)
Path(artifacts_root, 'second', 'ok.txt').write_text(str(doubled))
"""


def _notebook(path: Path, parameters: str, body: str) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(parameters)
    cell.metadata["tags"] = ["parameters"]
    notebook.cells = [cell, nbformat.v4.new_code_cell(body)]
    nbformat.write(notebook, path)


@pytest.fixture
def book(tmp_path, monkeypatch):
    # Others may edit the package while a test runs; its hash must not make stages re-run mid-test.
    monkeypatch.setattr("saerad.pipeline.package_fingerprint", lambda: "package")
    notebooks, params = tmp_path / "notebooks", tmp_path / "params"
    notebooks.mkdir(), params.mkdir()
    common = 'profile = "demo"\nseed = 0\nartifacts_root = "x"\n'
    _notebook(notebooks / "00_first.ipynb", common + "value = 1\ncrash_at = -1\nhang_at = -1\n", FIRST)
    _notebook(notebooks / "01_second.ipynb", common + "fail = False\n", SECOND)
    (params / "demo.yaml").write_text("seed: 1\nstages:\n  first:\n    value: 5\n")
    (params / "other.yaml").write_text("seed: 2\n")
    kwargs = dict(artifacts_base=tmp_path / "artifacts", chapters_dir=tmp_path / "chapters", stages=STAGES,
                  notebooks_dir=notebooks, params_dir=params, timeout=120)
    return tmp_path, kwargs


def _record(root: Path, profile: str, stage: str) -> dict:
    return json.loads((root / "artifacts" / profile / stage / "stage.json").read_text())


def _labels(chapters: Path) -> dict[str, str]:
    return {path.name: nbformat.read(path, as_version=4).metadata["saerad"]["profile"]
            for path in sorted(chapters.glob("*.ipynb"))}


def test_stages_run_in_order_then_are_skipped_when_up_to_date(book):
    root, kwargs = book
    assert run("demo", **kwargs) == {"first": "ran", "second": "ran"}
    assert (root / "artifacts/demo/first/value.txt").read_text() == "11"
    executed = nbformat.read(root / "artifacts/demo/chapters/00_first.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    assert executed.metadata["papermill"]["parameters"]["profile"] == "demo"
    record = _record(root, "demo", "first")
    assert record["parameters"]["value"] == 5 and record["status"] == "ok"
    assert run("demo", **kwargs) == {"first": "up to date", "second": "up to date"}
    assert run("demo", assignments=["first.value=6"], **kwargs) == {"first": "ran", "second": "ran"}


def test_record_holds_every_parameter_after_the_notebook_defaults(book):
    root, kwargs = book
    run("demo", **kwargs)
    assert _record(root, "demo", "first")["parameters"] == {
        "profile": "demo", "seed": 1, "artifacts_root": str(root / "artifacts/demo"), "value": 5, "crash_at": -1,
        "hang_at": -1}
    assert _record(root, "demo", "second")["parameters"]["fail"] is False


def test_failing_stage_names_cell_and_error_and_keeps_the_good_chapter(book):
    root, kwargs = book
    run("demo", **kwargs)
    good = (root / "artifacts/demo/chapters/01_second.ipynb").read_bytes()
    published = (root / "chapters/01_second.ipynb").read_bytes()
    with pytest.raises(StageFailed) as failure:
        run("demo", only=["second"], assignments=["second.fail=true"], **kwargs)
    message = str(failure.value)
    assert "stage 'second'" in message and "cell" in message
    assert "RuntimeError: asked to fail after reading 11" in message
    assert (root / "artifacts/demo/chapters/01_second.ipynb").read_bytes() == good
    assert (root / "chapters/01_second.ipynb").read_bytes() == published
    assert (root / "artifacts/demo/second/failed.ipynb").exists()
    assert not list((root / "artifacts/demo/chapters").glob(".*")) and not list((root / "chapters").glob(".*"))
    record = _record(root, "demo", "second")
    assert record["status"] == "failed" and "asked to fail" in record["error"] and record["parameters"]["fail"]
    # The next successful run removes the failed notebook: it described an error that is gone.
    assert run("demo", only=["second"], **kwargs) == {"second": "ran"}
    assert not (root / "artifacts/demo/second/failed.ipynb").exists()


def test_a_failed_run_is_not_up_to_date_when_the_parameters_go_back(book):
    root, kwargs = book
    run("demo", **kwargs)
    with pytest.raises(StageFailed, match="crashed after writing"):
        run("demo", assignments=["first.value=6", "first.crash_at=6"], **kwargs)
    assert (root / "artifacts/demo/first/value.txt").read_text() == "13"  # half replaced
    assert _record(root, "demo", "first")["status"] == "failed"
    # Back to the parameters of the good run: its record no longer vouches for the folder.
    assert run("demo", **kwargs) == {"first": "ran", "second": "up to date"}
    assert (root / "artifacts/demo/first/value.txt").read_text() == "11"


def test_downstream_of_a_failed_stage_neither_runs_nor_is_up_to_date(book):
    root, kwargs = book
    run("demo", **kwargs)
    with pytest.raises(StageFailed):
        run("demo", only=["first"], assignments=["first.value=6", "first.crash_at=6"], **kwargs)
    with pytest.raises(StageFailed, match=r"needs the artifacts of 'first'.*its last run failed"):
        run("demo", only=["second"], **kwargs)


def test_a_missing_declared_output_makes_the_stage_run_again(book):
    root, kwargs = book
    run("demo", **kwargs)
    (root / "artifacts/demo/first/value.txt").unlink()
    with pytest.raises(StageFailed, match="value.txt"):  # and later stages refuse to read the gap
        run("demo", only=["second"], **kwargs)
    assert run("demo", **kwargs) == {"first": "ran", "second": "up to date"}
    (root / "artifacts/demo/chapters/01_second.ipynb").unlink()
    assert run("demo", **kwargs) == {"first": "up to date", "second": "ran"}


def test_a_stage_that_does_not_write_its_declared_output_fails(book):
    root, kwargs = book
    stages = (STAGES[0], Stage("second", "01_second.ipynb", "Second", ("never_written.csv",)))
    with pytest.raises(StageFailed, match="did not write its declared output.*never_written.csv"):
        run("demo", **{**kwargs, "stages": stages})
    assert _record(root, "demo", "second")["status"] == "failed"
    assert (root / "artifacts/demo/second/failed.ipynb").exists()
    assert not (root / "artifacts/demo/chapters/01_second.ipynb").exists()


SIDE = """from pathlib import Path
Path(artifacts_root, 'side').mkdir(parents=True, exist_ok=True)
Path(artifacts_root, 'side', 'label.txt').write_text(label)
"""


def _with_side_stage(kwargs: dict, second_reads: tuple[str, ...]) -> dict:
    """The test's stages with a third, "side", between them in run order; it reads "first"."""
    _notebook(kwargs["notebooks_dir"] / "02_side.ipynb",
              'profile = "demo"\nseed = 0\nartifacts_root = "x"\nlabel = "a"\n', SIDE)
    stages = (STAGES[0], Stage("side", "02_side.ipynb", "Side", ("label.txt",), reads=("first",)),
              Stage("second", "01_second.ipynb", "Second", reads=second_reads))
    return {**kwargs, "stages": stages}


def test_a_change_re_runs_only_the_stages_that_read_it(book, capsys):
    root, kwargs = book
    kwargs = _with_side_stage(kwargs, second_reads=("first",))  # "second" does not read "side"
    assert run("demo", **kwargs) == {"first": "ran", "side": "ran", "second": "ran"}
    capsys.readouterr()
    assert run("demo", assignments=["side.label=b"], **kwargs) == {
        "first": "up to date", "side": "ran", "second": "up to date"}
    assert "(parameter(s) changed: label 'a' -> 'b')" in capsys.readouterr().out
    assert _record(root, "demo", "second")["upstream"] == {"first": _record(root, "demo", "first")["fingerprint"]}
    # What a stage reads changing still re-runs it.
    assert run("demo", assignments=["side.label=b", "first.value=7"], **kwargs) == {
        "first": "ran", "side": "ran", "second": "ran"}
    assert "[second] running 01_second.ipynb (a stage it reads changed: first)" in capsys.readouterr().out
    # A stage nobody selected reads need not have run: "second" alone checks "first", not "side".
    (root / "artifacts/demo/side/label.txt").unlink()
    assert run("demo", only=["second"], assignments=["side.label=b", "first.value=7"], **kwargs) == {
        "second": "up to date"}


def test_a_stage_may_read_only_stages_before_it(book):
    root, kwargs = book
    stages = (Stage("first", "00_first.ipynb", "First", ("value.txt",), reads=("second",)), STAGES[1])
    with pytest.raises(ValueError, match="stage 'first' reads \\['second'\\]"):
        run("demo", **{**kwargs, "stages": stages})


def _pipeline_process(root: Path, kwargs: dict, code: str) -> subprocess.Popen:
    """The pipeline in a child process (so the test can kill or interrupt it), on the test's notebooks."""
    setup = (f"import functools, pathlib, saerad.pipeline as p\n"
             f"from tests_pipeline_stages import STAGES\n"
             f"p.run = functools.partial(p.run, artifacts_base=pathlib.Path({str(kwargs['artifacts_base'])!r}), "
             f"chapters_dir=pathlib.Path({str(kwargs['chapters_dir'])!r}), stages=STAGES, "
             f"notebooks_dir=pathlib.Path({str(kwargs['notebooks_dir'])!r}), "
             f"params_dir=pathlib.Path({str(kwargs['params_dir'])!r}))\n")
    (root / "tests_pipeline_stages.py").write_text(
        "from saerad.pipeline import Stage\n"
        "STAGES = (Stage('first', '00_first.ipynb', 'First', ('value.txt',)), "
        "Stage('second', '01_second.ipynb', 'Second'))\n")
    path = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    environment = {**os.environ, "PYTHONPATH": path}
    return subprocess.Popen([sys.executable, "-c", setup + code], cwd=root, env=environment,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, process: subprocess.Popen, seconds: float = 90) -> int:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"{path} never appeared: {process.communicate()}")
        time.sleep(0.2)
    time.sleep(0.2)
    return int(path.read_text())


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_a_killed_run_is_not_up_to_date(book):
    root, kwargs = book
    run("demo", **kwargs)
    process = _pipeline_process(root, kwargs, "p.run('demo', assignments=['first.value=7', 'first.hang_at=7'])")
    kernel = _wait_for(root / "artifacts/demo/first/kernel.pid", process)
    process.kill()  # SIGKILL: nothing in the runner gets to write anything
    process.wait(30)
    _kill_quietly(kernel)
    record = _record(root, "demo", "first")
    assert record["status"] == "running" and record["parameters"]["value"] == 7
    assert (root / "artifacts/demo/first/value.txt").read_text() == "15"
    assert run("demo", **kwargs) == {"first": "ran", "second": "up to date"}
    assert (root / "artifacts/demo/first/value.txt").read_text() == "11"


@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_prints_one_line_stops_the_kernel_and_records_the_interruption(book, signum, status):
    root, kwargs = book
    process = _pipeline_process(
        root, kwargs, "raise SystemExit(p.main(['--set', 'first.value=7', '--set', 'first.hang_at=7']))")
    kernel = _wait_for(root / "artifacts/demo/first/kernel.pid", process)
    process.send_signal(signum)
    try:
        stdout, stderr = process.communicate(timeout=60)
        kernel_left_running = Path(f"/proc/{kernel}").exists()
    finally:
        _kill_quietly(kernel)
    assert process.returncode == status, stderr
    assert stderr.strip() == INTERRUPTED_MESSAGE
    assert not kernel_left_running
    assert _record(root, "demo", "first")["status"] == "interrupted"
    assert not list((root / "artifacts/demo/chapters").glob("*.ipynb"))


def test_profiles_are_separate_trees_and_the_book_shows_one(book):
    root, kwargs = book
    assert run("demo", **kwargs) == {"first": "ran", "second": "ran"}
    assert _labels(root / "chapters") == {"00_first.ipynb": "demo", "01_second.ipynb": "demo"}
    # Another profile neither reads demo's chapters nor records: it runs, and the book shows it alone.
    assert run("other", **kwargs) == {"first": "ran", "second": "ran"}
    assert _labels(root / "chapters") == {"00_first.ipynb": "other", "01_second.ipynb": "other"}
    assert published_profile(root / "chapters")["profile"] == "other"
    # Back to demo: its own tree is intact, and publishing replaces every chapter.
    assert run("demo", **kwargs) == {"first": "up to date", "second": "up to date"}
    assert _labels(root / "chapters") == {"00_first.ipynb": "demo", "01_second.ipynb": "demo"}
    assert (root / "chapters/00_first.ipynb").read_bytes() == (
        root / "artifacts/demo/chapters/00_first.ipynb").read_bytes()
    # In a chapters folder no table of contents lists, a profile that ran only its first stage replaces the
    # chapters too, never joins them (the book's own folder is refused such a profile: see the next test).
    (root / "params" / "third.yaml").write_text("seed: 3\n")
    run("third", only=["first"], **kwargs)
    assert _labels(root / "chapters") == {"00_first.ipynb": "third"}
    assert published_profile(root / "chapters")["missing"] == ["01_second.ipynb"]
    publish("other", **{key: kwargs[key] for key in ("artifacts_base", "chapters_dir", "stages",
                                                     "notebooks_dir", "params_dir")})
    assert _labels(root / "chapters") == {"00_first.ipynb": "other", "01_second.ipynb": "other"}


LOCATIONS = ("artifacts_base", "chapters_dir", "stages", "notebooks_dir", "params_dir", "toc_path")


def _listing_toc(root: Path) -> Path:
    """A table of contents listing the test's two chapters in ``<root>/chapters``, as _toc.yml lists the book's."""
    toc = root / "_toc.yml"
    toc.write_text("format: jb-book\nroot: intro\nchapters:\n  - file: chapters/00_first\n  - file: chapters/01_second\n"
                   "  - file: reference\n")
    return toc


def _published(chapters: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(chapters.iterdir())}


def test_a_partial_run_into_another_root_leaves_the_book_as_it_was(book, capsys):
    root, kwargs = book
    kwargs = {**kwargs, "toc_path": _listing_toc(root)}
    assert run("demo", **kwargs) == {"first": "ran", "second": "ran"}
    published = _published(root / "chapters")
    elsewhere = root / "elsewhere"
    capsys.readouterr()
    # The run itself succeeds (its stage ran); the book keeps the complete profile and says why.
    assert run("demo", only=["first"], assignments=[f"artifacts_root={elsewhere}"], **kwargs) == {"first": "ran"}
    said = capsys.readouterr().out
    assert (f"chapters not updated: {elsewhere} holds 1 of the 2 chapters the book lists (missing: 01_second.ipynb). "
            f"Run the remaining stages (`python -m saerad.pipeline --profile demo --set artifacts_root={elsewhere}`"
            in said)
    assert _published(root / "chapters") == published
    assert published_profile(root / "chapters")["artifacts_root"] == str(root / "artifacts" / "demo")
    # Asked for explicitly (--publish), that root is refused, and nothing changes either.
    locations = {key: kwargs[key] for key in LOCATIONS}
    with pytest.raises(PublishIncomplete, match="holds 1 of the 2 chapters the book lists"):
        publish("demo", [f"artifacts_root={elsewhere}"], **locations)
    assert _published(root / "chapters") == published
    # Once that root holds every chapter, it is published as before.
    assert run("demo", assignments=[f"artifacts_root={elsewhere}"], **kwargs) == {"first": "up to date",
                                                                                    "second": "ran"}
    assert published_profile(root / "chapters")["artifacts_root"] == str(elsewhere)
    assert sorted(published_profile(root / "chapters")["chapters"]) == ["00_first.ipynb", "01_second.ipynb"]


def test_publishing_holds_a_lock_on_the_book_folder(book, monkeypatch):
    from saerad import publish as publishing

    root, kwargs = book
    kwargs = {**kwargs, "toc_path": _listing_toc(root)}
    run("demo", **kwargs)
    run("other", **kwargs)  # now the book shows "other"
    published = _published(root / "chapters")
    locations = {key: kwargs[key] for key in LOCATIONS}
    monkeypatch.setattr(publishing, "BOOK_LOCK_TIMEOUT", 0.2)
    with publishing.book_lock(root / "chapters"):  # another pipeline publishing into the same book
        with pytest.raises(PublishError, match=f"another pipeline has been publishing into {root}"):
            publish("demo", **locations)
        assert _published(root / "chapters") == published
    assert (root / publishing.BOOK_LOCK_NAME).exists()
    publish("demo", **locations)
    assert _labels(root / "chapters") == {"00_first.ipynb": "demo", "01_second.ipynb": "demo"}


def test_artifacts_root_moves_records_and_chapters_with_it(book):
    root, kwargs = book
    elsewhere = root / "elsewhere"
    assert run("demo", assignments=[f"artifacts_root={elsewhere}"], **kwargs) == {"first": "ran", "second": "ran"}
    assert json.loads((elsewhere / "first/stage.json").read_text())["status"] == "ok"
    assert (elsewhere / "chapters/00_first.ipynb").exists() and (elsewhere / "second/ok.txt").exists()
    assert not (root / "artifacts").exists()
    with pytest.raises(ParameterError, match="artifacts_root must be the same for every stage"):
        run("demo", assignments=[f"first.artifacts_root={elsewhere}"], **kwargs)
    with pytest.raises(ParameterError, match="parameter 'profile' is the profile's name"):
        run("demo", assignments=["profile=paper"], **kwargs)


def test_kernels_start_without_the_unencrypted_tcp_warning(book, capfd):
    root, kwargs = book
    run("demo", only=["first"], **kwargs)
    assert "without encryption" not in capfd.readouterr().err


def test_bad_parameters_stop_before_anything_runs(book):
    root, kwargs = book
    with pytest.raises(ParameterError, match="unknown parameter 'valu'"):
        run("demo", assignments=["first.valu=3"], **kwargs)
    with pytest.raises(ParameterError, match="expects bool"):
        run("demo", assignments=["second.fail=maybe"], **kwargs)
    assert not (root / "artifacts").exists() and not (root / "chapters").exists()


def test_from_a_stage_needs_its_predecessors(book):
    root, kwargs = book
    with pytest.raises(StageFailed, match="needs the artifacts of 'first'.*has not run"):
        run("demo", start="second", **kwargs)


def test_a_stage_made_from_an_earlier_run_of_what_it_reads_is_refused(book):
    root, kwargs = book
    kwargs = _with_side_stage(kwargs, second_reads=("side",))
    run("demo", **kwargs)
    run("demo", only=["first"], assignments=["first.value=7"], **kwargs)
    # "side" still holds what the old "first" gave it: "second" must not run on it, nor pass as up to date.
    with pytest.raises(StageFailed, match="needs the artifacts of 'side'.*earlier run of 'first'.*--from side"):
        run("demo", only=["second"], assignments=["first.value=7"], **kwargs)
    assert run("demo", start="side", assignments=["first.value=7"], **kwargs) == {"side": "ran", "second": "ran"}


def test_an_unreadable_record_makes_its_stage_run_again(book, capsys):
    root, kwargs = book
    run("demo", **kwargs)
    record = root / "artifacts/demo/first/stage.json"
    record.write_text(record.read_text()[:40])
    capsys.readouterr()
    assert run("demo", **kwargs)["first"] == "ran"
    assert "its record is unreadable" in capsys.readouterr().out
    assert _record(root, "demo", "first")["status"] == "ok"


def test_a_folder_that_cannot_be_written_is_one_line_not_a_traceback(monkeypatch, capsys):
    from saerad import pipeline

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "artifacts/demo/features/.stage.json.tmp")

    monkeypatch.setattr(pipeline, "run", refuse)
    assert pipeline.main(["--profile", "demo"]) == 1
    assert capsys.readouterr().err == "error: Permission denied: artifacts/demo/features/.stage.json.tmp\n"


def test_where_the_artifacts_live_is_not_part_of_a_stage_fingerprint(tmp_path):
    from saerad.pipeline import stage_fingerprint

    notebook = tmp_path / "n.ipynb"
    notebook.write_text("{}")
    here = stage_fingerprint(notebook, {"value": 1, "artifacts_root": "artifacts/demo", "training_workers": None},
                             [], "package")
    assert here == stage_fingerprint(notebook, {"value": 1, "artifacts_root": "/abs/artifacts/demo"}, [], "package")
    assert here != stage_fingerprint(notebook, {"value": 2, "artifacts_root": "artifacts/demo"}, [], "package")


def test_publishing_replaces_static_pages_whole_and_removes_another_profiles(tmp_path):
    from saerad.publish import EXTRA_PAGES, publish_page

    assert ("features/atlas", "atlas", True) in EXTRA_PAGES
    source, extra = tmp_path / "artifacts" / "features" / "atlas", tmp_path / "extra"
    (source / "features").mkdir(parents=True)
    (source / "index.html").write_text("new index")
    (source / "features" / "1.html").write_text("feature 1")
    (extra / "atlas" / "features").mkdir(parents=True)
    (extra / "atlas" / "features" / "999.html").write_text("a feature of another run")
    publish_page(source, extra / "atlas")
    assert sorted(p.relative_to(extra).as_posix() for p in extra.rglob("*") if p.is_file()) == [
        "atlas/features/1.html", "atlas/index.html"]
    # A profile without the page leaves none behind (no page of another profile is served).
    publish_page(tmp_path / "missing", extra / "atlas")
    assert list(extra.iterdir()) == []
    page = tmp_path / "review.html"
    page.write_text("review")
    publish_page(page, extra / "reader-study" / "review.html")
    assert (extra / "reader-study" / "review.html").read_text() == "review"


def test_the_reports_chapters_citations_are_laid_over_the_atlas_placeholder(tmp_path):
    from saerad.publish import publish_extra_pages

    root, extra = tmp_path / "artifacts", tmp_path / "extra"
    (root / "features" / "atlas").mkdir(parents=True)
    (root / "features" / "atlas" / "citations.js").write_text("window.ATLAS_CITATIONS = null;")
    publish_extra_pages(root, extra)
    assert (extra / "atlas" / "citations.js").read_text() == "window.ATLAS_CITATIONS = null;"  # reports not run
    assert not (extra / "reader-study" / "review.html").exists()
    (root / "reports" / "atlas").mkdir(parents=True)
    (root / "reports" / "atlas" / "citations.js").write_text("window.ATLAS_CITATIONS = {};")
    publish_extra_pages(root, extra)
    assert (extra / "atlas" / "citations.js").read_text() == "window.ATLAS_CITATIONS = {};"


def test_a_second_run_of_a_profile_is_refused_while_the_first_holds_it_and_a_killed_run_leaves_no_lock(tmp_path):
    import subprocess
    import textwrap

    from saerad.pipeline import ProfileBusy, profile_lock

    root = tmp_path / "artifacts" / "demo"
    with profile_lock(root, "demo"):
        with pytest.raises(ProfileBusy, match=r"another pipeline run of profile 'demo'.*process \d+"):
            with profile_lock(root, "demo"):
                pass
    with profile_lock(root, "demo"):  # released on exit
        pass
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import time
        from pathlib import Path
        from saerad.pipeline import profile_lock
        with profile_lock(Path({str(root)!r}), "demo"):
            print("held", flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ProfileBusy):
            with profile_lock(root, "demo"):
                pass
    finally:
        holder.kill()
        holder.wait()
    with profile_lock(root, "demo"):  # the OS released the killed process's lock
        pass
