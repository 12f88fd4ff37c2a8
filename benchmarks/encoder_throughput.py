"""Encoder throughput: the demo encoder beside a Rad-DINO-sized ViT-B/14 at 518 px.

Both are timed in the same run on the same machine, so their ratio is
meaningful even where absolute numbers are not. The Rad-DINO-sized model has
random weights (its architecture is what costs time, not its values), built
from a configuration, so nothing is downloaded.

    python benchmarks/encoder_throughput.py [--images 8] [--batch-size 4] [--device cpu]

Prints images/s for each, the ratio, and the time it would take to encode
MIMIC-CXR's 243,334 frontal images (239,931 train + 3,403 test) at that rate.

Also timed: reading one MIMIC-CXR-JPG-sized image (a 2,544 x 3,056 8-bit JPEG,
the most common size in MIMIC-CXR-JPG) and preprocessing it as Rad-DINO's
processor does (resize to 518 on the short side, centre crop, normalise), on
one CPU core. On a GPU that, not the ViT, usually limits throughput: each
rank's DataLoader workers must decode as fast as the GPU encodes (see the
book's page on MIMIC-CXR at paper scale).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoModel, BitImageProcessor, Dinov2Config, Dinov2Model

REPO_ROOT = Path(__file__).resolve().parent.parent
MIMIC_FRONTAL_IMAGES = 239_931 + 3_403


def images_per_second(model: torch.nn.Module, image_size: int, n_images: int, batch_size: int, device: str) -> float:
    model.to(device).eval()
    pixels = torch.randn(batch_size, 3, image_size, image_size, device=device)
    with torch.inference_mode():
        model(pixel_values=pixels)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        done = 0
        while done < n_images:
            model(pixel_values=pixels)
            done += batch_size
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return done / (time.perf_counter() - started)


def decode_images_per_second(n_images: int, height: int = 3056, width: int = 2544) -> float:
    """Images/s of JPEG decoding plus Rad-DINO-style preprocessing on one core (what one DataLoader worker does)."""
    processor = BitImageProcessor(size={"shortest_edge": 518}, crop_size={"height": 518, "width": 518},
                                  do_center_crop=True, do_convert_rgb=True)
    # A smooth radiograph-like field with noise, so the JPEG is about as large as a real one (1-2 MB).
    rng = np.random.default_rng(0)
    rows, columns = np.mgrid[0:height, 0:width]
    field = 128 + 60 * np.sin(rows / 300.0) * np.cos(columns / 250.0) + rng.normal(0, 12, (height, width))
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "frontal.jpg"
        Image.fromarray(np.clip(field, 0, 255).astype(np.uint8), mode="L").save(path, quality=95)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            started = time.perf_counter()
            for _ in range(n_images):
                with Image.open(path) as image:
                    rgb = image.convert("RGB")
                processor(images=[rgb], return_tensors="pt")
            return n_images / (time.perf_counter() - started)
        finally:
            torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=8, help="images timed per model")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--decode-images", type=int, default=10, help="MIMIC-sized JPEGs decoded (0: skip)")
    parser.add_argument("--demo-encoder", default=str(REPO_ROOT / "models" / "synthcxr-resnet-small"))
    args = parser.parse_args()
    torch.manual_seed(0)

    demo = AutoModel.from_pretrained(args.demo_encoder)
    demo_size = json.loads((Path(args.demo_encoder) / "preprocessor_config.json").read_text())["crop_size"]["height"]
    rad_dino_sized = Dinov2Model(Dinov2Config(image_size=518, patch_size=14, hidden_size=768,
                                              num_hidden_layers=12, num_attention_heads=12))
    results = {}
    for name, model, size, count in (
        ("demo encoder", demo, demo_size, args.images * 32),
        ("Rad-DINO-sized ViT-B/14 @ 518 px", rad_dino_sized, 518, args.images),
    ):
        rate = images_per_second(model, size, count, args.batch_size, args.device)
        parameters = sum(p.numel() for p in model.parameters())
        results[name] = {"parameters": parameters, "image_size": size, "images_per_second": rate,
                         "hours_for_mimic_cxr": MIMIC_FRONTAL_IMAGES / rate / 3600}
        print(f"{name:34s} {parameters / 1e6:6.1f} M params  {rate:9.2f} images/s  "
              f"MIMIC-CXR frontal images: {MIMIC_FRONTAL_IMAGES / rate / 3600:8.1f} h", flush=True)
    demo_rate = results["demo encoder"]["images_per_second"]
    big_rate = results["Rad-DINO-sized ViT-B/14 @ 518 px"]["images_per_second"]
    print(f"ratio (demo / Rad-DINO-sized): {demo_rate / big_rate:.0f}x on {args.device} "
          f"with {torch.get_num_threads()} threads")
    if args.decode_images:
        decode_rate = decode_images_per_second(args.decode_images)
        results["decode + preprocess, 1 core"] = {"images_per_second": decode_rate}
        print(f"MIMIC-sized JPEG (2544x3056) decode + Rad-DINO preprocessing on 1 CPU core: {decode_rate:.1f} images/s "
              f"({MIMIC_FRONTAL_IMAGES / decode_rate / 3600:.1f} core-hours for MIMIC-CXR's frontal images)")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
