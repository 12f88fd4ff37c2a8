"""Encoders side by side: the profile's encoder, comparison arms and two baselines.

Whether an SAE "discovers" a finding depends on what the encoder put into the
token. To judge an encoder the reader needs two yardsticks besides the
encoder itself (issue 21):

* **the same network, untrained**: random weights of the encoder's own
  architecture (``AutoModel.from_config``, seeded). What a probe reads from it
  is what the architecture and pooling give for free;
* **the raw pixels**, resized to a small square: what a linear probe reads
  without any encoder at all.

A *comparison arm* is another checkpoint (the demo's is the supervised
encoder, "an encoder that was told the answers"). Every arm's tokens are
written under ``encode/arms/<name>/`` with the main tokens' layout
(``class_tokens.npy`` in the rows of ``tokens_index.csv``, ``scale.json``), so
later chapters load them with :func:`saerad.encode.tokens.load_class_tokens`
``(..., arm=name)`` and can train the same SAE on them.

Token geometry (:func:`token_geometry`) says what an SAE will face: the share
of negative entries (a mean of ReLU outputs has none; Rad-DINO's layer-normed
CLS token is signed), the mean's share of the squared norm (a large shared
mean is one direction every token carries), and how many principal directions
hold 90 % of the variance.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from saerad.encode.encoder import ClassTokenEncoder, encode_files
from saerad.io import read_json, write_json, write_npy
from saerad.encode.probe import probe_auroc, summarise_probes

#: The folder of the arms' tokens under the encode stage's folder.
ARMS_FOLDER = "arms"
#: Files of a checkpoint's image preprocessing, copied into the untrained twin.
PREPROCESSOR_FILES = ("preprocessor_config.json",)


@dataclass
class Arm:
    """One row of the comparison: a name, what it is, and its raw tokens (rows of ``tokens_index.csv``)."""

    name: str
    role: str
    tokens: np.ndarray
    source: str = ""
    extra: dict = field(default_factory=dict)


def directions_for_variance(tokens: np.ndarray, share: float = 0.9) -> int:
    """How many principal directions of ``tokens`` (centred) hold ``share`` of their variance."""
    centred = np.asarray(tokens, dtype=np.float64) - np.mean(tokens, axis=0)
    variance = np.linalg.svd(centred, compute_uv=False) ** 2
    return int(np.searchsorted(np.cumsum(variance) / variance.sum(), share)) + 1


def token_geometry(tokens: np.ndarray, share: float = 0.9) -> dict[str, float | int]:
    """Sign, the mean's share of the squared norm, and principal directions for ``share`` of the variance.

    Parameters
    ----------
    tokens
        ``[n, d]``; rows with a non-finite entry are left out.
    share
        The share of the (centred) variance the counted directions must hold.

    Returns
    -------
    dict
        ``negative_share`` (entries below zero), ``mean_share_of_squared_norm``
        (``‖mean‖² / mean ‖z‖²``) and ``directions_for_90pct_variance`` (named for
        the default ``share``).
    """
    tokens = np.asarray(tokens, dtype=np.float64)
    tokens = tokens[np.isfinite(tokens).all(axis=1)]
    if len(tokens) < 2:
        raise ValueError(f"token_geometry needs at least two finite tokens, got {len(tokens)}")
    mean = tokens.mean(axis=0)
    return {
        "negative_share": float((tokens < 0).mean()),
        "mean_share_of_squared_norm": float((mean @ mean) / (tokens ** 2).sum(axis=1).mean()),
        "directions_for_90pct_variance": directions_for_variance(tokens, share),
    }


def untrained_twin(checkpoint: str | Path, out_dir: str | Path, seed: int, local_files_only: bool = True) -> Path:
    """Write a checkpoint with ``checkpoint``'s architecture and preprocessing but random weights.

    The weights come from ``AutoModel.from_config`` under ``torch.manual_seed(seed)``:
    the initialisation ``transformers`` gives the architecture. Written once
    into ``out_dir`` (a re-run with the same seed and config reuses it).
    """
    import torch
    from transformers import AutoConfig, AutoImageProcessor, AutoModel

    out_dir = Path(out_dir)
    config = AutoConfig.from_pretrained(str(checkpoint), local_files_only=local_files_only)
    # Compared as written to disk (JSON turns tuples into lists), so a re-run recognises its own twin.
    record = json.loads(json.dumps({"source": str(checkpoint), "seed": int(seed), "config": config.to_dict()}))
    if (out_dir / "twin.json").exists() and read_json(out_dir / "twin.json") == record:
        return out_dir
    if out_dir.exists():
        shutil.rmtree(out_dir)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    staging = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    AutoImageProcessor.from_pretrained(str(checkpoint), local_files_only=local_files_only,
                                       use_fast=False).save_pretrained(staging)
    write_json(staging / "twin.json", record)
    staging.replace(out_dir)
    return out_dir


def raw_pixel_tokens(paths: Sequence[str | Path], side: int) -> np.ndarray:
    """Each image in grey levels, resized to ``side × side`` (bilinear), scaled to [0, 1], as one row.

    An image that cannot be read gets a row of NaN, like an encoder's failed image.
    """
    from PIL import Image

    if side < 2:
        raise ValueError(f"raw pixel side must be at least 2, got {side}")
    rows = np.full((len(paths), side * side), np.nan, dtype=np.float32)
    for row, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                small = image.convert("L").resize((side, side), Image.BILINEAR)
        except OSError:
            continue
        rows[row] = np.asarray(small, dtype=np.float32).reshape(-1) / 255.0
    return rows


def encode_arm(checkpoint: str | Path, paths: Sequence[Path], arm_dir: str | Path, *, device: str, dtype: str,
               batch_size: int, chunk_size: int, num_workers: int, local_files_only: bool) -> np.ndarray:
    """Encode ``paths`` with ``checkpoint`` into ``arm_dir`` (resumable chunks, as the main encoding)."""
    encoder = ClassTokenEncoder(checkpoint, device=device, dtype=dtype, local_files_only=local_files_only)
    result = encode_files(encoder, paths, arm_dir, batch_size=batch_size, chunk_size=chunk_size,
                          num_workers=num_workers, progress=False)
    return np.load(result.tokens_path)


def save_arm(stage_dir: str | Path, arm: Arm, train_rows: np.ndarray) -> Path:
    """Write an arm's raw tokens and its own scale (mean norm √d over ``train_rows``) under ``arms/<name>``."""
    from saerad.encode.encoder import norm_scale

    folder = Path(stage_dir) / ARMS_FOLDER / arm.name
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "class_tokens.npy").exists() or not np.array_equal(
            np.load(folder / "class_tokens.npy"), arm.tokens, equal_nan=True):
        write_npy(folder / "class_tokens.npy", np.asarray(arm.tokens, dtype=np.float32))
    train = arm.tokens[train_rows]
    write_json(folder / "scale.json", {"scale": norm_scale(train), "dim": int(arm.tokens.shape[1]),
                                       "fitted_on": "train split", "encoder": arm.source or arm.name,
                                       "role": arm.role})
    return folder


