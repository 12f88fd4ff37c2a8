"""The language-model layer: one client interface over Claude (API, Bedrock, Vertex),
OpenAI-compatible endpoints and offline Python responders, with an on-disk
cache, retries, bounded concurrency, Message Batches, token/cost accounting,
a data-protection gate for restricted report text, a circuit breaker that
stops a run the service cannot answer, and a check of credentials and
endpoint that sends no prompt.

Example
-------
>>> from saerad.llm import Prompt, make_client
>>> client = make_client("offline", model="echo", responder=lambda p: p.user.upper())
>>> client.complete(Prompt("hello")).text
'HELLO'
"""

from .client import DEFAULT_MAX_CONSECUTIVE_FAILURES, LLMClient
from .connection import check_connection
from .factory import BACKENDS, make_client
from .pricing import BATCH_DISCOUNT, PAPER_MODEL, PRICES, Price, approx_tokens, estimate_cost, price_for
from .protection import DataProtectionError, is_loopback_url, is_remote
from .retry import RetryPolicy
from .types import (Completion, LLMConfigurationError, LLMUnavailableError, PermanentError, Prompt,
                    TransientError)

__all__ = [
    "BACKENDS", "BATCH_DISCOUNT", "Completion", "DEFAULT_MAX_CONSECUTIVE_FAILURES", "DataProtectionError",
    "LLMClient", "LLMConfigurationError", "LLMUnavailableError", "PAPER_MODEL", "PRICES", "PermanentError", "Price",
    "Prompt", "RetryPolicy", "TransientError", "approx_tokens", "check_connection", "estimate_cost",
    "is_loopback_url", "is_remote", "make_client", "price_for",
]
