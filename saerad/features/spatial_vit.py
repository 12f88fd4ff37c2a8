"""Where in the image an SAE feature's pre-activation comes from, for a DINOv2 vision transformer (Rad-DINO).

The paper's encoder, Rad-DINO, is a ``transformers`` ``Dinov2Model``. Its
class token (``pooler_output``) is not a mean of patch tokens, as a ResNet's is
(:mod:`saerad.features.spatial`), but the final-layer-normed CLS token. This
module splits the SAE's pre-activation of that token over the image patches,
exactly, through the last transformer block's attention.

What is decomposed
------------------
Let ``u`` (``[T, D]``: CLS, then any register tokens, then the ``P = h · w``
patch tokens) be the residual stream entering the last block. DINOv2's block
(``Dinov2Layer``, pre-norm, layer scale ``λ1``, ``λ2``) gives the CLS output

    r = u_0 + λ1 ⊙ (W_o c + b_o) + λ2 ⊙ MLP(LN2(u_0 + λ1 ⊙ (W_o c + b_o))),
    c = concat_heads Σ_t A_h[t] (W_v,h LN1(u)_t + b_v,h),

with ``A_h[t]`` head ``h``'s softmax attention weight of the CLS query on token
``t`` (scaled dot product of the layer-normed CLS query with token ``t``'s key;
each head has its own weights, the heads' contexts are concatenated, then one
output projection ``W_o`` mixes them). Since ``Σ_t A_h[t] = 1`` for every
head, the value bias adds the constant ``b_v`` and

    r = Σ_t λ1 ⊙ W_o concat_h(A_h[t] W_v,h LN1(u)_t)        (one term per token t)
        + u_0 + λ1 ⊙ (W_o b_v + b_o) + λ2 ⊙ MLP(...),

a sum of per-token *attention terms* and non-token terms. The pooled token is
``z = LN(r) = γ ⊙ (r - mean(r)) / σ + β``. Freezing ``σ`` at its value on the
actual ``r`` (the standard "frozen LayerNorm" linearisation; the mean is no
approximation, because subtracting the mean of the coordinates is a linear
map of ``r`` and is applied to each term), each term ``t_k`` maps to
``γ ⊙ (t_k - mean(t_k)) / σ`` and ``β`` is one more term, so

    z = Σ_k γ ⊙ (t_k - mean(t_k)) / σ + β        exactly, for this image.

The SAE's pre-activation is affine in its input, ``a_i(x) = (x - o) · w_i + b_i``
(:func:`saerad.features.spatial.affine_preactivation`), with ``x = c z`` (the
encode stage's token scale ``c``). So

    a_i(c z) = Σ_patches p  c (γ ⊙ (t_p - mean(t_p)) / σ) · w_i   +   remainder_i,

where the **patch contribution** of patch ``p`` is the first sum's term and the
**remainder** collects everything that is not a patch: the CLS token's
attention to itself, the register tokens' attention terms (DINOv2 with
registers), the residual ``u_0``, the MLP term, the biases (value, output
projection, layer norm ``β``) and the SAE's own offset and bias. The identity
holds to float64 rounding of the reconstructed token (the last block is
recomputed in float64 from the float32 input of that block, and checked
against the model's own block output and ``pooler_output``); the pooled
pre-activation computed from the float32 ``pooler_output`` the SAE sees
differs from it by that token's float32 rounding only.

Maps: :class:`saerad.features.spatial.SpatialAttribution` has
``contributions`` (patch contributions, ``[batch, n_features, h, w]``) equal
to ``position_maps / P``; ``position_maps`` is thus ``P`` times a patch's
contribution, the pooled pre-activation minus the remainder the image would
have if every patch contributed as this one does. So in both encoders
``position_maps.mean((-2, -1)) + remainder == pooled``, and ResNet and ViT
maps are read on the same scale (for the ResNet the remainder is zero).

What the maps mean and do not mean
----------------------------------
* A patch's contribution is its **attention-weighted value vector**, carried
  through the output projection, the layer scale, the frozen final norm and
  the SAE's encoder direction: how much of the feature's pre-activation is
  written into the CLS token by reading that patch's token in the last block.
  It is not a pixel attribution: after 11 earlier blocks every token mixes
  information from the whole image (its receptive field is the whole image),
  so the map says which patch *token* carries the feature into the CLS token,
  not which pixels caused it, exactly as a ResNet cell's map says which cell's
  vector carries it.
* Attention weight alone is not the contribution: a heavily attended patch
  whose value is orthogonal to the feature's direction contributes nothing,
  and contributions can be negative (they push the feature down).
* It attributes the *pre-activation*, not the activation after the gate and
  the ReLU (which act on the pooled token and do not split); where a gated or
  ReLU feature fires its activation is the (magnitude) pre-activation, as for
  the ResNet.
* The remainder is often large: the residual stream carries the CLS token's
  own history (which itself read the patches in earlier blocks), and the MLP
  is non-linear. Only the last block's direct read of the patches is split
  over patches; what earlier blocks wrote into the CLS token is in the
  remainder, unsplit. The maps are therefore a partial, exact account, not a
  complete one; :func:`remainder_parts` gives the remainder's pieces.
* Frozen σ is a choice, not a fact about the model: the split is exact for
  this image, but a patch's contribution is not what removing that patch
  would change (σ and the attention weights would change too).

Why this method and not the SAE on patch tokens
------------------------------------------------
The alternative used by CytoSAE and PatchSAE is to run the SAE on every
(final, layer-normed) patch token. Here the SAE was trained on CLS tokens
only; patch tokens are a different distribution (DINOv2's patch and CLS
tokens are trained by different losses and occupy different regions of the
space), so a feature's pre-activation on a patch token is an
out-of-distribution reading with no exact relation to the feature's value on
the image. The attention decomposition instead splits the very number the
SAE computed on the image (with an explicit remainder), using only the
model's own computation, as the ResNet's mean decomposition does; it is the
default (``method="attention"``). The patch-token SAE is still offered
(``method="patch_tokens"``): useful to ask whether a feature's *direction* is
present in local patch representations (e.g. segmentation-like maps, or
comparing with SAEs trained on patch tokens), as long as it is not read as a
decomposition of the image's activation (it has no remainder and its maps do
not average to the pooled pre-activation).

Supported models: ``Dinov2Model`` and ``Dinov2WithRegistersModel`` in eval
mode, with any attention implementation (the attention weights are
recomputed from the last block's input, so ``attn_implementation="eager"``
is not needed, and ``sdpa`` gives the same maps). Other ViTs (``ViTModel``,
whose pooler adds a tanh layer) raise :class:`SpatialAttributionError`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from saerad.features.spatial import (
    SpatialAttribution,
    SpatialAttributionError,
    _backbone,
    affine_preactivation,
    upsample_maps,
)

#: ViT methods: the exact split through the last block's attention, or the SAE on each patch token.
VIT_METHODS = ("attention", "patch_tokens")
#: Names of the non-patch terms of :class:`LastBlockTerms`, in the order of :func:`remainder_parts`.
REMAINDER_TERMS = ("cls_attention", "register_attention", "residual", "mlp", "biases")
#: Images whose last block is recomputed together (float64 keys and values of Rad-DINO: ~8 MB per image each).
CHUNK = 8


def is_dinov2(model: nn.Module) -> bool:
    """True for ``transformers``' ``Dinov2Model`` and ``Dinov2WithRegistersModel`` (the models this module splits)."""
    return type(model).__name__ in ("Dinov2Model", "Dinov2WithRegistersModel")


