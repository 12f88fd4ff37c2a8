"""Retries with exponential backoff and deterministic jitter, and SDK error classification.

The SDKs' own retry loops are switched off (``max_retries=0``) so that every
backend behaves the same way and tests can observe each attempt.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, TypeVar

from .types import AUTH_FAILURE, CONNECTION_FAILURE, ENDPOINT_FAILURE, PermanentError, TransientError

T = TypeVar("T")

# 408 request timeout, 409 conflict (lock contention), 429 rate limit, 5xx
# server errors including Anthropic's 529 "overloaded".
RETRY_STATUSES = frozenset({408, 409, 429})
# 401 missing/invalid key, 403 key without access: every further request would fail the same way.
AUTH_STATUSES = frozenset({401, 403})
#: Statuses that say the URL or the model does not exist: no prompt can succeed (they trip the breaker).
NOT_FOUND_STATUSES = frozenset({404, 405})
#: Seconds to wait for a connection (the request itself may take the full timeout): a dead network
#: should cost seconds per attempt, not minutes.
CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry transient failures.

    Attributes
    ----------
    max_attempts
        Attempts per request in total (1 = no retry).
    base_delay
        Delay before the first retry in seconds; doubles each retry.
    max_delay
        Upper bound of the exponential delay.
    max_retry_after
        Upper bound on a server-requested ``retry-after`` wait.
    sleep
        The sleep function (tests inject a recorder).
    """

    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_retry_after: float = 600.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"RetryPolicy.max_attempts: expected >= 1, got {self.max_attempts}")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("RetryPolicy.base_delay / max_delay: expected >= 0")


def backoff_delay(policy: RetryPolicy, retry: int, token: str) -> float:
    """Delay before retry number ``retry`` (1-based) of the request identified by ``token``.

    "Equal jitter": half the exponential delay plus a uniform share of the
    other half. The share is derived from sha256(token, retry) instead of a
    global random generator, so it is reproducible and independent of thread
    scheduling, while different requests still spread out.
    """
    exponential = min(policy.max_delay, policy.base_delay * 2 ** (retry - 1))
    digest = hashlib.sha256(f"{token}:{retry}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return exponential * (0.5 + 0.5 * fraction)


@dataclass
class RetryOutcome:
    """Result of ``call_with_retry``: either ``value`` or ``error``, and how many attempts it took.

    ``kind`` is the ``kind`` of the last failure (``types.CONNECTION_FAILURE``, ``types.AUTH_FAILURE``, ...),
    ``"stopped"`` when ``stop`` was set before the request succeeded, None on success.
    """

    value: object | None
    error: str | None
    attempts: int
    kind: str | None = None


def call_with_retry(send: Callable[[], T], policy: RetryPolicy, token: str,
                    stop: threading.Event | None = None,
                    give_up: Callable[[TransientError], bool] | None = None) -> RetryOutcome:
    """Call ``send`` until it succeeds, raises PermanentError, attempts run out, or ``stop`` is set.

    Parameters
    ----------
    send
        Performs one attempt; raises TransientError / PermanentError on failure.
    policy
        Retry settings.
    token
        Identifies the request for the jitter (the cache key).
    stop
        Set by another thread when the whole run stops (the client's circuit breaker): no
        further attempt is made, and a backoff wait with the default ``time.sleep`` ends early.
    give_up
        Called with each transient failure; True ends the retries at once (the client does so for a
        connection failure right after another request found no connection).
    """
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return RetryOutcome(send(), None, attempt)
        except PermanentError as error:
            return RetryOutcome(None, str(error), attempt, error.kind)
        except TransientError as error:
            if attempt == policy.max_attempts or (give_up is not None and give_up(error)):
                return RetryOutcome(None, f"{error} (gave up after {attempt} attempts)", attempt, error.kind)
            if error.retry_after is not None:
                delay = min(max(error.retry_after, 0.0), policy.max_retry_after)
            else:
                delay = backoff_delay(policy, attempt, token)
            if stop is not None and policy.sleep is time.sleep:
                stop.wait(delay)
            else:
                policy.sleep(delay)
            if stop is not None and stop.is_set():
                return RetryOutcome(None, f"{error} (not retried: the client stopped)", attempt, "stopped")
    raise AssertionError("unreachable")


def sdk_timeout(sdk, timeout: float):
    """The SDK's ``Timeout``: ``timeout`` seconds for the request, at most :data:`CONNECT_TIMEOUT_S` to connect."""
    return sdk.Timeout(timeout, connect=min(float(timeout), CONNECT_TIMEOUT_S))


def parse_retry_after(headers) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def classify_sdk_error(error: Exception, sdk) -> Exception:
    """Translate an exception of the ``anthropic`` or ``openai`` SDK into Transient/PermanentError.

    Parameters
    ----------
    error
        The exception raised by the SDK call.
    sdk
        The SDK module (``anthropic`` or ``openai``); both expose the same
        exception hierarchy (APIStatusError, APIConnectionError, base error).

    Returns
    -------
    Exception
        A TransientError or PermanentError to raise, or ``error`` itself when
        it is not an SDK/transport error (a bug should surface, not be recorded).
    """
    if isinstance(error, sdk.APIStatusError):
        status = error.status_code
        message = _status_message(error)
        if status in RETRY_STATUSES or status >= 500:
            return TransientError(f"HTTP {status}: {message}", parse_retry_after(error.response.headers))
        if status in AUTH_STATUSES:
            return PermanentError(f"HTTP {status}: {message} (the service rejected the credentials)", AUTH_FAILURE)
        if status in NOT_FOUND_STATUSES:
            return PermanentError(f"HTTP {status}: {message} (no such endpoint or model)", ENDPOINT_FAILURE)
        return PermanentError(f"HTTP {status}: {message}")
    if isinstance(error, sdk.APIConnectionError):  # includes timeouts
        return TransientError(f"connection error: {_connection_detail(error)}", kind=CONNECTION_FAILURE)
    if isinstance(error, json.JSONDecodeError):
        return PermanentError(f"malformed reply: body is not valid JSON ({error})")
    if is_missing_credentials(error):
        return PermanentError(f"no credentials: {error}", AUTH_FAILURE)
    base = getattr(sdk, "AnthropicError", None) or getattr(sdk, "OpenAIError")
    if isinstance(error, base):
        return PermanentError(f"{type(error).__name__}: {error}")
    return error


def is_missing_credentials(error: Exception) -> bool:
    """Whether ``error`` is an SDK's way of saying it has no credentials to send.

    The anthropic SDK raises a bare TypeError ("Could not resolve authentication method") at
    request time; Google's and AWS's auth libraries raise ``DefaultCredentialsError`` /
    ``NoCredentialsError`` (matched by name, so neither library needs to be installed).
    """
    if isinstance(error, TypeError) and "authentication method" in str(error):
        return True
    return any("Credentials" in cls.__name__ and "Error" in cls.__name__ for cls in type(error).__mro__)


def _connection_detail(error: Exception) -> str:
    # The SDK's message is a bare "Connection error."; the cause says refused / timed out / unknown host.
    cause = error.__cause__ or error.__context__
    return f"{error} ({cause})" if cause is not None and str(cause) else str(error)


def _status_message(error) -> str:
    body = getattr(error, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("message"):
            kind = inner.get("type")
            return f"{kind}: {inner['message']}" if kind else str(inner["message"])
    return str(getattr(error, "message", error))
