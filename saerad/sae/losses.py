"""The loss terms of Eqs. 3, 5, 7 and 9, each as a plain function of tensors.

Conventions shared by every function here:

* a batch ``x`` has shape ``[batch, d_in]``; feature tensors ``[batch, d_sae]``;
* decoder weights are stored as SAELens stores them, ``W_dec`` of shape
  ``[d_sae, d_in]``, so the paper's column ``W_dec[:, i]`` is our row
  ``W_dec[i]``;
* a squared reconstruction error is the squared L2 distance of each sample,
  summed over the ``d_in`` dimensions and then averaged over the batch (the
  ``1/|X| Σ_x ||x - x̂||²`` of Eq. 3). It is *not* averaged over dimensions.
"""

from __future__ import annotations

import torch
from torch import Tensor


def squared_error(x: Tensor, x_hat: Tensor) -> Tensor:
    """Mean over the batch of ``||x - x̂||²`` (summed over dimensions).

    This is ``L_reconstruct`` of Eqs. 3, 5, 7, 9, and ``L_aux`` when ``x_hat``
    is decoded from the gate's rectified pre-activations.
    """
    return (x - x_hat).pow(2).sum(dim=-1).mean()


def sparsity_penalty(activations: Tensor, l1_coefficient: float | Tensor, decoder_norms: Tensor | None = None) -> Tensor:
    """``λ · mean_batch Σ_i a_i · w_i`` with ``w_i = ||W_dec[:, i]||`` or 1.

    Parameters
    ----------
    activations
        Non-negative ``[batch, d_sae]``: h(x) for Eqs. 3 and 7, RA(x) for Eqs. 5 and 9.
    l1_coefficient
        λ (already warmed up by the caller).
    decoder_norms
        ``[d_sae]`` column norms of the decoder (Eqs. 7, 9), or None for the
        plain L1 norm (Eqs. 3, 5). Since activations are non-negative, the
        L1 norm is their sum.
    """
    if decoder_norms is not None:
        # Matrix-vector product: avoids materialising activations * norms.
        per_sample = activations @ decoder_norms
    else:
        per_sample = activations.sum(dim=-1)
    return l1_coefficient * per_sample.mean()


def auxiliary_reconstruction(
    x: Tensor, gate_activations: Tensor, W_dec: Tensor, b_dec: Tensor, stop_gradient: bool
) -> Tensor:
    """``L_aux = mean_batch ||x - x̂(RA(x))||²`` of Eqs. 5 and 9.

    Parameters
    ----------
    x
        The (uncentred) input batch.
    gate_activations
        RA(x) = ReLU(π_gate(x)), ``[batch, d_sae]``.
    W_dec, b_dec
        Decoder parameters, ``[d_sae, d_in]`` and ``[d_in]``.
    stop_gradient
        True for Eq. 5: decode with a frozen copy of the decoder, so this term
        trains only the gate (the encoder side, including a ``b_dec`` used for
        centring the encoder input). False for SAE-Rad's Eq. 9: the decoder
        learns from it as well.
    """
    if stop_gradient:
        W_dec, b_dec = W_dec.detach(), b_dec.detach()
    return squared_error(x, gate_activations @ W_dec + b_dec)


def zero_like_loss(reference: Tensor) -> Tensor:
    """A scalar zero on the device and dtype of ``reference`` (for absent terms)."""
    return torch.zeros((), dtype=reference.dtype, device=reference.device)
