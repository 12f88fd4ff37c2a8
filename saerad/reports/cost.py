"""Compute per report of the offline path (Appendix F, Table 4).

The offline path is: image encoder forward -> SAE encode -> active features
-> offline composer. FLOPs are counted with
:class:`torch.utils.flop_counter.FlopCounterMode`, which counts matrix
products, convolutions and attention (the operations that dominate);
element-wise operations (ReLU, gating, normalisation) are not counted, so
the figures are slight under-counts. The composer does no tensor arithmetic
(string handling only): it is listed with 0 counted FLOPs and its measured
wall time.

Two scales:

- *demo*: the demo encoder checkpoint (``models/synthcxr-resnet-small``,
  loaded with :class:`saerad.encode.encoder.ClassTokenEncoder`) and the demo SAE,
  counted by running them;
- *paper*: a Rad-DINO-shaped ViT-B/14 (``Dinov2Model``: 12 layers, width
  768, 12 heads, 518 × 518 input) and a ×64 SAE-Rad (768 -> 49,152), built on
  PyTorch's ``meta`` device so that the count needs neither the weights nor
  the arithmetic.

Table 4 of the paper estimates 0.1 TFLOP per SAE-Rad report; the tables
here carry that figure in a column labelled ``paper``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.flop_counter import FlopCounterMode

PAPER_TFLOP_PER_REPORT = 0.1  # Table 4, "Estimated inference Tera-FLOPs per report", SAE-Rad
RAD_DINO_SHAPE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "patch_size": 14,
                  "image_size": 518, "mlp_ratio": 4}


def count_flops(function: Callable, *args, **kwargs) -> int:
    """FLOPs of ``function(*args, **kwargs)`` as FlopCounterMode counts them (no gradients)."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        function(*args, **kwargs)
    return int(counter.get_total_flops())


def encoder_input_size(encoder) -> tuple[int, int]:
    """(height, width) of the pixels the encoder's processor produces."""
    settings = encoder.processor.to_dict()
    crop = settings.get("crop_size") or settings.get("size")
    if isinstance(crop, Mapping):
        if "height" in crop:
            return int(crop["height"]), int(crop["width"])
        if "shortest_edge" in crop:
            return int(crop["shortest_edge"]), int(crop["shortest_edge"])
    if isinstance(crop, int):
        return crop, crop
    raise ValueError(f"cannot tell the input size of encoder {encoder.name} from its processor settings {crop!r}")


def encoder_flops_per_image(encoder) -> int:
    """FLOPs of one forward pass of a :class:`saerad.encode.encoder.ClassTokenEncoder` on one image."""
    height, width = encoder_input_size(encoder)
    pixels = torch.zeros(1, 3, height, width, device=encoder.device, dtype=encoder.dtype)
    return count_flops(lambda: encoder.model(pixel_values=pixels))


def sae_flops_per_token(sae) -> int:
    """FLOPs of ``sae.feature_activations`` for one token (encoder product; the decoder norms
    are per-feature constants at inference and are counted too, as the method recomputes them)."""
    parameter = next(sae.parameters())
    token = torch.zeros(1, sae.config.d_in, device=parameter.device, dtype=parameter.dtype)
    return count_flops(sae.feature_activations, token)


def paper_scale_flops(expansion_factor: int = 64) -> dict[str, int]:
    """FLOPs per image of a Rad-DINO-shaped encoder and a ×``expansion_factor`` SAE-Rad, on the meta device."""
    from transformers import Dinov2Config, Dinov2Model

    from saerad.sae import build_sae, make_config

    with torch.device("meta"):
        encoder = Dinov2Model(Dinov2Config(**RAD_DINO_SHAPE)).eval()
        sae = build_sae(make_config("sae_rad", d_in=RAD_DINO_SHAPE["hidden_size"], expansion_factor=expansion_factor))
    size = RAD_DINO_SHAPE["image_size"]
    pixels = torch.zeros(1, 3, size, size, device="meta")
    token = torch.zeros(1, RAD_DINO_SHAPE["hidden_size"], device="meta")
    return {"encoder": count_flops(lambda: encoder(pixel_values=pixels)),
            "sae": count_flops(sae.feature_activations, token)}


