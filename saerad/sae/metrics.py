"""Evaluation of a trained SAE over a whole token set (Section 4.1, Appendix B.1, H).

With ``x_j`` the ``N`` tokens, ``x̂_j`` their reconstructions, ``h(x_j)`` the
features and ``x̄`` the mean token:

* ``l0``                 = (1/N) Σ_j #{i : h_i(x_j) > 0}
* ``mse``                = (1/N) Σ_j ||x_j - x̂_j||²   (summed over dimensions: Eq. 3's term)
* ``mse_per_element``    = mse / d_in
* ``explained_variance`` = 1 - Σ_j ||x_j - x̂_j||² / Σ_j ||x_j - x̄||²
  (total variance around the data-set mean, not per-dimension ratios averaged)
* ``feature_density[i]`` = (1/N) #{j : h_i(x_j) > 0}
* ``dead_features``      = #{i : feature_density[i] = 0} (never fired on this data)

Everything is accumulated batch by batch in float64, so memory stays bounded
by ``batch_size · d_sae`` whatever ``N`` is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from saerad.sae.config import RANKED_FAMILIES
from saerad.sae.models import SparseAutoencoder


@torch.no_grad()
def evaluate_sae(sae: SparseAutoencoder, tokens: np.ndarray, batch_size: int = 4096) -> dict[str, Any]:
    """Sparsity and reconstruction metrics of ``sae`` on ``tokens``.

    Parameters
    ----------
    sae
        Any of our models (evaluated on its own device).
    tokens
        ``[N, d_in]`` scaled tokens.
    batch_size
        Rows per forward pass.

    Returns
    -------
    dict
        ``n_samples``, ``l0``, ``mse``, ``mse_per_element``,
        ``explained_variance``, ``dead_features``, ``dead_fraction``,
        ``feature_density`` (``np.ndarray [d_sae]``); formulas in the module
        docstring.
    """
    if tokens.ndim != 2 or tokens.shape[1] != sae.config.d_in or len(tokens) == 0:
        raise ValueError(f"tokens must have shape [N > 0, {sae.config.d_in}], got {tokens.shape}")
    device = next(sae.parameters()).device
    was_training = sae.training
    sae.eval()
    # Two passes over the data: the mean first, so the variance is summed
    # around it directly instead of as a difference of large sums.
    mean = np.zeros(tokens.shape[1], dtype=np.float64)
    for start in range(0, len(tokens), batch_size):
        mean += np.asarray(tokens[start:start + batch_size], dtype=np.float64).sum(axis=0)
    mean /= len(tokens)
    mean_t = torch.from_numpy(mean).to(device)

    squared_error = variance = active = 0.0
    fired = torch.zeros(sae.config.d_sae, dtype=torch.int64, device=device)
    for start in range(0, len(tokens), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(tokens[start:start + batch_size], dtype=np.float32)).to(device)
        x_hat, h = sae(x)
        firing = h > 0
        squared_error += float((x - x_hat).double().pow(2).sum())
        variance += float((x.double() - mean_t).pow(2).sum())
        active += float(firing.sum())
        fired += firing.sum(dim=0)
    sae.train(was_training)

    n = len(tokens)
    density = fired.cpu().numpy().astype(np.float64) / n
    dead = int((fired == 0).sum())
    return {
        "n_samples": n,
        "l0": active / n,
        "mse": squared_error / n,
        "mse_per_element": squared_error / (n * tokens.shape[1]),
        "explained_variance": 1.0 - squared_error / variance if variance > 0 else float("nan"),
        "dead_features": dead,
        "dead_fraction": dead / sae.config.d_sae,
        "feature_density": density,
    }


@torch.no_grad()
def gate_geometry(sae: SparseAutoencoder, tokens: np.ndarray, batch_size: int = 4096) -> "pd.DataFrame":
    """Where each feature's opening direction points relative to the tokens: why dead features stay dead.

    A gated (or ReLU) feature opens where ``x' · w_i + b_i > 0`` (``w_i`` its
    encoder direction, ``b_i`` its opening bias ``b_gate`` / ``b_enc``). For
    every feature this returns how far the *best* token gets along the unit
    direction, ``max_j x'_j · w_i / ||w_i||``, beside the bias. A dead
    feature is one whose best token still falls short of ``-b_i``: either the
    bias ran away (large negative ``opening_bias``) or the direction turned
    away from every token (``best_projection`` near or below zero).

    Returns
    -------
    DataFrame
        ``feature, fired`` (tokens on which it fires), ``best_projection``,
        ``opening_bias``, ``encoder_norm``, ``decoder_norm``.
    """
    import pandas as pd

    if sae.config.architecture in RANKED_FAMILIES:
        raise ValueError(f"{sae.config.architecture} features open by rank, not by a bias; gate_geometry does not apply")
    if tokens.ndim != 2 or tokens.shape[1] != sae.config.d_in or len(tokens) == 0:
        raise ValueError(f"tokens must have shape [N > 0, {sae.config.d_in}], got {tokens.shape}")
    device = next(sae.parameters()).device
    directions = sae.W_enc / sae.W_enc.norm(dim=0, keepdim=True)
    bias = sae.opening_bias
    best = torch.full((sae.config.d_sae,), -torch.inf, dtype=torch.float64, device=device)
    fired = torch.zeros(sae.config.d_sae, dtype=torch.int64, device=device)
    for start in range(0, len(tokens), batch_size):
        x = torch.from_numpy(np.ascontiguousarray(tokens[start:start + batch_size], dtype=np.float32)).to(device)
        best = torch.maximum(best, (sae.encoder_input(x) @ directions).max(dim=0).values.double())
        fired += (sae.encode(x) > 0).sum(dim=0)
    return pd.DataFrame({
        "feature": np.arange(sae.config.d_sae), "fired": fired.cpu().numpy(),
        "best_projection": best.cpu().numpy(), "opening_bias": bias.detach().double().cpu().numpy(),
        "encoder_norm": sae.W_enc.norm(dim=0).detach().double().cpu().numpy(),
        "decoder_norm": sae.decoder_norms().detach().double().cpu().numpy(),
    })
