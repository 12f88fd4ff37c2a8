"""Small JPEG thumbnails of radiographs, for pages and tables that embed their images.

The reader-study page and the reports chapter's side-by-side table both
inline their radiographs as ``data:`` URIs, so a page works without a server
or network and can be archived as one file.
"""

from __future__ import annotations

import base64
import io
import os

import numpy as np
from PIL import Image, ImageOps


def encode_thumbnail(path: str | os.PathLike, longest_side: int = 512, quality: int = 90) -> tuple[bytes, int, int]:
    """JPEG bytes (``quality``) of an image shrunk to ``longest_side``, and its width and height.

    16-bit and float images are stretched to 8 bits between their minimum and
    maximum; colour images with alpha or a palette become RGB.
    """
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        image.load()
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        pixels = np.asarray(image, dtype=np.float64)
        low, high = float(pixels.min()), float(pixels.max())
        scaled = (pixels - low) / (high - low) * 255 if high > low else np.zeros_like(pixels)
        image = Image.fromarray(np.round(scaled).astype(np.uint8), mode="L")
    elif image.mode not in ("L", "RGB"):
        image = image.convert("L" if image.mode in ("1", "LA") else "RGB")
    image.thumbnail((longest_side, longest_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue(), image.width, image.height


def jpeg_data_uri(payload: bytes) -> str:
    """A ``data:image/jpeg;base64,...`` URI of JPEG bytes."""
    return "data:image/jpeg;base64," + base64.b64encode(payload).decode("ascii")


def thumbnail_img_tag(path: str | os.PathLike, longest_side: int = 160) -> str:
    """An ``<img>`` element holding :func:`encode_thumbnail` of ``path`` inline, at its own size."""
    payload, width, height = encode_thumbnail(path, longest_side)
    return f'<img src="{jpeg_data_uri(payload)}" width="{width}" height="{height}" alt="radiograph">'
