"""Tests of saerad.llm: the real anthropic/openai SDK clients against a fake server on 127.0.0.1."""

from __future__ import annotations

import importlib.util
import json
import socket
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fake_llm_server import FakeLLMServer, reply_text  # noqa: E402
from llm_env import clear_llm_credentials  # noqa: E402

from saerad.llm import (  # noqa: E402
    PAPER_MODEL, DataProtectionError, LLMConfigurationError, LLMUnavailableError, PermanentError, Price, Prompt,
    RetryPolicy, approx_tokens, check_connection, estimate_cost, is_loopback_url, make_client, price_for,
)
from saerad.llm.cache import ResponseCache, cache_key  # noqa: E402
from saerad.llm.retry import backoff_delay, parse_retry_after  # noqa: E402


class SleepRecorder:
    """Stands in for time.sleep: records the requested delays, waits for none."""

    def __init__(self):
        self.delays: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def server():
    with FakeLLMServer() as fake:
        yield fake


@pytest.fixture
def sleeps():
    return SleepRecorder()


def anthropic_client(server, cache_dir, sleeps=None, **options):
    retry = RetryPolicy(max_attempts=options.pop("max_attempts", 4), base_delay=0.01, max_delay=0.05,
                        sleep=sleeps or SleepRecorder())
    return make_client("anthropic", model=options.pop("model", PAPER_MODEL), cache_dir=cache_dir,
                       base_url=server.url, api_key="test-key", restricted_text=False, retry=retry, **options)


def openai_client(server, cache_dir, sleeps=None, **options):
    retry = RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, sleep=sleeps or SleepRecorder())
    return make_client("openai", model="llama-3-70b-instruct", cache_dir=cache_dir, base_url=f"{server.url}/v1",
                       retry=retry, **options)


# -- Anthropic API: success, cache, retries, failures -------------------------------------------

def test_success_reports_tokens_cost_and_sends_the_prompt(server, tmp_path):
    client = anthropic_client(server, tmp_path / "cache")
    completion = client.complete(Prompt("pleural effusion left", system="You are a radiologist.", max_tokens=77,
                                        key="feature-17"))
    assert completion.ok and completion.error is None and not completion.cached
    assert completion.text == reply_text("pleural effusion left")
    assert (completion.input_tokens, completion.output_tokens) == (7, 4)  # fake tokenizer: words
    assert completion.key == "feature-17" and completion.backend == "anthropic" and completion.model == PAPER_MODEL
    body = server.model_requests()[0]["body"]
    assert body["model"] == PAPER_MODEL and body["max_tokens"] == 77 and body["system"] == "You are a radiologist."
    assert "temperature" not in body  # API version 2026-10-21 rejects sampling parameters
    usage = client.usage()
    assert usage["requests"] == 1 and usage["input_tokens"] == 7 and usage["output_tokens"] == 4
    assert usage["cost_usd"] == pytest.approx((7 * 3.0 + 4 * 15.0) / 1e6)


def test_second_run_is_served_from_cache_without_a_request(server, tmp_path):
    prompts = [Prompt(f"report {i}", key=str(i)) for i in range(3)]
    first = anthropic_client(server, tmp_path / "cache").complete_many(prompts, progress=False)
    assert len(server.model_requests()) == 3
    again = anthropic_client(server, tmp_path / "cache")  # a new client, as in a re-run
    second = again.complete_many(prompts, progress=False)
    assert len(server.model_requests()) == 3
    assert [c.text for c in second] == [c.text for c in first]
    assert all(c.cached for c in second) and [c.key for c in second] == ["0", "1", "2"]
    assert (second[0].input_tokens, second[0].output_tokens) == (first[0].input_tokens, first[0].output_tokens)
    usage = again.usage()
    assert usage["cache_hits"] == 3 and usage["requests"] == 0 and usage["cost_usd"] == 0.0
    # A changed generation parameter is a different request.
    again.complete(Prompt("report 0", max_tokens=5))
    assert len(server.model_requests()) == 4


