"""An environment without language-model credentials, for tests that must not pick up a developer's keys."""

from __future__ import annotations

import os

CREDENTIAL_PREFIXES = ("ANTHROPIC_", "OPENAI_", "AWS_BEARER_TOKEN_BEDROCK", "GOOGLE_APPLICATION_CREDENTIALS")


def clear_llm_credentials(monkeypatch, home) -> None:
    """Unset every credential variable the SDKs read and point HOME at ``home`` (no credentials profile)."""
    for name in list(os.environ):
        if name.startswith(CREDENTIAL_PREFIXES):
            monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
