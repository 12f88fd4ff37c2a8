"""An OpenAI-compatible chat-completions endpoint through the ``openai`` SDK.

Meant for a local server (vLLM, Ollama, llama.cpp, TGI) serving an open model
such as Llama-3-70B-Instruct at ``base_url="http://127.0.0.1:8000/v1"``;
works with any endpoint that speaks ``POST /v1/chat/completions``.
"""

from __future__ import annotations

import os

from .protection import is_loopback_url
from .retry import classify_sdk_error, sdk_timeout
from .types import LLMConfigurationError, PermanentError, Prompt, Reply


class OpenAIBackend:
    """Sends prompts with ``client.chat.completions.create``.

    Parameters
    ----------
    model
        The model name the server serves (required).
    base_url
        Endpoint root including ``/v1``; None means OpenAI's public API.
    api_key
        Key for the endpoint; default ``OPENAI_API_KEY``, or a placeholder for
        loopback servers that need none.
    timeout
        Per-request timeout in seconds.
    sdk_client
        A ready ``openai.OpenAI`` client (tests, custom transports).
    """

    name = "openai"
    supports_batches = False

    def __init__(self, model: str | None, base_url: str | None = None, api_key: str | None = None,
                 timeout: float = 120.0, sdk_client=None):
        import openai

        if not model:
            raise ValueError("model: the openai backend needs model=, the name the server serves "
                             "(e.g. 'meta-llama/Meta-Llama-3-70B-Instruct')")
        self._sdk = openai
        self.model = model
        self.base_url = base_url
        self.responder_version = None
        if sdk_client is None:
            if api_key is None:
                api_key = os.environ.get("OPENAI_API_KEY") or ("unused" if is_loopback_url(base_url) else None)
            try:
                sdk_client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=sdk_timeout(openai, timeout),
                                           max_retries=0)
            except openai.OpenAIError as error:  # the SDK found no credentials
                raise LLMConfigurationError(
                    f"backend 'openai' at {base_url or 'the OpenAI API'} has no API key: set the OPENAI_API_KEY "
                    f"environment variable (a local server on 127.0.0.1 needs none). No request has been sent. "
                    f"({error})") from error
        self.client = sdk_client

    def send(self, prompt: Prompt) -> Reply:
        messages = []
        if prompt.system:
            messages.append({"role": "system", "content": prompt.system})
        messages.append({"role": "user", "content": prompt.user})
        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=messages, max_tokens=prompt.max_tokens, temperature=prompt.temperature)
        except Exception as error:
            mapped = classify_sdk_error(error, self._sdk)
            if mapped is error:
                raise
            raise mapped from error
        return parse_chat_completion(response)


def parse_chat_completion(response) -> Reply:
    """Turn a ChatCompletion into a Reply; raise PermanentError if it is malformed."""
    usage = getattr(response, "usage", None)
    input_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    output_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    choices = getattr(response, "choices", None)
    if not choices:
        raise PermanentError("malformed reply: no 'choices' in the chat completion")
    choice = choices[0]
    message = getattr(choice, "message", None)
    finish_reason = getattr(choice, "finish_reason", None)
    refusal = getattr(message, "refusal", None)
    content = getattr(message, "content", None)
    if refusal or finish_reason == "content_filter":
        return Reply(content or None, input_tokens, output_tokens, finish_reason, refusal=True)
    if not isinstance(content, str):
        raise PermanentError(f"malformed reply: the message has no text content (finish_reason={finish_reason!r})")
    return Reply(content, input_tokens, output_tokens, finish_reason)
