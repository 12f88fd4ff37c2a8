"""Where in the image an SAE feature's pre-activation comes from: mean-pooled CNNs here, DINOv2 ViTs by dispatch.

:func:`spatial_attribution` takes either kind of encoder and returns the same
:class:`SpatialAttribution`. For a mean-pooled CNN (the demo's ResNet) it uses
the exact mean decomposition below (``method="mean"``); for a DINOv2 ViT
(Rad-DINO, the paper profile) the exact split through the last block's
attention, or on request the SAE on each patch token
(:mod:`saerad.features.spatial_vit`, whose notes say what those maps mean and
why the attention split is the default).

Why the mean decomposition is exact (CNN)
----------------------------------------
The demo encoder (``models/synthcxr-resnet-small``, a ``transformers``
``ResNetModel``) pools its last feature map ``f`` (``[C, h, w]``, 4 × 4 at
128 px input) by a plain mean: its class token is
``z = (1 / P) Σ_p f_p`` over the ``P = h · w`` positions ``p``
(``pooler_output``, ``AdaptiveAvgPool2d(1)``; nothing follows the pool). The
SAE sees ``x = c z`` with the encode stage's constant ``c`` (``scale.json``),
and every SAE family here computes a feature's pre-activation as an affine
function of its input,

    a_i(x) = (x - o) · w_i + b_i,

with ``o = b_dec`` when the SAE centres its input (``centre_input``) and 0
otherwise, and, per family (see :mod:`saerad.sae.models`):

* gated (``sae_rad``, ``gated``), magnitude path: ``w_i = W_enc[:, i] · exp(r_mag_i)``, ``b_i = b_mag_i``;
* gated, gate path: ``w_i = W_enc[:, i]``, ``b_i = b_gate_i``;
* standard, TopK, Matryoshka: ``w_i = W_enc[:, i]``, ``b_i = b_enc_i``.

A mean commutes with an affine map, so

    a_i(x) = (1 / P) Σ_p a_i(c f_p),

i.e. the pooled pre-activation is the **mean** over positions of the
pre-activation the SAE would compute for the position's own (scaled) feature
vector. That per-position pre-activation is what this module returns as the
*position map*; the bias ``b_i`` and the centring offset are thereby split
evenly over the positions (each position carries all of them, and the mean
divides them by ``P``). :attr:`SpatialAttribution.contributions` is the same
map divided by ``P``, whose **sum** over positions is the pooled
pre-activation.

What the decomposition does not say
-----------------------------------
* It attributes the *pre-activation*, not the feature's activation
  ``h_i = 1[gate > 0] · ReLU(a_i)`` (times ``||W_dec[i]||`` in the book's
  tables): the step and the ReLU act after pooling and do not split over
  positions. Where a gated or ReLU feature fires, its activation ``h_i``
  *is* the pooled magnitude (or encoder) pre-activation, so there the maps
  split the activation itself (times ``||W_dec[i]||`` for the book's
  activation); where it does not fire, they show what pushed it down.
* A position of a 4 × 4 map is a cell of 32 × 32 input pixels, but its
  receptive field covers much more of the image: the map says which cell's
  *feature vector* carries the feature, not which pixels caused it.
* For a gated SAE with weight sharing the gate and magnitude maps differ only
  by a positive factor and a constant per feature, and the bias split adds the
  same constant to every position; so where a map peaks and which positions
  rank highest do not depend on the path, the bias split or the token scale.

Supported encoders
------------------
Mean decomposition: models whose ``pooler`` is ``AdaptiveAvgPool2d`` to 1 × 1
applied directly to ``last_hidden_state`` (``ResNetModel``; the check is also
made numerically on every batch). ViTs (``Dinov2Model``,
``Dinov2WithRegistersModel``): their class token is a layer-normed CLS token
rather than a mean of patch tokens, so the mean decomposition does not apply;
:func:`spatial_attribution` hands them to :mod:`saerad.features.spatial_vit`.
Not supported, with a clear error: ConvNeXt, which layer-normalises *after*
the mean (a non-linear step), and other ViTs (``ViTModel``'s pooler adds a
dense layer and a tanh).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from saerad.io import read_json

#: Families whose pre-activation has a magnitude and a gate path.
GATED_PATHS = ("magnitude", "gate")


class SpatialAttributionError(ValueError):
    """The encoder or SAE cannot be decomposed over image positions."""


@dataclass
class SpatialAttribution:
    """Per-position pre-activations of some SAE features for a batch of images.

    Attributes
    ----------
    features
        ``int64 [n_features]``, the SAE feature ids, in the order of the maps' axis 1.
    position_maps
        ``float64 [batch, n_features, h, w]``, on the encoder's last map (CNN) or
        patch grid (ViT). ``"mean"``: the feature's pre-activation for the scaled
        feature vector at each position; their mean over ``(h, w)`` is ``pooled``
        (to float32 rounding of the token). ``"attention"``: ``h · w`` times each
        patch's contribution, so their mean plus ``remainder`` is ``pooled``.
        ``"patch_tokens"``: the pre-activation of each patch token (no identity).
    pooled
        ``float64 [batch, n_features]``: the pre-activation of the pooled token,
        computed from the pooled token (not from the maps).
    heatmaps
        ``float32 [batch, n_features, H, W]``: ``position_maps`` upsampled to
        the encoder's input resolution (bilinear, cell centres on cell centres;
        see :func:`upsample_maps`). For visual inspection and localisation, not
        for the exact identity.
    path
        Which pre-activation: ``"magnitude"`` or ``"gate"`` (gated SAEs), ``"encoder"`` (the others).
    remainder
        ``float64 [batch, n_features]``: the part of ``pooled`` that no position carries, so that
        ``contributions.sum((-2, -1)) + remainder == pooled`` (equivalently
        ``position_maps.mean((-2, -1)) + remainder == pooled``). Zero for ``method="mean"``; for
        ``"attention"`` the CLS token's own attention, registers, residual, MLP and biases
        (:mod:`saerad.features.spatial_vit`); None for ``"patch_tokens"``, which is no decomposition.
        None also where an older caller built the object without it.
    method
        ``"mean"`` (mean-pooled CNN, exact), ``"attention"`` (ViT, exact split through the last block's
        attention) or ``"patch_tokens"`` (ViT, the SAE on each patch token; not a decomposition).
    """

    features: np.ndarray
    position_maps: np.ndarray
    pooled: np.ndarray
    heatmaps: np.ndarray
    path: str
    remainder: np.ndarray | None = None
    method: str = "mean"

    @property
    def contributions(self) -> np.ndarray:
        """``position_maps / (h · w)``: per-position shares; summed over positions, plus ``remainder``: ``pooled``."""
        positions = self.position_maps.shape[-2] * self.position_maps.shape[-1]
        return self.position_maps / positions


def load_token_scale(artifacts_root: str | Path) -> float:
    """The constant the encode stage multiplies class tokens by before the SAE (``encode/scale.json``)."""
    path = Path(artifacts_root) / "encode" / "scale.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the encode stage first (the SAE is trained on scaled tokens)")
    return float(read_json(path)["scale"])


def affine_preactivation(sae, features: Sequence[int], path: str | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """The affine map ``x ↦ (x - offset) @ weight + bias`` giving ``features``' pre-activations.

    Parameters
    ----------
    sae
        A :class:`saerad.sae.SparseAutoencoder` (gated, standard, TopK or Matryoshka).
    features
        Feature ids, each in ``[0, d_sae)``.
    path
        Gated SAEs: ``"magnitude"`` (default; the pre-activation whose ReLU is
        the feature's size) or ``"gate"``. Other families: None or ``"encoder"``.

    Returns
    -------
    (offset, weight, bias, path)
        ``float64`` tensors ``[d_in]``, ``[d_in, n_features]``, ``[n_features]``
        and the path used.
    """
    architecture = getattr(getattr(sae, "config", None), "architecture", None)
    if architecture is None:
        raise SpatialAttributionError(f"expected a saerad SparseAutoencoder with a config, got {type(sae).__name__}")
    ids = torch.as_tensor(np.asarray(features, dtype=np.int64))
    if ids.ndim != 1 or len(ids) == 0:
        raise ValueError(f"features must be a non-empty 1-D list of feature ids, got shape {tuple(ids.shape)}")
    d_sae = sae.config.d_sae
    if int(ids.min()) < 0 or int(ids.max()) >= d_sae:
        raise ValueError(f"feature ids must lie in [0, d_sae={d_sae}), got {ids.tolist()}")
    with torch.no_grad():
        weight = sae.W_enc.detach().double()[:, ids]
        offset = sae.b_dec.detach().double() if sae.config.centre_input else torch.zeros(sae.config.d_in,
                                                                                          dtype=torch.float64)
        if architecture == "gated":
            path = "magnitude" if path is None else path
            if path not in GATED_PATHS:
                raise ValueError(f"path for a gated SAE must be one of {GATED_PATHS}, got {path!r}")
            if path == "magnitude":
                # W_mag = exp(r_mag) ⊙ W_gate, row-wise (weight sharing, Eqs. 4 and 8).
                weight = weight * torch.exp(sae.r_mag.detach().double()[ids])
                bias = sae.b_mag.detach().double()[ids]
            else:
                bias = sae.b_gate.detach().double()[ids]
        elif architecture in ("standard", "topk", "matryoshka"):
            path = "encoder" if path is None else path
            if path != "encoder":
                raise ValueError(f"a {architecture} SAE has one pre-activation, path 'encoder'; got {path!r}")
            bias = sae.b_enc.detach().double()[ids]
        else:
            raise SpatialAttributionError(f"no affine pre-activation known for SAE architecture {architecture!r}")
    return offset, weight, bias, path


def _backbone(encoder) -> nn.Module:
    """The ``transformers`` model inside a :class:`saerad.encode.encoder.ClassTokenEncoder`, or the model itself."""
    model = getattr(encoder, "model", encoder)
    if not isinstance(model, nn.Module):
        raise SpatialAttributionError(f"expected a ClassTokenEncoder or a torch module, got {type(encoder).__name__}")
    return model


def check_mean_pooled(model: nn.Module) -> None:
    """Raise :class:`SpatialAttributionError` unless ``model`` pools ``last_hidden_state`` by a plain mean."""
    pooler = getattr(model, "pooler", None)
    name = type(model).__name__
    if isinstance(pooler, nn.AdaptiveAvgPool2d) and pooler.output_size in (1, (1, 1)):
        return
    if "Dinov2" in name or "ViT" in name:
        reason = ("its class token (pooler_output) is the layer-normed CLS token, not a mean of patch tokens, so the "
                  "mean decomposition does not apply; spatial_attribution splits a Dinov2 model's token through its "
                  "last block's attention instead (saerad.features.spatial_vit)")
    elif "ConvNext" in name:
        reason = "it layer-normalises after the spatial mean, a non-linear step that does not commute with the mean"
    else:
        reason = f"its pooler is {type(pooler).__name__ if pooler is not None else 'missing'}"
    raise SpatialAttributionError(
        f"the mean decomposition supports encoders whose class token is the mean of the last feature map "
        f"(a pooler AdaptiveAvgPool2d(1) on last_hidden_state, e.g. ResNetModel); {name} is not one: {reason}")


def encoder_kind(encoder) -> str:
    """``"mean"`` for a mean-pooled CNN, ``"vit"`` for a DINOv2 ViT; :class:`SpatialAttributionError` otherwise.

    The error for an unsupported encoder names why (:func:`check_mean_pooled`'s reasons).
    """
    from saerad.features.spatial_vit import is_dinov2

    model = _backbone(encoder)
    if is_dinov2(model):
        return "vit"
    name = type(model).__name__
    if "ViT" in name or "Dinov2" in name:
        raise SpatialAttributionError(
            f"spatial attribution supports mean-pooled CNNs (ResNetModel) and DINOv2 ViTs (Dinov2Model, "
            f"Dinov2WithRegistersModel); {name} is neither (its pooled token is not a layer-normed CLS token "
            f"this module can split)")
    check_mean_pooled(model)
    return "mean"


def last_feature_map(encoder, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The last feature map ``[batch, C, h, w]`` and the pooled class token ``[batch, C]`` (both float64).

    Also checks that the token is the mean of the map (float32 tolerance),
    so an encoder whose pooling is not a plain mean cannot slip through.
    """
    model = _backbone(encoder)
    check_mean_pooled(model)
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
        raise ValueError("pixel_values must be a preprocessed [batch, channels, height, width] tensor "
                         f"(ClassTokenEncoder.preprocess), got {type(pixel_values).__name__} "
                         f"{tuple(getattr(pixel_values, 'shape', ()))}")
    parameter = next(model.parameters())
    with torch.inference_mode():
        outputs = model(pixel_values=pixel_values.to(parameter.device, dtype=parameter.dtype))
    feature_map = outputs.last_hidden_state.double().cpu()
    token = outputs.pooler_output.flatten(1).double().cpu()
    if feature_map.ndim != 4 or feature_map.shape[1] != token.shape[1]:
        raise SpatialAttributionError(f"last_hidden_state has shape {tuple(feature_map.shape)}; expected "
                                      f"[batch, {token.shape[1]}, h, w] to match the pooled token")
    gap = (feature_map.mean(dim=(2, 3)) - token).abs().max().item()
    if gap > 1e-3 * max(1.0, token.abs().max().item()):
        raise SpatialAttributionError(f"pooler_output differs from the mean of last_hidden_state by {gap:.3g}: "
                                      "the encoder's pooling is not a plain mean")
    return feature_map, token


def upsample_maps(maps: np.ndarray | torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of ``[..., h, w]`` maps to ``[..., H, W]`` (float32).

    ``align_corners=False``: the centre of cell ``(i, j)`` lands on the centre
    of the block of input pixels that cell covers, so a map's peak stays over
    its cell; outside the outermost cell centres the values are held constant.
    """
    tensor = torch.as_tensor(np.asarray(maps), dtype=torch.float32)
    if tensor.ndim < 2:
        raise ValueError(f"maps must have at least two (spatial) axes, got shape {tuple(tensor.shape)}")
    leading = tensor.shape[:-2]
    flat = tensor.reshape(-1, 1, *tensor.shape[-2:])
    up = F.interpolate(flat, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)
    return up.reshape(*leading, *up.shape[-2:]).numpy()


def spatial_attribution(encoder, sae, pixel_values: torch.Tensor, features: Sequence[int], token_scale: float = 1.0,
                        path: str | None = None, method: str | None = None) -> SpatialAttribution:
    """Per-position pre-activation maps of ``features`` for a batch of images, for a CNN or a ViT encoder.

    Parameters
    ----------
    encoder
        A :class:`saerad.encode.encoder.ClassTokenEncoder` or its ``transformers``
        model: a mean-pooled CNN (``ResNetModel``) or a DINOv2 ViT
        (``Dinov2Model``, ``Dinov2WithRegistersModel``); others raise
        :class:`SpatialAttributionError` with the reason.
    sae
        The SAE trained on this encoder's (scaled) class tokens.
    pixel_values
        ``[batch, 3, H, W]`` preprocessed pixels (``encoder.preprocess(images)``).
        The heat maps are in these pixels' coordinates; for SynthCXR's square
        128 px images preprocessing keeps the geometry, so they lie on the image.
    features
        SAE feature ids.
    token_scale
        The encode stage's constant (:func:`load_token_scale`); 1.0 if the SAE
        was trained on raw tokens.
    path
        Which pre-activation (:func:`affine_preactivation`).
    method
        None picks the encoder's exact decomposition: ``"mean"`` for a CNN,
        ``"attention"`` for a ViT. A ViT also takes ``"patch_tokens"`` (the SAE
        on each patch token; not a decomposition, see :mod:`saerad.features.spatial_vit`).

    Returns
    -------
    SpatialAttribution
        ``position_maps.mean(axis=(-2, -1)) + remainder`` equals ``pooled`` up to
        the float32 rounding of the encoder's pooled token (about 1e-7 relative):
        the maps are computed in float64 from float32 activations, ``pooled``
        from the float32 token the SAE actually sees. For a CNN the remainder
        is zero (the maps are computed exactly as before the ViT path existed);
        for ``"patch_tokens"`` it is None and no identity holds.
    """
    kind = encoder_kind(encoder)
    allowed = ("mean",) if kind == "mean" else ("attention", "patch_tokens")
    method = allowed[0] if method is None else method
    if method not in allowed:
        raise ValueError(f"method for a {'mean-pooled CNN' if kind == 'mean' else 'DINOv2 ViT'} encoder must be one of "
                         f"{allowed} (or None), got {method!r}")
    if method == "attention":
        from saerad.features.spatial_vit import attention_attribution
        return attention_attribution(encoder, sae, pixel_values, features, token_scale, path)
    if method == "patch_tokens":
        from saerad.features.spatial_vit import patch_token_attribution
        return patch_token_attribution(encoder, sae, pixel_values, features, token_scale, path)
    if not np.isfinite(token_scale) or token_scale <= 0:
        raise ValueError(f"token_scale must be a positive number, got {token_scale}")
    offset, weight, bias, path = affine_preactivation(sae, features, path)
    feature_map, token = last_feature_map(encoder, pixel_values)
    if feature_map.shape[1] != weight.shape[0]:
        raise SpatialAttributionError(f"the encoder's tokens have {feature_map.shape[1]} values but the SAE expects "
                                      f"d_in={weight.shape[0]}")
    # Each position's feature vector goes through the same affine map as the pooled token.
    positions = token_scale * feature_map.permute(0, 2, 3, 1) - offset  # [batch, h, w, C]
    position_maps = (positions @ weight + bias).permute(0, 3, 1, 2)  # [batch, n_features, h, w]
    pooled = (token_scale * token - offset) @ weight + bias
    heatmaps = upsample_maps(position_maps, tuple(pixel_values.shape[-2:]))
    return SpatialAttribution(np.asarray(features, dtype=np.int64), position_maps.numpy(), pooled.numpy(),
                              heatmaps, path, remainder=np.zeros(pooled.shape), method="mean")