def test_rate_limit_honours_retry_after_then_succeeds(server, tmp_path, sleeps):
    server.script.append((429, {"retry-after": "7"}))
    client = anthropic_client(server, tmp_path, sleeps)
    completion = client.complete(Prompt("x"))
    assert completion.ok and completion.text == reply_text("x")
    assert sleeps.delays == [7.0]
    assert len(server.model_requests()) == 2
    assert client.usage()["retries"] == 1 and client.usage()["requests"] == 2


def test_overloaded_and_server_error_are_retried_with_growing_backoff(server, tmp_path, sleeps):
    server.script.extend([(529, {}), (500, {})])
    completion = anthropic_client(server, tmp_path, sleeps).complete(Prompt("y"))
    assert completion.ok
    assert len(server.model_requests()) == 3
    first, second = sleeps.delays
    assert 0.005 <= first <= 0.01 and 0.01 <= second <= 0.02  # base 0.01, doubling, equal jitter


def test_retries_give_up_and_the_failure_is_not_cached(server, tmp_path, sleeps):
    server.script.extend([(503, {})] * 4)
    client = anthropic_client(server, tmp_path / "cache", sleeps, max_attempts=4)
    completion = client.complete(Prompt("z"))
    assert completion.text is None and "HTTP 503" in completion.error and "gave up after 4 attempts" in completion.error
    assert len(sleeps.delays) == 3
    assert client.complete(Prompt("z")).ok  # not cached: asked again, and the server now answers
    assert len(server.model_requests()) == 5


def test_bad_request_is_not_retried_and_is_recorded(server, tmp_path, sleeps):
    client = anthropic_client(server, tmp_path / "cache", sleeps)
    completion = client.complete(Prompt("[[bad]] prompt"))
    assert completion.text is None and completion.error.startswith("HTTP 400")
    assert "invalid_request_error" in completion.error
    assert sleeps.delays == [] and len(server.model_requests()) == 1
    assert client.usage()["errors"] == 1
    client.complete(Prompt("[[bad]] prompt"))
    assert len(server.model_requests()) == 2  # failures are not cached


@pytest.mark.parametrize("marker", ["[[malformed]]", "[[nocontent]]"])
def test_malformed_reply_is_an_error_not_a_crash_and_not_cached(server, tmp_path, sleeps, marker):
    client = anthropic_client(server, tmp_path / "cache", sleeps)
    completions = client.complete_many([Prompt(f"{marker} a"), Prompt("fine")], progress=False)
    assert completions[0].text is None and completions[0].error.startswith("malformed reply")
    assert completions[1].ok
    assert len(ResponseCache(tmp_path / "cache")) == 1


def test_refusal_is_recorded_as_an_error(server, tmp_path):
    client = anthropic_client(server, tmp_path / "cache")
    completion = client.complete(Prompt("[[refuse]] describe"))
    assert completion.text is None and completion.error.startswith("refused")
    assert completion.stop_reason == "refusal"
    assert client.usage()["refusals"] == 1 and client.usage()["input_tokens"] > 0  # refusals are still billed
    assert len(ResponseCache(tmp_path / "cache")) == 0


def test_connection_errors_are_retried(tmp_path, sleeps):
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client("anthropic", base_url=f"http://127.0.0.1:{port}", api_key="k", restricted_text=False,
                         retry=RetryPolicy(max_attempts=3, base_delay=0.01, sleep=sleeps), cache_dir=tmp_path)
    completion = client.complete(Prompt("q"))
    assert completion.text is None and completion.error.startswith("connection error")
    assert len(sleeps.delays) == 2


# -- concurrency, order, resume ------------------------------------------------------------------

