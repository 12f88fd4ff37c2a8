"""Training loop: Adam, warm-ups and decay, resumable checkpoints, divergence guard.

The run is a pure function of (tokens, SAE config, training config): the
initial weights come from ``SAEConfig.seed`` and the batch of step ``s`` from
``(TrainConfig.seed, s)`` alone, so a resumed run needs no RNG state and ends
with weights bit-identical to an uninterrupted one (on the same device).

Files written into ``out_dir``::

    checkpoint.pt            model + optimiser state, step, history, configs (atomic)
    cfg.json                 SAELens config of the final model (saelens_format)
    sae_weights.safetensors  final weights
    history.csv              one row per logged step (batch metrics, features silent for the last epoch)
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from saerad.checkpoints import CheckpointMismatch, ConfigRecord, TrainingDiverged, check_same_run, require_positive
from saerad.checkpoints import check_parameters_finite as _check_parameters_finite
from saerad.checkpoints import write_checkpoint as _write_checkpoint
from saerad.io import write_table
from saerad.sae.aux_k import aux_k_loss
from saerad.sae.config import BIAS_GATED_FAMILIES, RANKED_FAMILIES, SAEConfig
from saerad.sae.ghost_grads import ghost_gradient_loss
from saerad.sae.metrics import evaluate_sae
from saerad.sae.models import SparseAutoencoder, build_sae
from saerad.sae.resampling import resample_dead_features
from saerad.sae.saelens_format import save_sae
from saerad.sae.schedule import l1_coefficient, learning_rate

CHECKPOINT_FILENAME = "checkpoint.pt"
HISTORY_FILENAME = "history.csv"
LOSS_TERMS = ("reconstruction", "sparsity", "auxiliary", "total")


@dataclass(frozen=True)
class TrainConfig(ConfigRecord):
    """Optimisation settings (Appendix B.1 / B.3 for the paper's values).

    Parameters
    ----------
    steps, batch_size
        Number of Adam updates and samples per update.
    lr, l1_coefficient
        Peak learning rate and peak sparsity coefficient λ.
    lr_warmup_fraction, lr_decay_fraction, l1_warmup_fraction
        Schedule phases as fractions of ``steps`` (see :mod:`saerad.sae.schedule`).
    checkpoint_every
        Write ``checkpoint.pt`` after every this many steps (and after the last).
    log_every
        Record a history row at every step divisible by this (and the last).
    resample_dead_every
        0 (the paper's recipe): never resample. Otherwise, every this many
        steps, features that fired on no batch of the last this-many steps
        get a new start (:mod:`saerad.sae.resampling`, Bricken et al. 2023).
        Must be at least one epoch of batches, so "silent" means silent on
        every training token.
    resample_dead_until
        No resampling after this fraction of ``steps``, so the last features
        resampled have time to settle before the learning rate decays.
    ghost_grads
        False (the paper's recipe): off. True: features that fired on no
        batch of the last epoch get ghost gradients
        (:mod:`saerad.sae.ghost_grads`) at every step, to the end of training.
        For the L1-penalised families (gated, standard).
    aux_k, aux_k_coefficient
        0: off. Otherwise the AuxK loss (:mod:`saerad.sae.aux_k`, Gao et al.
        2024): the ``aux_k`` largest pre-activations among the features
        silent for the last epoch reconstruct the residual, weighted by
        ``aux_k_coefficient`` (their 1/32). For the TopK families (topk,
        matryoshka).
    seed
        Seed of the batch order.
    device
        Torch device to train on.
    """

    steps: int
    batch_size: int
    lr: float
    l1_coefficient: float
    lr_warmup_fraction: float = 0.01
    lr_decay_fraction: float = 0.2
    l1_warmup_fraction: float = 0.05
    checkpoint_every: int = 1000
    log_every: int = 50
    resample_dead_every: int = 0
    resample_dead_until: float = 0.5
    ghost_grads: bool = False
    aux_k: int = 0
    aux_k_coefficient: float = 1 / 32
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        require_positive(self, ("steps", "batch_size", "checkpoint_every", "log_every"))
        if self.resample_dead_every < 0:
            raise ValueError(f"resample_dead_every must be 0 (off) or positive, got {self.resample_dead_every}")
        if not 0.0 <= self.resample_dead_until <= 1.0:
            raise ValueError(f"resample_dead_until must be a fraction of steps in [0, 1], got {self.resample_dead_until}")
        if self.aux_k < 0 or self.aux_k_coefficient <= 0:
            raise ValueError(f"aux_k must be 0 (off) or positive and aux_k_coefficient positive, "
                             f"got {self.aux_k} and {self.aux_k_coefficient}")
        if self.ghost_grads and self.aux_k:
            raise ValueError("choose one dead-feature loss: ghost_grads (L1 families) or aux_k (TopK families)")

    def check_architecture(self, architecture: str) -> None:
        """Refuse a dead-feature loss the architecture has no use for."""
        if self.ghost_grads and architecture not in BIAS_GATED_FAMILIES:
            raise ValueError(f"ghost_grads is for the L1-penalised families (gated, standard), not {architecture!r}; "
                             "TopK-style SAEs take aux_k")
        if self.aux_k and architecture not in RANKED_FAMILIES:
            raise ValueError(f"aux_k is for the TopK families (topk, matryoshka), not {architecture!r}: a closed "
                             "gate or a ReLU at zero has no pre-activation to rank; gated and standard take ghost_grads")



#: Appendix B.1/B.3: x64 SAE-Rad, trained on the full MIMIC-CXR class tokens.
PAPER_EXPANSION_FACTOR = 64
PAPER_TRAIN_CONFIG = TrainConfig(steps=200_000, batch_size=2048, lr=5e-5, l1_coefficient=8e-3)

# Changing these does not change the trained weights, so a checkpoint written
# under other values may still be resumed.
_RESUME_FREE_FIELDS = ("checkpoint_every", "device")


class NonFiniteLoss(FloatingPointError):
    """Raised by :func:`optimisation_step` before updating when a loss term is NaN/Inf."""

    def __init__(self, term: str, value: float):
        self.term, self.value = term, value
        super().__init__(f"loss term {term} is {value}")


@dataclass
class TrainResult:
    """What :func:`train_sae` returns.

    Attributes
    ----------
    sae
        The trained model (eval mode, on the training device).
    history
        Columns ``step, lr, l1_coefficient, reconstruction, sparsity,
        auxiliary, total, dead_feature_loss, l0, mse, mse_per_element,
        explained_variance`` measured on the step's batch before its update
        (``dead_feature_loss``: the ghost-gradient or AuxK term, 0 when off,
        included in ``total``), then
        ``silent_for_an_epoch`` and ``resampled_so_far``.
    seconds
        Wall-clock seconds spent in the training loop, summed over resumed sessions.
    out_dir
        Where the checkpoint and final model were written.
    """

    sae: SparseAutoencoder
    history: pd.DataFrame
    seconds: float
    out_dir: Path


class BatchOrder:
    """Row indices of every step: a fresh permutation per epoch, seeded by (seed, epoch).

    Each epoch drops its last ``n_rows % batch_size`` rows (different rows
    each epoch), so every batch has the same size.
    """

    def __init__(self, n_rows: int, batch_size: int, seed: int):
        if batch_size > n_rows:
            raise ValueError(f"batch_size {batch_size} exceeds the number of tokens {n_rows}")
        self.n_rows, self.batch_size, self.seed = n_rows, batch_size, seed
        self.batches_per_epoch = n_rows // batch_size
        self._epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def indices(self, step: int) -> np.ndarray:
        epoch, position = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.n_rows)
            self._epoch = epoch
        return self._order[position * self.batch_size:(position + 1) * self.batch_size]


def data_fingerprint(tokens: np.ndarray) -> str:
    """Shape plus a hash of the bytes: a checkpoint is resumed only on the data it was trained on."""
    contiguous = np.ascontiguousarray(tokens)
    digest = hashlib.blake2b(memoryview(contiguous).cast("B"), digest_size=12).hexdigest()
    return f"{contiguous.shape[0]}x{contiguous.shape[1]}:{contiguous.dtype}:{digest}"


def make_optimizer(sae: SparseAutoencoder, lr: float) -> torch.optim.Adam:
    """Adam(β1=0.9, β2=0.999), no weight decay (Appendix B.3).

    The fused kernel (one pass over each parameter instead of one per
    operation) is used on CPU and CUDA: on the demo SAE it took the optimiser
    update from 3.4 to 0.6 ms on one CPU thread (measured), a fifth of a
    training step. Same update rule; the results differ only by rounding.
    """
    device_type = next(sae.parameters()).device.type
    fused = True if device_type in ("cpu", "cuda") else None
    return torch.optim.Adam(sae.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0, fused=fused)


def optimisation_step(sae: SparseAutoencoder, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                      l1: float, dead_feature_loss: DeadFeatureLoss | None = None
                      ) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Forward, backward and one Adam update (with the unit-norm constraint where configured).

    ``dead_feature_loss(x, x_hat, terms)``, when given, is added to the
    loss as ``terms["dead_feature_loss"]`` (see :func:`dead_feature_loss_for`).
    Returns ``(terms, x_hat, h)`` of the forward pass, before the update.
    Raises :class:`NonFiniteLoss` naming the first non-finite term; the
    update is then not applied.
    """
    terms, x_hat, h = sae.forward_with_losses(x, l1)
    if dead_feature_loss is not None:
        terms["dead_feature_loss"] = dead_feature_loss(x, x_hat, terms)
        terms["total"] = terms["total"] + terms["dead_feature_loss"]
    # One host sync per step: cheap next to the step itself, and it keeps a
    # NaN from ever reaching the weights (and hence a checkpoint).
    if not torch.isfinite(terms["total"]):
        bad = next((name for name in terms if not torch.isfinite(terms[name])), "total")
        raise NonFiniteLoss(bad, float(terms[bad].detach()))
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    sae.project_decoder_gradient()
    optimizer.step()
    sae.normalise_decoder()
    return terms, x_hat, h


DeadFeatureLoss = Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor]


def dead_feature_loss_for(sae: SparseAutoencoder, train_config: TrainConfig, dead: torch.Tensor) -> DeadFeatureLoss | None:
    """The configured dead-feature loss of the features flagged in ``dead``, as ``(x, x_hat, terms) -> scalar``."""
    if train_config.ghost_grads:
        return lambda x, x_hat, terms: ghost_gradient_loss(sae, x, x_hat, terms["reconstruction"], dead)
    if train_config.aux_k:
        return lambda x, x_hat, terms: aux_k_loss(sae, x, x_hat, dead, train_config.aux_k,
                                                  train_config.aux_k_coefficient)
    return None


def train_sae(tokens: np.ndarray, sae_config: SAEConfig, train_config: TrainConfig, out_dir: str | Path,
              progress: bool = True, overwrite: bool = False, held_out: np.ndarray | None = None) -> TrainResult:
    """Train an SAE on ``tokens``, resuming from ``out_dir/checkpoint.pt`` if it is of the same run.

    Parameters
    ----------
    tokens
        Float array ``[n, d_in]`` (scaled class tokens).
    sae_config, train_config
        Architecture and optimisation settings.
    out_dir
        Folder for the checkpoint, the final model and ``history.csv``.
    progress
        Show a tqdm progress bar.
    overwrite
        Discard an existing checkpoint instead of resuming it (needed when it
        belongs to other configs or other data).
    held_out
        Optional ``[m, d_in]`` tokens the SAE never trains on. At every logged
        step the history then also holds their L0 and explained variance
        (``held_out_l0``, ``held_out_explained_variance``; NaN without them),
        so a growing gap to the training batches shows the SAE fitting its
        few training tokens rather than the data. They are part of the run's
        identity: a checkpoint resumes only with the same held-out tokens.

    Returns
    -------
    TrainResult

    Raises
    ------
    CheckpointMismatch
        ``out_dir`` holds a checkpoint of other configs or data and ``overwrite`` is False.
    TrainingDiverged
        A loss term became NaN/Inf; nothing after the last good checkpoint is written.
    """
    if tokens.ndim != 2 or tokens.shape[1] != sae_config.d_in:
        raise ValueError(f"tokens must have shape [n, {sae_config.d_in}], got {tokens.shape}")
    if not np.isfinite(tokens).all():
        raise ValueError("tokens contain NaN or Inf values")
    if held_out is not None:
        if held_out.ndim != 2 or held_out.shape[1] != sae_config.d_in or len(held_out) == 0:
            raise ValueError(f"held_out tokens must have shape [m > 0, {sae_config.d_in}], got {held_out.shape}")
        if not np.isfinite(held_out).all():
            raise ValueError("held_out tokens contain NaN or Inf values")
    train_config.check_architecture(sae_config.architecture)
    out_dir = Path(out_dir)
    checkpoint_path = out_dir / CHECKPOINT_FILENAME
    device = torch.device(train_config.device)
    identity = _run_identity(sae_config, train_config, tokens, held_out)

    sae = build_sae(sae_config).to(device)
    optimizer = make_optimizer(sae, train_config.lr)
    start, history, seconds, resampled = 0, [], 0.0, 0
    # Step at which each feature last fired on a training batch (-1: not yet), for the dead-feature curve.
    last_fired = torch.full((sae_config.d_sae,), -1, dtype=torch.long, device=device)
    if checkpoint_path.exists() and overwrite:
        checkpoint_path.unlink()
    if checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        check_same_run(state["identity"], identity, checkpoint_path, ("sae_config", "train_config"))
        sae.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, history, seconds = state["step"], state["history"], state["seconds"]
        if "last_fired" in state:  # absent from checkpoints written before the curve existed
            last_fired = state["last_fired"].to(device)
        resampled = state.get("resampled", 0)

    data = torch.from_numpy(np.ascontiguousarray(tokens, dtype=np.float32)).to(device)
    order = BatchOrder(len(data), train_config.batch_size, train_config.seed)
    steps = train_config.steps
    resample_every = train_config.resample_dead_every
    if resample_every and resample_every < order.batches_per_epoch:
        raise ValueError(f"resample_dead_every={resample_every} is shorter than one epoch "
                         f"({order.batches_per_epoch} batches): a feature could be called dead before it saw every token")
    sae.train()
    bar = tqdm(total=steps, initial=start, disable=not progress, unit="step",
               desc=f"SAE {sae_config.preset_name() or sae_config.architecture} x{sae_config.expansion_factor}")
    session_start = time.perf_counter()
    try:
        for step in range(start, steps):
            lr = learning_rate(step, steps, train_config.lr, train_config.lr_warmup_fraction,
                               train_config.lr_decay_fraction)
            l1 = l1_coefficient(step, steps, train_config.l1_coefficient, train_config.l1_warmup_fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = data.index_select(0, torch.from_numpy(order.indices(step)).to(device))
            dead_feature_loss = None
            if step >= order.batches_per_epoch:  # "dead" means silent on every token, so wait one epoch
                dead_feature_loss = dead_feature_loss_for(sae, train_config, last_fired <= step - order.batches_per_epoch)
            try:
                terms, x_hat, h = optimisation_step(sae, optimizer, x, l1, dead_feature_loss)
            except NonFiniteLoss as error:
                raise TrainingDiverged(step, error.term, str(error.value), checkpoint_path) from None
            last_fired[(h != 0).any(dim=0)] = step
            completed = step + 1
            if resample_every and completed % resample_every == 0 and completed <= train_config.resample_dead_until * steps:
                dead = last_fired <= step - resample_every
                count = resample_dead_features(sae, optimizer, data, dead, train_config.seed, completed)
                last_fired[dead] = step  # a fresh window for the new starts
                resampled += count
            if step % train_config.log_every == 0 or step == steps - 1:
                row = _history_row(step, lr, l1, terms, x, x_hat, h)
                row["silent_for_an_epoch"] = _silent_features(last_fired, step, order.batches_per_epoch)
                row["resampled_so_far"] = resampled
                if held_out is not None:
                    measured = evaluate_sae(sae, held_out)
                    row["held_out_l0"], row["held_out_explained_variance"] = measured["l0"], measured["explained_variance"]
                history.append(row)
                bar.set_postfix(loss=f"{row['total']:.4g}", l0=f"{row['l0']:.1f}", ev=f"{row['explained_variance']:.3f}")
            bar.update(1)
            if completed % train_config.checkpoint_every == 0 or completed == steps:
                _check_parameters_finite(sae, step, checkpoint_path)
                elapsed = seconds + time.perf_counter() - session_start
                _write_checkpoint(checkpoint_path, dict(
                    identity=identity, step=completed, seconds=elapsed, history=history, last_fired=last_fired, resampled=resampled,
                    model=sae.state_dict(), optimizer=optimizer.state_dict()))
    finally:
        bar.close()
    seconds += time.perf_counter() - session_start

    sae.eval()
    table = pd.DataFrame(history, columns=list(_HISTORY_COLUMNS))
    save_sae(sae, out_dir)
    write_table(out_dir / HISTORY_FILENAME, table)
    return TrainResult(sae=sae, history=table, seconds=seconds, out_dir=out_dir)


_HISTORY_COLUMNS = ("step", "lr", "l1_coefficient", *LOSS_TERMS, "dead_feature_loss", "l0", "mse", "mse_per_element",
                    "explained_variance", "held_out_l0", "held_out_explained_variance", "silent_for_an_epoch",
                    "resampled_so_far")


def _silent_features(last_fired: torch.Tensor, step: int, batches_per_epoch: int) -> float:
    """Features that fired on none of the last epoch's batches (NaN before one epoch has passed).

    An epoch's batches hold every training token once (but the few dropped
    rows), so this tracks "dead over the training data" during training at
    no extra cost; the weights change within the epoch, so it is a close
    proxy, not :func:`saerad.sae.evaluate_sae`'s exact count.
    """
    if step + 1 < batches_per_epoch:
        return float("nan")
    return float((last_fired <= step - batches_per_epoch).sum())


@torch.no_grad()
def _history_row(step: int, lr: float, l1: float, terms: dict[str, torch.Tensor], x: torch.Tensor,
                 x_hat: torch.Tensor, h: torch.Tensor) -> dict[str, float]:
    """Batch metrics; ``mse`` is the reconstruction term under the name evaluate_sae uses."""
    squared_error = (x - x_hat).pow(2).sum()
    variance = (x - x.mean(dim=0)).pow(2).sum()
    row = {"step": step, "lr": lr, "l1_coefficient": l1}
    row.update({name: float(terms[name].detach()) for name in LOSS_TERMS})
    row["dead_feature_loss"] = float(terms["dead_feature_loss"].detach()) if "dead_feature_loss" in terms else 0.0
    row["l0"] = float((h > 0).sum(dim=1, dtype=torch.float32).mean())
    row["mse"] = float(squared_error / x.shape[0])
    row["mse_per_element"] = float(squared_error / x.numel())
    row["explained_variance"] = float(1.0 - squared_error / variance)
    return row


#: Each optional addition to the recipe: the field that switches it on, and all its fields.
_OPTIONAL_ADDITIONS = {"resample_dead_every": ("resample_dead_every", "resample_dead_until"),
                       "ghost_grads": ("ghost_grads",),
                       "aux_k": ("aux_k", "aux_k_coefficient")}


def _run_identity(sae_config: SAEConfig, train_config: TrainConfig, tokens: np.ndarray,
                  held_out: np.ndarray | None = None) -> dict[str, Any]:
    relevant = {k: v for k, v in train_config.to_dict().items() if k not in _RESUME_FREE_FIELDS}
    # The settings of an optional addition that is off do not change the run; leaving them out also keeps
    # checkpoints written before the addition existed resumable.
    for switch, settings in _OPTIONAL_ADDITIONS.items():
        if not getattr(train_config, switch):
            for name in settings:
                del relevant[name]
    identity = {"sae_config": sae_config.to_dict(), "train_config": relevant, "data": data_fingerprint(tokens)}
    if held_out is not None:  # absent otherwise, so that runs without held-out curves keep their identity
        identity["held_out"] = data_fingerprint(held_out)
    return identity
