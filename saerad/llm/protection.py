"""Data protection: keep restricted report text (MIMIC-CXR) away from online services.

The PhysioNet credentialed-access data use agreement for MIMIC-CXR does not
allow sending report text to third-party online services unless the
provider does not retain or use it (PhysioNet's guidance for LLM use names
services configured for zero data retention). The client therefore refuses to
build a remote backend for restricted text unless the caller explicitly
acknowledges that such an agreement is in place.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

# Backends whose requests always leave this machine (the vendor's API, or a
# proxy in front of it when a base_url is given).
REMOTE_BACKENDS = ("anthropic", "bedrock", "vertex")


class DataProtectionError(RuntimeError):
    """Raised before any request when restricted text would go to an online service."""


def is_loopback_url(url: str | None) -> bool:
    """True when ``url`` points at this machine (localhost, 127.0.0.0/8, ::1).

    Parameters
    ----------
    url
        A base URL such as ``"http://127.0.0.1:8000/v1"``; None is not loopback
        (the SDK would use the vendor's public endpoint).
    """
    if not url:
        return False
    host = urlsplit(url if "://" in url else f"http://{url}").hostname
    if host is None:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_remote(backend: str, base_url: str | None) -> bool:
    """Whether requests of ``backend`` (at ``base_url``) may leave this machine."""
    if backend == "offline":
        return False
    if backend in REMOTE_BACKENDS:
        return True
    if backend == "openai":
        return not is_loopback_url(base_url)
    raise ValueError(f"backend: unknown backend {backend!r}")


def check_data_protection(backend: str, base_url: str | None, restricted_text: bool,
                          acknowledge_restricted_data_use: bool) -> None:
    """Raise DataProtectionError if restricted text would be sent online without acknowledgement.

    Parameters
    ----------
    backend
        One of "offline", "anthropic", "bedrock", "vertex", "openai".
    base_url
        The endpoint, if the caller gave one.
    restricted_text
        True when prompts may contain text under a data use agreement
        (MIMIC-CXR reports, whatever the profile is called).
    acknowledge_restricted_data_use
        The caller's explicit statement that the remote provider is covered
        (e.g. zero data retention agreed with the provider).
    """
    if not restricted_text or acknowledge_restricted_data_use or not is_remote(backend, base_url):
        return
    where = f"{backend!r}" + (f" at {base_url}" if base_url else "")
    raise DataProtectionError(
        f"Refusing to create an LLM client for backend {where}: restricted_text=True (e.g. MIMIC-CXR report "
        "text, whose data use agreement forbids sharing it with online services that may retain or use it), and "
        "this backend sends prompts off this machine. Options: (1) use a local OpenAI-compatible server on the "
        "loopback interface, e.g. make_client('openai', model=..., base_url='http://127.0.0.1:8000/v1') for "
        "vLLM / Ollama / llama.cpp serving Llama-3-70B-Instruct; (2) use a provider account configured for zero "
        "data retention under terms that cover this data, and pass acknowledge_restricted_data_use=True to "
        "make_client to confirm it; (3) for non-restricted (synthetic) data pass restricted_text=False. "
        "No request has been sent."
    )