def test_complete_many_keeps_order_and_bounds_concurrency(tmp_path):
    with FakeLLMServer(delay_s=0.05) as server:
        client = anthropic_client(server, tmp_path, max_concurrency=3)
        prompts = [Prompt(f"study {i}", key=f"k{i}") for i in range(12)]
        completions = client.complete_many(prompts, progress=True)
    assert [c.text for c in completions] == [reply_text(f"study {i}") for i in range(12)]
    assert [c.key for c in completions] == [f"k{i}" for i in range(12)]
    assert 2 <= server.max_in_flight <= 3


def test_duplicate_prompts_are_requested_once(server, tmp_path):
    prompts = [Prompt("same", key="a"), Prompt("other"), Prompt("same", key="b")]
    completions = anthropic_client(server, tmp_path).complete_many(prompts, progress=False)
    assert sorted(server.user_texts()) == ["other", "same"]
    assert [c.key for c in completions] == ["a", "", "b"] and completions[0].text == completions[2].text


def test_interrupted_run_requests_only_the_missing_items(server, tmp_path, sleeps):
    prompts = [Prompt(f"item {i}") for i in range(10)]
    server.fail_after = 4  # the service goes away after four answers
    first = anthropic_client(server, tmp_path / "cache", sleeps, max_concurrency=1, max_attempts=1)
    completions = first.complete_many(prompts, progress=False)
    succeeded = [c.text is not None for c in completions]
    assert sum(succeeded) == 4 and all(c.error for c in completions if c.text is None)
    before = len(server.model_requests())
    server.fail_after = None
    second = anthropic_client(server, tmp_path / "cache", sleeps, max_concurrency=1)
    resumed = second.complete_many(prompts, progress=False)
    assert all(c.ok for c in resumed)
    missing = sorted(p.user for p, ok in zip(prompts, succeeded) if not ok)
    assert sorted(server.user_texts()[before:]) == missing
    assert [c.cached for c in resumed] == succeeded


def test_keyboard_interrupt_keeps_finished_items(tmp_path):
    calls = []

    def responder(prompt):
        calls.append(prompt.user)
        if len(calls) == 4 and interrupt:
            raise KeyboardInterrupt
        return prompt.user.upper()

    prompts = [Prompt(f"p{i}") for i in range(8)]
    interrupt = True
    client = make_client("offline", model="t", responder=responder, cache_dir=tmp_path, max_concurrency=1)
    with pytest.raises(KeyboardInterrupt):
        client.complete_many(prompts, progress=False)
    # Items a worker picks up after the interrupt are not sent, however fast the worker is.
    assert calls == ["p0", "p1", "p2", "p3"]
    finished = set(calls) - {"p3"}
    interrupt = False
    calls.clear()
    completions = make_client("offline", model="t", responder=responder, cache_dir=tmp_path).complete_many(
        prompts, progress=False)
    assert sorted(calls) == sorted({p.user for p in prompts} - finished)
    assert [c.text for c in completions] == [f"P{i}" for i in range(8)]


# -- Message Batches -----------------------------------------------------------------------------

def test_batches_submit_poll_collect_and_cache(server, tmp_path, sleeps):
    prompts = [Prompt(f"feature {i}", key=str(i)) for i in range(5)] + [Prompt("[[bad]] feature", key="bad")]
    client = anthropic_client(server, tmp_path / "cache", sleeps, use_batches=True, poll_interval=0.5)
    completions = client.complete_many(prompts, progress=False)
    assert [c.text for c in completions[:5]] == [reply_text(f"feature {i}") for i in range(5)]
    assert completions[5].text is None and "batch item errored" in completions[5].error
    kinds = [r["kind"] for r in server.requests]
    assert kinds.count("batch_create") == 1 and kinds.count("messages") == 0
    assert kinds.count("batch_retrieve") >= 2 and 0.5 in sleeps.delays
    created = next(r for r in server.requests if r["kind"] == "batch_create")["body"]["requests"]
    assert len(created) == 6 and all(len(r["custom_id"]) <= 64 for r in created)
    usage = client.usage()
    tokens_in = sum(c.input_tokens for c in completions[:5])
    tokens_out = sum(c.output_tokens for c in completions[:5])
    assert usage["batches"] == 1 and usage["requests"] == 6
    assert usage["cost_usd"] == pytest.approx(0.5 * (tokens_in * 3.0 + tokens_out * 15.0) / 1e6)
    # Re-run: the successes are cached, only the failed item goes into a new batch.
    client.complete_many(prompts, progress=False)
    creates = [r for r in server.requests if r["kind"] == "batch_create"]
    assert len(creates) == 2 and len(creates[1]["body"]["requests"]) == 1


