"""The offline backend: a deterministic Python function stands in for the language model.

The demo profile plugs its rule-based describer, composer and scorer in here,
so the whole pipeline (cache, accounting, progress) runs without a network.
"""

from __future__ import annotations

from typing import Callable

from .pricing import approx_tokens
from .types import Prompt, Reply


class OfflineBackend:
    """Calls ``responder(prompt) -> str``.

    Parameters
    ----------
    model
        A name for the responder's role (e.g. "describer"); part of the cache key.
    responder
        Deterministic function of the Prompt. It may raise
        ``saerad.llm.PermanentError`` to report that it has no answer; any other
        exception propagates (it is a bug, not a service failure).
    responder_version
        Name/version string that goes into the cache key; change it when the
        responder's logic changes so old cached replies are not reused.
        Default: the responder's ``version`` attribute if it has one, plus its
        qualified name.

    Notes
    -----
    Token counts are the chars/4 approximation of ``pricing.approx_tokens``.
    """

    name = "offline"
    supports_batches = False

    def __init__(self, model: str, responder: Callable[[Prompt], str], responder_version: str | None = None):
        if not callable(responder):
            raise TypeError(f"responder: expected a callable Prompt -> str, got {type(responder).__name__}")
        self.model = model
        self.responder = responder
        if responder_version is None:
            qualified = f"{getattr(responder, '__module__', '?')}.{getattr(responder, '__qualname__', type(responder).__name__)}"
            version = getattr(responder, "version", None)
            responder_version = f"{qualified}:{version}" if version is not None else qualified
        self.responder_version = responder_version
        self.base_url = None

    def send(self, prompt: Prompt) -> Reply:
        text = self.responder(prompt)
        if not isinstance(text, str):
            raise TypeError(f"offline responder {self.responder_version!r} returned {type(text).__name__}, "
                            f"expected str (prompt key {prompt.key!r})")
        return Reply(text=text, input_tokens=approx_tokens(prompt.system) + approx_tokens(prompt.user),
                     output_tokens=approx_tokens(text), stop_reason="end_turn")
