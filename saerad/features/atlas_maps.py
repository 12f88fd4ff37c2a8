"""Heat maps for the atlas: each example's per-cell pre-activation of its feature (see :mod:`saerad.features.spatial`).

Mean-pooled CNN (the demo's ResNet): the encoder runs once per distinct
example image (batched) to get its last feature map; a feature's map on that
image is then an affine function of it, ``(c · f_p - o) · w_i + b_i`` per
position ``p``, so thousands of (image, feature) maps cost one matrix product
each instead of an encoder pass.

DINOv2 ViT (Rad-DINO): each batch of images is split through the last block's
attention once (:func:`saerad.features.spatial_vit.last_block_terms`); each
example's map is its patch terms times its feature's encoder direction (times
the number of patches, so that, as for the CNN, the mean of the cells plus the
example's remainder is the pre-activation), computed right away so that the
patch terms (``h · w · D`` float64 per image) are never kept for all images.
:func:`atlas_example_maps` takes either encoder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from saerad.features.spatial import affine_preactivation, encoder_kind, last_feature_map


def load_atlas_encoder(artifacts_root: str | Path, encoder_dir: str | Path | None = None, device: str = "cpu"):
    """The encode stage's encoder (``encode/scale.json``'s ``encoder``, relative to the repository), or ``encoder_dir``."""
    from saerad.encode.encoder import ClassTokenEncoder
    from saerad.io import read_json
    from saerad.paths import project_path

    if encoder_dir is None:
        scale_path = Path(artifacts_root) / "encode" / "scale.json"
        if not scale_path.exists():
            raise FileNotFoundError(f"{scale_path} is missing: run the encode stage first (it names the encoder)")
        encoder_dir = project_path(read_json(scale_path)["encoder"])
    return ClassTokenEncoder(encoder_dir, device=device)


def image_feature_maps(encoder, paths: Sequence[Path], batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """The encoder's last feature map ``float32 [n, C, h, w]`` of each image file.

    Raises :class:`saerad.features.spatial.SpatialAttributionError` for an encoder
    that does not mean-pool its last map (a ViT: use :func:`atlas_example_maps`), before reading any image.
    """
    from saerad.features.spatial import check_mean_pooled, _backbone

    check_mean_pooled(_backbone(encoder))
    batches = range(0, len(paths), batch_size)
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(batches, desc="atlas heat maps (encoder)")
    maps = []
    for start in batches:
        pictures = _read_pictures(paths[start:start + batch_size])
        feature_map, _ = last_feature_map(encoder, encoder.preprocess(pictures))
        maps.append(feature_map.float().numpy())
    return np.concatenate(maps) if maps else np.zeros((0, 0, 0, 0), dtype=np.float32)


def example_maps(feature_maps: np.ndarray, image_of_example: np.ndarray, feature_of_example: np.ndarray, sae,
                 token_scale: float, chunk: int = 2048) -> np.ndarray:
    """``float64 [n_examples, h, w]``: each example's feature pre-activation at each position of its image's map.

    Parameters
    ----------
    feature_maps
        :func:`image_feature_maps` of the distinct images.
    image_of_example, feature_of_example
        Per example, the index into ``feature_maps`` and the SAE feature id.
    sae
        The SAE (gated: the magnitude path, whose ReLU is the activation where the feature fires).
    token_scale
        The encode stage's constant (:func:`saerad.features.spatial.load_token_scale`).
    """
    image_of_example = np.asarray(image_of_example, dtype=np.int64)
    feature_of_example = np.asarray(feature_of_example, dtype=np.int64)
    n, channels, height, width = len(image_of_example), *feature_maps.shape[1:]
    if not n:
        return np.zeros((0, height, width))
    features, column = np.unique(feature_of_example, return_inverse=True)
    offset, weight, bias, _ = (value.numpy() if isinstance(value, torch.Tensor) else value
                               for value in affine_preactivation(sae, features.tolist()))
    if weight.shape[0] != channels:
        raise ValueError(f"the encoder's maps have {channels} channels but the SAE expects d_in={weight.shape[0]}")
    out = np.empty((n, height * width))
    for start in range(0, n, chunk):
        images = image_of_example[start:start + chunk]
        columns = column[start:start + chunk]
        positions = token_scale * feature_maps[images].reshape(len(images), channels, -1).astype(np.float64)
        positions -= offset[None, :, None]
        out[start:start + chunk] = np.einsum("ncp,nc->np", positions, weight[:, columns].T) + bias[columns, None]
    return out.reshape(n, height, width)


def _read_pictures(paths: Sequence[Path]) -> list:
    pictures = []
    for path in paths:
        with Image.open(path) as picture:
            pictures.append(picture.convert("RGB"))
    return pictures


def vit_example_maps(encoder, paths: Sequence[Path], image_of_example: np.ndarray, feature_of_example: np.ndarray,
                     sae, token_scale: float, batch_size: int = 64, progress: bool = False
                     ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """The attention split of each example's feature on its image, for a DINOv2 encoder.

    Returns
    -------
    (cells, remainder, grid)
        ``float64 [n_examples, h, w]`` position maps (``h · w`` times each patch's contribution,
        :func:`saerad.features.spatial_vit.attention_attribution`), ``float64 [n_examples]`` remainders,
        the patch grid ``(h, w)``; ``cells.mean((1, 2)) + remainder`` is each example's pre-activation.
    """
    from saerad.features.spatial_vit import last_block_terms

    image_of_example = np.asarray(image_of_example, dtype=np.int64)
    feature_of_example = np.asarray(feature_of_example, dtype=np.int64)
    features, column = np.unique(feature_of_example, return_inverse=True)
    if not len(features):
        return np.zeros((0, 1, 1)), np.zeros(0), (1, 1)
    offset, weight, bias, _ = affine_preactivation(sae, features.tolist())
    cells, remainder, grid = None, np.zeros(len(image_of_example)), None
    batches = range(0, len(paths), batch_size)
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(batches, desc="atlas heat maps (encoder)")
    for start in batches:
        pictures = _read_pictures(paths[start:start + batch_size])
        terms = last_block_terms(encoder, encoder.preprocess(pictures))
        if terms.token.shape[1] != weight.shape[0]:
            raise ValueError(f"the encoder's tokens have {terms.token.shape[1]} values but the SAE expects "
                             f"d_in={weight.shape[0]}")
        if cells is None:
            grid = terms.grid
            cells = np.empty((len(image_of_example), *grid))
        rest = ((token_scale * terms.remainder - offset) @ weight + bias).numpy()  # [batch, n_unique_features]
        positions = grid[0] * grid[1]
        for image in range(len(pictures)):
            examples = np.flatnonzero(image_of_example == start + image)
            if not len(examples):
                continue
            columns = torch.as_tensor(column[examples])
            maps = token_scale * terms.patch_terms[image] @ weight[:, columns]  # [h, w, k]
            cells[examples] = (positions * maps).permute(2, 0, 1).numpy()
            remainder[examples] = rest[image, column[examples]]
    return cells, remainder, grid


def atlas_example_maps(encoder, paths: Sequence[Path], image_of_example, feature_of_example, sae, token_scale: float,
                       batch_size: int = 64, progress: bool = False) -> tuple[np.ndarray, np.ndarray, str]:
    """Each example's map ``float64 [n_examples, h, w]`` and remainder ``[n_examples]``, for a CNN or a ViT encoder.

    ``cells.mean((1, 2)) + remainder`` is the example's pre-activation (the magnitude path for gated SAEs).
    The third value is the method, ``"mean"`` (CNN; remainder zero, maps exactly as :func:`example_maps`) or
    ``"attention"`` (DINOv2). Raises :class:`saerad.features.spatial.SpatialAttributionError` for other
    encoders before reading any image.
    """
    kind = encoder_kind(encoder)
    if kind == "vit":
        cells, remainder, _ = vit_example_maps(encoder, paths, image_of_example, feature_of_example, sae, token_scale,
                                               batch_size, progress)
        return cells, remainder, "attention"
    maps = image_feature_maps(encoder, paths, batch_size, progress)
    cells = example_maps(maps, image_of_example, feature_of_example, sae, token_scale)
    return cells, np.zeros(len(cells)), "mean"
