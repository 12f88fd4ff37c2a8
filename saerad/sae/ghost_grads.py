"""Ghost gradients (Anthropic, "Circuits Updates", January 2024), an optional addition to the training recipe.

A feature whose gate is closed on every input gets no gradient from any loss
term, so it stays dead (see :mod:`saerad.sae.resampling`). Ghost gradients
give the dead features a gradient without letting them change the model's
output: an extra loss asks the dead features *alone* to reconstruct what the
live ones leave over, the residual ``r = x - x̂``.

For the features marked dead:

1. ``g = exp(π)`` where ``π`` is the opening pre-activation (``π_gate`` for
   the gated family, ``W_enc x' + b_enc`` for ReLU ones). The exponential
   is positive everywhere and increasing, so a closed feature still learns
   in which direction opening would help;
2. ``ĝ = g W_dec[dead]``, rescaled per sample to half the residual's norm
   (the rescale carries no gradient), so the ghost output is never larger
   than what it is asked to explain;
3. ``L_ghost = mean_batch ||r - ĝ||²``, with ``r`` detached, multiplied by
   ``L_reconstruct / L_ghost`` (detached) so it weighs as much as the
   reconstruction term however small it is.

It touches only the dead features' encoder columns, opening biases and
decoder rows, and the model's forward pass is unchanged: at evaluation time
ghost gradients leave no trace. The paper did not need them ("none of our
features were dead at the end of training", Appendix B.3).
"""

from __future__ import annotations

import torch
from torch import Tensor

from saerad.sae.losses import squared_error
from saerad.sae.models import SparseAutoencoder

def ghost_gradient_loss(sae: SparseAutoencoder, x: Tensor, x_hat: Tensor, reconstruction: Tensor,
                        dead: Tensor) -> Tensor:
    """The ghost loss of the features flagged in ``dead`` (bool ``[d_sae]``) on batch ``x``.

    Parameters
    ----------
    sae
        The model being trained (any family with ``opening_bias``).
    x, x_hat
        The batch and the model's reconstruction of it (``[batch, d_in]``); ``x_hat`` is detached here.
    reconstruction
        The batch's reconstruction loss, whose size the ghost loss is scaled to (detached here).
    dead
        Which features get ghost gradients.

    Returns
    -------
    Tensor
        A scalar; zero (with no graph) when no feature is dead.
    """
    columns = torch.nonzero(dead, as_tuple=False).flatten()
    if len(columns) == 0:
        return torch.zeros((), dtype=x.dtype, device=x.device)
    residual = (x - x_hat).detach()
    pre = sae.encoder_input(x) @ sae.W_enc.index_select(1, columns) + sae.opening_bias.index_select(0, columns)
    # The per-sample rescale below cancels any per-sample factor, so shifting π by its row maximum changes
    # nothing but keeps exp() finite: a feature far below opening (π = -200) would otherwise underflow to 0.
    pre = pre - pre.detach().max(dim=1, keepdim=True).values
    ghost = torch.exp(pre) @ sae.W_dec.index_select(0, columns)
    scale = residual.norm(dim=1, keepdim=True) / (2.0 * ghost.norm(dim=1, keepdim=True) + 1e-6)
    ghost = ghost * scale.detach()
    loss = squared_error(residual, ghost)
    return loss * (reconstruction.detach() / (loss.detach() + 1e-12))
