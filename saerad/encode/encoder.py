"""Image encoder class tokens through ``transformers``.

One code path loads Rad-DINO (``microsoft/rad-dino``, the paper's encoder) and
any local checkpoint directory with the same files (``config.json``,
``model.safetensors``, ``preprocessor_config.json``), such as the demo
encoder shipped in ``models/``. The class token is the model's
``pooler_output`` (for Dinov2 the layer-normed CLS token), as in Rad-DINO's
model card.

Encoding is chunked: each chunk of images is written to its own file as soon
as it is done, so a killed run resumes where it stopped, and memory is
bounded by the chunk size, not by the dataset.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from saerad.io import atomic_path, read_json, write_json, write_npy

# transformers (through huggingface_hub) imports tqdm.auto, which in a notebook kernel without ipywidgets warns
# once that it falls back to text bars; the executed chapters would carry that warning into the book.
warnings.filterwarnings("ignore", message="IProgress not found", module="tqdm")

#: Precisions of the forward pass (the encode stage's ``dtype``); tokens are stored as float32 whatever it is.
DTYPES = ("float32", "bfloat16", "float16")


class EncoderError(RuntimeError):
    """The encoder checkpoint cannot be loaded or used."""


def resolve_device(device: str) -> torch.device:
    """``"auto"`` picks CUDA when available; otherwise the named device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class ClassTokenEncoder:
    """A frozen vision transformer returning one class token per image.

    Parameters
    ----------
    model
        A hub id (``"microsoft/rad-dino"``) or a local directory.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
    dtype
        ``"float32"``, ``"bfloat16"`` or ``"float16"`` for the forward pass;
        tokens are always returned as float32.
    local_files_only
        Never contact a model hub (the default: everything here runs offline).
        With False, a hub id is fetched or read from the Hugging Face cache.
    """

    def __init__(self, model: str | Path, device: str = "cpu", dtype: str = "float32", local_files_only: bool = True):
        from transformers import AutoImageProcessor, AutoModel

        self.name = str(model)
        self.device = resolve_device(device)
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        self.dtype = getattr(torch, dtype)
        looks_local = Path(self.name).expanduser().exists() or self.name.startswith((".", "/", "~"))
        if looks_local and not Path(self.name).expanduser().is_dir():
            raise EncoderError(f"encoder directory {self.name} does not exist")
        location = str(Path(self.name).expanduser()) if looks_local else self.name
        try:
            # The "fast" processors need torchvision, which this project does not install.
            self.processor = AutoImageProcessor.from_pretrained(
                location, local_files_only=local_files_only, use_fast=False
            )
            self.model = AutoModel.from_pretrained(location, local_files_only=local_files_only)
        except OSError as error:
            raise EncoderError(
                f"cannot load encoder {self.name!r} ({error}). Give a local directory with config.json, "
                f"model.safetensors and preprocessor_config.json, or set local_files_only=False to use the hub."
            ) from error
        self.model.to(self.device, dtype=self.dtype).eval()

    @property
    def dim(self) -> int:
        """Length of the class token (ViTs: hidden_size; ConvNeXt-like: last stage width)."""
        config = self.model.config
        hidden = getattr(config, "hidden_size", None)
        return int(hidden if hidden is not None else config.hidden_sizes[-1])

    def describe(self) -> dict[str, str]:
        """A short, architecture-independent summary for tables."""
        config = self.model.config
        crop = self.processor.to_dict().get("crop_size") or self.processor.to_dict().get("size")
        summary = {
            "checkpoint": self.name,
            "architecture": type(self.model).__name__,
            "parameters": f"{sum(p.numel() for p in self.model.parameters()):,}",
            "class token dimension": str(self.dim),
            "input size": str(crop),
            "device / dtype": f"{self.device} / {str(self.dtype).replace('torch.', '')}",
        }
        if hasattr(config, "num_hidden_layers") and hasattr(config, "num_attention_heads"):
            summary["layers × heads"] = f"{config.num_hidden_layers} × {config.num_attention_heads}"
        if hasattr(config, "depths"):
            summary["blocks per stage"] = str(list(config.depths))
        return summary

    def fingerprint(self) -> str:
        """Identity of the weights and preprocessing, to validate resumed chunks."""
        digest = hashlib.sha256(self.name.encode())
        digest.update(json.dumps(self.processor.to_dict(), sort_keys=True, default=str).encode())
        for name, tensor in sorted(self.model.state_dict().items())[:4]:
            digest.update(name.encode())
            digest.update(tensor.float().cpu().numpy().tobytes()[:4096])
        return digest.hexdigest()[:16]

    def preprocess(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """Resize, crop and normalise PIL images as the checkpoint expects."""
        rgb = [image.convert("RGB") for image in images]
        return self.processor(images=rgb, return_tensors="pt")["pixel_values"]

    @torch.inference_mode()
    def encode_pixels(self, pixel_values: torch.Tensor) -> np.ndarray:
        """Class tokens (float32, shape ``[batch, dim]``) of preprocessed pixels."""
        outputs = self.model(pixel_values=pixel_values.to(self.device, dtype=self.dtype))
        # ViTs give [batch, dim]; convolutional backbones pool to [batch, dim, 1, 1].
        return outputs.pooler_output.flatten(1).float().cpu().numpy()

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Class tokens of a list of PIL images."""
        return self.encode_pixels(self.preprocess(images))


class _ImageFiles(torch.utils.data.Dataset):
    """Decodes and preprocesses images in DataLoader workers."""

    def __init__(self, paths: Sequence[Path], encoder: ClassTokenEncoder):
        self.paths = list(paths)
        self.processor = encoder.processor

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            with Image.open(self.paths[index]) as image:
                rgb = image.convert("RGB")
        except Exception as error:  # damaged files must not stop a long run
            return None, index, f"{type(error).__name__}: {error}"
        pixels = self.processor(images=[rgb], return_tensors="pt")["pixel_values"][0]
        return pixels, index, ""


def _collate(batch):
    good = [(pixels, index) for pixels, index, problem in batch if pixels is not None]
    failed = [(index, problem) for pixels, index, problem in batch if pixels is None]
    pixels = torch.stack([p for p, _ in good]) if good else None
    return pixels, [i for _, i in good], failed


@dataclass
class EncodeResult:
    """Where the tokens went and which images could not be read."""

    tokens_path: Path
    n_encoded: int
    failed: list[tuple[int, str]]
    seconds: float


def encode_paths(
    encoder: ClassTokenEncoder, paths: Sequence[Path], batch_size: int = 32, num_workers: int = 0, bar=None
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Class tokens of ``paths``, in batches of ``batch_size`` taken in order from ``paths[0]``.

    The batches are exactly those :func:`encode_files` forms for a chunk, so
    a caller that passes the same run of paths gets bit-identical tokens even
    from models whose output depends on what else is in the batch.

    Returns
    -------
    (tokens, failed)
        ``tokens`` float32 ``[len(paths), dim]`` with NaN rows for unreadable
        images; ``failed`` lists ``(position in paths, problem)`` in order.
    """
    tokens = np.full((len(paths), encoder.dim), np.nan, dtype=np.float32)
    failed: list[tuple[int, str]] = []
    loader = torch.utils.data.DataLoader(
        _ImageFiles(paths, encoder), batch_size=batch_size, num_workers=num_workers,
        collate_fn=_collate, shuffle=False,
    )
    for pixels, indices, bad in loader:
        if pixels is not None:
            tokens[indices] = encoder.encode_pixels(pixels)
        failed.extend(bad)
        if bar is not None:
            bar.update(len(indices) + len(bad))
    return tokens, failed


def chunk_manifest(encoder: ClassTokenEncoder, paths: Sequence[Path], chunk_size: int) -> dict:
    """What identifies the chunks of :func:`encode_files` (``chunks/manifest.json``)."""
    return {
        "encoder": encoder.fingerprint(),
        "paths": hashlib.sha256("\n".join(map(str, paths)).encode()).hexdigest(),
        "chunk_size": chunk_size,
        "dim": encoder.dim,
    }


def prepare_chunk_dir(chunk_dir: Path, manifest: dict) -> None:
    """Create ``chunk_dir``, first removing chunks written under another manifest."""
    manifest_path = chunk_dir / "manifest.json"
    if chunk_dir.exists() and (not manifest_path.exists() or read_json(manifest_path) != manifest):
        # Chunks from another encoder or image list must not be mixed in.
        shutil.rmtree(chunk_dir)
    chunk_dir.mkdir(parents=True, exist_ok=True)
    write_json(manifest_path, manifest)


def merge_chunks(
    out_dir: Path, paths: Sequence[Path], dim: int, chunk_size: int, failed: Sequence[tuple[int, str]]
) -> Path:
    """Concatenate ``out_dir/chunks/tokens_*.npy`` into ``class_tokens.npy``; write ``failed_images.json``."""
    chunk_dir = out_dir / "chunks"
    tokens_path = out_dir / "class_tokens.npy"
    with atomic_path(tokens_path) as temporary:
        merged = np.lib.format.open_memmap(temporary, mode="w+", dtype=np.float32, shape=(len(paths), dim))
        for chunk in range(math.ceil(len(paths) / chunk_size)):
            lo = chunk * chunk_size
            part = np.load(chunk_dir / f"tokens_{chunk:06d}.npy")
            merged[lo: lo + len(part)] = part
        merged.flush()
        del merged
    write_json(out_dir / "failed_images.json", [{"row": i, "path": str(paths[i]), "error": p} for i, p in failed])
    return tokens_path


def dataset_image_paths(data_dir: str | Path, image_paths: Sequence[str]) -> list[Path]:
    """Absolute paths of the data stage's ``images.csv`` ``image_path`` column (root from ``dataset.json``).

    The encode chapter and :mod:`saerad.encode.sharded` both build their
    image list here: the list is hashed into the chunk manifest, so the two
    must agree to the character for one to reuse the other's chunks.
    """
    dataset_path = Path(data_dir) / "dataset.json"
    if not dataset_path.exists():
        raise FileNotFoundError(f"{dataset_path} is missing: run the data stage first")
    dataset_root = Path(read_json(dataset_path)["root"])
    return [dataset_root / path for path in image_paths]


def encode_files(
    encoder: ClassTokenEncoder,
    paths: Sequence[str | Path],
    out_dir: str | Path,
    batch_size: int = 32,
    chunk_size: int = 2048,
    num_workers: int = 0,
    progress: bool = True,
) -> EncodeResult:
    """Encode image files in chunks into ``out_dir/class_tokens.npy``.

    Rows of the output follow ``paths``. An image that cannot be read gets
    a row of NaN and is listed in the result's ``failed`` (and in
    ``failed_images.json``), so row ``k`` always belongs to ``paths[k]``.
    Finished chunks are kept in ``out_dir/chunks/``; a re-run with the same
    encoder and paths skips them. :mod:`saerad.encode.sharded` writes the
    same chunks from several processes.
    """
    import time

    out_dir = Path(out_dir)
    chunk_dir = out_dir / "chunks"
    paths = [Path(p) for p in paths]
    prepare_chunk_dir(chunk_dir, chunk_manifest(encoder, paths, chunk_size))

    started = time.perf_counter()
    n_chunks = math.ceil(len(paths) / chunk_size)
    failed: list[tuple[int, str]] = []
    bar = tqdm(total=len(paths), desc="encoding", unit="img", disable=not progress)
    for chunk in range(n_chunks):
        chunk_path = chunk_dir / f"tokens_{chunk:06d}.npy"
        failed_path = chunk_dir / f"failed_{chunk:06d}.json"
        lo, hi = chunk * chunk_size, min(len(paths), (chunk + 1) * chunk_size)
        if chunk_path.exists() and failed_path.exists():
            failed.extend((int(i), p) for i, p in read_json(failed_path))
            bar.update(hi - lo)
            continue
        tokens, local_failed = encode_paths(encoder, paths[lo:hi], batch_size, num_workers, bar)
        chunk_failed = [(lo + i, problem) for i, problem in local_failed]
        write_npy(chunk_path, tokens)
        write_json(failed_path, chunk_failed)
        failed.extend(chunk_failed)
    bar.close()

    tokens_path = merge_chunks(out_dir, paths, encoder.dim, chunk_size, failed)
    return EncodeResult(tokens_path, len(paths) - len(failed), failed, time.perf_counter() - started)


def norm_scale(tokens: np.ndarray) -> float:
    """The constant c with mean ||c z|| = sqrt(dim) (paper, Appendix B.3)."""
    finite = tokens[np.isfinite(tokens).all(axis=1)]
    if len(finite) == 0:
        raise ValueError("no finite class tokens to compute the scale from")
    mean_norm = float(np.linalg.norm(finite.astype(np.float64), axis=1).mean())
    return math.sqrt(tokens.shape[1]) / mean_norm