def time_per_call(function: Callable, repeats: int = 20, warmup: int = 2) -> float:
    """Median wall seconds of ``function()`` over ``repeats`` calls."""
    for _ in range(warmup):
        function()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def offline_report_cost(
    encoder, sae, image_paths: Sequence[str | Path], scale: float, descriptions: Mapping[int, object], tau: float,
    max_sentences: int = 6, aggregate: str = "sum", findings_of: Callable | None = None,
    statements_per_feature: int | None = None, include_paper_scale: bool = True,
) -> pd.DataFrame:
    """FLOPs and wall seconds per report of the offline path, next to Table 4's estimate.

    Parameters
    ----------
    encoder
        A :class:`saerad.encode.encoder.ClassTokenEncoder` (the demo encoder here).
    sae
        The SAE whose activations define the features.
    image_paths
        Real images to time the end-to-end path on (one report each).
    scale
        The token scale of the encode stage (``encode/scale.json``).
    descriptions, tau, max_sentences, aggregate, findings_of, statements_per_feature
        As for :func:`saerad.reports.composer.compose_report`.

    Returns
    -------
    DataFrame
        ``scale, component, flops_per_report, seconds_per_report, tflops_per_report,
        paper_tflops_per_report``;
        the ``paper`` column is filled on the total rows only (Table 4 gives no breakdown).
        Paper-scale rows have FLOPs only (nothing runs).
    """
    from PIL import Image

    from saerad.reports.active import active_features
    from saerad.reports.composer import compose_report

    if not image_paths:
        raise ValueError("offline_report_cost needs at least one image to time")
    images = []
    for path in image_paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    parameter = next(sae.parameters())

    def encode(image):
        return encoder.encode_images([image]) * np.float32(scale)

    def activate(token):
        with torch.no_grad():
            return sae.feature_activations(torch.as_tensor(token, device=parameter.device, dtype=parameter.dtype))[0]

    tokens = [encode(image) for image in images]
    rows_active = [active_features(activate(token), tau) for token in tokens]
    encoder_seconds = float(np.median([time_per_call(lambda i=i: encode(i), repeats=3, warmup=1) for i in images]))
    sae_seconds = float(np.median([time_per_call(lambda t=t: activate(t), repeats=10) for t in tokens]))
    compose_seconds = float(np.median([
        time_per_call(lambda a=a: compose_report(a, descriptions, max_sentences, aggregate, findings_of, statements_per_feature), repeats=10)
        for a in rows_active]))
    def report_for(image):
        return compose_report(active_features(activate(encode(image)), tau), descriptions, max_sentences, aggregate,
                              findings_of, statements_per_feature)

    end_to_end = [time_per_call(lambda i=i: report_for(i), repeats=3, warmup=1) for i in images]

    encoder_flops, sae_flops = encoder_flops_per_image(encoder), sae_flops_per_token(sae)
    rows = [
        ("demo", f"encoder forward ({encoder.name}, preprocessing in the time)", encoder_flops, encoder_seconds, None),
        ("demo", f"SAE encode (d_in {sae.config.d_in} -> d_sae {sae.config.d_sae})", sae_flops, sae_seconds, None),
        ("demo", "active features + offline composer (no tensor arithmetic)", 0, compose_seconds, None),
        ("demo", "total (end to end, one image per report)", encoder_flops + sae_flops,
         float(np.median(end_to_end)), PAPER_TFLOP_PER_REPORT * 1e12),
    ]
    if include_paper_scale:
        paper = paper_scale_flops()
        rows += [
            ("paper", "encoder forward (Rad-DINO shape: ViT-B/14, 518 x 518)", paper["encoder"], None, None),
            ("paper", "SAE encode (768 -> 49,152)", paper["sae"], None, None),
            ("paper", "offline composer", 0, None, None),
            ("paper", "total", paper["encoder"] + paper["sae"], None, PAPER_TFLOP_PER_REPORT * 1e12),
        ]
    table = pd.DataFrame(rows, columns=["scale", "component", "flops_per_report", "seconds_per_report",
                                        "paper_flops_per_report"])
    table["tflops_per_report"] = table["flops_per_report"] / 1e12
    table["paper_tflops_per_report"] = table.pop("paper_flops_per_report") / 1e12
    return table