@dataclass
class LastBlockTerms:
    """The pooled class token of a batch written as a sum of terms (float64, on the CPU).

    Every term is already through the frozen final LayerNorm (centred, times
    ``γ / σ``), before the encode stage's token scale; their sum is
    ``reconstruction``, the model's pooled token recomputed in float64.

    Attributes
    ----------
    patch_terms
        ``[batch, h, w, D]``: each patch token's attention term.
    parts
        :data:`REMAINDER_TERMS` → ``[batch, D]``: the CLS token's attention to itself; the register tokens'
        attention terms (zero without registers); the residual entering the block; the MLP term; the biases
        (value and output projection through the layer scale, and the final norm's ``β``).
    attention
        ``[batch, heads, T]``: each head's attention weights of the CLS query in the last block.
    token
        ``[batch, D]``: the model's ``pooler_output`` (float64 copy of what the SAE sees, before scaling).
    reconstruction
        ``[batch, D]``: the sum of all terms.
    sigma
        ``[batch]``: the frozen final-norm standard deviation ``sqrt(var(r) + eps)``.
    n_registers
        Register tokens between CLS and the patches.
    """

    patch_terms: torch.Tensor
    parts: dict[str, torch.Tensor]
    attention: torch.Tensor
    token: torch.Tensor
    reconstruction: torch.Tensor
    sigma: torch.Tensor
    n_registers: int

    @property
    def grid(self) -> tuple[int, int]:
        return int(self.patch_terms.shape[1]), int(self.patch_terms.shape[2])

    @property
    def remainder(self) -> torch.Tensor:
        """``[batch, D]``: the sum of the non-patch terms."""
        return sum(self.parts[name] for name in REMAINDER_TERMS)


