"""The AuxK loss (Gao et al., 2024, Appendix A.2): dead features of a TopK-style SAE learn from the residual.

In a TopK or BatchTopK SAE a feature that is never among the largest
pre-activations gets no gradient from the reconstruction, so it can stay
unused for the whole run. Its pre-activation is usually still positive (it
just loses), so, unlike a closed gate, it can be trained directly: the
AuxK term asks the ``k_aux`` largest pre-activations *among the dead
features* to reconstruct the residual the live ones leave,

    L_aux = || (x - x̂) - W_dec^T TopK_{k_aux}(pre ⊙ dead) ||²,

added to the loss with a small weight α (Gao et al.: α = 1/32 and ``k_aux``
a power of two near ``d_in / 2``). The residual carries no gradient and no
decoder bias is added, since the live reconstruction already holds it.
Bussmann et al. (2025) train their Matryoshka BatchTopK SAEs with it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from saerad.sae.losses import squared_error
from saerad.sae.models import SparseAutoencoder


def aux_k_loss(sae: SparseAutoencoder, x: Tensor, x_hat: Tensor, dead: Tensor, k_aux: int,
               coefficient: float) -> Tensor:
    """``α · mean_batch ||r - ĝ||²`` with ``ĝ`` decoded from the ``k_aux`` largest dead pre-activations.

    Parameters
    ----------
    sae
        A ReLU-family model (``topk`` or ``matryoshka``; anything with ``b_enc``).
    x, x_hat
        The batch and the model's reconstruction of it (``[batch, d_in]``); ``x_hat`` is detached here.
    dead
        Bool ``[d_sae]``: the features that get the term.
    k_aux
        How many dead features may reconstruct each sample (fewer if fewer are dead).
    coefficient
        α, the term's weight.

    Returns
    -------
    Tensor
        A scalar; zero (with no graph) when no feature is dead.
    """
    columns = torch.nonzero(dead, as_tuple=False).flatten()
    if len(columns) == 0 or k_aux == 0:
        return torch.zeros((), dtype=x.dtype, device=x.device)
    residual = (x - x_hat).detach()
    pre = torch.relu(sae.encoder_input(x) @ sae.W_enc.index_select(1, columns) + sae.b_enc.index_select(0, columns))
    kept = pre.topk(min(k_aux, len(columns)), dim=1, sorted=False)
    sparse = torch.zeros_like(pre).scatter(1, kept.indices, kept.values)
    return coefficient * squared_error(residual, sparse @ sae.W_dec.index_select(0, columns))
