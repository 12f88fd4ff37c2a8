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


def _installed_kernels() -> list[str]:
    """The kernel specs a notebook opened in JupyterLab may start: the chapters' ``python3``, and ``make
    install``'s ``saerad`` where it is installed."""
    from jupyter_client.kernelspec import KernelSpecManager

    return [name for name in ("python3", "saerad") if name in KernelSpecManager().find_kernel_specs()]


async def _start_and_stop_kernel(options: list[str], kernel_name: str) -> bool:
    """Start ``kernel_name`` as the JupyterLab server started with ``options`` would; return whether it got keys."""
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
    from traitlets.config.loader import KVArgParseConfigLoader

    manager = AsyncMappingKernelManager(config=KVArgParseConfigLoader(options).load_config())
    kernel_id = await manager.start_kernel(kernel_name=kernel_name)
    kernel = manager.get_kernel(kernel_id)
    client = kernel.client()
    client.start_channels()
    try:
        await client._async_wait_for_ready(timeout=60)  # the warning is logged while the kernel binds its sockets
    finally:
        client.stop_channels()
        await manager.shutdown_kernel(kernel_id, now=True)
    return kernel.curve_publickey is not None


def test_make_lab_kernels_start_encrypted_without_the_tcp_warning(capfd):
    """ipykernel warns "Kernel is running over TCP without encryption" unless the server provisions CurveZMQ keys."""
    from saerad.kernel_encryption import encryption_available, server_options

    assert "$(.venv/bin/python -m saerad.kernel_encryption)" in _lab_command("")
    if not encryption_available():
        pytest.skip("this pyzmq has no CurveZMQ: the kernels cannot be encrypted, and still warn")
    options = server_options()
    assert options == ["--MappingKernelManager.transport_encryption=auto"]
    from jupyter_client.kernelspec import KernelSpecManager

    for name in _installed_kernels():
        # "auto" provisions keys only for a kernel spec that declares it supports them (ipykernel install does).
        assert "curve" in KernelSpecManager().get_kernel_spec(name).metadata.get("supported_encryption", []), name
        capfd.readouterr()
        assert asyncio.run(_start_and_stop_kernel(options, name)), name
        assert "without encryption" not in capfd.readouterr().err, name
    # Without the option the same kernel warns: the test sees the warning where there is one.
    asyncio.run(_start_and_stop_kernel([], "python3"))
    assert "Kernel is running over TCP without encryption" in capfd.readouterr().err


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
    # The kernel's log goes to the server's output: it started encrypted, without ipykernel's warning.
    from saerad.kernel_encryption import encryption_available

    assert not encryption_available() or "without encryption" not in server.stdout.read()
