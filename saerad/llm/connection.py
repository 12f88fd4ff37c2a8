"""Is a backend usable? Credentials present and endpoint answering, checked without sending a prompt.

A stage calls :func:`check_connection` before it starts its work (see
:mod:`saerad.features.preflight`), so that a missing API key or a dead
network is reported in seconds instead of after an hour of encoding, and
without a single report leaving the machine.
"""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

from .factory import build_backend, check_options
from .protection import is_loopback_url
from .types import LLMConfigurationError

#: Seconds to wait for the endpoint to answer the reachability probe.
PROBE_TIMEOUT_S = 5.0


def probe_endpoint(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when a server answers at ``url`` (any HTTP status counts), else why it does not.

    A ``HEAD`` request with no body and no credentials: nothing is sent but the
    URL. The proxy settings of the environment apply, as they do to the SDKs.
    A TLS failure counts as an answer: the host is reachable, and the SDK, which
    brings its own certificate bundle, may well succeed.
    """
    request = urllib.request.Request(url, method="HEAD")
    # A proxy cannot reach this machine's loopback interface: ask a local server directly.
    opener = urllib.request.build_opener(*([urllib.request.ProxyHandler({})] if is_loopback_url(url) else []))
    try:
        opener.open(request, timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # the server answered, if only with an error status
    except urllib.error.URLError as error:
        return _unreachable(error.reason, timeout)
    except OSError as error:  # a timeout or TLS failure after the connection was made
        return _unreachable(error, timeout)
    return None


def _unreachable(reason, timeout: float) -> str | None:
    if isinstance(reason, ssl.SSLError):
        return None
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout:g} s"
    return str(reason)


def check_credentials(instance) -> None:
    """Raise LLMConfigurationError when a Vertex or Bedrock backend has nothing to authenticate with.

    The direct Anthropic API and OpenAI endpoints are checked when the backend
    is built (:class:`saerad.llm.backend_anthropic.AnthropicBackend`,
    :class:`saerad.llm.backend_openai.OpenAIBackend`).
    """
    kind = getattr(instance, "name", "")
    client = getattr(instance, "client", None)
    no_token = getattr(client, "access_token", None) is None and getattr(client, "credentials", None) is None
    if kind == "vertex" and no_token:
        try:
            import google.auth

            google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
        except Exception as error:  # google-auth missing, or no application default credentials
            raise LLMConfigurationError(
                "backend 'vertex' has no Google credentials: run `gcloud auth application-default login`, set "
                f"GOOGLE_APPLICATION_CREDENTIALS, or pass access_token ({type(error).__name__}: {error})") from error
    if kind == "bedrock" and getattr(client, "api_key", None) is None:
        try:
            import boto3
        except ImportError:  # build_anthropic_sdk_client has already said how to install it
            return
        client_profile = getattr(client, "aws_profile", None)
        if boto3.Session(profile_name=client_profile).get_credentials() is None:
            raise LLMConfigurationError(
                "backend 'bedrock' has no AWS credentials: set AWS_BEARER_TOKEN_BEDROCK (a Bedrock API key), or "
                "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or an AWS profile")


def check_connection(backend: str, model: str | None = None, *, timeout: float = PROBE_TIMEOUT_S,
                     **connection) -> str:
    """Check that ``backend`` has credentials and that its endpoint answers; send no prompt.

    Parameters
    ----------
    backend, model, connection
        As for :func:`saerad.llm.make_client` (``base_url``, ``api_key``, ...).
    timeout
        Seconds to wait for the endpoint.

    Returns
    -------
    str
        The endpoint that answered ("offline" for the offline backend).

    Raises
    ------
    LLMConfigurationError
        Credentials missing, the SDK could not build a client, or nothing answers at the endpoint.
    """
    if backend == "offline":
        return "offline"
    check_options(backend, connection)
    try:
        instance = build_backend(backend, model, **connection)
    except LLMConfigurationError:
        raise
    except (ImportError, ValueError, TypeError) as error:
        raise LLMConfigurationError(f"backend {backend!r}: cannot build a client ({error})") from error
    check_credentials(instance)
    url = str(instance.client.base_url)
    problem = probe_endpoint(url, timeout)
    if problem is not None:
        raise LLMConfigurationError(
            f"backend {backend!r}: nothing answers at {url} ({problem}); check the network, or that the server "
            "behind the base URL is running")
    return url
