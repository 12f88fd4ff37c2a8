"""On-disk response cache: one JSON file per successful reply, written atomically.

The key is the sha256 of the backend, model, generation parameters and
prompt text (and, for offline responders, the responder's name/version), so
a re-run with the same inputs costs nothing, and anything that changes the
request changes the key. Only successful replies are stored; failures are
retried on the next run.

Entries contain the prompt text. Keep the cache with the other artifacts of
the profile (for MIMIC-CXR: inside the credentialed-access storage).
"""

from __future__ import annotations

import hashlib
import json
import threading
import warnings
from pathlib import Path

from ..io import write_json
from .types import Prompt

CACHE_FORMAT = 1


def cache_key(backend: str, model: str, prompt: Prompt, responder: str | None = None) -> str:
    """sha256 hex digest identifying the request ``prompt`` sent to ``backend``/``model``.

    ``prompt.key`` (the caller's item id) is deliberately not part of it:
    two items with the same text share one reply.
    """
    payload = {
        "format": CACHE_FORMAT, "backend": backend, "model": model, "responder": responder,
        "max_tokens": prompt.max_tokens, "temperature": float(prompt.temperature),
        "system": prompt.system, "user": prompt.user,
    }
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    """A folder of cached replies: ``<root>/<key[:2]>/<key>.json``.

    Parameters
    ----------
    root
        Cache folder (created on first write). None keeps entries in memory
        only, for the lifetime of this object.
    """

    def __init__(self, root: str | Path | None):
        self.root = Path(root) if root is not None else None
        self._memory: dict[str, dict] = {}
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        if self.root is None:
            raise ValueError("this cache has no folder (cache_dir=None)")
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The stored record for ``key``, or None if absent (or unreadable, with a warning)."""
        if self.root is None:
            with self._lock:
                return self._memory.get(key)
        path = self.path(key)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as error:
            warnings.warn(f"{path}: unreadable cache entry ignored ({error}); it will be re-requested")
            return None
        if not isinstance(record, dict) or record.get("key") != key or not isinstance(record.get("text"), str):
            warnings.warn(f"{path}: cache entry has no 'text' for key {key[:12]}...; it will be re-requested")
            return None
        return record

    def put(self, key: str, record: dict) -> None:
        """Store a successful reply (``record`` must contain a str ``text``)."""
        if not isinstance(record.get("text"), str):
            raise ValueError(f"cache record for {key[:12]}...: 'text' must be a str, got {record.get('text')!r}")
        record = {**record, "key": key, "format": CACHE_FORMAT}
        if self.root is None:
            with self._lock:
                self._memory[key] = record
            return
        write_json(self.path(key), record)

    def __len__(self) -> int:
        if self.root is None:
            return len(self._memory)
        return sum(1 for _ in self.root.glob("??/[0-9a-f]*.json")) if self.root.exists() else 0
