"""The SAE modules: gated (Eqs. 4, 8), standard ReLU (Eqs. 1, 6), TopK and Matryoshka BatchTopK.

Storage follows SAELens so that export is a rename-free copy of the state
dict: ``W_enc`` is ``[d_in, d_sae]`` (the paper's ``W_gate`` / ``W_enc``
transposed, so encoding is ``x @ W_enc``), ``W_dec`` is ``[d_sae, d_in]``
(the paper's ``W_dec`` transposed: its *row* ``i`` is the paper's column
``W_dec[:, i]``, the direction of feature ``i``).

Every model offers the same interface:

``encode(x) -> h``                 dense ``[batch, d_sae]``
``decode(h) -> x̂``                 ``h @ W_dec + b_dec``
``forward(x) -> (x̂, h)``
``loss_terms(x, λ)``               dict with ``reconstruction``, ``sparsity``
                                   (λ already applied), ``auxiliary``, ``total``
``feature_activations(x)``         ``h_i(x) · ||W_dec[:, i]||`` (Section 4.1)
``concept_directions()``           unit decoder directions, ``[d_sae, d_in]``
``opening_bias``                   gated and ReLU families: the bias a feature must overcome to fire
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from saerad.sae.config import SAEConfig
from saerad.sae.losses import auxiliary_reconstruction, sparsity_penalty, squared_error, zero_like_loss
from saerad.sae.sparse import GATHER_BELOW, live_columns, product_columns, scatter_columns


def random_unit_directions(count: int, dim: int, seed: int) -> Tensor:
    """``count`` random unit vectors in ``R^dim`` (rows), from a seeded generator.

    Gaussian vectors normalised to unit length are uniform on the sphere,
    which is what "rows point in random directions" (Appendix B.3) asks for.
    """
    generator = torch.Generator().manual_seed(seed)
    directions = torch.randn(count, dim, generator=generator, dtype=torch.float32)
    return directions / directions.norm(dim=1, keepdim=True)


class SparseAutoencoder(nn.Module):
    """Parameters and behaviour shared by every family: the decoder and the encoder directions.

    Initialisation (Appendix B.3): biases zero, encoder directions random
    unit vectors, and the decoder equal to the transposed encoder, so every
    decoder column starts at unit norm.
    """

    def __init__(self, config: SAEConfig):
        super().__init__()
        self.config = config
        directions = random_unit_directions(config.d_sae, config.d_in, config.seed)
        self.W_enc = nn.Parameter(directions.T.contiguous())
        self.W_dec = nn.Parameter(directions.clone())
        self.b_dec = nn.Parameter(torch.zeros(config.d_in))
        # Not part of the config or the state dict: it changes speed, not results (beyond float rounding).
        self.gather_below = GATHER_BELOW

    # -- shared pieces -----------------------------------------------------------

    def encoder_input(self, x: Tensor) -> Tensor:
        """``x - b_dec`` when the config centres the input (Eqs. 1, 4), else ``x`` (Eqs. 6, 8)."""
        return x - self.b_dec if self.config.centre_input else x

    def decode(self, h: Tensor) -> Tensor:
        """``x̂ = W_dec h + b_dec`` (Eq. 2), batched as ``h @ W_dec + b_dec``.

        When few features fire in the batch (live fraction below
        ``gather_below``), only the live rows of ``W_dec`` are multiplied; see
        :mod:`saerad.sae.sparse`. Not when ``h`` itself needs a gradient: the
        gradient of ``x̂`` with respect to a zero entry of ``h`` is not zero
        (the training passes restrict their columns where it is known to be).
        """
        gather = h.dim() == 2 and not (h.requires_grad and torch.is_grad_enabled())
        columns = live_columns(h.detach() != 0, self.gather_below) if gather else None
        if columns is None:
            return h @ self.W_dec + self.b_dec
        return h.index_select(1, columns) @ self.W_dec.index_select(0, columns) + self.b_dec

    def _losses_on_live_columns(self, x: Tensor, opening_bias: Tensor, per_feature: tuple[Tensor, ...],
                                losses, l1_coefficient: float | Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """``losses(x, x' W_enc, *per_feature, λ)`` on the features that open for some sample of the batch.

        A feature can be non-zero only where ``x' W_enc + opening_bias > 0``.
        Past that one dense product, ``losses`` runs on the live columns alone
        (the per-feature parameters restricted to them, see
        :mod:`saerad.sae.sparse`), and ``h`` is scattered back to full width;
        when too many features are live the dense path runs instead.
        """
        x_in = self.encoder_input(x)
        product = x_in @ self.W_enc
        columns = live_columns(product.detach() + opening_bias.detach() > 0, self.gather_below)
        if columns is None:
            return losses(x, product, *per_feature, l1_coefficient)
        live = [parameter.index_select(0, columns) for parameter in per_feature]
        product_live = product_columns(x_in, self.W_enc, product.detach(), columns)
        terms, x_hat, h_live = losses(x, product_live, *live, l1_coefficient)
        return terms, x_hat, scatter_columns(h_live, columns, self.config.d_sae)

    def decoder_norms(self) -> Tensor:
        """``||W_dec[:, i]||`` for every feature, shape ``[d_sae]`` (differentiable)."""
        return self.W_dec.norm(dim=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(x̂, h)``."""
        h = self.encode(x)
        return self.decode(h), h

    def loss_terms(self, x: Tensor, l1_coefficient: float | Tensor) -> dict[str, Tensor]:
        """The scalar loss terms on batch ``x``; see :meth:`forward_with_losses`."""
        return self.forward_with_losses(x, l1_coefficient)[0]

    def feature_activations(self, x: Tensor) -> Tensor:
        """``h_i(x) · ||W_dec[:, i]||``: the activation the paper reports and thresholds.

        With free decoder norms, h alone is not comparable across features;
        this product is the size of feature i's contribution to x̂.
        """
        return self.encode(x) * self.decoder_norms()

    @torch.no_grad()
    def concept_directions(self) -> Tensor:
        """Unit-normalised decoder columns, shape ``[d_sae, d_in]`` (row i = feature i)."""
        return self.W_dec / self.W_dec.norm(dim=1, keepdim=True)

    # -- unit-norm decoder constraint ----------------------------------------------

    @torch.no_grad()
    def project_decoder_gradient(self) -> None:
        """Remove from ``W_dec.grad`` the component along each decoder column.

        Only the tangential part of the gradient can move a unit vector along
        the sphere; the radial part would be undone by the renormalisation
        anyway but would still distort Adam's moment estimates.
        No-op unless ``unit_norm_decoder``.
        """
        if not self.config.unit_norm_decoder or self.W_dec.grad is None:
            return
        unit = self.W_dec / self.W_dec.norm(dim=1, keepdim=True)
        radial = (self.W_dec.grad * unit).sum(dim=1, keepdim=True)
        self.W_dec.grad.sub_(radial * unit)

    @torch.no_grad()
    def normalise_decoder(self) -> None:
        """Rescale every decoder column to unit norm (no-op unless ``unit_norm_decoder``)."""
        if self.config.unit_norm_decoder:
            self.W_dec.div_(self.W_dec.norm(dim=1, keepdim=True))

    # -- family-specific ------------------------------------------------------------

    def encode(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_with_losses(self, x: Tensor, l1_coefficient: float | Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """One fused pass computing the loss terms, the reconstruction and the features.

        Returns
        -------
        (terms, x_hat, h)
            ``terms`` has ``reconstruction``, ``sparsity`` (already times λ),
            ``auxiliary`` (zero where the family has none) and ``total``;
            reconstruction errors are summed over dimensions and averaged
            over the batch.
        """
        raise NotImplementedError  # pragma: no cover - abstract


def open_gates(gate: Tensor) -> Tensor:
    """The Heaviside step ``1[gate > 0]`` as a float tensor, with no gradient.

    The step has zero derivative almost everywhere, so the gate path learns
    only from the sparsity and auxiliary terms (Eqs. 5, 9). Comparing
    straight into a float tensor avoids a bool intermediate whose conversion
    costs about ten times the comparison on CPU.
    """
    detached = gate.detach()
    return torch.gt(detached, 0, out=torch.empty_like(detached))


class GatedSAE(SparseAutoencoder):
    """Gated encoder with weight sharing: Eq. 4 (centred) or Eq. 8 (SAE-Rad).

    ``h = 1[π_gate > 0] ⊙ ReLU(W_mag x' + b_mag)`` with ``π_gate = W_gate x' + b_gate``,
    ``W_mag = exp(r_mag) ⊙ W_gate`` (row-wise), ``x' = x - b_dec`` or ``x``.
    ``W_enc`` holds ``W_gate`` transposed.
    """

    def __init__(self, config: SAEConfig):
        super().__init__(config)
        self.b_gate = nn.Parameter(torch.zeros(config.d_sae))
        self.b_mag = nn.Parameter(torch.zeros(config.d_sae))
        self.r_mag = nn.Parameter(torch.zeros(config.d_sae))

    @property
    def opening_bias(self) -> nn.Parameter:
        """The bias a feature's gate pre-activation must overcome to open: ``b_gate``."""
        return self.b_gate

    def pre_activations(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(π_gate, magnitude pre-activation)``, both ``[batch, d_sae]``.

        ``x' W_mag^T = (x' W_gate^T) ⊙ exp(r_mag)`` because the rescale is per
        feature, so one matrix product serves both paths.
        """
        shared = self.encoder_input(x) @ self.W_enc
        return shared + self.b_gate, shared * torch.exp(self.r_mag) + self.b_mag

    def encode(self, x: Tensor) -> Tensor:
        gate, magnitude = self.pre_activations(x)
        return open_gates(gate) * torch.relu(magnitude)

    def forward_with_losses(self, x, l1_coefficient):
        # A feature whose gate is closed for every sample carries no loss and no gradient (Heaviside and ReLU).
        return self._losses_on_live_columns(x, self.b_gate, (self.b_gate, self.r_mag, self.b_mag, self.W_dec),
                                            self._losses, l1_coefficient)

    def _losses(self, x: Tensor, shared: Tensor, b_gate: Tensor, r_mag: Tensor, b_mag: Tensor, W_dec: Tensor,
                l1_coefficient: float | Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Eqs. 5/9 given ``x' W_gate^T`` and the per-feature parameters (all features, or the live ones)."""
        gate = shared + b_gate
        h = open_gates(gate) * torch.relu(shared * torch.exp(r_mag) + b_mag)
        x_hat = h @ W_dec + self.b_dec
        rectified_gate = torch.relu(gate)  # RA(x)
        reconstruction = squared_error(x, x_hat)
        weights = W_dec.norm(dim=1) if self.config.decoder_norm_in_sparsity else None
        sparsity = sparsity_penalty(rectified_gate, l1_coefficient, weights)
        auxiliary = auxiliary_reconstruction(x, rectified_gate, W_dec, self.b_dec, self.config.aux_stop_gradient)
        terms = dict(reconstruction=reconstruction, sparsity=sparsity, auxiliary=auxiliary,
                     total=reconstruction + sparsity + auxiliary)
        return terms, x_hat, h


class StandardSAE(SparseAutoencoder):
    """ReLU encoder: Eq. 1 (centred, ``vanilla``) or Eq. 6 (``conerly``).

    Loss Eq. 3 (plain L1) or Eq. 7 (L1 weighted by decoder norms).
    """

    def __init__(self, config: SAEConfig):
        super().__init__(config)
        self.b_enc = nn.Parameter(torch.zeros(config.d_sae))

    @property
    def opening_bias(self) -> nn.Parameter:
        """The bias a feature's pre-activation must overcome to fire: ``b_enc``."""
        return self.b_enc

    def encode(self, x: Tensor) -> Tensor:
        return torch.relu(self.encoder_input(x) @ self.W_enc + self.b_enc)

    def forward_with_losses(self, x, l1_coefficient):
        # A feature inactive for every sample carries no loss and no gradient (ReLU).
        return self._losses_on_live_columns(x, self.b_enc, (self.b_enc, self.W_dec), self._losses, l1_coefficient)

    def _losses(self, x: Tensor, product: Tensor, b_enc: Tensor, W_dec: Tensor,
                l1_coefficient: float | Tensor) -> tuple[dict[str, Tensor], Tensor, Tensor]:
        """Eqs. 3/7 given ``x' W_enc^T`` and the per-feature parameters (all features, or the live ones)."""
        h = torch.relu(product + b_enc)
        x_hat = h @ W_dec + self.b_dec
        reconstruction = squared_error(x, x_hat)
        weights = W_dec.norm(dim=1) if self.config.decoder_norm_in_sparsity else None
        sparsity = sparsity_penalty(h, l1_coefficient, weights)
        auxiliary = zero_like_loss(reconstruction)
        terms = dict(reconstruction=reconstruction, sparsity=sparsity, auxiliary=auxiliary,
                     total=reconstruction + sparsity)
        return terms, x_hat, h


class TopKSAE(StandardSAE):
    """``h = TopK_k(ReLU(W_enc x' + b_enc))``: sparsity by construction, so no penalty.

    λ is accepted (for a uniform interface) and ignored; ``sparsity`` is zero.
    """

    def encode(self, x: Tensor) -> Tensor:
        dense = torch.relu(self.encoder_input(x) @ self.W_enc + self.b_enc)
        values, indices = dense.topk(self.config.k, dim=-1, sorted=False)
        return torch.zeros_like(dense).scatter(-1, indices, values)

    def forward_with_losses(self, x, l1_coefficient):
        h = self.encode(x)
        x_hat = self.decode(h)
        reconstruction = squared_error(x, x_hat)
        zero = zero_like_loss(reconstruction)
        terms = dict(reconstruction=reconstruction, sparsity=zero, auxiliary=zero, total=reconstruction)
        return terms, x_hat, h


class MatryoshkaSAE(StandardSAE):
    """Matryoshka BatchTopK SAE (Bussmann et al., 2025): nested dictionaries, each a complete SAE.

    Training: ``pre = ReLU(W_enc x' + b_enc)``; of the ``batch × d_sae``
    values of a batch, the ``k · batch`` largest are kept (BatchTopK), so
    inputs share a sparsity budget instead of each taking exactly ``k``.
    The loss is the mean over the prefixes ``m_1 < … < m_G = d_sae`` of the
    squared error of reconstructing ``x`` from the first ``m_g`` features
    alone. The first features must therefore carry what most inputs need on
    their own, which is where a general concept ("effusion") lands before it
    could split into specific ones ("left effusion", "right effusion").

    Inference: a single threshold replaces the batch rule, ``h = pre ·
    1[pre > θ]``; θ is a running mean (kept in the state dict as ``threshold``,
    one entry per feature, all equal, which is SAELens's JumpReLU layout) of
    the smallest value kept in each training batch.

    ``terms["reconstruction"]`` is that mean over prefixes (the objective);
    ``x_hat`` is the full dictionary's reconstruction; no sparsity penalty.
    """

    #: Weight of the newest batch in the running threshold.
    THRESHOLD_MOMENTUM = 0.01

    def __init__(self, config: SAEConfig):
        super().__init__(config)
        # -1: not yet estimated (every positive pre-activation passes).
        self.register_buffer("threshold", torch.full((config.d_sae,), -1.0))

    def pre_activations(self, x: Tensor) -> Tensor:
        return torch.relu(self.encoder_input(x) @ self.W_enc + self.b_enc)

    def encode(self, x: Tensor) -> Tensor:
        if self.training:
            return self._batch_top_k(self.pre_activations(x))[0]
        pre = self.pre_activations(x)
        return pre * (pre > self.threshold)

    def _batch_top_k(self, pre: Tensor) -> tuple[Tensor, Tensor]:
        """Keep the ``k · batch`` largest entries of the batch; also return the smallest kept value."""
        flat = pre.flatten()
        kept = flat.topk(min(self.config.k * pre.shape[0], flat.numel()), sorted=False)
        h = torch.zeros_like(flat).scatter(0, kept.indices, kept.values).view_as(pre)
        return h, kept.values.detach().min()

    def prefix_losses(self, x: Tensor, h: Tensor) -> list[Tensor]:
        """Squared reconstruction error of each nested dictionary (summed over dimensions, batch mean)."""
        return [squared_error(x, h[:, :size] @ self.W_dec[:size] + self.b_dec) for size in self.config.prefixes]

    def forward_with_losses(self, x, l1_coefficient):
        h, smallest_kept = self._batch_top_k(self.pre_activations(x))
        if self.training:
            with torch.no_grad():
                fresh = self.threshold[0] < 0
                momentum = 1.0 if fresh else self.THRESHOLD_MOMENTUM
                self.threshold.mul_(1 - momentum).add_(momentum * smallest_kept)
        reconstruction = torch.stack(self.prefix_losses(x, h)).mean()
        x_hat = h @ self.W_dec + self.b_dec
        zero = zero_like_loss(reconstruction)
        terms = dict(reconstruction=reconstruction, sparsity=zero, auxiliary=zero, total=reconstruction)
        return terms, x_hat, h


_FAMILIES: dict[str, type[SparseAutoencoder]] = {"gated": GatedSAE, "standard": StandardSAE, "topk": TopKSAE,
                                                 "matryoshka": MatryoshkaSAE}


def build_sae(config: SAEConfig) -> SparseAutoencoder:
    """A freshly initialised SAE of the family ``config.architecture``."""
    return _FAMILIES[config.architecture](config)
