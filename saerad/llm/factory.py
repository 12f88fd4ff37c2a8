"""``make_client``: one entry point for every backend, with the data-protection gate first."""

from __future__ import annotations

from typing import Callable

from .client import DEFAULT_MAX_CONSECUTIVE_FAILURES, LLMClient
from .pricing import Price, price_for
from .protection import check_data_protection
from .retry import RetryPolicy
from .types import Prompt

BACKENDS = ("offline", "anthropic", "bedrock", "vertex", "openai")

_CONNECTION_OPTIONS = {
    "offline": set(),
    "anthropic": {"api_key", "base_url", "timeout"},
    "bedrock": {"api_key", "base_url", "timeout", "aws_region", "aws_profile", "aws_access_key", "aws_secret_key",
                "aws_session_token"},
    "vertex": {"base_url", "timeout", "region", "project_id", "access_token"},
    "openai": {"api_key", "base_url", "timeout"},
}

_UNSET = object()


def make_client(backend: str, model: str | None = None, cache_dir=None, *, restricted_text: bool = True,
                acknowledge_restricted_data_use: bool = False, responder: Callable[[Prompt], str] | None = None,
                responder_version: str | None = None, max_concurrency: int = 4, max_attempts: int = 6,
                base_delay: float = 1.0, max_delay: float = 60.0, retry: RetryPolicy | None = None,
                price: Price | None = _UNSET, use_batches: bool = False, poll_interval: float = 30.0,
                batch_size: int = 10_000, batch_timeout: float | None = None, sdk_client=None,
                max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES, **connection) -> LLMClient:
    """Create an LLM client.

    Parameters
    ----------
    backend
        "offline" (a Python ``responder``), "anthropic" (Claude API),
        "bedrock" (Amazon Bedrock), "vertex" (Google Vertex AI) or "openai"
        (any OpenAI-compatible endpoint, e.g. a local vLLM/Ollama server).
    model
        Model id in the backend's spelling. Defaults: the paper's Claude 3.5
        Sonnet for anthropic/bedrock/vertex (may be retired: pass a current
        one), "offline" for offline; required for openai.
    cache_dir
        Response cache folder; None caches in memory for this client only.
    restricted_text
        True (the default, fail-safe) when prompts may contain text under a
        data use agreement such as MIMIC-CXR reports. Remote backends then
        raise DataProtectionError here, before any request, unless
        ``acknowledge_restricted_data_use=True``. Offline and loopback
        (127.0.0.1 / localhost) OpenAI-compatible endpoints are always allowed.
    acknowledge_restricted_data_use
        Confirms that the remote provider is covered for restricted data
        (e.g. a zero-data-retention agreement).
    responder, responder_version
        Offline backend: the function ``Prompt -> str`` and a name/version
        string for the cache key.
    max_concurrency
        Requests in flight at once.
    max_attempts, base_delay, max_delay
        Retry settings (exponential backoff with jitter); or pass ``retry``.
    price
        USD per million tokens for ``usage()``/estimates; default from the
        price table (None = unknown), ``Price(0, 0)`` for offline. Pass
        ``Price(0, 0)`` for a local endpoint.
    use_batches, poll_interval, batch_size, batch_timeout
        Message Batches (direct Anthropic API only).
    sdk_client
        A ready SDK client to use instead of building one.
    max_consecutive_failures
        Stop (``LLMUnavailableError``) after this many requests in a row fail
        for want of a connection or valid credentials (see ``LLMClient``).
    **connection
        Backend connection options: ``api_key``, ``base_url``, ``timeout``
        (all remote backends); Vertex ``region``, ``project_id``,
        ``access_token``; Bedrock ``aws_region``, ``aws_profile``,
        ``aws_access_key``, ``aws_secret_key``, ``aws_session_token``.

    Raises
    ------
    DataProtectionError
        Restricted text with a remote backend and no acknowledgement.
    LLMConfigurationError
        The direct Anthropic API or an OpenAI endpoint off this machine without an API key.
    ImportError
        Bedrock with AWS credentials but boto3 missing.
    """
    check_options(backend, connection)
    base_url = connection.get("base_url")
    if base_url is None and sdk_client is not None and getattr(sdk_client, "base_url", None) is not None:
        base_url = str(sdk_client.base_url)
    # The gate comes before any SDK client exists, so a refusal cannot leak a request.
    check_data_protection(backend, base_url, restricted_text, acknowledge_restricted_data_use)

    if responder is not None and backend != "offline":
        raise ValueError(f"make_client({backend!r}): responder= is only for the offline backend")
    instance = build_backend(backend, model, responder=responder, responder_version=responder_version,
                             sdk_client=sdk_client, **connection)
    default_price = Price(0.0, 0.0) if backend == "offline" else price_for(instance.model)

    if retry is None:
        retry = RetryPolicy(max_attempts=max_attempts, base_delay=base_delay, max_delay=max_delay)
    return LLMClient(instance, cache_dir, max_concurrency=max_concurrency, retry=retry,
                     price=default_price if price is _UNSET else price, use_batches=use_batches,
                     poll_interval=poll_interval, batch_size=batch_size, batch_timeout=batch_timeout,
                     max_consecutive_failures=max_consecutive_failures)


def check_options(backend: str, connection: dict) -> None:
    """Raise for an unknown backend or a connection option the backend does not take."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
    unknown = set(connection) - _CONNECTION_OPTIONS[backend]
    if unknown:
        allowed = ", ".join(sorted(_CONNECTION_OPTIONS[backend])) or "none"
        raise TypeError(f"make_client({backend!r}): unknown option(s) {', '.join(sorted(unknown))}; "
                        f"connection options for this backend: {allowed}")


def build_backend(backend: str, model: str | None = None, *, responder: Callable[[Prompt], str] | None = None,
                  responder_version: str | None = None, sdk_client=None, **connection):
    """The backend object of ``backend`` (no request is sent; the data-protection gate is the caller's)."""
    if backend == "offline":
        if responder is None:
            raise ValueError("make_client('offline'): pass responder=callable(Prompt) -> str")
        from .backend_offline import OfflineBackend
        return OfflineBackend(model or "offline", responder, responder_version)
    if backend == "openai":
        from .backend_openai import OpenAIBackend
        return OpenAIBackend(model, sdk_client=sdk_client, **connection)
    from .backend_anthropic import AnthropicBackend
    return AnthropicBackend(backend, model, sdk_client=sdk_client, **connection)