def _patch_size(model: nn.Module) -> tuple[int, int]:
    size = model.config.patch_size
    return (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))


def _check_model(model: nn.Module) -> None:
    if not is_dinov2(model):
        raise SpatialAttributionError(
            f"the attention decomposition is implemented for transformers' Dinov2Model and Dinov2WithRegistersModel "
            f"(Rad-DINO), not {type(model).__name__}")
    if model.training:
        raise SpatialAttributionError("the encoder is in training mode (dropout, drop path): call .eval() first")
    block = model.encoder.layer[-1]
    for name in ("norm1", "attention", "layer_scale1", "norm2", "mlp", "layer_scale2"):
        if not hasattr(block, name):
            raise SpatialAttributionError(f"{type(model).__name__}'s last block has no {name!r}: not the DINOv2 block "
                                          "layout this decomposition was written for")


def _check_pixels(pixel_values) -> None:
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
        raise ValueError("pixel_values must be a preprocessed [batch, channels, height, width] tensor "
                         f"(ClassTokenEncoder.preprocess), got {type(pixel_values).__name__} "
                         f"{tuple(getattr(pixel_values, 'shape', ()))}")


def _tolerance(dtype: torch.dtype) -> float:
    """Relative gap allowed between the float64 recomputation and the model's own forward pass."""
    return 1e-3 if dtype in (torch.float32, torch.float64) else 5e-2


def _run_with_last_block(model: nn.Module, pixel_values: torch.Tensor):
    """One forward pass; returns (outputs, input of the last block, output of the last block)."""
    block = model.encoder.layer[-1]
    captured: dict[str, torch.Tensor] = {}

    def before(module, args, kwargs):
        captured["input"] = args[0] if args else kwargs["hidden_states"]

    def after(module, args, output):
        captured["output"] = output[0] if isinstance(output, (tuple, list)) else output

    handles = [block.register_forward_pre_hook(before, with_kwargs=True), block.register_forward_hook(after)]
    parameter = next(model.parameters())
    try:
        with torch.inference_mode():
            outputs = model(pixel_values=pixel_values.to(parameter.device, dtype=parameter.dtype))
    finally:
        for handle in handles:
            handle.remove()
    if "input" not in captured or "output" not in captured:
        raise SpatialAttributionError("the last block of the encoder was not called during the forward pass")
    return outputs, captured["input"], captured["output"]


