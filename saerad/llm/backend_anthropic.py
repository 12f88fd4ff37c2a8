"""Claude through the official ``anthropic`` SDK: direct API, Amazon Bedrock, Google Vertex AI."""

from __future__ import annotations

import importlib.util
import os

from .pricing import PAPER_MODEL
from .retry import classify_sdk_error, sdk_timeout
from .types import LLMConfigurationError, PermanentError, Prompt, Reply

# The paper's model (Claude 3.5 Sonnet, June 2024) in each platform's spelling.
# It may be retired on a platform; pass model= to choose a current one.
DEFAULT_MODELS = {
    "anthropic": PAPER_MODEL,
    "bedrock": "anthropic.claude-3-5-sonnet-20240620-v1:0",
    "vertex": "claude-3-5-sonnet@20240620",
}

BEDROCK_INSTALL_HINT = 'pip install "anthropic[bedrock]"'


def build_anthropic_sdk_client(kind: str, *, api_key: str | None = None, base_url: str | None = None,
                               timeout: float = 120.0, region: str | None = None, project_id: str | None = None,
                               access_token: str | None = None, aws_region: str | None = None,
                               aws_profile: str | None = None, aws_access_key: str | None = None,
                               aws_secret_key: str | None = None, aws_session_token: str | None = None):
    """Construct the SDK client for ``kind`` with the SDK's own retries off (``max_retries=0``).

    Parameters
    ----------
    kind
        "anthropic" (``anthropic.Anthropic``), "bedrock" (``anthropic.AnthropicBedrock``)
        or "vertex" (``anthropic.AnthropicVertex``).
    api_key
        Anthropic API key; for Bedrock a Bedrock API key (bearer token, also
        read from ``AWS_BEARER_TOKEN_BEDROCK``), which needs no boto3.
    region, project_id, access_token
        Vertex AI settings (``access_token`` skips google-auth discovery).
    aws_*
        Bedrock SigV4 credentials; signing needs boto3/botocore.
    """
    import anthropic

    timeout = sdk_timeout(anthropic, timeout)
    if kind == "anthropic":
        client = anthropic.Anthropic(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)
        if client.api_key is None and client.auth_token is None and client.credentials is None:
            # Without this the SDK raises a bare TypeError on the first request, after all the work before it.
            raise LLMConfigurationError(
                "backend 'anthropic' has no API key: set the ANTHROPIC_API_KEY environment variable (or "
                "ANTHROPIC_AUTH_TOKEN, or an Anthropic credentials profile) before starting. No request has been sent.")
        return client
    if kind == "bedrock":
        bearer = api_key or os.environ.get("AWS_BEARER_TOKEN_BEDROCK")
        if bearer is None and importlib.util.find_spec("boto3") is None:
            raise ImportError(
                "The bedrock backend signs requests with AWS credentials, which needs boto3 and botocore; they are "
                f"not installed. Install them with: {BEDROCK_INSTALL_HINT} (boto3 does not resolve with this "
                "project's pins, so use a separate environment), or pass api_key=<Amazon Bedrock API key> "
                "(or set AWS_BEARER_TOKEN_BEDROCK), which needs no boto3."
            )
        options = dict(aws_region=aws_region, aws_profile=aws_profile, aws_access_key=aws_access_key,
                       aws_secret_key=aws_secret_key, aws_session_token=aws_session_token)
        if bearer is not None:
            options = {"api_key": bearer, "aws_region": aws_region}
        return anthropic.AnthropicBedrock(base_url=base_url, timeout=timeout, max_retries=0, **options)
    if kind == "vertex":
        options = {}
        if region is not None:
            options["region"] = region
        if project_id is not None:
            options["project_id"] = project_id
        return anthropic.AnthropicVertex(access_token=access_token, base_url=base_url, timeout=timeout,
                                         max_retries=0, **options)
    raise ValueError(f"backend: expected 'anthropic', 'bedrock' or 'vertex', got {kind!r}")


def message_params(model: str, prompt: Prompt) -> dict:
    """Messages API request body for ``prompt``.

    ``temperature`` is not sent: API version 2026-10-21, which the pinned
    SDK speaks, rejects sampling parameters (it stays in the cache key).
    """
    params = {"model": model, "max_tokens": prompt.max_tokens,
              "messages": [{"role": "user", "content": prompt.user}]}
    if prompt.system:
        params["system"] = prompt.system
    return params


def parse_message(message) -> Reply:
    """Turn a Messages API ``Message`` into a Reply; raise PermanentError if it is malformed."""
    usage = getattr(message, "usage", None)
    input_tokens = int(getattr(usage, "input_tokens", 0) or 0)
    output_tokens = int(getattr(usage, "output_tokens", 0) or 0)
    stop_reason = getattr(message, "stop_reason", None)
    content = getattr(message, "content", None)
    if content is None:
        raise PermanentError(f"malformed reply: message has no 'content' (stop_reason={stop_reason!r})")
    texts = [block.text for block in content if getattr(block, "type", None) == "text"]
    if stop_reason == "refusal":
        return Reply("".join(texts) or None, input_tokens, output_tokens, stop_reason, refusal=True)
    if not texts:
        raise PermanentError(f"malformed reply: no text block in 'content' (stop_reason={stop_reason!r})")
    return Reply("".join(texts), input_tokens, output_tokens, stop_reason)


class AnthropicBackend:
    """Sends prompts with ``client.messages.create`` of an anthropic SDK client.

    Parameters
    ----------
    kind
        "anthropic", "bedrock" or "vertex" (the backend name in cache keys and reports).
    model
        Model id in the platform's spelling.
    sdk_client
        A ready SDK client (tests, custom transports); else built from ``options``.
    options
        Passed to ``build_anthropic_sdk_client``.
    """

    def __init__(self, kind: str, model: str | None = None, sdk_client=None, **options):
        import anthropic

        self._sdk = anthropic
        self.name = kind
        self.model = model or DEFAULT_MODELS[kind]
        self.base_url = options.get("base_url")
        self.client = sdk_client if sdk_client is not None else build_anthropic_sdk_client(kind, **options)
        self.responder_version = None
        # Only the direct API offers Message Batches (the SDK refuses them on Bedrock/Vertex).
        self.supports_batches = kind == "anthropic"

    def send(self, prompt: Prompt) -> Reply:
        try:
            message = self.client.messages.create(**message_params(self.model, prompt))
        except Exception as error:
            mapped = classify_sdk_error(error, self._sdk)
            if mapped is error:
                raise
            raise mapped from error
        return parse_message(message)

    def classify(self, error: Exception) -> Exception:
        return classify_sdk_error(error, self._sdk)
