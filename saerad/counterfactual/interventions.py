"""SAE feature interventions (Eqs. 13-14) and their images, decoded from shared noise.

Scale of β
----------
``do(i, β)`` sets the SAE's *code* ``h_i`` (the number multiplying decoder
row ``i`` in ``x̂ = h W_dec + b_dec``), as in Eq. 13. The activation the book
reports, thresholds and tabulates (``features/feature_stats.csv``) is
``a_i = h_i · ||W_dec[i]||``; the two agree only where the decoder row has
unit norm, which SAE-Rad does not impose. :func:`code_value` converts.

The counterfactual token
------------------------
Eq. 14 decodes the intervened code, ``W_dec do(i, β; h) + b_dec``, and the
appendix adds the SAE's reconstruction error back, so that what the SAE
cannot represent is kept: ``z̃ = W_dec do(i, β; h) + b_dec - (ẑ - z)``.
We compute the same quantity as ``z + (decode(do(h)) - decode(h))``: the
order of the floating-point operations then makes the null intervention
(``β = h_i``) return ``z`` bit for bit, and a reconstruction and its null
counterfactual are the same image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from saerad.counterfactual.decoder import ConditionalDDPM, sample_images
from saerad.sae.models import SparseAutoencoder


def _as_tensor(tokens: Tensor | np.ndarray, sae: SparseAutoencoder) -> Tensor:
    tokens = torch.as_tensor(np.asarray(tokens, dtype=np.float32)) if isinstance(tokens, np.ndarray) else tokens
    if tokens.dim() != 2 or tokens.shape[1] != sae.config.d_in:
        raise ValueError(f"tokens must have shape [n, {sae.config.d_in}] (the SAE's d_in), got {list(tokens.shape)}")
    return tokens.to(sae.W_dec.device, sae.W_dec.dtype)


def _check_feature(sae: SparseAutoencoder, feature: int) -> int:
    if not 0 <= int(feature) < sae.config.d_sae:
        raise ValueError(f"feature must be an index in [0, {sae.config.d_sae}), got {feature}")
    return int(feature)


def code_value(sae: SparseAutoencoder, feature: int, activation: float) -> float:
    """The code ``h_i`` whose reported activation ``h_i · ||W_dec[i]||`` is ``activation``."""
    feature = _check_feature(sae, feature)
    return float(activation) / float(sae.decoder_norms()[feature].detach())


def do(h: Tensor, feature: int, value: float | Tensor) -> Tensor:
    """Eq. 13: a copy of the codes ``h`` (``[n, d_sae]``) with column ``feature`` set to ``value``.

    ``value`` is a number (the same β for every row) or a ``[n]`` tensor (one per row).
    """
    if h.dim() != 2 or not 0 <= int(feature) < h.shape[1]:
        raise ValueError(f"need codes [n, d_sae] and a feature index below d_sae; got {list(h.shape)} and {feature}")
    out = h.clone()
    out[:, int(feature)] = torch.as_tensor(value, dtype=h.dtype, device=h.device)
    return out


@torch.no_grad()
def counterfactual_tokens(sae: SparseAutoencoder, tokens: Tensor | np.ndarray, feature: int,
                          value: float | Tensor, codes: Tensor | None = None) -> Tensor:
    """Eq. 14 plus the reconstruction error δ: ``z̃ = decode(do(i, β; h)) - (decode(h) - z)``.

    Parameters
    ----------
    tokens
        ``z``, ``[n, d_in]`` (scaled class tokens, the SAE's input).
    feature, value
        ``i`` and β, on the code scale ``h`` (see the module docstring).
    codes
        ``h(z)`` if already computed; else the SAE encodes ``tokens``.

    Returns
    -------
    Tensor
        ``[n, d_in]``; equal to ``tokens`` bit for bit where β equals the current code.
    """
    z = _as_tensor(tokens, sae)
    feature = _check_feature(sae, feature)
    h = sae.encode(z) if codes is None else codes
    return z + (sae.decode(do(h, feature, value)) - sae.decode(h))


@torch.no_grad()
def reconstruction_token(sae: SparseAutoencoder, tokens: Tensor | np.ndarray) -> Tensor:
    """``ẑ = decode(h(z))``: Eq. 14 without δ and without an intervention (what the SAE alone keeps)."""
    z = _as_tensor(tokens, sae)
    return sae.decode(sae.encode(z))


@dataclass
class Cycle:
    """Tokens of an add-then-remove cycle (reversibility).

    Attributes
    ----------
    original_codes
        ``h_i(z)``, the code each token started with, ``[n]``.
    added
        ``z̃ = z`` with feature ``i`` set to β.
    readback
        ``h_i(z̃)``: what the SAE reads in the counterfactual token, ``[n]``.
    returned
        ``z̃`` re-encoded by the SAE, feature ``i`` set back to its original
        code, decoded with the new reconstruction error.
    """

    original_codes: Tensor
    added: Tensor
    readback: Tensor
    returned: Tensor


@torch.no_grad()
def add_then_remove(sae: SparseAutoencoder, tokens: Tensor | np.ndarray, feature: int, beta: float) -> Cycle:
    """Set feature ``i`` to β, then undo it *on the counterfactual token* (Appendix D's cycle).

    The second intervention starts from ``z̃`` as if it were a new token: the
    SAE encodes it afresh and feature ``i`` is set back to the code it had in
    ``z``. Because every other feature's change is carried by the new δ,
    ``returned - z = (β - readback) · W_dec[i]``: the cycle closes exactly
    when the SAE reads back the β that was written.
    """
    z = _as_tensor(tokens, sae)
    feature = _check_feature(sae, feature)
    h = sae.encode(z)
    added = counterfactual_tokens(sae, z, feature, beta, codes=h)
    h_added = sae.encode(added)
    returned = counterfactual_tokens(sae, added, feature, h[:, feature], codes=h_added)
    return Cycle(original_codes=h[:, feature].clone(), added=added, readback=h_added[:, feature].clone(),
                 returned=returned)


def decode_conditions(model: ConditionalDDPM, conditions: dict[str, Tensor | np.ndarray], noise: Tensor, steps: int,
                      batch_size: int = 64) -> dict[str, np.ndarray]:
    """Images of several sets of tokens for the same images, all from the same starting noise.

    Each set is sampled separately with the same batching, so two sets with
    identical tokens give identical images (bit for bit), and any difference
    between two images of one row comes from the tokens alone.

    Parameters
    ----------
    conditions
        Name to ``[n, token_dim]`` tokens; every set has ``n = len(noise)`` rows.
    noise
        ``[n, 1, size, size]`` starting noise, row ``k`` for image ``k`` in every set.
    steps
        DDIM steps.

    Returns
    -------
    dict
        Name to ``float32 [n, size, size]`` images in ``[0, 1]``.
    """
    images = {}
    for name, tokens in conditions.items():
        if len(tokens) != len(noise):
            raise ValueError(f"condition {name!r} has {len(tokens)} tokens for {len(noise)} noise images")
        tokens = tokens.detach().cpu() if isinstance(tokens, Tensor) else tokens
        images[name] = sample_images(model, tokens, noise, steps, batch_size=batch_size)
    return images
