"""Heat maps for the atlas: each example's per-cell pre-activation of its feature (see :mod:`saerad.features.spatial`).

The encoder runs once per distinct example image (batched) to get its last
feature map; a feature's map on that image is then an affine function of it,
``(c · f_p - o) · w_i + b_i`` per position ``p``, so thousands of
(image, feature) maps cost one matrix product each instead of an encoder pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from saerad.features.spatial import affine_preactivation, last_feature_map


def load_atlas_encoder(artifacts_root: str | Path, encoder_dir: str | Path | None = None, device: str = "cpu"):
    """The encode stage's encoder (``encode/scale.json``'s ``encoder``, relative to the repository), or ``encoder_dir``."""
    from saerad.encoder import ClassTokenEncoder
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
    that does not mean-pool its last map (a ViT), before reading any image.
    """
    from saerad.features.spatial import check_mean_pooled, _backbone

    check_mean_pooled(_backbone(encoder))
    batches = range(0, len(paths), batch_size)
    if progress:
        from tqdm.auto import tqdm
        batches = tqdm(batches, desc="atlas heat maps (encoder)")
    maps = []
    for start in batches:
        pictures = []
        for path in paths[start:start + batch_size]:
            with Image.open(path) as picture:
                pictures.append(picture.convert("RGB"))
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
