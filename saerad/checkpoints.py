"""What the project's resumable trainers share: atomic checkpoints, run identity, divergence errors, configs.

The SAE trainer (:mod:`saerad.sae.train`) and the diffusion decoder's
(:mod:`saerad.counterfactual.train`) both resume from ``checkpoint.pt`` only
when it was written by the same run (same configs, same data), and stop with
the last good checkpoint kept when the weights stop being finite.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from saerad.io import atomic_path


def known_fields(cls: type, payload: dict[str, Any]) -> dict[str, Any]:
    """``payload`` itself, once checked to name only fields of the dataclass ``cls``.

    Configs are read back from checkpoints and JSON files; a misspelt key
    must be an error naming the class, not a setting silently dropped.
    """
    unknown = set(payload) - {f.name for f in fields(cls)}
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return payload


def require_positive(config: Any, names: Sequence[str]) -> None:
    """Raise ``ValueError`` naming the first of ``config``'s fields ``names`` that is not > 0."""
    for name in names:
        value = getattr(config, name)
        if not value > 0:
            raise ValueError(f"{type(config).__name__}.{name} must be positive, got {value}")


class ConfigRecord:
    """``to_dict`` / ``from_dict`` for a flat config dataclass stored beside its weights."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, payload: dict[str, Any]):
        return cls(**known_fields(cls, payload))


class TrainingDiverged(RuntimeError):
    """A loss term (or, at a checkpoint, a parameter) became NaN or infinite.

    Attributes
    ----------
    step
        0-based step at which it was detected.
    term
        What was not finite: a loss term's name, ``"gradient norm"`` or ``"parameters"``.
    """

    def __init__(self, step: int, term: str, detail: str, checkpoint: Path):
        self.step, self.term, self.checkpoint = step, term, checkpoint
        kept = f"the last good checkpoint stays at {checkpoint}" if checkpoint.exists() else "no checkpoint was written yet"
        super().__init__(f"training diverged at step {step}: {term} is {detail}; {kept}")


class CheckpointMismatch(ValueError):
    """``out_dir`` holds a checkpoint of a different run."""


def write_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """``torch.save`` through a temporary file, so a crash never leaves half a checkpoint."""
    with atomic_path(path) as temporary:
        torch.save(payload, temporary)


def check_parameters_finite(model: nn.Module, step: int, checkpoint_path: Path) -> None:
    """Raise :class:`TrainingDiverged` naming the first parameter with a NaN or infinity."""
    for name, parameter in model.named_parameters():
        if not torch.isfinite(parameter).all():
            raise TrainingDiverged(step, "parameters", f"non-finite in {name}", checkpoint_path)


def check_same_run(stored: dict[str, Any], requested: dict[str, Any], path: Path, config_parts: Sequence[str]) -> None:
    """Raise :class:`CheckpointMismatch` listing every difference between two run identities.

    An identity holds one dict per name of ``config_parts``, a ``data``
    fingerprint and possibly other fingerprints (e.g. ``held_out``); an entry
    present on one side only is a difference too.
    """
    if stored == requested:
        return
    differences = []
    for part in config_parts:
        keys = sorted(set(stored[part]) | set(requested[part]))
        differences += [f"{part}.{k}: checkpoint {stored[part].get(k)!r} vs requested {requested[part].get(k)!r}"
                        for k in keys if stored[part].get(k) != requested[part].get(k)]
    for key in sorted((set(stored) | set(requested)) - set(config_parts)):
        if stored.get(key) != requested.get(key):
            differences.append(f"{key}: checkpoint {stored.get(key)} vs requested {requested.get(key)}")
    raise CheckpointMismatch(
        f"{path} belongs to another run ({'; '.join(differences)}).\n"
        f"checkpoint configs: {' '.join(str(stored[part]) for part in config_parts)}\n"
        f"requested configs:  {' '.join(str(requested[part]) for part in config_parts)}\n"
        "Pass overwrite=True to discard it and start afresh.")
