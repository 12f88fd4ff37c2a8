"""Where the project lives, so that relative paths mean the same from any working directory.

The chapters are executed by the pipeline with the repository root as their working
directory, but a reader who opens a notebook in JupyterLab gets a kernel started in
``notebooks/``. Every path a chapter builds from a parameter goes through
:func:`project_path`, which resolves a relative path against the repository root.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def project_path(path: str | os.PathLike) -> Path:
    """``path`` itself when absolute, else the same path under the repository root."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def display_path(path: str | os.PathLike) -> str:
    """``path`` as a message shows it: relative to the repository root when inside it, else absolute."""
    path = project_path(path).resolve()
    try:
        return path.relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)
