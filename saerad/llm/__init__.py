"""The language-model layer: one client interface over Claude (API, Bedrock, Vertex),
OpenAI-compatible endpoints and offline Python responders, with an on-disk
cache, retries, bounded concurrency, Message Batches, token/cost accounting
and a data-protection gate for restricted report text.

Example
-------
>>> from saerad.llm import Prompt, make_client
>>> client = make_client("offline", model="echo", responder=lambda p: p.user.upper())
>>> client.complete(Prompt("hello")).text
'HELLO'
"""

from .client import LLMClient
from .factory import BACKENDS, make_client
from .pricing import BATCH_DISCOUNT, PAPER_MODEL, PRICES, Price, approx_tokens, estimate_cost, price_for
from .protection import DataProtectionError, is_loopback_url
from .retry import RetryPolicy
from .types import Completion, PermanentError, Prompt, TransientError

__all__ = [
    "BACKENDS", "BATCH_DISCOUNT", "Completion", "DataProtectionError", "LLMClient", "PAPER_MODEL", "PRICES",
    "PermanentError", "Price", "Prompt", "RetryPolicy", "TransientError", "approx_tokens", "estimate_cost",
    "is_loopback_url", "make_client", "price_for",
]
