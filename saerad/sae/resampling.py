"""Resampling dead features (Bricken et al., 2023), an optional addition to the training recipe.

A feature whose gate is closed on every input gets no gradient from any loss
term (the Heaviside step, ReLU(π_gate) and the sparsity term are all flat
there), so once dead it stays dead. The paper reports no dead features for
its ×64 SAE on 240k MIMIC-CXR studies; on a small world with far fewer
distinct concepts than dictionary entries (SynthCXR) a sizeable part of the
dictionary dies in the first few hundred steps, while L0 collapses from
half the dictionary to a few dozen.

Resampling gives each dead feature a new start pointed at something the SAE
reconstructs badly:

1. score every input of a sample by its squared reconstruction error;
2. for each dead feature draw one input with probability proportional to
   the square of that error (Bricken et al.);
3. the new direction ``d`` is that input's residual ``x - x̂``, normalised:
   the part of it the dictionary does not yet explain;
4. encoder row := ``d`` scaled to ``encoder_scale`` × the mean norm of the
   live features' encoder rows; decoder column := ``d`` scaled to the mean
   live decoder norm; the gated family's ``r_mag`` and ``b_mag`` := 0;
5. the opening bias (``b_gate`` or ``b_enc``) is set so that the feature
   opens on the inputs whose projection on ``d`` is at least that of the
   drawn input's, which keeps the new feature as rare as the input it
   came from instead of firing on half the data set;
6. Adam's moment estimates of the touched entries are zeroed, so stale
   momentum does not push the fresh feature straight back.

Everything random comes from a generator seeded by ``(seed, step)``, so a
resumed run resamples exactly as an uninterrupted one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from saerad.sae.models import GatedSAE, SparseAutoencoder


@torch.no_grad()
def reconstruction_residuals(sae: SparseAutoencoder, data: Tensor, batch_size: int = 4096) -> Tensor:
    """``x - x̂`` of every row of ``data`` (``[n, d_in]``), computed in batches."""
    parts = []
    for start in range(0, len(data), batch_size):
        x = data[start:start + batch_size]
        x_hat, _ = sae(x)
        parts.append(x - x_hat)
    return torch.cat(parts)


@torch.no_grad()
def resample_dead_features(sae: SparseAutoencoder, optimizer: torch.optim.Optimizer, data: Tensor, dead: Tensor,
                           seed: int, step: int, encoder_scale: float = 0.2, sample_size: int = 16384) -> int:
    """Re-initialise the features flagged in ``dead`` (bool ``[d_sae]``) in place.

    Parameters
    ----------
    sae, optimizer
        The model being trained and its Adam optimiser (state reset for the touched entries).
    data
        Training tokens ``[n, d_in]`` on the model's device.
    dead
        Which features to resample.
    seed, step
        Seed the draw, so that a resumed run resamples identically.
    encoder_scale
        New encoder rows get this fraction of the live rows' mean norm (0.2 in Bricken et al.).
    sample_size
        At most this many rows of ``data`` are scored (drawn uniformly); the
        paper-scale token set has 240k rows.

    Returns
    -------
    int
        The number of features resampled (0 when none was dead, or every feature was).
    """
    dead_indices = torch.nonzero(dead, as_tuple=False).flatten()
    if len(dead_indices) == 0 or len(dead_indices) == sae.config.d_sae:
        return 0
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    if len(data) > sample_size:
        rows = torch.randperm(len(data), generator=generator)[:sample_size].to(data.device)
        data = data.index_select(0, rows)
    was_training = sae.training
    sae.eval()
    residuals = reconstruction_residuals(sae, data)
    sae.train(was_training)
    squared_error = residuals.pow(2).sum(dim=1)
    if not torch.isfinite(squared_error).all() or float(squared_error.sum()) <= 0:
        return 0
    weights = squared_error.pow(2).double().cpu()
    chosen = torch.multinomial(weights, len(dead_indices), replacement=True, generator=generator).to(data.device)
    directions = residuals.index_select(0, chosen)
    directions = directions / directions.norm(dim=1, keepdim=True).clamp_min(1e-12)

    alive = ~dead
    encoder_norm = sae.W_enc[:, alive].norm(dim=0).mean()
    decoder_norm = sae.W_dec[alive].norm(dim=1).mean()
    if sae.config.unit_norm_decoder:
        decoder_norm = torch.ones_like(decoder_norm)
    new_encoder = directions * (encoder_scale * encoder_norm)  # [n_dead, d_in]
    sae.W_enc[:, dead_indices] = new_encoder.T
    sae.W_dec[dead_indices] = directions * decoder_norm

    # Open exactly where the projection reaches the drawn input's own.
    drawn_projection = (sae.encoder_input(data.index_select(0, chosen)) * new_encoder).sum(dim=1)
    bias = sae.opening_bias
    bias[dead_indices] = -drawn_projection + 1e-6 * encoder_norm
    touched = [(sae.W_enc, 1), (sae.W_dec, 0), (bias, 0)]
    if isinstance(sae, GatedSAE):
        # exp(r_mag) = 1 shares the gate's scale; b_mag = b_gate makes the magnitude start at the gate's value.
        sae.r_mag[dead_indices] = 0.0
        sae.b_mag[dead_indices] = bias[dead_indices]
        touched += [(sae.r_mag, 0), (sae.b_mag, 0)]
    for parameter, dim in touched:
        state = optimizer.state.get(parameter, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key].index_fill_(dim, dead_indices, 0.0)
    return len(dead_indices)