#: Table 4 of the paper, SAE-Rad's column (its estimates, not measurements).
PAPER_TABLE4 = {
    "training images": 239_931,
    "active training parameters": 76e6,
    "training TFLOP": 60_000.0,
    "inference TFLOP per report": PAPER_TFLOP_PER_REPORT,
}


def sae_training_flops_per_step(config, batch_size: int) -> int:
    """FLOPs of one dense training step (forward of every loss term and backward) of an SAE of ``config``
    (a :class:`saerad.sae.SAEConfig`) on ``batch_size`` tokens.

    Counted with :class:`FlopCounterMode` on the ``meta`` device, so it costs no
    arithmetic at any size. The dense step is what the paper's trainer runs;
    our gathered path (:mod:`saerad.sae.sparse`) does less when few features
    are live, so this is an upper bound for ours. Adam's element-wise update
    is not counted (a few FLOPs per parameter, small next to the products).
    """
    from saerad.sae import build_sae

    with torch.device("meta"):
        dense = build_sae(config)
    dense.gather_below = 0.0  # the dense path: its cost does not depend on the data
    tokens = torch.zeros(batch_size, config.d_in, device="meta")
    with FlopCounterMode(display=False) as counter:
        dense.forward_with_losses(tokens, 1.0)[0]["total"].backward()
    return int(counter.get_total_flops())


def compute_table(sae, n_training_images: int, steps: int, batch_size: int, training_seconds: float,
                  report_cost: pd.DataFrame, paper_expansion_factor: int = 64, paper_steps: int = 200_000,
                  paper_batch_size: int = 2048) -> pd.DataFrame:
    """The analogue of the paper's Table 4 for SAE-Rad: measured here, the paper's shape, the paper's estimate.

    Parameters
    ----------
    sae
        The demo SAE (its config gives the shape; counting runs on the meta device).
    n_training_images, steps, batch_size, training_seconds
        Of the demo SAE's training run (``training_seconds`` measured by its trainer).
    report_cost
        The output of :func:`offline_report_cost` (its ``total`` rows).
    paper_expansion_factor, paper_steps, paper_batch_size
        The paper profile's SAE (Appendix B.1/B.3), counted in the same way.

    Returns
    -------
    DataFrame
        ``quantity, demo_measured, paper_shape_counted, paper_estimate, note``.
    """
    from saerad.sae import build_sae, make_config

    paper_config = make_config("sae_rad", d_in=RAD_DINO_SHAPE["hidden_size"], expansion_factor=paper_expansion_factor)
    demo_parameters = sum(parameter.numel() for parameter in sae.parameters())
    with torch.device("meta"):
        paper_parameters = sum(parameter.numel() for parameter in build_sae(paper_config).parameters())
    demo_step = sae_training_flops_per_step(sae.config, batch_size)
    paper_step = sae_training_flops_per_step(paper_config, paper_batch_size)
    totals = report_cost[report_cost["component"].str.startswith("total")].set_index("scale")
    rows = [
        ("training images", n_training_images, PAPER_TABLE4["training images"], PAPER_TABLE4["training images"],
         "unique images whose class tokens train the SAE"),
        ("active training parameters", demo_parameters, paper_parameters, PAPER_TABLE4["active training parameters"],
         "SAE parameters (the encoder is frozen and not trained)"),
        ("training steps x batch", steps * batch_size, paper_steps * paper_batch_size, None, "tokens seen"),
        ("training TFLOP", demo_step * steps / 1e12, paper_step * paper_steps / 1e12, PAPER_TABLE4["training TFLOP"],
         "dense step (forward + backward of Eq. 9) counted by PyTorch x steps; ours trains on fewer FLOPs"),
        ("training seconds", training_seconds, None, None, "measured wall time of the main SAE (2-core CPU)"),
        ("inference TFLOP per report", totals.loc["demo", "tflops_per_report"],
         totals.loc["paper", "tflops_per_report"] if "paper" in totals.index else None,
         PAPER_TABLE4["inference TFLOP per report"], "encoder + SAE counted by PyTorch; offline composer"),
        ("inference seconds per report", totals.loc["demo", "seconds_per_report"], None, None,
         "measured end to end on this CPU, one image per report"),
    ]
    return pd.DataFrame(rows, columns=["quantity", "demo_measured", "paper_shape_counted", "paper_estimate", "note"])
