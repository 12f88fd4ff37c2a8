"""A fake LLM HTTP server on 127.0.0.1 for testing the real SDK clients offline.

It implements just enough of three wire formats:

* the Anthropic Messages API: ``POST /v1/messages`` and the Message Batches
  endpoints (``POST /v1/messages/batches``, ``GET /v1/messages/batches/{id}``,
  ``GET /v1/messages/batches/{id}/results``);
* the same Messages body under the Vertex AI path
  (``POST .../publishers/anthropic/models/{model}:rawPredict``) and the Bedrock
  path (``POST /model/{model}/invoke``);
* the OpenAI ``POST /v1/chat/completions`` endpoint.

Behaviour is chosen per request by markers in the user text, so it stays
deterministic under concurrency: ``[[refuse]]`` (stop_reason refusal),
``[[malformed]]`` (a 200 reply whose body is not JSON), ``[[nocontent]]`` (a
reply without a content list), ``[[bad]]`` (400 invalid_request_error).
``FakeLLMServer.script`` holds scripted ``(status, headers)`` failures that
are answered, in order, before normal behaviour resumes (for retry tests), and
``fail_after`` makes every model request after the first N successes fail with
503 (a server going away mid-run).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def reply_text(user: str) -> str:
    """The deterministic answer the fake model gives to ``user``."""
    return f"echo: {user}"


def count_tokens(text: str) -> int:
    """The fake tokenizer: one token per whitespace-separated word."""
    return len(text.split())


class FakeLLMServer:
    """A threaded HTTP server recording every request it receives."""

    def __init__(self, delay_s: float = 0.0, batch_polls_before_end: int = 1):
        self.delay_s = delay_s
        self.batch_polls_before_end = batch_polls_before_end
        self.script: deque[tuple[int, dict]] = deque()
        self.fail_after: int | None = None
        self.requests: list[dict] = []  # {"method", "path", "body", "headers"}
        self.in_flight = 0
        self.max_in_flight = 0
        self.model_successes = 0
        self.batches: dict[str, dict] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                server._handle(self, "GET")

            def do_POST(self):
                server._handle(self, "POST")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    # -- lifecycle -----------------------------------------------------------
    def __enter__(self) -> "FakeLLMServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- inspection ----------------------------------------------------------
    def model_requests(self) -> list[dict]:
        """Requests that asked a model for a completion (not batch bookkeeping)."""
        return [r for r in self.requests if r["kind"] in ("messages", "chat")]

    def user_texts(self) -> list[str]:
        return [_user_text(r["body"]) for r in self.model_requests()]

    # -- request handling ----------------------------------------------------
    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        body = json.loads(raw) if raw else None
        path = handler.path
        kind = _kind(method, path)
        with self._lock:
            self.requests.append({"method": method, "path": path, "body": body, "kind": kind,
                                  "headers": dict(handler.headers)})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay_s and kind in ("messages", "chat"):
                time.sleep(self.delay_s)
            status, headers, payload = self._respond(kind, method, path, body)
        finally:
            with self._lock:
                self.in_flight -= 1
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", headers.pop("Content-Type", "application/json"))
        handler.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(data)

    def _respond(self, kind: str, method: str, path: str, body) -> tuple[int, dict, object]:
        if kind in ("messages", "chat"):
            with self._lock:
                if self.script:
                    status, headers = self.script.popleft()
                    return status, dict(headers), _error_body(status)
                if self.fail_after is not None and self.model_successes >= self.fail_after:
                    return 503, {}, _error_body(503)
            status, headers, payload = (_message if kind == "messages" else _chat)(body)
            if status == 200:
                with self._lock:
                    self.model_successes += 1
            return status, headers, payload
        if kind == "batch_create":
            return 200, {}, self._create_batch(body)
        if kind == "batch_retrieve":
            return self._retrieve_batch(path.rstrip("/").split("/")[-1])
        if kind == "batch_results":
            return self._batch_results(path.rstrip("/").split("/")[-2])
        return 404, {}, _error_body(404)

    def _create_batch(self, body: dict) -> dict:
        with self._lock:
            batch_id = f"msgbatch_{len(self.batches) + 1:04d}"
            self.batches[batch_id] = {"requests": body["requests"], "polls": 0}
        return self._batch_object(batch_id, ended=False)

    def _retrieve_batch(self, batch_id: str):
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None:
                return 404, {}, _error_body(404)
            batch["polls"] += 1
            ended = batch["polls"] > self.batch_polls_before_end
        return 200, {}, self._batch_object(batch_id, ended=ended)

    def _batch_results(self, batch_id: str):
        lines = []
        for request in self.batches[batch_id]["requests"]:
            params = request["params"]
            if "[[bad]]" in _user_text(params):
                result = {"type": "errored", "error": {"type": "error", "error": {
                    "type": "invalid_request_error", "message": "bad prompt"}}}
            else:
                _, _, message = _message(params)
                result = {"type": "succeeded", "message": message}
            lines.append(json.dumps({"custom_id": request["custom_id"], "result": result}))
        # The real service gives no order guarantee; reverse to make sure callers match by custom_id.
        return 200, {"Content-Type": "application/binary"}, ("\n".join(reversed(lines)) + "\n").encode()

    def _batch_object(self, batch_id: str, ended: bool) -> dict:
        n = len(self.batches[batch_id]["requests"])
        return {
            "id": batch_id, "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {"processing": 0 if ended else n, "succeeded": n if ended else 0,
                               "errored": 0, "canceled": 0, "expired": 0},
            "created_at": "2024-09-25T00:00:00Z", "expires_at": "2024-09-26T00:00:00Z",
            "ended_at": "2024-09-25T00:01:00Z" if ended else None,
            "results_url": f"{self.url}/v1/messages/batches/{batch_id}/results" if ended else None,
        }


def _kind(method: str, path: str) -> str:
    path = path.split("?")[0]
    if method == "POST" and (path == "/v1/messages" or path.endswith(":rawPredict") or path.endswith("/invoke")):
        return "messages"
    if method == "POST" and path == "/v1/chat/completions":
        return "chat"
    if method == "POST" and path == "/v1/messages/batches":
        return "batch_create"
    if method == "GET" and re.fullmatch(r"/v1/messages/batches/[^/]+", path):
        return "batch_retrieve"
    if method == "GET" and re.fullmatch(r"/v1/messages/batches/[^/]+/results", path):
        return "batch_results"
    return "other"


def _user_text(body: dict) -> str:
    for message in body.get("messages", []):
        if message["role"] == "user":
            content = message["content"]
            if isinstance(content, str):
                return content
            return "".join(block.get("text", "") for block in content)
    return ""


def _system_text(body: dict) -> str:
    system = body.get("system", "")
    if isinstance(system, list):
        return "".join(block.get("text", "") for block in system)
    for message in body.get("messages", []):
        if message["role"] == "system":
            return message["content"]
    return system or ""


def _error_body(status: int) -> dict:
    kinds = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
             429: "rate_limit_error", 529: "overloaded_error"}
    return {"type": "error", "error": {"type": kinds.get(status, "api_error"), "message": f"fake status {status}"}}


def _message(body: dict) -> tuple[int, dict, object]:
    user = _user_text(body)
    if "[[bad]]" in user:
        return 400, {}, _error_body(400)
    if "[[malformed]]" in user:
        return 200, {}, b"{this is not json"
    text = reply_text(user)
    message = {
        "id": "msg_fake", "type": "message", "role": "assistant", "model": body.get("model", "vertex-model"),
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": count_tokens(_system_text(body) + " " + user), "output_tokens": count_tokens(text)},
    }
    if "[[refuse]]" in user:
        message["content"] = []
        message["stop_reason"] = "refusal"
    if "[[nocontent]]" in user:
        del message["content"]
    return 200, {}, message


def _chat(body: dict) -> tuple[int, dict, object]:
    user = _user_text(body)
    if "[[bad]]" in user:
        return 400, {}, {"error": {"message": "bad prompt", "type": "invalid_request_error"}}
    if "[[malformed]]" in user:
        return 200, {}, b"{this is not json"
    text = reply_text(user)
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
    if "[[refuse]]" in user:
        choice = {"index": 0, "message": {"role": "assistant", "content": None, "refusal": "I can't help with that."},
                  "finish_reason": "stop"}
    reply = {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": body["model"],
        "choices": [choice],
        "usage": {"prompt_tokens": count_tokens(_system_text(body) + " " + user),
                  "completion_tokens": count_tokens(text), "total_tokens": 0},
    }
    if "[[nocontent]]" in user:
        reply["choices"] = []
    return 200, {}, reply