def _decompose_chunk(block: nn.Module, final_norm: nn.LayerNorm, u: torch.Tensor, n_registers: int
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor]:
    """Terms of the final CLS token for a chunk of last-block inputs ``u`` ``[n, T, D]`` (float64 block)."""
    attention_module = block.attention.attention
    heads = int(attention_module.num_attention_heads)
    head_size = int(attention_module.attention_head_size)
    scaling = float(getattr(attention_module, "scaling", head_size ** -0.5))
    n, tokens, width = u.shape
    normed = block.norm1(u)
    query = attention_module.query(normed[:, :1]).view(n, 1, heads, head_size).transpose(1, 2)  # [n, H, 1, d]
    key = attention_module.key(normed).view(n, tokens, heads, head_size).transpose(1, 2)  # [n, H, T, d]
    weights = torch.softmax((query @ key.transpose(-1, -2)) * scaling, dim=-1)[:, :, 0]  # [n, H, T]
    value_layer = attention_module.value
    value = nn.functional.linear(normed, value_layer.weight)  # without its bias: [n, T, H·d]
    value = value.view(n, tokens, heads, head_size) * weights.transpose(1, 2)[..., None]  # A_h[t] · W_v,h LN1(u)_t
    dense = block.attention.output.dense
    scale1 = getattr(block.layer_scale1, "lambda1", None)
    scale1 = torch.ones(width, dtype=u.dtype, device=u.device) if scale1 is None else scale1
    token_terms = nn.functional.linear(value.reshape(n, tokens, heads * head_size), dense.weight) * scale1  # [n, T, D]
    value_bias = value_layer.bias if value_layer.bias is not None else torch.zeros(heads * head_size, dtype=u.dtype,
                                                                                      device=u.device)
    output_bias = dense.bias if dense.bias is not None else torch.zeros(width, dtype=u.dtype, device=u.device)
    bias_term = scale1 * (dense.weight @ value_bias + output_bias)  # [D]
    after_attention = u[:, 0] + token_terms.sum(dim=1) + bias_term
    mlp_term = block.layer_scale2(block.mlp(block.norm2(after_attention)))
    cls_output = after_attention + mlp_term
    # Frozen final LayerNorm: centring is linear, σ is fixed at its value on the actual CLS vector.
    sigma = torch.sqrt(cls_output.var(dim=-1, unbiased=False) + final_norm.eps)  # [n]
    gamma = final_norm.weight if final_norm.weight is not None else torch.ones(width, dtype=u.dtype, device=u.device)
    beta = final_norm.bias if final_norm.bias is not None else torch.zeros(width, dtype=u.dtype, device=u.device)

    def frozen(term: torch.Tensor) -> torch.Tensor:
        """``γ ⊙ (term - mean(term)) / σ`` per image (σ broadcast over every axis but the first)."""
        shape = (n,) + (1,) * (term.ndim - 1)
        return gamma * (term - term.mean(dim=-1, keepdim=True)) / sigma.view(shape)

    first_patch = 1 + n_registers
    parts = {
        "cls_attention": frozen(token_terms[:, 0]),
        "register_attention": frozen(token_terms[:, 1:first_patch].sum(dim=1)),
        "residual": frozen(u[:, 0]),
        "mlp": frozen(mlp_term),
        "biases": frozen(bias_term.expand(n, width)) + beta,
    }
    return frozen(token_terms[:, first_patch:]), parts, weights, cls_output, sigma


