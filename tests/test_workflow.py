"""The GitHub Pages workflow cannot run here; check that it parses and has the steps the book needs."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "book.yml"


def load() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def steps(workflow: dict, job: str) -> list[dict]:
    return workflow["jobs"][job]["steps"]


def runs(workflow: dict, job: str) -> str:
    return "\n".join(step.get("run", "") for step in steps(workflow, job))


def uses(workflow: dict, job: str) -> list[str]:
    return [step["uses"].split("@")[0] for step in steps(workflow, job) if "uses" in step]


def test_triggers_permissions_and_concurrency():
    workflow = load()
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert triggers["push"]["branches"] == ["main"] and "workflow_dispatch" in triggers
    assert workflow["permissions"]["pages"] == "write" and workflow["permissions"]["id-token"] == "write"
    assert workflow["concurrency"]["group"]


def test_build_job_builds_checks_and_uploads_the_book_in_order():
    workflow = load()
    build = steps(workflow, "build")
    setup = next(step for step in build if step.get("uses", "").startswith("actions/setup-python@"))
    assert str(setup["with"]["python-version"]) == "3.11" and setup["with"]["cache"] == "pip"
    order = [step.get("run", step.get("uses", "")) for step in build]
    position = {key: next(i for i, text in enumerate(order) if key in text)
                for key in ("actions/checkout@", "download.pytorch.org/whl/cpu", "make book", "apt-get install",
                            "make check-book", "actions/upload-pages-artifact@")}
    assert list(position) == sorted(position, key=position.get), f"steps out of order: {position}"
    upload = next(step for step in build if step.get("uses", "").startswith("actions/upload-pages-artifact@"))
    assert upload["with"]["path"] == "_build/html"


def test_torch_is_the_cpu_build_at_the_pinned_version():
    pin = re.search(r"^torch==(\S+)$", (ROOT / "requirements.txt").read_text(encoding="utf-8"), re.M).group(1)
    text = runs(load(), "build")
    assert f'"torch=={pin}+cpu"' in text and "torch.version.cuda is None" in text
    assert text.index("python -m venv .venv") < text.index("make book")  # the Makefile reuses this venv


def test_deploy_job_publishes_the_uploaded_artifact():
    workflow = load()
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert "actions/deploy-pages" in uses(workflow, "deploy")