def test_batch_still_running_is_collected_on_the_next_run(server, tmp_path, sleeps):
    server.batch_polls_before_end = 10**6
    prompts = [Prompt(f"slow {i}") for i in range(3)]
    client = anthropic_client(server, tmp_path / "cache", sleeps, use_batches=True, poll_interval=0.0,
                              batch_timeout=0.0)
    completions = client.complete_many(prompts, progress=False)
    assert all(c.text is None and "still in_progress" in c.error for c in completions)
    assert len(list((tmp_path / "cache" / "batches").glob("*.json"))) == 1
    server.batch_polls_before_end = 0
    completions = client.complete_many(prompts, progress=False)
    assert all(c.ok for c in completions)
    assert [r["kind"] for r in server.requests].count("batch_create") == 1  # not submitted (and paid) twice
    assert list((tmp_path / "cache" / "batches").glob("*.json")) == []


def test_batches_only_on_the_direct_api(server):
    with pytest.raises(ValueError, match="only available on the direct Anthropic API"):
        make_client("openai", model="m", base_url=f"{server.url}/v1", use_batches=True)


# -- data protection -----------------------------------------------------------------------------

@pytest.mark.parametrize("backend,options", [
    ("anthropic", {"api_key": "k"}),
    ("vertex", {"region": "us-east5", "project_id": "p", "access_token": "t"}),
    ("bedrock", {"api_key": "k", "aws_region": "us-east-1"}),
])
def test_restricted_text_refuses_remote_backends_before_any_request(server, backend, options):
    with pytest.raises(DataProtectionError) as refusal:
        make_client(backend, base_url=server.url, restricted_text=True, **options)
    message = str(refusal.value)
    assert "acknowledge_restricted_data_use=True" in message and "loopback" in message
    assert "zero data retention" in message
    assert server.requests == []


def test_restricted_text_is_the_default_and_covers_remote_openai(server):
    with pytest.raises(DataProtectionError):
        make_client("anthropic", api_key="k", base_url=server.url)
    with pytest.raises(DataProtectionError):
        make_client("openai", model="gpt-4o", api_key="k", base_url="https://api.openai.com/v1")
    assert server.requests == []


def test_acknowledged_restricted_use_is_allowed(server, tmp_path):
    client = make_client("anthropic", api_key="k", base_url=server.url, restricted_text=True,
                         acknowledge_restricted_data_use=True, cache_dir=tmp_path)
    assert client.complete(Prompt("ok")).ok


def test_loopback_openai_endpoint_is_allowed_for_restricted_text(server, tmp_path):
    client = openai_client(server, tmp_path, restricted_text=True)
    completion = client.complete(Prompt("left effusion", system="Describe.", max_tokens=33, temperature=0.2))
    assert completion.ok and completion.text == reply_text("left effusion")
    assert (completion.input_tokens, completion.output_tokens) == (3, 3)
    body = server.model_requests()[0]["body"]
    assert body["messages"] == [{"role": "system", "content": "Describe."},
                                {"role": "user", "content": "left effusion"}]
    assert body["max_tokens"] == 33 and body["temperature"] == 0.2 and body["model"] == "llama-3-70b-instruct"
    assert client.usage()["cost_usd"] is None  # no price for a local model unless the user gives one
    free = openai_client(server, tmp_path, restricted_text=True, price=Price(0.0, 0.0))
    free.complete(Prompt("another"))
    assert free.usage()["cost_usd"] == 0.0


