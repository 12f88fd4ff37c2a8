"""Message Batches for the direct Anthropic API: submit, poll, collect, cache.

Batches cost half the standard price and are the economical way to annotate
tens of thousands of features. Each submitted batch's id is written to
``<cache_dir>/batches/<digest>.json`` (digest of its request ids) before
polling starts, so an interrupted run picks up the same batch instead of
paying for it twice; the file is removed once the results are collected.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from ..io import read_json, write_json
from .backend_anthropic import message_params, parse_message
from .retry import call_with_retry
from .types import PermanentError, Prompt


def run_batches(client, pending: list[tuple[str, Prompt]], bar, multiplicity) -> dict:
    """Complete ``pending`` (cache key, prompt) pairs through Message Batches.

    Returns
    -------
    dict
        cache key -> Completion, for every pending key.
    """
    done = {}
    for start in range(0, len(pending), client.batch_size):
        chunk = pending[start:start + client.batch_size]
        done.update(_run_one_batch(client, chunk, bar, multiplicity))
    return done


def _sdk_call(client, function):
    """Run one SDK call, translating its errors into Transient/PermanentError."""
    try:
        return function()
    except Exception as error:
        mapped = client.backend.classify(error)
        if mapped is error:
            raise
        raise mapped from error


def _journal_path(client, keys: list[str]) -> Path | None:
    if client.cache.root is None:
        return None
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()
    return client.cache.root / "batches" / f"{digest}.json"


def _run_one_batch(client, chunk, bar, multiplicity) -> dict:
    batches = client.backend.client.messages.batches
    keys = [key for key, _ in chunk]
    by_key = dict(chunk)
    journal = _journal_path(client, keys)

    def fail_all(error: str) -> dict:
        result = {key: client._failure(prompt, error) for key, prompt in chunk}
        bar.update(sum(multiplicity[k] for k in keys))
        return result

    batch_id = None
    if journal is not None and journal.exists():
        batch_id = read_json(journal).get("batch_id")
    if batch_id is None:
        requests = [{"custom_id": key, "params": message_params(client.backend.model, prompt)}
                    for key, prompt in chunk]
        outcome = call_with_retry(lambda: _sdk_call(client, lambda: batches.create(requests=requests)),
                                  client.retry, token=keys[0])
        if outcome.error is not None:
            return fail_all(f"batch submission failed: {outcome.error}")
        batch_id = outcome.value.id
        with client._lock:
            client._usage["batches"] += 1
            client._usage["requests"] += len(chunk)
        if journal is not None:
            write_json(journal, {"batch_id": batch_id, "n_requests": len(chunk)})

    started = time.monotonic()
    while True:
        outcome = call_with_retry(lambda: _sdk_call(client, lambda: batches.retrieve(batch_id)),
                                  client.retry, token=batch_id)
        if outcome.error is not None:
            return fail_all(f"batch {batch_id}: status check failed: {outcome.error}")
        batch = outcome.value
        counts = batch.request_counts
        bar.set_postfix_str(f"batch {batch_id}: {batch.processing_status}, "
                            f"{counts.succeeded + counts.errored + counts.canceled + counts.expired}/{len(chunk)} done")
        if batch.processing_status == "ended":
            break
        if client.batch_timeout is not None and time.monotonic() - started > client.batch_timeout:
            where = f" (its id is kept in {journal})" if journal is not None else ""
            return fail_all(f"batch {batch_id} still {batch.processing_status} after {client.batch_timeout:g} s; "
                            f"re-run to collect its results{where}")
        client.retry.sleep(client.poll_interval)

    outcome = call_with_retry(lambda: _sdk_call(client, lambda: list(batches.results(batch_id))),
                              client.retry, token=batch_id)
    if outcome.error is not None:
        return fail_all(f"batch {batch_id}: fetching results failed: {outcome.error}")

    done = {}
    for line in outcome.value:
        key = line.custom_id
        if key not in by_key or key in done:
            continue
        prompt = by_key[key]
        result = line.result
        if result.type == "succeeded":
            try:
                reply = parse_message(result.message)
            except PermanentError as error:
                done[key] = client._failure(prompt, str(error))
            else:
                done[key] = client._finish(key, prompt, reply, via="batch")
        elif result.type == "errored":
            done[key] = client._failure(prompt, f"batch item errored: {_describe_error(result.error)}")
        else:  # canceled / expired
            done[key] = client._failure(prompt, f"batch item {result.type}")
        bar.update(multiplicity[key])
    for key in keys:
        if key not in done:
            done[key] = client._failure(by_key[key], f"batch {batch_id} returned no result for this request")
            bar.update(multiplicity[key])
    if journal is not None:
        journal.unlink(missing_ok=True)
    return done


def _describe_error(error) -> str:
    inner = getattr(error, "error", error)
    kind = getattr(inner, "type", None)
    message = getattr(inner, "message", None)
    return f"{kind}: {message}" if kind or message else str(error)


__all__ = ["run_batches"]
