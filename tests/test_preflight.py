"""Checks before any work in the language-model stages: data protection keyed on the data, credentials, endpoint."""

from __future__ import annotations

import json
import shutil
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import write_mimic_fixture  # noqa: E402
from fake_llm_server import FakeLLMServer  # noqa: E402
from llm_env import clear_llm_credentials  # noqa: E402

import saerad.pipeline as pipeline  # noqa: E402
from saerad.llm import DataProtectionError  # noqa: E402
from saerad.mimic.loader import SYNTHCXR_MARKER, load_dataset, reports_restriction  # noqa: E402
from saerad.paths import REPO_ROOT  # noqa: E402
from saerad.preflight import PreflightError, check_notebook, check_stage  # noqa: E402

ACKNOWLEDGE = "features.acknowledge_restricted_data_use=true"


@pytest.fixture(autouse=True)
def no_credentials(monkeypatch, tmp_path):
    clear_llm_credentials(monkeypatch, tmp_path / "home")


def _artifacts(tmp_path: Path, synthetic: bool, profile: str = "profile") -> Path:
    """``artifacts/<profile>`` whose data stage read the MIMIC-CXR-layout fixture (marked SynthCXR or not)."""
    dataset = tmp_path / "dataset"
    dataset.mkdir(parents=True)
    write_mimic_fixture(dataset)
    if synthetic:
        (dataset / SYNTHCXR_MARKER).write_text("{}")
    root = tmp_path / "artifacts" / profile
    load_dataset(dataset, progress=False).save(root / "data")
    return root


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def no_execution(monkeypatch):
    """Fail the test if the pipeline gets as far as executing a chapter (whichever helper it executes with)."""
    def execute(stage, *args, **kwargs):
        raise AssertionError(f"stage {stage.name!r} was executed")

    for name in ("_execute", "_run_stage"):
        monkeypatch.setattr(pipeline, name, execute, raising=False)


def _finished_upstream(artifacts_root: Path, upto: str = "features") -> None:
    """Records and (empty) declared outputs of the stages before ``upto``, as if they had run."""
    for stage in pipeline.STAGES[:[s.name for s in pipeline.STAGES].index(upto)]:
        stage_dir = artifacts_root / stage.name
        stage_dir.mkdir(parents=True, exist_ok=True)
        (stage_dir / "stage.json").write_text(json.dumps({"fingerprint": stage.name, "status": "ok",
                                                          "parameters": {}}))
        for name in (stage.declared_outputs({}) if hasattr(stage, "declared_outputs") else ()):
            path = stage_dir / name
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("")


# -- the mark the data stage writes --------------------------------------------------------------

def test_loader_marks_mimic_reports_restricted_and_synthcxr_not(tmp_path):
    mimic = _artifacts(tmp_path / "m", synthetic=False)
    synthetic = _artifacts(tmp_path / "s", synthetic=True)
    assert json.loads((mimic / "data" / "dataset.json").read_text())["restricted_text"] is True
    assert json.loads((synthetic / "data" / "dataset.json").read_text())["restricted_text"] is False
    assert reports_restriction(mimic / "data")[0] and not reports_restriction(synthetic / "data")[0]
    # No record of the data stage, or one from before the mark: judged fail-safe / by the dataset root.
    assert reports_restriction(tmp_path / "nowhere")[0]
    record = json.loads((synthetic / "data" / "dataset.json").read_text())
    del record["restricted_text"]
    (synthetic / "data" / "dataset.json").write_text(json.dumps(record))
    assert not reports_restriction(synthetic / "data")[0]


# -- the gate keys on the data, not on the profile's name ------------------------------------------

def test_renamed_paper_profile_with_remote_backend_stops_before_any_work(tmp_path, no_execution):
    params = tmp_path / "params"
    params.mkdir()
    shutil.copy(REPO_ROOT / "params" / "paper.yaml", params / "my-mimic-run.yaml")
    root = _artifacts(tmp_path, synthetic=False, profile="my-mimic-run")
    _finished_upstream(root)
    with pytest.raises(PreflightError) as stop:
        pipeline.run("my-mimic-run", only=["features"], artifacts_base=root.parent,
                     chapters_dir=tmp_path / "chapters", params_dir=params)
    message = str(stop.value)
    assert ACKNOWLEDGE in message and "features.describer_backend='anthropic'" in message
    assert "restricted_text=true (MIMIC-CXR)" in message and "Nothing has been run" in message
    assert not (root / "features").exists() and not (tmp_path / "chapters").exists()


def test_demo_profile_reading_mimic_data_stops_the_same_way(tmp_path, no_execution):
    root = _artifacts(tmp_path, synthetic=False, profile="demo")
    _finished_upstream(root)
    with pytest.raises(PreflightError, match=ACKNOWLEDGE.replace(".", r"\.")):
        pipeline.run("demo", only=["features"], artifacts_base=root.parent, chapters_dir=tmp_path / "chapters",
                     assignments=["data.source=mimic", "features.describer_backend=anthropic"])
    assert not (root / "features").exists()