def test_loopback_detection():
    assert is_loopback_url("http://127.0.0.1:8000/v1") and is_loopback_url("http://localhost:11434/v1")
    assert is_loopback_url("http://[::1]:8080") and is_loopback_url("127.0.0.2:9000")
    assert not is_loopback_url("https://api.anthropic.com") and not is_loopback_url("http://10.0.0.5:8000/v1")
    assert not is_loopback_url(None) and not is_loopback_url("http://localhost.evil.com/v1")


# -- OpenAI-compatible failures ------------------------------------------------------------------

def test_openai_failures_are_recorded(server, tmp_path, sleeps):
    server.script.append((429, {"retry-after-ms": "250"}))
    client = openai_client(server, tmp_path / "cache", sleeps, max_concurrency=1)
    ok, bad, malformed, refused, empty = client.complete_many(
        [Prompt("fine"), Prompt("[[bad]]"), Prompt("[[malformed]]"), Prompt("[[refuse]]"), Prompt("[[nocontent]]")],
        progress=False)
    assert ok.ok and sleeps.delays == [0.25]
    assert bad.error.startswith("HTTP 400") and malformed.error.startswith("malformed reply")
    assert refused.error.startswith("refused") and empty.error.startswith("malformed reply")
    assert len(ResponseCache(tmp_path / "cache")) == 1


# -- Vertex and Bedrock --------------------------------------------------------------------------

def test_vertex_client_against_the_fake_server(server, tmp_path):
    client = make_client("vertex", region="us-east5", project_id="proj-1", access_token="vertex-token",
                         base_url=f"{server.url}/v1", restricted_text=False, cache_dir=tmp_path)
    completion = client.complete(Prompt("vertex prompt"))
    assert completion.ok and completion.text == reply_text("vertex prompt") and completion.backend == "vertex"
    request = server.model_requests()[0]
    assert request["path"] == ("/v1/projects/proj-1/locations/us-east5/publishers/anthropic/models/"
                               "claude-3-5-sonnet@20240620:rawPredict")
    assert request["headers"]["Authorization"] == "Bearer vertex-token"
    assert client.usage()["cost_usd"] > 0  # the Vertex model id maps onto the price table


def test_bedrock_with_api_key_against_the_fake_server(server, tmp_path):
    client = make_client("bedrock", api_key="bedrock-key", aws_region="us-east-1", base_url=server.url,
                         restricted_text=False, cache_dir=tmp_path)
    assert client.complete(Prompt("bedrock prompt")).text == reply_text("bedrock prompt")
    request = server.model_requests()[0]
    assert request["path"] == "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/invoke"
    assert request["headers"]["Authorization"] == "Bearer bedrock-key"


@pytest.mark.skipif(importlib.util.find_spec("boto3") is not None, reason="boto3 is installed")
def test_bedrock_with_aws_credentials_needs_boto3(monkeypatch):
    monkeypatch.delenv("AWS_BEARER_TOKEN_BEDROCK", raising=False)
    with pytest.raises(ImportError, match=r'pip install "anthropic\[bedrock\]"'):
        make_client("bedrock", aws_region="us-east-1", aws_profile="default", restricted_text=False)


# -- offline backend, cache keys -----------------------------------------------------------------

