"""``make lab``: JupyterLab starts as the Makefile starts it, and a kernel it starts finds the artifacts."""

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from saerad.paths import REPO_ROOT, project_path

PROBE = "import os; from saerad.paths import project_path; print(os.getcwd()); print(project_path('artifacts/demo'))"


def test_project_path_resolves_relative_paths_against_the_repository_from_any_folder(tmp_path):
    printed = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO_ROOT / "notebooks", capture_output=True,
                             text=True, check=True).stdout.splitlines()
    assert printed == [str(REPO_ROOT / "notebooks"), str(REPO_ROOT / "artifacts" / "demo")]
    assert project_path(tmp_path) == tmp_path
    assert project_path("~/x") == Path.home() / "x"


def _lab_command(extra: str) -> str:
    """The command ``make lab`` runs (make -n prints it without running anything)."""
    printed = subprocess.run(["make", "--no-print-directory", "-n", "lab", f"LAB_ARGS={extra}"], cwd=REPO_ROOT,
                             capture_output=True, text=True, check=True).stdout.splitlines()
    return next(line for line in printed if "jupyter lab" in line)


def test_make_lab_listens_on_loopback_and_allows_root_only_as_root():
    command = _lab_command("")
    assert "--ServerApp.ip=127.0.0.1" in command and f'--ServerApp.root_dir="{REPO_ROOT}"' in command
    expanded = subprocess.run(["bash", "-c", f"echo {command.split(' ', 1)[1]}"], cwd=REPO_ROOT,
                              capture_output=True, text=True, check=True).stdout
    assert ("--allow-root" in expanded) == (os.geteuid() == 0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _request(url: str, method: str = "GET", body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return json.loads(text) if text else {}


async def _execute(url: str, code: str) -> str:
    """Run ``code`` in a kernel through the server's websocket; return what it printed."""
    from tornado.websocket import websocket_connect

    connection = await websocket_connect(url)
    msg_id = uuid.uuid4().hex
    await connection.write_message(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex, "msg_type": "execute_request",
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }))
    printed = []
    while True:
        message = json.loads(await asyncio.wait_for(connection.read_message(), 60))
        if message.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        kind, content = message["msg_type"], message["content"]
        if kind == "stream":
            printed.append(content["text"])
        elif kind == "error":
            raise AssertionError("\n".join(content["traceback"]))
        elif kind == "status" and content["execution_state"] == "idle":
            connection.close()
            return "".join(printed)


@pytest.mark.slow
def test_make_lab_starts_and_its_kernel_resolves_artifacts_against_the_repository(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    port, token = _free_port(), uuid.uuid4().hex
    command = _lab_command(f"--no-browser --ServerApp.port={port} --ServerApp.port_retries=0 "
                           f"--IdentityProvider.token={token}")
    environment = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
                   "JUPYTER_CONFIG_DIR": str(tmp_path / "config")}
    server = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=REPO_ROOT, env=environment,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    session = None
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise AssertionError(f"jupyter lab exited with {server.returncode}:\n{server.stdout.read()}")
            try:
                _request(f"{base}/api/status?token={token}")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        session = _request(f"{base}/api/sessions?token={token}", "POST", {
            "path": "notebooks/00_data.ipynb", "type": "notebook", "name": "00_data.ipynb",
            "kernel": {"name": "python3"}})
        kernel = session["kernel"]["id"]
        printed = asyncio.run(_execute(f"ws://127.0.0.1:{port}/api/kernels/{kernel}/channels?token={token}", PROBE))
        # The kernel starts in notebooks/, as JupyterLab starts it; the project's paths do not depend on that.
        assert printed.splitlines() == [str(REPO_ROOT / "notebooks"), str(REPO_ROOT / "artifacts" / "demo")]
    finally:
        if session is not None:
            _request(f"{base}/api/sessions/{session['id']}?token={token}", "DELETE")
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
