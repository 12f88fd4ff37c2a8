"""Images, class tokens and planted-finding masks of the data stage, at the decoder's resolution.

The decoder is conditioned on the class token of an image and learns to
draw that image, so every training example is a (token, pixels) pair. The
tokens are those of the encode stage (scaled as the SAE sees them); the
pixels are the data stage's images, box-downsampled to the decoder's
resolution. SynthCXR also stores, for every frontal image, one boolean
mask per planted finding and device
(``<root>/ground_truth/<image path without .jpg>_masks.npz``): they are the
ground truth of the segmentation measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from saerad.io import read_json
from saerad.encode.tokens import load_class_tokens


@dataclass
class ImageSet:
    """Class tokens and pixels of one split, row-aligned.

    Attributes
    ----------
    tokens
        ``float32 [n, d]`` scaled class tokens (the SAE's input).
    pixels
        ``float32 [n, size, size]`` grey values in ``[0, 1]``.
    index
        One row per image: ``dicom_id``, ``study_id``, ``split``, ``image_path`` (absolute), ...
    """

    tokens: np.ndarray
    pixels: np.ndarray
    index: pd.DataFrame

    def __len__(self) -> int:
        return len(self.index)

    def subset(self, rows: np.ndarray) -> "ImageSet":
        rows = np.asarray(rows, dtype=np.int64)
        return ImageSet(self.tokens[rows], self.pixels[rows], self.index.iloc[rows].reset_index(drop=True))


def dataset_root(artifacts_root: str | Path) -> Path:
    """The folder the data stage's ``image_path`` values are relative to."""
    path = Path(artifacts_root) / "data" / "dataset.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the data stage first")
    return Path(read_json(path)["root"])


def load_image_set(artifacts_root: str | Path, split: str | None, size: int) -> ImageSet:
    """Tokens and ``size × size`` pixels of every encoded image of ``split`` (None: all splits)."""
    if size < 8:
        raise ValueError(f"image_size must be at least 8 pixels, got {size}")
    tokens, index = load_class_tokens(artifacts_root, split=split)
    images = pd.read_csv(Path(artifacts_root) / "data" / "images.csv", dtype={"dicom_id": str},
                         usecols=["dicom_id", "view_position", "image_path"])
    index = index.merge(images, on="dicom_id", how="left", validate="one_to_one")
    if index["image_path"].isna().any():
        missing = index.loc[index["image_path"].isna(), "dicom_id"].iloc[0]
        raise ValueError(f"image {missing} has a class token but no row in data/images.csv")
    root = dataset_root(artifacts_root)
    index["image_path"] = [str(root / path) for path in index["image_path"]]
    return ImageSet(tokens, load_pixels(index["image_path"], size), index)


def load_pixels(paths, size: int) -> np.ndarray:
    """Grey images box-downsampled to ``size × size``, as ``float32`` in ``[0, 1]``.

    A box filter averages each output pixel's footprint exactly, so the
    result does not depend on resampling details and thin lines (leads,
    tubes) fade rather than alias away.
    """
    out = np.empty((len(paths), size, size), dtype=np.float32)
    for row, path in enumerate(paths):
        with Image.open(path) as image:
            grey = image.convert("L").resize((size, size), Image.BOX)
        out[row] = np.asarray(grey, dtype=np.float32) / 255.0
    return out


def mask_path(image_path: str | Path, dataset_root_path: str | Path) -> Path:
    """Where SynthCXR's writer put the masks of the image at ``image_path`` (absolute)."""
    relative = Path(image_path).relative_to(dataset_root_path)
    return Path(dataset_root_path) / "ground_truth" / relative.with_name(relative.stem + "_masks.npz")


def load_finding_masks(artifacts_root: str | Path, image_paths, finding: str, size: int) -> np.ndarray:
    """The planted mask of ``finding`` in each image, at ``size × size`` (bool ``[n, size, size]``).

    A low-resolution pixel belongs to the mask when any of the full-size
    pixels it covers does: a pacemaker lead one pixel wide at 128 × 128
    would otherwise vanish at 32 × 32. An image in which the finding is not
    planted gets an empty mask.

    Raises
    ------
    FileNotFoundError
        An image has no masks file (lateral views and MIMIC-CXR have none).
    """
    root = dataset_root(artifacts_root)
    out = np.zeros((len(image_paths), size, size), dtype=bool)
    for row, image_path in enumerate(image_paths):
        path = mask_path(image_path, root)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: segmentation needs SynthCXR's planted masks "
                                    "(frontal images only; MIMIC-CXR has none)")
        with np.load(path) as masks:
            if finding not in masks.files:
                continue
            full = Image.fromarray(masks[finding].astype(np.uint8) * 255)
        out[row] = np.asarray(full.resize((size, size), Image.BOX)) > 0
    return out