def test_offline_backend_is_deterministic_and_versioned(tmp_path):
    calls = []

    def describer(prompt):
        calls.append(prompt.user)
        return f"*This feature represents {prompt.user}"

    prompts = [Prompt("effusion", key="f1"), Prompt("cardiomegaly", key="f2")]
    a = make_client("offline", model="describer", responder=describer, responder_version="v1",
                    cache_dir=tmp_path).complete_many(prompts, progress=False)
    b = make_client("offline", model="describer", responder=describer, responder_version="v1",
                    cache_dir=tmp_path).complete_many(prompts, progress=False)
    assert [c.text for c in a] == [c.text for c in b] and len(calls) == 2 and all(c.cached for c in b)
    make_client("offline", model="describer", responder=describer, responder_version="v2",
                cache_dir=tmp_path).complete_many(prompts, progress=False)
    assert len(calls) == 4  # a new responder version is not served old replies
    client = make_client("offline", model="describer", responder=describer)
    assert client.usage()["cost_usd"] == 0.0
    with pytest.raises(TypeError, match="expected str"):
        make_client("offline", responder=lambda p: 3).complete(Prompt("x"))


def test_offline_responder_may_report_a_permanent_failure():
    def responder(prompt):
        raise PermanentError("no reports for this feature")

    completion = make_client("offline", responder=responder).complete(Prompt("x"))
    assert completion.text is None and completion.error == "no reports for this feature"


def test_cache_key_covers_request_fields_but_not_the_item_key():
    base = Prompt("u", system="s", max_tokens=10, temperature=0.0, key="a")
    key = cache_key("anthropic", "m", base)
    assert key == cache_key("anthropic", "m", Prompt("u", system="s", max_tokens=10, key="b"))
    variants = [cache_key("openai", "m", base), cache_key("anthropic", "m2", base),
                cache_key("anthropic", "m", Prompt("u", system="s2", max_tokens=10)),
                cache_key("anthropic", "m", Prompt("u", system="s", max_tokens=11)),
                cache_key("anthropic", "m", Prompt("u", system="s", max_tokens=10, temperature=0.5)),
                cache_key("anthropic", "m", Prompt("u2", system="s", max_tokens=10)),
                cache_key("anthropic", "m", base, responder="v2")]
    assert len({key, *variants}) == len(variants) + 1


def test_cache_files_are_json_and_corrupt_entries_are_refetched(server, tmp_path):
    client = anthropic_client(server, tmp_path / "cache")
    client.complete(Prompt("keep"))
    (entry,) = (tmp_path / "cache").glob("??/*.json")
    record = json.loads(entry.read_text())
    assert record["text"] == reply_text("keep") and record["user"] == "keep" and record["model"] == PAPER_MODEL
    entry.write_text("{truncated")
    with pytest.warns(UserWarning, match="unreadable cache entry"):
        completion = anthropic_client(server, tmp_path / "cache").complete(Prompt("keep"))
    assert completion.ok and not completion.cached and len(server.model_requests()) == 2


# -- pricing, retry helpers, argument checks -----------------------------------------------------

def test_price_table_and_model_id_spellings():
    assert price_for("claude-3-5-sonnet-20240620") == Price(3.0, 15.0)
    assert price_for("anthropic.claude-3-5-sonnet-20240620-v1:0") == Price(3.0, 15.0)
    assert price_for("us.anthropic.claude-3-haiku-20240307-v1:0") == Price(0.25, 1.25)
    assert price_for("claude-3-opus@20240229") == Price(15.0, 75.0)
    assert price_for("claude-sonnet-4-5") == Price(3.0, 15.0)
    assert price_for("meta-llama/Meta-Llama-3-70B-Instruct") is None and price_for(None) is None


def test_estimate_cost_for_the_paper_scale():
    prompts = [Prompt("x" * 4000, system="y" * 400)] * 49_152  # ~1,100 tokens per feature prompt
    row = estimate_cost(prompts, PAPER_MODEL, expected_output_tokens=300)
    assert row["input_tokens"] == 49_152 * 1100 and row["output_tokens"] == 49_152 * 300
    assert row["cost_usd"] == pytest.approx((49_152 * 1100 * 3 + 49_152 * 300 * 15) / 1e6)
    assert estimate_cost(prompts[:10], PAPER_MODEL, 300, batch=True)["cost_usd"] == pytest.approx(
        0.5 * estimate_cost(prompts[:10], PAPER_MODEL, 300)["cost_usd"])
    unknown = estimate_cost(prompts[:2], "llama3-70b", 10)
    assert unknown["cost_usd"] is None and unknown["note"].startswith("n/a")
    assert approx_tokens("abcde") == 2 and approx_tokens("") == 0