def last_block_terms(encoder, pixel_values: torch.Tensor, chunk: int = CHUNK) -> LastBlockTerms:
    """Split each image's pooled CLS token into per-patch and non-patch terms through the last block.

    Parameters
    ----------
    encoder
        A :class:`saerad.encode.encoder.ClassTokenEncoder` or its ``transformers`` model (``Dinov2Model`` or
        ``Dinov2WithRegistersModel``, in eval mode).
    pixel_values
        ``[batch, 3, H, W]`` preprocessed pixels.
    chunk
        Images whose last block is recomputed in float64 at once (memory: about
        ``4 · T · D · 8`` bytes per image, ~35 MB for Rad-DINO).

    Returns
    -------
    LastBlockTerms
        Checked: the float64 recomputation of the last block reproduces the model's own block output for
        the CLS token, and the sum of the terms reproduces ``pooler_output``, both within float32 (or, for
        a half-precision model, half-precision) tolerance; otherwise :class:`SpatialAttributionError`.
    """
    model = _backbone(encoder)
    _check_model(model)
    _check_pixels(pixel_values)
    outputs, block_input, block_output = _run_with_last_block(model, pixel_values)
    token = outputs.pooler_output.flatten(1)
    n_registers = int(getattr(model.config, "num_register_tokens", 0) or 0)
    patch_h, patch_w = _patch_size(model)
    grid = (int(pixel_values.shape[-2]) // patch_h, int(pixel_values.shape[-1]) // patch_w)
    tokens = block_input.shape[1]
    if tokens != 1 + n_registers + grid[0] * grid[1]:
        raise SpatialAttributionError(f"the last block sees {tokens} tokens; expected CLS + {n_registers} register(s) "
                                      f"+ {grid[0]} × {grid[1]} patches for {tuple(pixel_values.shape[-2:])} pixels "
                                      f"and patch size {(patch_h, patch_w)}")
    block = copy.deepcopy(model.encoder.layer[-1]).to(torch.float64).eval()
    final_norm = copy.deepcopy(model.layernorm).to(torch.float64).eval()
    patch_terms, parts, attention, cls_outputs, sigmas = [], {name: [] for name in REMAINDER_TERMS}, [], [], []
    with torch.inference_mode():
        for start in range(0, len(block_input), max(1, int(chunk))):
            u = block_input[start:start + chunk].to(torch.float64)
            patches, chunk_parts, weights, cls_output, sigma = _decompose_chunk(block, final_norm, u, n_registers)
            patch_terms.append(patches.cpu())
            for name in REMAINDER_TERMS:
                parts[name].append(chunk_parts[name].cpu())
            attention.append(weights.cpu())
            cls_outputs.append(cls_output.cpu())
            sigmas.append(sigma.cpu())
    patch_terms = torch.cat(patch_terms).reshape(len(block_input), grid[0], grid[1], -1)
    parts = {name: torch.cat(values) for name, values in parts.items()}
    cls_output = torch.cat(cls_outputs)
    token = token.double().cpu()
    tolerance = _tolerance(next(model.parameters()).dtype)
    actual = block_output[:, 0].double().cpu()
    gap = (cls_output - actual).abs().max().item()
    if gap > tolerance * max(1.0, actual.abs().max().item()):
        raise SpatialAttributionError(f"recomputing the last block in float64 gives a CLS output {gap:.3g} away from "
                                      f"the model's: {type(model).__name__}'s block is not the layout this "
                                      "decomposition assumes")
    reconstruction = patch_terms.sum(dim=(1, 2)) + sum(parts.values())
    gap = (reconstruction - token).abs().max().item()
    if gap > tolerance * max(1.0, token.abs().max().item()):
        raise SpatialAttributionError(f"the terms sum to a token {gap:.3g} away from pooler_output: the pooled token "
                                      "is not the final-layer-normed CLS token")
    return LastBlockTerms(patch_terms, parts, torch.cat(attention), token, reconstruction, torch.cat(sigmas),
                          n_registers)


def _check_scale(token_scale: float) -> None:
    if not np.isfinite(token_scale) or token_scale <= 0:
        raise ValueError(f"token_scale must be a positive number, got {token_scale}")


def _check_width(width: int, weight: torch.Tensor) -> None:
    if width != weight.shape[0]:
        raise SpatialAttributionError(f"the encoder's tokens have {width} values but the SAE expects "
                                      f"d_in={weight.shape[0]}")


def patch_heatmaps(position_maps: np.ndarray | torch.Tensor, pixel_shape: tuple[int, int],
                   patch_size: tuple[int, int]) -> np.ndarray:
    """Patch-grid maps ``[..., h, w]`` upsampled onto the input pixels ``[..., H, W]`` (float32).

    The ``h · w`` patches cover the first ``h · ph`` rows and ``w · pw`` columns
    (the patch embedding drops a remainder smaller than a patch); the maps are
    upsampled bilinearly over that area (:func:`saerad.features.spatial.upsample_maps`)
    and the uncovered border repeats the last row and column.
    """
    maps = np.asarray(position_maps)
    height, width = (int(s) for s in pixel_shape)
    covered = (maps.shape[-2] * int(patch_size[0]), maps.shape[-1] * int(patch_size[1]))
    if covered == (height, width):
        return upsample_maps(maps, (height, width))
    up = upsample_maps(maps, covered)
    pad = [(0, 0)] * (up.ndim - 2) + [(0, height - covered[0]), (0, width - covered[1])]
    return np.pad(up, pad, mode="edge")


def attention_attribution(encoder, sae, pixel_values: torch.Tensor, features: Sequence[int], token_scale: float = 1.0,
                          path: str | None = None, terms: LastBlockTerms | None = None) -> SpatialAttribution:
    """Per-patch contributions to ``features``' pre-activations through the last block's attention.

    Parameters
    ----------
    encoder, pixel_values
        As for :func:`last_block_terms`.
    sae, features, token_scale, path
        As for :func:`saerad.features.spatial.spatial_attribution`.
    terms
        :func:`last_block_terms` of these pixels, if already computed (saves the encoder pass).

    Returns
    -------
    SpatialAttribution
        ``method="attention"``; ``contributions`` ``[batch, n_features, h, w]`` (the patch
        contributions), ``position_maps = h · w · contributions``, ``remainder`` ``[batch, n_features]``,
        ``pooled`` from the model's ``pooler_output``. ``contributions.sum((-2, -1)) + remainder``
        equals ``pooled`` to the float32 rounding of the pooled token.
    """
    _check_scale(token_scale)
    offset, weight, bias, path = affine_preactivation(sae, features, path)
    if terms is None:
        terms = last_block_terms(encoder, pixel_values)
    _check_width(terms.token.shape[1], weight)
    # Patch terms go through the linear part only; every constant (the SAE's offset and bias too) is remainder.
    contributions = (token_scale * terms.patch_terms @ weight).permute(0, 3, 1, 2)  # [batch, n_features, h, w]
    remainder = (token_scale * terms.remainder - offset) @ weight + bias
    pooled = (token_scale * terms.token - offset) @ weight + bias
    positions = contributions.shape[-2] * contributions.shape[-1]
    position_maps = (contributions * positions).numpy()
    heatmaps = patch_heatmaps(position_maps, tuple(pixel_values.shape[-2:]), _patch_size(_backbone(encoder)))
    return SpatialAttribution(np.asarray(features, dtype=np.int64), position_maps, pooled.numpy(), heatmaps, path,
                              remainder=remainder.numpy(), method="attention")


def remainder_parts(terms: LastBlockTerms, sae, features: Sequence[int], token_scale: float = 1.0,
                    path: str | None = None) -> dict[str, np.ndarray]:
    """The remainder of :func:`attention_attribution` split into its pieces, ``[batch, n_features]`` each.

    Keys are :data:`REMAINDER_TERMS`; ``"biases"`` also carries the SAE's offset and bias. They sum to
    the remainder.
    """
    _check_scale(token_scale)
    offset, weight, bias, _ = affine_preactivation(sae, features, path)
    _check_width(terms.token.shape[1], weight)
    out = {name: (token_scale * terms.parts[name] @ weight).numpy() for name in REMAINDER_TERMS}
    out["biases"] = out["biases"] + ((bias - offset @ weight).numpy())[None, :]
    return out


def final_patch_tokens(encoder, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The final layer-normed patch tokens ``[batch, h, w, D]`` and ``pooler_output`` ``[batch, D]`` (float64)."""
    model = _backbone(encoder)
    _check_model(model)
    _check_pixels(pixel_values)
    parameter = next(model.parameters())
    with torch.inference_mode():
        outputs = model(pixel_values=pixel_values.to(parameter.device, dtype=parameter.dtype))
    n_registers = int(getattr(model.config, "num_register_tokens", 0) or 0)
    patch_h, patch_w = _patch_size(model)
    grid = (int(pixel_values.shape[-2]) // patch_h, int(pixel_values.shape[-1]) // patch_w)
    sequence = outputs.last_hidden_state.double().cpu()
    token = outputs.pooler_output.flatten(1).double().cpu()
    if sequence.shape[1] != 1 + n_registers + grid[0] * grid[1] or not torch.allclose(sequence[:, 0], token):
        raise SpatialAttributionError(f"last_hidden_state {tuple(sequence.shape)} is not CLS, {n_registers} "
                                      f"register(s) and {grid[0]} × {grid[1]} layer-normed patch tokens")
    return sequence[:, 1 + n_registers:].reshape(len(sequence), grid[0], grid[1], -1), token


def patch_token_attribution(encoder, sae, pixel_values: torch.Tensor, features: Sequence[int],
                            token_scale: float = 1.0, path: str | None = None) -> SpatialAttribution:
    """The SAE's pre-activations on each final, layer-normed patch token (CytoSAE / PatchSAE style).

    Not a decomposition: the SAE was trained on CLS tokens, and patch tokens lie elsewhere, so these maps
    are an out-of-distribution reading of the feature's direction in each patch (module notes).
    ``position_maps`` ``[batch, n_features, h, w]`` are the pre-activations; ``remainder`` is None and the
    maps do not average to ``pooled`` (the CLS token's pre-activation, given for reference).
    """
    _check_scale(token_scale)
    offset, weight, bias, path = affine_preactivation(sae, features, path)
    patches, token = final_patch_tokens(encoder, pixel_values)
    _check_width(token.shape[1], weight)
    position_maps = ((token_scale * patches - offset) @ weight + bias).permute(0, 3, 1, 2).numpy()
    pooled = ((token_scale * token - offset) @ weight + bias).numpy()
    heatmaps = patch_heatmaps(position_maps, tuple(pixel_values.shape[-2:]), _patch_size(_backbone(encoder)))
    return SpatialAttribution(np.asarray(features, dtype=np.int64), position_maps, pooled, heatmaps, path,
                              remainder=None, method="patch_tokens")
