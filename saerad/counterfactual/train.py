"""Training the diffusion decoder: AdamW on Eq. 12, resumable checkpoints, divergence guard.

As for the SAE (:mod:`saerad.sae.train`), a run is a pure function of (data,
decoder config, training config): the initial weights come from
``DecoderConfig.seed``, and the batch, timesteps and noise of step ``s`` from
``(DecoderTrainConfig.seed, s)`` alone. A resumed run therefore needs no RNG
state and ends with weights bit-identical to an uninterrupted one (same
device, same thread count).

Files written into ``out_dir``::

    checkpoint.pt            model + optimiser state, step, history, configs (atomic)
    decoder.safetensors      final weights
    decoder_config.json      DecoderConfig of the final weights
    history.csv              batch loss every ``log_every`` steps, validation loss at every checkpoint
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from saerad.counterfactual.decoder import (
    ConditionalDDPM, DecoderConfig, noise_prediction_loss, noise_schedule, to_model_range,
)
from saerad.io import atomic_path, read_json, write_json, write_table
from saerad.checkpoints import CheckpointMismatch, ConfigRecord, TrainingDiverged, check_same_run, require_positive
from saerad.checkpoints import check_parameters_finite as _check_parameters_finite
from saerad.checkpoints import write_checkpoint as _write_checkpoint
from saerad.sae.train import BatchOrder

CHECKPOINT_FILENAME = "checkpoint.pt"
WEIGHTS_FILENAME = "decoder.safetensors"
CONFIG_FILENAME = "decoder_config.json"
HISTORY_FILENAME = "history.csv"
HISTORY_COLUMNS = ("step", "epoch", "lr", "loss", "validation_loss")

# Changing these does not change the trained weights, so a checkpoint written under other values may be resumed.
_RESUME_FREE_FIELDS = ("checkpoint_every", "device")


@dataclass(frozen=True)
class DecoderTrainConfig(ConfigRecord):
    """Optimisation settings (Appendix D for the paper's values).

    Parameters
    ----------
    epochs
        Passes over the training images (paper: 330).
    batch_size
        Images per step (paper: 256).
    lr
        AdamW learning rate (paper: 0.001), reached after ``lr_warmup_steps``.
    weight_decay
        AdamW's decoupled weight decay (PyTorch's default; the paper does not say).
    lr_warmup_steps
        Steps of linear warm-up from zero (not in the paper: a constant 1e-3 from
        the first step occasionally blows up a fresh attention UNet).
    lr_decay_fraction
        Share of the steps, at the end, over which the learning rate falls
        linearly to zero (0: constant, as far as the paper says). A short run
        ends on averaged rather than last-batch weights this way.
    max_grad_norm
        Gradients are clipped to this global norm (the ``diffusers`` training
        examples' default; not in the paper).
    checkpoint_every
        Write ``checkpoint.pt`` after every this many steps (and after the last).
    log_every
        Record the batch loss at every step divisible by this (and the last).
    seed
        Seed of the batch order, the timesteps and the noise.
    device
        Torch device to train on.
    """

    epochs: int
    batch_size: int
    lr: float = 1e-3
    weight_decay: float = 0.01
    lr_warmup_steps: int = 0
    lr_decay_fraction: float = 0.0
    max_grad_norm: float = 1.0
    checkpoint_every: int = 200
    log_every: int = 20
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        require_positive(self, ("epochs", "batch_size", "checkpoint_every", "log_every", "lr", "max_grad_norm"))
        if self.lr_warmup_steps < 0 or self.weight_decay < 0:
            raise ValueError("DecoderTrainConfig.lr_warmup_steps and weight_decay must not be negative")
        if not 0.0 <= self.lr_decay_fraction <= 1.0:
            raise ValueError(f"DecoderTrainConfig.lr_decay_fraction must be in [0, 1], got {self.lr_decay_fraction}")



#: Appendix D: batch 256, AdamW with learning rate 0.001, 330 epochs, 128 × 128 images.
PAPER_DECODER_TRAIN_CONFIG = DecoderTrainConfig(epochs=330, batch_size=256, lr=1e-3, lr_warmup_steps=500,
                                                checkpoint_every=2000, log_every=100)


@dataclass
class DecoderTrainResult:
    """What :func:`train_decoder` returns.

    Attributes
    ----------
    model
        The trained decoder (eval mode, on the training device).
    history
        Columns ``step, epoch, lr, loss, validation_loss`` (the last only at checkpoints).
    seconds
        Wall-clock seconds spent in the training loop, summed over resumed sessions.
    steps
        Optimiser steps of the whole run.
    out_dir
        Where the checkpoint and final weights were written.
    """

    model: ConditionalDDPM
    history: pd.DataFrame
    seconds: float
    steps: int
    out_dir: Path


def step_generator(seed: int, step: int, stream: int = 0) -> torch.Generator:
    """The generator of step ``step``'s timesteps and noise: a function of ``(seed, stream, step)`` only.

    Stream 0 is training, stream 1 the validation batches.
    """
    state = np.random.SeedSequence([int(seed), int(stream), int(step)]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def step_noise(seed: int, step: int, batch: int, image_size: int, train_timesteps: int,
               stream: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(t, ε)`` of one training step: timesteps uniform on ``{0, ..., T-1}`` and Gaussian noise."""
    generator = step_generator(seed, step, stream)
    timesteps = torch.randint(0, train_timesteps, (batch,), generator=generator)
    noise = torch.randn(batch, 1, image_size, image_size, generator=generator)
    return timesteps, noise


def learning_rate(step: int, steps: int, config: DecoderTrainConfig) -> float:
    """Linear warm-up over ``lr_warmup_steps``, constant, then linear decay to zero over the last
    ``lr_decay_fraction`` of the ``steps``."""
    factor = 1.0 if config.lr_warmup_steps == 0 else min(1.0, (step + 1) / config.lr_warmup_steps)
    decay_steps = config.lr_decay_fraction * steps
    if decay_steps > 0:
        factor = min(factor, (steps - step) / decay_steps)
    return config.lr * factor


def data_fingerprint(tokens: np.ndarray, pixels: np.ndarray) -> str:
    """Shapes plus a hash of the bytes: a checkpoint is resumed only on the data it was trained on."""
    digest = hashlib.blake2b(digest_size=12)
    for array in (tokens, pixels):
        contiguous = np.ascontiguousarray(array, dtype=np.float32)
        digest.update(str(contiguous.shape).encode())
        digest.update(memoryview(contiguous).cast("B"))
    return f"{tokens.shape[0]}x{tokens.shape[1]}+{'x'.join(map(str, pixels.shape))}:{digest.hexdigest()}"


def _check_inputs(tokens: np.ndarray, pixels: np.ndarray, config: DecoderConfig, what: str) -> None:
    size = config.image_size
    if tokens.ndim != 2 or tokens.shape[1] != config.token_dim:
        raise ValueError(f"{what} tokens must have shape [n, {config.token_dim}], got {tokens.shape}")
    if pixels.shape != (len(tokens), size, size):
        raise ValueError(f"{what} pixels must have shape [{len(tokens)}, {size}, {size}] (one image per token "
                         f"at DecoderConfig.image_size), got {pixels.shape}")
    if not (np.isfinite(tokens).all() and np.isfinite(pixels).all()):
        raise ValueError(f"{what} tokens or pixels contain NaN or Inf values")
    if pixels.min(initial=0.0) < 0.0 or pixels.max(initial=0.0) > 1.0:
        raise ValueError(f"{what} pixels must be grey values in [0, 1], got [{pixels.min()}, {pixels.max()}]")


def train_decoder(tokens: np.ndarray, pixels: np.ndarray, decoder_config: DecoderConfig,
                  train_config: DecoderTrainConfig, out_dir: str | Path,
                  validation: tuple[np.ndarray, np.ndarray] | None = None, progress: bool = True,
                  overwrite: bool = False) -> DecoderTrainResult:
    """Train the decoder on ``(tokens, pixels)``, resuming from ``out_dir/checkpoint.pt`` if it is of the same run.

    Parameters
    ----------
    tokens, pixels
        ``[n, token_dim]`` conditioning tokens and ``[n, size, size]`` images in ``[0, 1]``.
    decoder_config, train_config
        Architecture and optimisation settings.
    out_dir
        Folder for the checkpoint, the final weights and ``history.csv``.
    validation
        Optional held-out ``(tokens, pixels)``; their Eq. 12 loss, with timesteps
        and noise fixed by the seed, is recorded at every checkpoint.
    progress
        Show a tqdm progress bar.
    overwrite
        Discard an existing checkpoint instead of resuming it.

    Raises
    ------
    CheckpointMismatch
        ``out_dir`` holds a checkpoint of other configs or data and ``overwrite`` is False.
    TrainingDiverged
        The loss or a gradient became NaN/Inf; nothing after the last good checkpoint is written.
    """
    _check_inputs(tokens, pixels, decoder_config, "training")
    if validation is not None:
        _check_inputs(*validation, decoder_config, "validation")
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / CHECKPOINT_FILENAME
    device = torch.device(train_config.device)
    identity = _run_identity(decoder_config, train_config, tokens, pixels)

    model = ConditionalDDPM(decoder_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay)
    schedule = noise_schedule(decoder_config)
    start, history, seconds = 0, [], 0.0
    if checkpoint_path.exists() and overwrite:
        checkpoint_path.unlink()
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        check_same_run(state["identity"], identity, checkpoint_path, ("decoder_config", "train_config"))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history, seconds = state["step"], state["history"], state["seconds"]

    # The data stay in host memory (no copy of float32 input) and go to the device a batch at a time: at paper
    # scale the images are 15 GB of float32, too much to duplicate or to hold next to the model on a GPU.
    data_tokens = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.float32))
    data_images = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
    order = BatchOrder(len(data_tokens), train_config.batch_size, train_config.seed)
    steps = train_config.epochs * order.batches_per_epoch
    model.train()
    bar = tqdm(total=steps, initial=start, disable=not progress, unit="step", desc="diffusion decoder")
    session_start = time.perf_counter()
    try:
        for step in range(start, steps):
            lr = learning_rate(step, steps, train_config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            rows = torch.from_numpy(order.indices(step))
            timesteps, noise = step_noise(train_config.seed, step, len(rows), decoder_config.image_size,
                                          decoder_config.train_timesteps)
            images = to_model_range(data_images.index_select(0, rows)).unsqueeze(1).to(device)
            loss = noise_prediction_loss(model, schedule, images, data_tokens.index_select(0, rows).to(device),
                                         timesteps.to(device), noise.to(device))
            # One host sync per step keeps a NaN from ever reaching the weights (and hence a checkpoint).
            if not torch.isfinite(loss):
                raise TrainingDiverged(step, "loss", str(float(loss.detach())), checkpoint_path)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train_config.max_grad_norm)
            if not torch.isfinite(norm):
                raise TrainingDiverged(step, "gradient norm", str(float(norm)), checkpoint_path)
            optimizer.step()
            completed = step + 1
            if step % train_config.log_every == 0 or completed == steps:
                history.append({"step": step, "epoch": step / order.batches_per_epoch, "lr": lr,
                                "loss": float(loss.detach()), "validation_loss": float("nan")})
                bar.set_postfix(loss=f"{history[-1]['loss']:.4f}")
            bar.update(1)
            if completed % train_config.checkpoint_every == 0 or completed == steps:
                _check_parameters_finite(model, step, checkpoint_path)
                if validation is not None:
                    history.append({"step": step, "epoch": step / order.batches_per_epoch, "lr": lr,
                                    "loss": float("nan"),
                                    "validation_loss": validation_loss(model, *validation, seed=train_config.seed)})
                elapsed = seconds + time.perf_counter() - session_start
                _write_checkpoint(checkpoint_path, dict(identity=identity, step=completed, seconds=elapsed,
                                                        history=history, model=model.state_dict(),
                                                        optimizer=optimizer.state_dict()))
    finally:
        bar.close()
    seconds += time.perf_counter() - session_start

    model.eval()
    table = pd.DataFrame(history, columns=list(HISTORY_COLUMNS))
    save_decoder(model, out_dir)
    write_table(out_dir / HISTORY_FILENAME, table)
    return DecoderTrainResult(model=model, history=table, seconds=seconds, steps=steps, out_dir=out_dir)


