"""The LLM client: cache, retries, bounded concurrency, progress and token/cost accounting."""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Iterable

from tqdm import tqdm

from .cache import ResponseCache, cache_key
from .pricing import Price, estimate_cost
from .retry import RetryPolicy, call_with_retry
from .types import (AUTH_FAILURE, CONNECTION_FAILURE, ENDPOINT_FAILURE, UNAVAILABLE_KINDS, Completion,
                    LLMUnavailableError, Prompt, Reply)

#: Consecutive requests that fail for want of a connection or of valid credentials before the client stops.
DEFAULT_MAX_CONSECUTIVE_FAILURES = 3


class _SkippedAfterInterrupt(Exception):
    """An item not sent because the run was interrupted before a worker picked it up."""


class LLMClient:
    """Sends Prompts to one backend/model and returns Completions.

    Build it with ``saerad.llm.make_client``; the constructor is for callers
    that bring their own backend object (anything with ``name``, ``model``,
    ``responder_version``, ``supports_batches`` and ``send(prompt) -> Reply``).

    Parameters
    ----------
    backend
        The backend object.
    cache_dir
        Folder of the response cache; None keeps replies in memory only.
    max_concurrency
        Requests in flight at once in ``complete_many``.
    retry
        Retry policy for transient failures.
    price
        Price used for ``usage()['cost_usd']``; None = unknown.
    use_batches
        Send uncached prompts of ``complete_many`` as Message Batches
        (direct Anthropic API only).
    poll_interval
        Seconds between batch status polls.
    batch_size
        Maximum requests per submitted batch (the API allows 100,000).
    batch_timeout
        Give up waiting for a batch after this many seconds (its id is kept,
        so a re-run collects it); None waits until it ends.
    max_consecutive_failures
        The circuit breaker: after this many requests in a row (each after its
        retries) fail because no connection could be made or the credentials
        are missing or rejected, the client stops and raises
        ``LLMUnavailableError`` instead of failing every remaining prompt the
        same way. After the first such request, the next ones are not retried
        for want of a connection, so a dead network stops a run in about the
        time of one request's retries (with the default retry policy, half a
        minute when connections are refused; each attempt may add the connect
        timeout where packets are dropped). Any reply (even an error reply
        such as HTTP 400) resets the count. Replies received so far stay
        cached; a re-run resumes from them.
    """

    def __init__(self, backend, cache_dir=None, *, max_concurrency: int = 4, retry: RetryPolicy | None = None,
                 price: Price | None = None, use_batches: bool = False, poll_interval: float = 30.0,
                 batch_size: int = 10_000, batch_timeout: float | None = None,
                 max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency: expected >= 1, got {max_concurrency}")
        if max_consecutive_failures < 1:
            raise ValueError(f"max_consecutive_failures: expected >= 1, got {max_consecutive_failures}")
        if use_batches and not getattr(backend, "supports_batches", False):
            raise ValueError(f"use_batches=True: Message Batches are only available on the direct Anthropic API, "
                             f"not on backend {backend.name!r}")
        if not 1 <= batch_size <= 100_000:
            raise ValueError(f"batch_size: expected 1..100000, got {batch_size}")
        self.backend = backend
        self.cache = ResponseCache(cache_dir)
        self.max_concurrency = max_concurrency
        self.retry = retry or RetryPolicy()
        self.price = price
        self.use_batches = use_batches
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.batch_timeout = batch_timeout
        self._lock = threading.Lock()
        self._usage = {"requests": 0, "cache_hits": 0, "retries": 0, "errors": 0, "refusals": 0, "batches": 0,
                       "input_tokens": 0, "output_tokens": 0}
        self._cost = 0.0
        self.max_consecutive_failures = max_consecutive_failures
        self._consecutive_failures = 0
        self._stopped = threading.Event()
        self._stop_reason: tuple[str, str] | None = None  # (kind, error) of the failure that tripped the breaker

    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def model(self) -> str:
        return self.backend.model

    def cache_key(self, prompt: Prompt) -> str:
        """The cache key of ``prompt`` for this client's backend and model."""
        return cache_key(self.backend.name, self.backend.model, prompt, self.backend.responder_version)

    # -- public API ----------------------------------------------------------
    def complete(self, prompt: Prompt) -> Completion:
        """Complete one prompt (cached, retried). Never raises for service failures."""
        return self.complete_many([prompt], progress=False)[0]

    def complete_many(self, prompts: Iterable[Prompt], progress: bool = True) -> list[Completion]:
        """Complete many prompts; results are in the order of ``prompts``.

        Cached prompts cost nothing; identical prompts are requested once;
        each reply is cached as soon as it arrives, so an interrupted run
        resumes where it stopped. Failures come back as Completions with
        ``text=None`` and ``error`` set, and are not cached.

        Raises
        ------
        LLMUnavailableError
            The circuit breaker tripped (see ``max_consecutive_failures``), in
            this call or an earlier one: the service cannot be reached or
            refuses the credentials. Replies received before are cached.
        """
        self._raise_if_stopped(0, None)
        prompts = list(prompts)
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, Prompt):
                raise TypeError(f"prompts[{index}]: expected saerad.llm.Prompt, got {type(prompt).__name__}")
        keys = [self.cache_key(p) for p in prompts]
        first: dict[str, Prompt] = {}
        for key, prompt in zip(keys, prompts):
            first.setdefault(key, prompt)
        multiplicity = Counter(keys)

        done: dict[str, Completion] = {}
        for key in first:
            record = self.cache.get(key)
            if record is not None:
                done[key] = self._from_record(record)
        with self._lock:
            self._usage["cache_hits"] += sum(multiplicity[k] for k in done)

        pending = [(key, prompt) for key, prompt in first.items() if key not in done]
        bar = tqdm(total=len(prompts), initial=len(prompts) - sum(multiplicity[k] for k, _ in pending),
                   disable=not progress or not pending, desc=f"{self.backend.name}:{self.backend.model}",
                   unit="prompt")
        try:
            if pending and self.use_batches:
                from .batches import run_batches
                done.update(run_batches(self, pending, bar, multiplicity))
            elif pending:
                done.update(self._run_threads(pending, bar, multiplicity))
        finally:
            bar.close()
        answered = sum(multiplicity[key] for key, completion in done.items() if completion.ok)
        self._raise_if_stopped(answered, len(prompts))
        return [_with_key(done[key], prompt.key) for key, prompt in zip(keys, prompts)]

    @property
    def stopped(self) -> bool:
        """True once the circuit breaker has tripped; every later call raises ``LLMUnavailableError``."""
        return self._stopped.is_set()

    def usage(self) -> dict:
        """Accounting since this client was created.

        Returns
        -------
        dict
            ``requests`` (model requests sent, retries and batch items
            included), ``cache_hits`` (prompts answered from the cache),
            ``retries``, ``errors`` (failed completions, refusals included),
            ``refusals``, ``batches``, ``input_tokens`` / ``output_tokens``
            (billed tokens of fresh replies; cached replies cost nothing),
            ``cost_usd`` (None when the model's price is unknown; batch items
            at half price), ``backend``, ``model``.
        """
        with self._lock:
            usage = dict(self._usage)
            usage["cost_usd"] = None if self.price is None else self._cost
        usage["backend"] = self.backend.name
        usage["model"] = self.backend.model
        return usage

    def estimate_cost(self, prompts: Iterable[Prompt], expected_output_tokens: int | float,
                      skip_cached: bool = True) -> dict:
        """Dry-run estimate for this client's model (see ``pricing.estimate_cost``).

        With ``skip_cached`` only prompts missing from the cache are counted,
        i.e. what a run would still cost.
        """
        prompts = list(prompts)
        if skip_cached:
            prompts = [p for p in prompts if self.cache.get(self.cache_key(p)) is None]
        row = estimate_cost(prompts, self.backend.model, expected_output_tokens, price=self.price,
                            batch=self.use_batches)
        row["backend"] = self.backend.name
        return row

    # -- internals -----------------------------------------------------------
    def _run_threads(self, pending, bar, multiplicity) -> dict[str, Completion]:
        done: dict[str, Completion] = {}
        pool = ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(pending)),
                                  thread_name_prefix="saerad-llm")
        interrupted = threading.Event()
        futures = {}
        try:
            futures = {pool.submit(self._fetch_unless_interrupted, key, prompt, interrupted): key
                       for key, prompt in pending}
            for future in as_completed(futures):
                if isinstance(future.exception(), _SkippedAfterInterrupt):
                    continue
                key = futures[future]
                done[key] = future.result()  # re-raises an interrupt met by a worker
                bar.update(multiplicity[key])
                if self._stopped.is_set():
                    break  # the breaker tripped: what has not started is dropped below
        except BaseException:
            interrupted.set()
            raise
        finally:
            # On an interrupt, drop what has not started; running requests finish and are cached.
            pool.shutdown(wait=True, cancel_futures=True)
        return done

    def _fetch_unless_interrupted(self, key: str, prompt: Prompt, interrupted: threading.Event) -> Completion:
        # A worker that picks up an item after an interrupt (in the main thread or in another worker)
        # must not send it: the pool may hand out a few more items before the main thread sees the interrupt.
        if interrupted.is_set() or self._stopped.is_set():
            raise _SkippedAfterInterrupt(key)
        try:
            return self._fetch(key, prompt)
        except KeyboardInterrupt:
            interrupted.set()
            raise

    def _fetch(self, key: str, prompt: Prompt) -> Completion:
        outcome = call_with_retry(lambda: self._attempt(prompt), self.retry, key, stop=self._stopped,
                                  give_up=self._connection_already_lost)
        with self._lock:
            self._usage["retries"] += outcome.attempts - 1
        self._count_for_breaker(outcome.kind, outcome.error)
        if outcome.error is not None:
            return self._failure(prompt, outcome.error)
        return self._finish(key, prompt, outcome.value, via="request")

    def _connection_already_lost(self, error) -> bool:
        # Once a request has used up its retries without a connection, the next ones get one attempt each,
        # so that a dead network stops the run in about the time of one request's backoff, not N of them.
        return error.kind == CONNECTION_FAILURE and self._consecutive_failures > 0

    def _count_for_breaker(self, kind: str | None, error: str | None) -> None:
        """Count a request that could not reach the service (or was refused its credentials); trip at the limit."""
        if kind == "stopped":
            return
        with self._lock:
            if kind not in UNAVAILABLE_KINDS:
                self._consecutive_failures = 0  # the service answered
                return
            self._consecutive_failures += 1
            if self._consecutive_failures >= self.max_consecutive_failures and self._stop_reason is None:
                self._stop_reason = (kind, error)
                self._stopped.set()

    def _raise_if_stopped(self, answered: int, total: int | None) -> None:
        if not self._stopped.is_set():
            return
        kind, error = self._stop_reason
        where = f"{self.backend.name} ({self.backend.model})"
        base_url = getattr(self.backend, "base_url", None)
        if base_url:
            where += f" at {base_url}"
        if kind == ENDPOINT_FAILURE:
            what = ("the service answers that this endpoint or model does not exist: check llm_base_url and the "
                    "model name")
        elif kind == AUTH_FAILURE:
            what = ("the service has no valid credentials for this client: check the API key (ANTHROPIC_API_KEY, "
                    "OPENAI_API_KEY, or the platform's credentials)")
        else:
            what = "no connection could be made: check the network, or that the endpoint (llm_base_url) is up"
        kept = ("cached in " + str(self.cache.root) if self.cache.root is not None
                else "kept in memory only (this client has no cache folder)")
        progress = f"{answered} of {total} prompts of this call were answered; " if total is not None else ""
        raise LLMUnavailableError(
            f"stopped sending to {where}: {self.max_consecutive_failures} requests in a row failed ({what}). "
            f"Last error: {error}. {progress}every answer received so far is {kept}, and a re-run sends only "
            "the prompts not yet answered.")

    def _attempt(self, prompt: Prompt) -> Reply:
        with self._lock:
            self._usage["requests"] += 1
        return self.backend.send(prompt)

    def _finish(self, key: str, prompt: Prompt, reply: Reply, via: str) -> Completion:
        """Account for a reply, cache it if it is a success, and build its Completion."""
        batch = via == "batch"
        with self._lock:
            self._usage["input_tokens"] += reply.input_tokens
            self._usage["output_tokens"] += reply.output_tokens
            if self.price is not None:
                self._cost += self.price.cost(reply.input_tokens, reply.output_tokens, batch=batch)
        if reply.refusal:
            with self._lock:
                self._usage["refusals"] += 1
                self._usage["errors"] += 1
            error = f"refused: the model declined to answer (stop_reason={reply.stop_reason!r})"
            return Completion(None, error, False, reply.input_tokens, reply.output_tokens, self.backend.name,
                              self.backend.model, prompt.key, reply.stop_reason)
        record = {
            "backend": self.backend.name, "model": self.backend.model,
            "responder": self.backend.responder_version, "system": prompt.system, "user": prompt.user,
            "max_tokens": prompt.max_tokens, "temperature": float(prompt.temperature), "text": reply.text,
            "input_tokens": reply.input_tokens, "output_tokens": reply.output_tokens,
            "stop_reason": reply.stop_reason, "via": via,
        }
        self.cache.put(key, record)
        return Completion(reply.text, None, False, reply.input_tokens, reply.output_tokens, self.backend.name,
                          self.backend.model, prompt.key, reply.stop_reason)

    def _failure(self, prompt: Prompt, error: str) -> Completion:
        with self._lock:
            self._usage["errors"] += 1
        return Completion(None, error, False, 0, 0, self.backend.name, self.backend.model, prompt.key, None)

    def _from_record(self, record: dict) -> Completion:
        return Completion(record["text"], None, True, int(record.get("input_tokens", 0)),
                          int(record.get("output_tokens", 0)), self.backend.name, self.backend.model, "",
                          record.get("stop_reason"))


def _with_key(completion: Completion, key: str) -> Completion:
    """A copy of ``completion`` carrying the caller's item key (duplicates share one reply)."""
    return Completion(completion.text, completion.error, completion.cached, completion.input_tokens,
                      completion.output_tokens, completion.backend, completion.model, key, completion.stop_reason)
