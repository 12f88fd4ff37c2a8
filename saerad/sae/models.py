"""The SAE modules: gated (Eqs. 4, 8), standard ReLU (Eqs. 1, 6) and TopK.

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
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from saerad.sae.config import SAEConfig
from saerad.sae.losses import auxiliary_reconstruction, sparsity_penalty, squared_error, zero_like_loss


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

    # -- shared pieces -----------------------------------------------------------

    def encoder_input(self, x: Tensor) -> Tensor:
        """``x - b_dec`` when the config centres the input (Eqs. 1, 4), else ``x`` (Eqs. 6, 8)."""
        return x - self.b_dec if self.config.centre_input else x

    def decode(self, h: Tensor) -> Tensor:
        """``x̂ = W_dec h + b_dec`` (Eq. 2), batched as ``h @ W_dec + b_dec``.

        A sparse decoder (gathering only the rows of ``W_dec`` whose features
        fire, as h is mostly zeros) would replace this one line; the dense
        product is faster at the demo's sizes and is kept until a benchmark
        says otherwise.
        """
        return h @ self.W_dec + self.b_dec

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

    def _sparsity_weights(self) -> Tensor | None:
        return self.decoder_norms() if self.config.decoder_norm_in_sparsity else None


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
        gate, magnitude = self.pre_activations(x)
        h = open_gates(gate) * torch.relu(magnitude)
        x_hat = self.decode(h)
        rectified_gate = torch.relu(gate)  # RA(x)
        reconstruction = squared_error(x, x_hat)
        sparsity = sparsity_penalty(rectified_gate, l1_coefficient, self._sparsity_weights())
        auxiliary = auxiliary_reconstruction(x, rectified_gate, self.W_dec, self.b_dec, self.config.aux_stop_gradient)
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

    def encode(self, x: Tensor) -> Tensor:
        return torch.relu(self.encoder_input(x) @ self.W_enc + self.b_enc)

    def forward_with_losses(self, x, l1_coefficient):
        h = self.encode(x)
        x_hat = self.decode(h)
        reconstruction = squared_error(x, x_hat)
        sparsity = sparsity_penalty(h, l1_coefficient, self._sparsity_weights())
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


_FAMILIES: dict[str, type[SparseAutoencoder]] = {"gated": GatedSAE, "standard": StandardSAE, "topk": TopKSAE}


def build_sae(config: SAEConfig) -> SparseAutoencoder:
    """A freshly initialised SAE of the family ``config.architecture``."""
    return _FAMILIES[config.architecture](config)