def test_the_llm_client_itself_keys_on_the_data(tmp_path, monkeypatch):
    from saerad.features.stage import make_llm_client

    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    with FakeLLMServer() as server:
        mimic = _artifacts(tmp_path / "m", synthetic=False)
        with pytest.raises(DataProtectionError):  # the profile's name says "demo"; the data says MIMIC-CXR
            make_llm_client("describer", "anthropic", "", None, mimic / "llm_cache", "demo", base_url=server.url)
        synthetic = _artifacts(tmp_path / "s", synthetic=True)
        client = make_llm_client("describer", "anthropic", "", None, synthetic / "llm_cache", "paper",
                                 base_url=server.url)
        assert client.name == "anthropic" and server.requests == []


def test_reports_and_metrics_stages_are_checked_too(tmp_path):
    root = _artifacts(tmp_path, synthetic=False)
    with pytest.raises(PreflightError, match=r"reports\.acknowledge_restricted_data_use=true"):
        check_stage("reports", {"composer_backend": "bedrock"}, root)
    with pytest.raises(PreflightError, match=r"metrics\.acknowledge_restricted_data_use=true"):
        check_stage("metrics", {"radfact_backend": "openai", "radfact_model": "gpt-4o",
                                "llm_base_url": "https://api.example.com/v1"}, root)


def test_a_chapter_opened_by_hand_is_checked_by_its_first_cell(tmp_path):
    root = _artifacts(tmp_path, synthetic=False)
    namespace = {"profile": "demo", "artifacts_root": str(root), "describer_backend": "offline",
                 "scorer_backend": "vertex", "acknowledge_restricted_data_use": False}
    with pytest.raises(PreflightError, match=r"features\.scorer_backend='vertex'.*features\.acknowledge"):
        check_notebook("features", namespace)


# -- what passes, and the checks that remain for synthetic data -------------------------------------

def test_offline_backends_need_no_check(tmp_path):
    check_stage("features", {}, tmp_path / "no-artifacts-at-all")
    check_stage("metrics", {"radfact_backend": "offline"}, tmp_path / "no-artifacts-at-all")


def test_synthetic_data_with_remote_backend_gets_only_the_key_and_endpoint_checks(tmp_path, monkeypatch):
    root = _artifacts(tmp_path, synthetic=True)
    with FakeLLMServer() as server:
        settings = {"describer_backend": "anthropic", "llm_base_url": server.url}
        with pytest.raises(PreflightError) as stop:
            check_stage("features", settings, root)
        assert "ANTHROPIC_API_KEY" in str(stop.value) and "acknowledge" not in str(stop.value)
        assert "features.describer_backend='anthropic'" in str(stop.value)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
        check_stage("features", settings, root)  # key present, endpoint answers: passes
        assert server.model_requests() == []
    port = _closed_port()
    with pytest.raises(PreflightError, match=rf"nothing answers at http://127\.0\.0\.1:{port}"):
        check_stage("features", {"describer_backend": "anthropic", "llm_base_url": f"http://127.0.0.1:{port}"}, root)


def test_acknowledged_restricted_use_goes_on_to_the_connection_checks(tmp_path, monkeypatch):
    root = _artifacts(tmp_path, synthetic=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    with FakeLLMServer() as server:
        check_stage("features", {"describer_backend": "anthropic", "scorer_backend": "anthropic",
                                 "llm_base_url": server.url, "acknowledge_restricted_data_use": True}, root)
        # A local server on the loopback interface never needs the acknowledgment.
        check_stage("metrics", {"radfact_backend": "openai", "radfact_model": "llama",
                                "llm_base_url": f"{server.url}/v1"}, root)
        assert server.model_requests() == []
    with pytest.raises(PreflightError, match=r"set metrics\.radfact_model"):
        check_stage("metrics", {"radfact_backend": "openai", "llm_base_url": "http://127.0.0.1:1/v1"}, root)


def test_a_whole_run_reading_mimic_with_a_remote_describer_stops_before_the_data_stage(tmp_path, no_execution):
    """Judged from the data stage's parameters when the data stage runs now: nothing runs for minutes first."""
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    write_mimic_fixture(dataset)
    with pytest.raises(PreflightError) as stop:
        pipeline.run("demo", artifacts_base=tmp_path / "artifacts", chapters_dir=tmp_path / "chapters",
                     assignments=["data.source=mimic", f"data.dataset_root={dataset}",
                                  "features.describer_backend=anthropic"])
    assert ACKNOWLEDGE in str(stop.value) and "data.source='mimic' reads MIMIC-CXR reports" in str(stop.value)
    assert not (tmp_path / "artifacts").exists()
    # The same world marked as SynthCXR (the tests' fixtures) is not protected text: the check lets it through
    # (the stages' own checks then ask for credentials, which these tests do not have).
    (dataset / SYNTHCXR_MARKER).write_text("{}")
    from saerad.features.preflight import planned_restriction

    assert planned_restriction({"source": "mimic", "dataset_root": str(dataset)})[0] is False
    assert planned_restriction({"source": "synthcxr"})[0] is False
    assert planned_restriction({"source": "mimic", "dataset_root": ""})[0] is True
