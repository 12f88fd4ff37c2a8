"""Work only on the features that fire: the live columns of a batch.

A trained SAE opens few gates: the demo's SAE-Rad fires ~14 of 2,048
features per token and ~455 distinct features over a batch of 128. A
feature that is closed for every sample of the batch contributes nothing to
the reconstruction, the auxiliary reconstruction or the sparsity penalty, and
receives an exactly-zero gradient in every parameter (the Heaviside gate and
the ReLU have zero derivative where they are closed). So after the one dense
encoder product that decides which gates open, every other product (the
decoder, the auxiliary decoder, and all the backward products, the encoder's
included) can be restricted to the live columns. Gradients of the other
columns are still materialised as zeros, so Adam sees the same tensors as in
the dense computation (its moments of those rows decay as they should).

:data:`GATHER_BELOW` is the live fraction under which the gathered path is
used; above it the dense path is kept, e.g. early in training when most gates
are open. ``benchmarks/sae_training.py --measure-threshold`` measured, for the
demo's ×8 SAE-Rad on one CPU thread, gathered/dense step time 0.40 at a live
fraction of 0.21, 0.65 at 0.49, 0.78 at 0.57, 0.90 at 0.79 and 1.05 at 0.88:
the break-even is near 0.85 there. 0.6 keeps a margin for devices where
gathering costs relatively more (not measured on a GPU yet).
"""

from __future__ import annotations

import torch
from torch import Tensor

#: Use the gathered path when (live columns / d_sae) is below this.
GATHER_BELOW = 0.6


def live_columns(open_mask: Tensor, gather_below: float) -> Tensor | None:
    """Indices of the columns open for at least one row, or None when the dense path is faster.

    Parameters
    ----------
    open_mask
        Boolean ``[batch, d_sae]``: where a feature can be non-zero.
    gather_below
        Live fraction under which the gathered path is chosen (0 never, > 1 always).
    """
    if gather_below <= 0.0:
        return None
    live = open_mask.any(dim=0)
    count = int(live.sum())
    if count >= gather_below * live.numel():
        return None
    return live.nonzero().squeeze(1)


class _ProductColumns(torch.autograd.Function):
    """``(x @ W)[:, columns]`` read from an already computed ``x @ W``; backward only touches ``columns``.

    Forward reuses the dense product (so the values are bit-identical to the
    dense path); backward computes ``x.T @ g`` for the live columns of ``W``
    only and ``g @ W[:, columns].T`` for ``x``, instead of the dense products.
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, product: Tensor, columns: Tensor) -> Tensor:
        ctx.save_for_backward(x, weight, columns)
        return product.index_select(1, columns)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, weight, columns = ctx.saved_tensors
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = grad @ weight.index_select(1, columns).T
        if ctx.needs_input_grad[1]:
            grad_weight = torch.zeros_like(weight).index_copy_(1, columns, x.T @ grad)
        return grad_x, grad_weight, None, None


def product_columns(x: Tensor, weight: Tensor, product: Tensor, columns: Tensor) -> Tensor:
    """Columns ``columns`` of ``x @ weight``, given ``product = (x @ weight).detach()``.

    Differentiable in ``x`` and ``weight``; see :class:`_ProductColumns`.
    """
    return _ProductColumns.apply(x, weight, product, columns)


def scatter_columns(values: Tensor, columns: Tensor, width: int) -> Tensor:
    """A ``[batch, width]`` tensor of zeros holding ``values`` in ``columns`` (differentiable)."""
    dense = values.new_zeros(values.shape[0], width)
    return dense.index_copy(1, columns, values)