def test_client_estimate_skips_cached_prompts(server, tmp_path):
    client = anthropic_client(server, tmp_path)
    prompts = [Prompt("a" * 40), Prompt("b" * 40)]
    assert client.estimate_cost(prompts, 10)["n_prompts"] == 2
    client.complete(prompts[0])
    assert client.estimate_cost(prompts, 10)["n_prompts"] == 1
    assert server.model_requests()[-1]["body"]["messages"][0]["content"] == "a" * 40


def test_backoff_is_deterministic_and_capped():
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0)
    assert backoff_delay(policy, 2, "k") == backoff_delay(policy, 2, "k")
    assert backoff_delay(policy, 1, "k") != backoff_delay(policy, 1, "other")
    assert all(4.0 <= backoff_delay(policy, 10, f"k{i}") <= 8.0 for i in range(20))
    assert parse_retry_after({"retry-after": "3"}) == 3.0 and parse_retry_after({}) is None
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="backend"):
        make_client("gpt")
    with pytest.raises(TypeError, match="unknown option"):
        make_client("anthropic", restricted_text=False, project_id="p")
    with pytest.raises(ValueError, match="model"):
        make_client("openai", base_url="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="responder"):
        make_client("offline")
    with pytest.raises(ValueError, match="max_tokens"):
        Prompt("x", max_tokens=0)
    with pytest.raises(TypeError, match=r"prompts\[1\]"):
        make_client("offline", responder=str.upper).complete_many([Prompt("a"), "b"], progress=False)


# -- circuit breaker: no network, no or bad credentials ------------------------------------------

def _closed_port() -> int:
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_no_network_stops_within_a_minute_with_a_clear_message(tmp_path, sleeps):
    import time

    port = _closed_port()
    # The default retry policy (6 attempts, backoff from 1 s); only the waits are recorded instead of slept.
    client = make_client("anthropic", base_url=f"http://127.0.0.1:{port}", api_key="k", restricted_text=False,
                         retry=RetryPolicy(sleep=sleeps), cache_dir=tmp_path / "cache", max_concurrency=1)
    prompts = [Prompt(f"feature {i}") for i in range(200)]
    started = time.perf_counter()
    with pytest.raises(LLMUnavailableError) as stop:
        client.complete_many(prompts, progress=False)
    would_have_taken = time.perf_counter() - started + sum(sleeps.delays)
    assert would_have_taken < 60
    message = str(stop.value)
    assert f"127.0.0.1:{port}" in message and "no connection could be made" in message
    assert "3 requests in a row failed" in message and "Connection refused" in message
    assert f"cached in {tmp_path / 'cache'}" in message and "re-run sends only the prompts not yet answered" in message
    assert client.usage()["requests"] == 6 + 1 + 1  # the first request's retries, then one attempt each
    assert client.stopped
    with pytest.raises(LLMUnavailableError):  # a stopped client stays stopped
        client.complete(Prompt("another"))
    assert client.usage()["requests"] == 8


def test_breaker_stops_parallel_requests_too_and_keeps_what_was_answered(tmp_path, sleeps):
    prompts = [Prompt(f"item {i}") for i in range(40)]
    with FakeLLMServer() as server:
        first = anthropic_client(server, tmp_path / "cache", sleeps, max_concurrency=4, max_attempts=6)
        first.complete_many(prompts[:5], progress=False)
        url = server.url
    # The server is gone: the same endpoint now refuses connections.
    gone = make_client("anthropic", base_url=url, api_key="k", restricted_text=False, cache_dir=tmp_path / "cache",
                       retry=RetryPolicy(max_attempts=6, base_delay=0.01, sleep=sleeps), max_concurrency=4)
    with pytest.raises(LLMUnavailableError, match="5 of 40 prompts of this call were answered"):
        gone.complete_many(prompts, progress=False)
    assert gone.usage()["requests"] < 35  # not every prompt was tried six times
    with FakeLLMServer() as server:  # back on line (another port): only the 35 missing prompts are sent
        resumed = anthropic_client(server, tmp_path / "cache", sleeps).complete_many(prompts, progress=False)
        assert all(c.ok for c in resumed) and len(server.model_requests()) == 35


def test_rejected_key_stops_after_three_requests_with_our_message(server, tmp_path, sleeps):
    server.script.extend([(401, {})] * 10)
    client = anthropic_client(server, tmp_path, sleeps, max_concurrency=1)
    with pytest.raises(LLMUnavailableError) as stop:
        client.complete_many([Prompt(f"p{i}") for i in range(10)], progress=False)
    assert "valid credentials" in str(stop.value) and "HTTP 401" in str(stop.value)
    assert len(server.model_requests()) == 3 and sleeps.delays == []


def test_an_endpoint_or_model_that_does_not_exist_stops_after_three_requests(server, tmp_path, sleeps):
    server.script.extend([(404, {})] * 10)
    client = anthropic_client(server, tmp_path, sleeps, max_concurrency=1)
    with pytest.raises(LLMUnavailableError) as stop:
        client.complete_many([Prompt(f"p{i}") for i in range(10)], progress=False)
    assert "endpoint or model does not exist" in str(stop.value) and "HTTP 404" in str(stop.value)
    assert len(server.model_requests()) == 3


def test_other_failures_do_not_trip_the_breaker(server, tmp_path, sleeps):
    server.script.extend([(503, {})] * 8)
    client = anthropic_client(server, tmp_path, sleeps, max_concurrency=1, max_attempts=1)
    completions = client.complete_many([Prompt(f"p{i}") for i in range(10)], progress=False)
    assert [c.ok for c in completions] == [False] * 8 + [True] * 2  # the service answers, if badly: no stop


def test_missing_api_key_is_our_message_before_any_request(monkeypatch, server, tmp_path):
    clear_llm_credentials(monkeypatch, tmp_path)
    with pytest.raises(LLMConfigurationError, match="ANTHROPIC_API_KEY"):
        make_client("anthropic", base_url=server.url, restricted_text=False)
    with pytest.raises(LLMConfigurationError, match="OPENAI_API_KEY"):
        make_client("openai", model="gpt-4o", base_url="https://api.openai.com/v1", restricted_text=False)
    assert server.requests == []


def test_sdk_missing_credentials_error_becomes_an_auth_failure(monkeypatch, server, tmp_path, sleeps):
    import anthropic

    clear_llm_credentials(monkeypatch, tmp_path)
    bare = anthropic.Anthropic(api_key=None, base_url=server.url, max_retries=0)  # raises TypeError when used
    client = make_client("anthropic", sdk_client=bare, restricted_text=False, cache_dir=tmp_path,
                         retry=RetryPolicy(sleep=sleeps))
    with pytest.raises(LLMUnavailableError, match="no credentials: .*authentication method"):
        client.complete_many([Prompt(f"p{i}") for i in range(5)], progress=False)


def test_connection_check_sends_no_prompt(server, monkeypatch, tmp_path):
    assert check_connection("anthropic", api_key="k", base_url=server.url).startswith(server.url)
    assert server.requests == []  # a HEAD probe, which the fake server answers without recording: no prompt
    with pytest.raises(LLMConfigurationError, match="nothing answers at .*Connection refused"):
        check_connection("openai", "m", base_url=f"http://127.0.0.1:{_closed_port()}/v1")
    clear_llm_credentials(monkeypatch, tmp_path)
    with pytest.raises(LLMConfigurationError, match="ANTHROPIC_API_KEY"):
        check_connection("anthropic", base_url=server.url)
    assert check_connection("offline") == "offline"