@torch.no_grad()
def validation_loss(model: ConditionalDDPM, tokens: np.ndarray, pixels: np.ndarray, seed: int,
                    batch_size: int = 128) -> float:
    """Eq. 12 on held-out images with timesteps and noise fixed by ``seed`` (comparable across checkpoints)."""
    device = next(model.parameters()).device
    schedule = noise_schedule(model.config)
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(tokens), batch_size):
        z = torch.from_numpy(np.ascontiguousarray(tokens[start:start + batch_size], dtype=np.float32)).to(device)
        x0 = to_model_range(torch.from_numpy(np.ascontiguousarray(pixels[start:start + batch_size]))).unsqueeze(1)
        # Stream 1: validation noise is never a training batch's noise.
        timesteps, noise = step_noise(seed, start, len(z), model.config.image_size, model.config.train_timesteps,
                                      stream=1)
        loss = noise_prediction_loss(model, schedule, x0.to(device), z, timesteps.to(device), noise.to(device))
        total += float(loss) * len(z)
    model.train(was_training)
    return total / max(len(tokens), 1)


def save_decoder(model: ConditionalDDPM, out_dir: str | Path) -> None:
    """Write ``decoder.safetensors`` and ``decoder_config.json`` (each atomically)."""
    out_dir = Path(out_dir)
    with atomic_path(out_dir / WEIGHTS_FILENAME) as temporary:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(temporary))
    write_json(out_dir / CONFIG_FILENAME, model.config.to_dict())


def load_decoder(directory: str | Path, device: str = "cpu") -> ConditionalDDPM:
    """The decoder saved by :func:`save_decoder` (eval mode)."""
    directory = Path(directory)
    if not (directory / WEIGHTS_FILENAME).exists():
        raise FileNotFoundError(f"{directory / WEIGHTS_FILENAME} is missing: train the decoder first")
    model = ConditionalDDPM(DecoderConfig.from_dict(read_json(directory / CONFIG_FILENAME)))
    model.load_state_dict(load_file(str(directory / WEIGHTS_FILENAME)))
    return model.to(device).eval()


def _run_identity(decoder_config: DecoderConfig, train_config: DecoderTrainConfig, tokens: np.ndarray,
                  pixels: np.ndarray) -> dict[str, Any]:
    relevant = {k: v for k, v in train_config.to_dict().items() if k not in _RESUME_FREE_FIELDS}
    return {"decoder_config": decoder_config.to_dict(), "train_config": relevant,
            "data": data_fingerprint(tokens, pixels)}