def compare(arms: Sequence[Arm], labels: pd.DataFrame, train_rows: np.ndarray, held_out_rows: np.ndarray, *,
            min_prevalence: float, seed: int, finding_floor: float = 0.85) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Probe every arm as the chapter probes its encoder, and measure its token geometry.

    Parameters
    ----------
    arms
        The rows, in the order the table shows them.
    labels
        0/1 per image and finding, rows as the arms' tokens.
    train_rows, held_out_rows
        Boolean masks: probes are fitted on the first and scored on the second.
    min_prevalence, seed
        As :func:`saerad.encode.probe.probe_auroc`.
    finding_floor
        The AUROC counted in ``findings_at_floor``.

    Returns
    -------
    (summary, per_finding)
        ``summary``: one row per arm (``encoder``, ``role``, median and lowest AUROC,
        weakest finding, findings at or above ``finding_floor`` of those probed,
        and :func:`token_geometry`). ``per_finding``: ``finding`` and one AUROC column per arm.
    """
    rows, per_finding = [], None
    for arm in arms:
        finite = np.isfinite(arm.tokens).all(axis=1)
        fit, score = train_rows & finite, held_out_rows & finite
        table = probe_auroc(arm.tokens[fit], labels[fit], arm.tokens[score], labels[score],
                            min_prevalence=min_prevalence, seed=seed)
        summary = summarise_probes(table)
        probed = table[table["probed"].astype(bool)]
        rows.append({"encoder": arm.name, "role": arm.role, "median_auroc": summary.median_auroc,
                     "lowest_auroc": summary.lowest_auroc, "weakest_finding": summary.weakest_finding,
                     "findings_at_floor": int((probed["auroc"] >= finding_floor).sum()),
                     "findings_probed": summary.n_probed, "token_dim": int(arm.tokens.shape[1]),
                     **token_geometry(arm.tokens[finite]), **arm.extra})
        column = table[["finding", "auroc"]].rename(columns={"auroc": arm.name})
        per_finding = column if per_finding is None else per_finding.merge(column, on="finding", how="outer")
    return pd.DataFrame(rows), per_finding if per_finding is not None else pd.DataFrame(columns=["finding"])
