"""The data passed through the LLM layer: prompts, completions and backend errors."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Prompt:
    """One request to a language model.

    Attributes
    ----------
    user
        The user message text.
    system
        The system prompt ("" for none).
    max_tokens
        Upper bound on the reply length in tokens.
    temperature
        Sampling temperature. Part of the cache key for every backend, but only
        sent to OpenAI-compatible endpoints and given to offline responders:
        Anthropic API version 2026-10-21 (the default of the pinned
        ``anthropic`` SDK 2.x) rejects sampling parameters.
    key
        The caller's id for the item (e.g. ``"feature-17"``); copied onto the
        Completion, never part of the cache key.
    """

    user: str
    system: str = ""
    max_tokens: int = 1024
    temperature: float = 0.0
    key: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.user, str):
            raise TypeError(f"Prompt.user: expected str, got {type(self.user).__name__}")
        if not isinstance(self.system, str):
            raise TypeError(f"Prompt.system: expected str, got {type(self.system).__name__}")
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"Prompt.max_tokens: expected a positive int, got {self.max_tokens!r}")
        if not 0.0 <= float(self.temperature) <= 2.0:
            raise ValueError(f"Prompt.temperature: expected a value in [0, 2], got {self.temperature!r}")


@dataclass
class Completion:
    """The outcome of one Prompt.

    Attributes
    ----------
    text
        The reply, or None when the request failed for good (including a
        refusal by the model).
    error
        Why it failed (after retries), else None.
    cached
        True when the reply came from the on-disk cache (nothing was paid).
    input_tokens, output_tokens
        Token counts reported by the service (0 when unknown, e.g. a
        malformed reply). For cached replies: the counts of the original call.
    backend, model, key
        Where the reply came from and the caller's id of the prompt.
    stop_reason
        Why generation stopped as reported by the service (``"end_turn"``,
        ``"max_tokens"``, ``"refusal"``, ``"stop"``, ...), None when unknown.
        ``"max_tokens"``/``"length"`` means the text was cut off.
    """

    text: str | None
    error: str | None
    cached: bool
    input_tokens: int
    output_tokens: int
    backend: str
    model: str
    key: str
    stop_reason: str | None = None

    @property
    def ok(self) -> bool:
        """True when there is a usable reply."""
        return self.text is not None and self.error is None


@dataclass(frozen=True)
class Reply:
    """What a backend returns for one successful HTTP exchange (before policy is applied)."""

    text: str | None
    input_tokens: int
    output_tokens: int
    stop_reason: str | None
    refusal: bool = False


class BackendError(Exception):
    """Base class for failures a backend reports in a backend-neutral way."""


#: ``kind`` of a failure that says the service cannot be used at all, whatever the prompt: no connection, or
#: credentials missing or rejected. A run of them stops the client (see ``LLMClient``'s circuit breaker).
CONNECTION_FAILURE = "connection"
AUTH_FAILURE = "auth"
#: HTTP 404/405: the URL path or the model name does not exist, so no prompt can succeed either.
ENDPOINT_FAILURE = "endpoint"
UNAVAILABLE_KINDS = (CONNECTION_FAILURE, AUTH_FAILURE, ENDPOINT_FAILURE)


class TransientError(BackendError):
    """A failure worth retrying (rate limit, overload, 5xx, connection error).

    Parameters
    ----------
    message
        What happened.
    retry_after
        Seconds the service asked us to wait (``retry-after`` header), if any.
    kind
        :data:`CONNECTION_FAILURE` when no connection could be made, else ``"service"``.
    """

    def __init__(self, message: str, retry_after: float | None = None, kind: str = "service"):
        super().__init__(message)
        self.retry_after = retry_after
        self.kind = kind


class PermanentError(BackendError):
    """A failure that retrying will not fix (400/401/403/404, malformed reply, ...).

    Parameters
    ----------
    message
        What happened.
    kind
        :data:`AUTH_FAILURE` for missing or rejected credentials (401/403), else ``"request"``.
    """

    def __init__(self, message: str, kind: str = "request"):
        super().__init__(message)
        self.kind = kind


class LLMUnavailableError(RuntimeError):
    """The service cannot be used (no connection, credentials missing or rejected).

    Raised instead of recording the same failure for every remaining prompt; replies
    received before it are cached, so a re-run resumes from them.
    """


class LLMConfigurationError(LLMUnavailableError):
    """Found before any prompt is sent: credentials missing, or the endpoint does not answer."""
