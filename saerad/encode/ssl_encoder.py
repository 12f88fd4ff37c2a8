"""Train a self-supervised encoder on SynthCXR pixels alone (issue 21).

The book's demo encoder (``models/synthcxr-resnet-small``, :mod:`saerad.encode.demo_encoder`)
was trained with a linear head on the very findings the SAE later "discovers".
The paper's encoder, Rad-DINO, never saw a label. This module trains a
stand-in that never sees one either: its training world is rendered with a
seed of its own (disjoint from the book's demo world), and the only thing the
trainer ever receives from it is pixels (:class:`PixelDataset`). No planted
state, label, attribute or report text is read on the training path; the
optional *monitor* probe (:func:`monitor_world`) renders a third world with
its own seed and reads its findings only to report progress in
``training.json``, never to train or to select a checkpoint.

Recipes (``--recipe``), all on a ``transformers`` ``ResNetModel`` whose
``pooler_output`` is the plain mean of its last 4 × 4 feature map (so the
book's exact spatial heat maps, :mod:`saerad.features.spatial`, still work):

``simclr``
    Contrastive (NT-Xent) between two softly augmented views, through an MLP
    projector after pooling.
``vicreg``
    Variance-invariance-covariance between two views, through a wide expander.
``mae``
    A convolutional masked autoencoder: half of the 16 × 16 patches are blanked
    and a light decoder rebuilds the image at 64 × 64 from the last feature map
    alone (masked patches weigh 1, visible ones 0.25).
``mae-vicreg``
    Both: each of two views is masked and rebuilt, and VICReg ties their pooled
    tokens.
``vicreg-local``
    VICReg on the pooled token plus VICReg between the cells of the two views'
    4 × 4 feature maps that show the same point of the image (VICRegL-style),
    so that every position, not only the average, has to carry the content.

Augmentations keep what the labels depend on: no horizontal flip (laterality),
crops keep at least 70 % of the area (a crop must not cut a finding out),
rotations within 5 degrees, mild brightness, contrast, gamma and noise, and no
blur (it erases thin lines such as sternotomy wires and tubes).

    python -m saerad.encode.ssl_encoder --recipe vicreg --out models/synthcxr-vicreg --minutes 25
    python -m saerad.encode.ssl_encoder --recipe vicreg --out models/synthcxr-vicreg --minutes 25 --resume

The run checkpoints every ``--checkpoint-minutes`` (``checkpoint.pt`` in the
output folder) and ``--resume`` continues from it bit for bit (same batches,
same augmentations, same weights). The finished folder holds ``config.json``,
``model.safetensors`` and ``preprocessor_config.json`` (loadable by
:class:`saerad.encode.encoder.ClassTokenEncoder`), ``training.json`` and ``README.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from saerad.encode.comparison import token_geometry
from saerad.io import write_json, write_text

#: The book's demo world uses seed 0 (params/demo.yaml); the supervised demo encoder used 20241003.
DEFAULT_WORLD_SEED = 20261204
MACHINE = "2-core CPU, 1 thread, nice 19, shared"


@dataclass(frozen=True)
class Recipe:
    objective: str
    views: int
    description: str


RECIPES = {
    "simclr": Recipe("simclr", 2, "SimCLR (NT-Xent, temperature 0.2) through a 256-512-128 MLP projector"),
    "vicreg": Recipe("vicreg", 2, "VICReg (25/25/1) through a 256-1024-1024 expander"),
    "mae": Recipe("mae", 1, "convolutional masked autoencoder (50 % of 16 px patches blanked, 64 px reconstruction)"),
    "mae-vicreg": Recipe("mae-vicreg", 2, "masked autoencoder on two views plus VICReg between their pooled tokens"),
    "vicreg-local": Recipe("vicreg-local", 2, "VICReg on the pooled token plus VICReg between matching cells of the "
                                              "two views' 4 x 4 feature maps (VICRegL-style)"),
}


# --- the training world: pixels only ---------------------------------------------------------------------------

def render_world(n_patients: int, image_size: int, seed: int, progress: bool = False) -> np.ndarray:
    """Every frontal image of a SynthCXR world, uint8 ``[n, size, size]``; nothing else is kept."""
    from saerad.synthcxr import SynthCXRConfig, sample_studies

    config = SynthCXRConfig(n_patients=n_patients, image_size=image_size, seed=seed, lateral_fraction=0.0,
                            n_defects=0)
    pixels = [image.image for study in sample_studies(config, render=True, progress=progress)
              for image in study.images if image.is_frontal]
    return np.stack(pixels).astype(np.uint8)


class PixelDataset(torch.utils.data.Dataset):
    """Images as float tensors ``[1, H, W]`` in [0, 1]. Items are pixels and nothing else."""

    def __init__(self, images: np.ndarray):
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(f"PixelDataset wants uint8 [n, H, W] images, got {images.dtype} {images.shape}")
        self.images = torch.from_numpy(np.ascontiguousarray(images))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index][None].float() / 255.0


# --- augmentations ------------------------------------------------------------------------------------------------

def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def augment(x: torch.Tensor, generator: torch.Generator, min_area: float = 0.7, max_degrees: float = 5.0,
            noise: float = 0.03, return_theta: bool = False):
    """Soft augmentation of ``[B, 1, H, W]`` images in [0, 1]; never mirrors.

    A crop of 70-100 % of the area (aspect 0.9-1.1) anywhere inside the image,
    rotation within ``max_degrees``, contrast 0.8-1.25, brightness ±0.08,
    gamma 0.8-1.25 and Gaussian noise up to ``noise``. Every affine map has a
    positive determinant, so left stays left. With ``return_theta`` also the
    ``[B, 2, 3]`` affine maps (output to input coordinates, as ``affine_grid``).
    """
    n = len(x)
    area = _uniform(n, min_area, 1.0, generator)
    aspect = torch.exp(_uniform(n, math.log(0.9), math.log(1.1), generator))
    sx = torch.sqrt(area * aspect).clamp(max=1.0)
    sy = torch.sqrt(area / aspect).clamp(max=1.0)
    tx = (1 - sx) * _uniform(n, -1, 1, generator)
    ty = (1 - sy) * _uniform(n, -1, 1, generator)
    angle = torch.deg2rad(_uniform(n, -max_degrees, max_degrees, generator))
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([sx * cos, -sy * sin, tx], 1), torch.stack([sx * sin, sy * cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast = torch.exp(_uniform(n, math.log(0.8), math.log(1.25), generator)).view(n, 1, 1, 1)
    brightness = _uniform(n, -0.08, 0.08, generator).view(n, 1, 1, 1)
    gamma = torch.exp(_uniform(n, math.log(0.8), math.log(1.25), generator)).view(n, 1, 1, 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = ((out - mean) * contrast + mean + brightness).clamp(0, 1) ** gamma
    sigma = _uniform(n, 0, noise, generator).view(n, 1, 1, 1)
    out = out + sigma * torch.randn(out.shape, generator=generator)
    return (out.clamp(0, 1), theta) if return_theta else out.clamp(0, 1)


def matching_cells(first: torch.Tensor, second: torch.Tensor, theta_first: torch.Tensor,
                   theta_second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Feature vectors of the cells of ``first`` (``[B, C, h, w]``) and of ``second`` at the same image points.

    A cell centre of view 1 is taken back to the original image with its affine
    map and forward into view 2 with the inverse of view 2's; ``second`` is
    sampled there bilinearly. Returns ``[N, C]`` pairs for the cells that land
    inside view 2.
    """
    b, c, h, w = first.shape
    ys = (torch.arange(h, dtype=first.dtype) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, dtype=first.dtype) + 0.5) / w * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    points = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.ones(h * w)], 0)  # [3, hw]
    image_points = theta_first @ points  # [B, 2, hw]
    inverse = torch.linalg.inv(theta_second[:, :, :2])
    second_points = inverse @ (image_points - theta_second[:, :, 2:])  # [B, 2, hw]
    grid = second_points.transpose(1, 2).reshape(b, h, w, 2)
    sampled = F.grid_sample(second, grid, mode="bilinear", padding_mode="border", align_corners=False)
    inside = (second_points.abs() <= 1).all(dim=1).reshape(-1)  # [B*hw]
    flat_first = first.permute(0, 2, 3, 1).reshape(-1, c)
    flat_second = sampled.permute(0, 2, 3, 1).reshape(-1, c)
    return flat_first[inside], flat_second[inside]


def patch_mask(n: int, image_size: int, patch: int, ratio: float, generator: torch.Generator) -> torch.Tensor:
    """``[n, 1, H, W]`` with 1 where a patch is blanked (``ratio`` of the ``patch`` × ``patch`` cells)."""
    cells = image_size // patch
    scores = torch.rand(n, cells * cells, generator=generator)
    k = int(round(ratio * cells * cells))
    masked = torch.zeros(n, cells * cells)
    masked.scatter_(1, scores.argsort(dim=1)[:, :k], 1.0)
    return masked.view(n, 1, cells, cells).repeat_interleave(patch, 2).repeat_interleave(patch, 3)


# --- networks -------------------------------------------------------------------------------------------------------

def make_encoder(hidden_size: int = 256, seed: int = 0):
    """A randomly initialised ``ResNetModel`` like the demo encoder: pooled output = mean of a 4 × 4 map at 128 px."""
    from transformers import ResNetConfig, ResNetModel

    torch.manual_seed(seed)
    widths = [hidden_size // 8, hidden_size // 4, hidden_size // 2, hidden_size]
    config = ResNetConfig(num_channels=3, embedding_size=widths[0], hidden_sizes=widths, depths=[1, 1, 2, 1],
                          layer_type="basic", downsample_in_first_stage=False)
    return ResNetModel(config)


def mlp(sizes: list[int], last_norm: bool = False) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1], bias=i == len(sizes) - 2 and not last_norm))
        if i < len(sizes) - 2:
            layers += [nn.BatchNorm1d(sizes[i + 1]), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class Decoder(nn.Module):
    """From the last feature map ``[B, C, 4, 4]`` to a ``[B, 1, 64, 64]`` image (four 2x upsamplings)."""

    def __init__(self, channels: int):
        super().__init__()
        widths = [128, 64, 32, 32, 16]
        blocks: list[nn.Module] = [nn.Conv2d(channels, widths[0], 1)]
        for a, b in zip(widths[:-1], widths[1:]):
            blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(a, b, 3, padding=1),
                       nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
        blocks.append(nn.Conv2d(widths[-1], 1, 3, padding=1))
        self.net = nn.Sequential(*blocks)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


def make_heads(recipe: str, hidden_size: int) -> nn.ModuleDict:
    objective = RECIPES[recipe].objective
    heads = nn.ModuleDict()
    if objective == "simclr":
        heads["projector"] = mlp([hidden_size, 512, 128])
    if objective in ("vicreg", "mae-vicreg", "vicreg-local"):
        heads["expander"] = mlp([hidden_size, 1024, 1024])
    if objective == "vicreg-local":
        heads["local_expander"] = mlp([hidden_size, 512, 512])
    if objective in ("mae", "mae-vicreg"):
        heads["decoder"] = Decoder(hidden_size)
    return heads


# --- losses ---------------------------------------------------------------------------------------------------------

def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    z = F.normalize(torch.cat([a, b]), dim=1)
    similarity = z @ z.T / temperature
    n = len(a)
    similarity.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    return F.cross_entropy(similarity, targets)


def vicreg_loss(a: torch.Tensor, b: torch.Tensor, invariance: float = 25.0, variance: float = 25.0,
                covariance: float = 1.0) -> torch.Tensor:
    n, d = a.shape
    loss = invariance * F.mse_loss(a, b)
    a, b = a - a.mean(0), b - b.mean(0)
    for z in (a, b):
        std = torch.sqrt(z.var(0) + 1e-4)
        loss = loss + variance * F.relu(1 - std).mean() / 2
        cov = (z.T @ z) / (n - 1)
        off = cov - torch.diag(torch.diag(cov))
        loss = loss + covariance * off.pow(2).sum() / d
    return loss


def masked_reconstruction(decoded: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                          visible_weight: float = 0.25) -> torch.Tensor:
    """MSE at the decoder's resolution; masked pixels weigh 1, visible ones ``visible_weight``."""
    size = decoded.shape[-1]
    target = F.adaptive_avg_pool2d(target, size)
    mask = F.adaptive_avg_pool2d(mask, size)
    error = (decoded - target).pow(2)
    return (error * mask).sum() / mask.sum().clamp(min=1) + visible_weight * (error * (1 - mask)).sum() / (
        (1 - mask).sum().clamp(min=1))


# --- training -------------------------------------------------------------------------------------------------------

def _as_input(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return ((x - mean) / std).expand(-1, 3, -1, -1)


def training_loss(recipe: str, encoder, heads: nn.ModuleDict, batch: torch.Tensor, generator: torch.Generator,
                  mean: float, std: float, mask_ratio: float = 0.5, mask_patch: int = 16) -> torch.Tensor:
    """The recipe's loss on one batch of ``[B, 1, H, W]`` pixels in [0, 1]."""
    objective = RECIPES[recipe].objective
    if objective == "vicreg-local":
        (view_a, theta_a), (view_b, theta_b) = (augment(batch, generator, return_theta=True) for _ in range(2))
        out_a, out_b = (encoder(pixel_values=_as_input(v, mean, std)) for v in (view_a, view_b))
        pooled = vicreg_loss(heads["expander"](out_a.pooler_output.flatten(1)),
                             heads["expander"](out_b.pooler_output.flatten(1)))
        cells_a, cells_b = matching_cells(out_a.last_hidden_state, out_b.last_hidden_state, theta_a, theta_b)
        local = vicreg_loss(heads["local_expander"](cells_a), heads["local_expander"](cells_b))
        return 0.5 * pooled + 0.5 * local
    views = [augment(batch, generator) for _ in range(RECIPES[recipe].views)]
    if objective in ("simclr", "vicreg"):
        tokens = [encoder(pixel_values=_as_input(v, mean, std)).pooler_output.flatten(1) for v in views]
        if objective == "simclr":
            return nt_xent(heads["projector"](tokens[0]), heads["projector"](tokens[1]))
        return vicreg_loss(heads["expander"](tokens[0]), heads["expander"](tokens[1]))
    losses, tokens = [], []
    for view in views:
        inputs = _as_input(view, mean, std)
        mask = patch_mask(len(view), view.shape[-1], mask_patch, mask_ratio, generator)
        output = encoder(pixel_values=inputs * (1 - mask))
        losses.append(masked_reconstruction(heads["decoder"](output.last_hidden_state), inputs[:, :1], mask))
        tokens.append(output.pooler_output.flatten(1))
    loss = torch.stack(losses).mean()
    if objective == "mae-vicreg":
        loss = loss + 0.04 * vicreg_loss(heads["expander"](tokens[0]), heads["expander"](tokens[1]))
    return loss


def learning_rate_factor(step: int, total_steps: int, warmup: int) -> float:
    progress = min(1.0, step / max(1, total_steps))
    return min(1.0, (step + 1) / max(1, warmup)) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def monitor_world(n_patients: int, image_size: int, seed: int):
    """A separate world for the progress probe: its frontal pixels and finding labels (never used to train)."""
    import pandas as pd

    from saerad.synthcxr import FINDINGS, SynthCXRConfig, sample_studies

    config = SynthCXRConfig(n_patients=n_patients, image_size=image_size, seed=seed, lateral_fraction=0.0,
                            n_defects=0)
    pixels, rows = [], []
    for study in sample_studies(config, render=True):
        for image in study.images:
            if image.is_frontal:
                pixels.append(image.image)
                rows.append({name: int(bool(image.state["findings"].get(name, {}).get("present", False)))
                             for name in FINDINGS})
    return np.stack(pixels), pd.DataFrame(rows)


@torch.inference_mode()
def encode_array(encoder, images: np.ndarray, mean: float, std: float, batch_size: int = 256) -> np.ndarray:
    """Pooled tokens of uint8 ``[n, H, W]`` images, preprocessed as the saved processor does."""
    was_training = encoder.training
    encoder.eval()
    tokens = []
    for start in range(0, len(images), batch_size):
        x = torch.from_numpy(images[start:start + batch_size]).float()[:, None] / 255.0
        tokens.append(encoder(pixel_values=_as_input(x, mean, std)).pooler_output.flatten(1).numpy())
    encoder.train(was_training)
    return np.concatenate(tokens)


def monitor_probe(encoder, monitor, mean: float, std: float) -> dict:
    from saerad.encode.probe import probe_auroc

    images, labels = monitor
    tokens = encode_array(encoder, images, mean, std)
    half = len(tokens) // 2
    table = probe_auroc(tokens[:half], labels[:half], tokens[half:], labels[half:], min_prevalence=0.02, seed=0)
    probed = table[table["probed"]]
    return {"median_auroc": round(float(probed["auroc"].median()), 4),
            "n_at_least_0.85": int((probed["auroc"] >= 0.85).sum()), "n_probed": int(len(probed)),
            **token_geometry(tokens)}


def _save_checkpoint(path: Path, state: dict) -> None:
    temporary = path.with_suffix(".tmp")
    torch.save(state, temporary)
    temporary.replace(path)


def train(args: argparse.Namespace) -> Path:
    """Run (or resume) one recipe; returns the output folder."""
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint_path = out / "checkpoint.pt"
    started = time.perf_counter()

    images = render_world(args.patients, args.image_size, args.world_seed)
    dataset = PixelDataset(images)
    mean = float(images.mean() / 255.0)
    std = float(images.std() / 255.0)
    render_seconds = time.perf_counter() - started
    print(f"{len(dataset)} training images rendered in {render_seconds:.0f} s", flush=True)
    monitor = monitor_world(args.monitor_patients, args.image_size, args.world_seed + 1) if args.monitor_patients else None

    encoder = make_encoder(args.hidden_size, args.seed)
    heads = make_heads(args.recipe, args.hidden_size)
    parameters = list(encoder.parameters()) + list(heads.parameters())
    optimiser = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=args.weight_decay)
    generator = torch.Generator().manual_seed(args.seed)
    state = {"step": 0, "epoch": 0, "position": 0, "order": None, "elapsed": 0.0, "total_steps": args.steps,
             "losses": [], "monitor": [], "checkpoints": 0}
    if args.resume and checkpoint_path.exists():
        saved = torch.load(checkpoint_path, weights_only=False)
        if saved["recipe"] != args.recipe:
            raise ValueError(f"{checkpoint_path} is of recipe {saved['recipe']}, not {args.recipe}")
        encoder.load_state_dict(saved["encoder"])
        heads.load_state_dict(saved["heads"])
        optimiser.load_state_dict(saved["optimiser"])
        generator.set_state(saved["generator"])
        state = saved["state"]
        print(f"resumed at step {state['step']} ({state['elapsed'] / 60:.1f} min trained)", flush=True)
    elif monitor is not None:
        state["monitor"].append({"step": 0, **monitor_probe(encoder, monitor, mean, std)})
        print(f"untrained monitor probe {state['monitor'][-1]}", flush=True)

    budget = args.minutes * 60.0
    steps_per_epoch = max(1, len(dataset) // args.batch_size)
    warmup = args.warmup
    session_start = time.perf_counter()
    session_elapsed0 = state["elapsed"]
    last_checkpoint = time.perf_counter()
    running: list[float] = []

    def checkpoint(final: bool = False) -> None:
        nonlocal last_checkpoint
        state["elapsed"] = session_elapsed0 + time.perf_counter() - session_start
        if monitor is not None and not final:
            state["monitor"].append({"step": state["step"], "minutes": round(state["elapsed"] / 60, 2),
                                     **monitor_probe(encoder, monitor, mean, std)})
            print(f"monitor probe {state['monitor'][-1]}", flush=True)
        state["checkpoints"] += 1
        _save_checkpoint(checkpoint_path, {"recipe": args.recipe, "encoder": encoder.state_dict(),
                                           "heads": heads.state_dict(), "optimiser": optimiser.state_dict(),
                                           "generator": generator.get_state(), "state": state})
        last_checkpoint = time.perf_counter()

    encoder.train()
    heads.train()
    timing_from = None
    while True:
        elapsed = session_elapsed0 + time.perf_counter() - session_start
        if state["total_steps"] is not None and state["step"] >= state["total_steps"]:
            break
        if elapsed >= budget:
            break
        if args.interrupt_after is not None and state["step"] >= args.interrupt_after:
            checkpoint(final=True)
            print(f"interrupted after step {state['step']} (checkpoint kept)", flush=True)
            return out
        if state["order"] is None or state["position"] >= steps_per_epoch:
            if state["order"] is not None:
                state["epoch"] += 1
            state["order"] = torch.randperm(len(dataset), generator=generator)
            state["position"] = 0
        # The total number of steps is fixed once, from the speed of steps 5-25, so that the schedule
        # (and a resumed run) does not depend on the clock afterwards.
        if state["total_steps"] is None:
            if state["step"] == 5:
                timing_from = time.perf_counter()
            if state["step"] == 25 and timing_from is not None:
                per_step = (time.perf_counter() - timing_from) / 20
                state["total_steps"] = int(25 + 0.93 * (budget - elapsed) / per_step)
                print(f"{per_step:.2f} s per step: {state['total_steps']} steps planned", flush=True)
        rows = state["order"][state["position"] * args.batch_size:(state["position"] + 1) * args.batch_size]
        batch = torch.stack([dataset[int(i)] for i in rows])
        total = state["total_steps"] or max(args.steps or 0, 10 ** 6)
        for group in optimiser.param_groups:
            group["lr"] = args.lr * learning_rate_factor(state["step"], total, warmup)
        loss = training_loss(args.recipe, encoder, heads, batch, generator, mean, std, args.mask_ratio)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 3.0)
        optimiser.step()
        state["step"] += 1
        state["position"] += 1
        running.append(loss.item())
        if state["step"] % args.log_every == 0:
            state["losses"].append({"step": state["step"], "loss": round(float(np.mean(running)), 5),
                                    "minutes": round((session_elapsed0 + time.perf_counter() - session_start) / 60, 2)})
            running = []
            print(f"step {state['step']}/{state['total_steps']} loss {state['losses'][-1]['loss']:.4f} "
                  f"({state['losses'][-1]['minutes']:.1f} min)", flush=True)
        if time.perf_counter() - last_checkpoint >= args.checkpoint_minutes * 60:
            checkpoint()
    checkpoint(final=True)
    final_monitor = None
    if monitor is not None:
        final_monitor = {"step": state["step"], "minutes": round(state["elapsed"] / 60, 2),
                         **monitor_probe(encoder, monitor, mean, std)}
        state["monitor"].append(final_monitor)
    save(encoder, args, mean, std, state, len(dataset), render_seconds)
    return out


def save(encoder, args: argparse.Namespace, mean: float, std: float, state: dict, n_images: int,
         render_seconds: float) -> None:
    from transformers import BitImageProcessor

    out = Path(args.out)
    encoder.eval()
    encoder.save_pretrained(out, safe_serialization=True)
    BitImageProcessor(
        do_resize=True, size={"shortest_edge": args.image_size}, do_center_crop=True,
        crop_size={"height": args.image_size, "width": args.image_size}, do_normalize=True,
        image_mean=[mean] * 3, image_std=[std] * 3, do_convert_rgb=True,
    ).save_pretrained(out)
    arguments = {k: v for k, v in vars(args).items() if k not in ("resume", "interrupt_after")}
    record = {
        "recipe": args.recipe,
        "objective": RECIPES[args.recipe].description,
        "command": f"python -m saerad.encode.ssl_encoder --recipe {args.recipe} --out {args.out} "
                   f"--minutes {args.minutes:g} --patients {args.patients} --world-seed {args.world_seed} "
                   f"--seed {args.seed}",
        "arguments": arguments,
        "training_images": n_images,
        "labels_used_in_training": "none (pixels only)",
        "steps": state["step"],
        "epochs": round(state["step"] * args.batch_size / n_images, 2),
        "loss_curve": state["losses"],
        "monitor_probe": state["monitor"],
        "monitor_world": (f"{args.monitor_patients} patients, seed {args.world_seed + 1}, half fit / half scored; "
                          f"reported only, never used to train or select") if args.monitor_patients else None,
        "training_minutes": round(state["elapsed"] / 60, 2),
        "render_seconds": round(render_seconds, 1),
        "machine": MACHINE,
        "parameters": sum(p.numel() for p in encoder.parameters()),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    write_json(out / "training.json", record)
    write_model_card(out)


def write_model_card(out: str | Path, comparison: str | Path | None = None) -> Path:
    """(Re)write ``README.md`` from ``training.json``, with the recipes' comparison table when given (markdown)."""
    out = Path(out)
    record = json.loads((out / "training.json").read_text())
    table = Path(comparison).read_text() if comparison else "(not measured yet: run benchmarks/ssl_encoder_probe.py)"
    text = MODEL_CARD.format(name=out.name, table=table, **{k: record[k] for k in (
        "recipe", "objective", "command", "training_images", "steps", "epochs", "training_minutes", "machine",
        "parameters")}, world_seed=record["arguments"]["world_seed"], patients=record["arguments"]["patients"])
    return write_text(out / "README.md", text)


MODEL_CARD = """# {name}: a self-supervised SynthCXR encoder

A `transformers` `ResNetModel` ({parameters:,} parameters, 128 px input, `pooler_output` = the plain mean of its
last 4 × 4 feature map, 256 values) trained **without labels**: recipe `{recipe}`, {objective}. It loads like
Rad-DINO through `saerad.encode.encoder.ClassTokenEncoder` and keeps the book's exact spatial heat maps.

**Training data.** {training_images} frontal images of a SynthCXR world with seed {world_seed} and {patients}
patients (natural prevalences), disjoint from the book's demo world (seed 0). The trainer receives pixels only
(`saerad.encode.ssl_encoder.PixelDataset`); no planted state, label, attribute or report text is read on its
training path. Augmentations: crops keeping 70-100 % of the area, rotation within 5°, mild contrast, brightness,
gamma and noise; no flips (laterality), no blur (thin devices).

**Run.** {steps} steps ({epochs} epochs) in {training_minutes:.1f} minutes on a {machine}. `training.json` holds the
arguments, the loss curve and a progress probe on a third world (reported only, never used to train or select).
Re-create it with `{command}` (add `--resume` to continue from `checkpoint.pt`).

## Recipes compared

Linear probes as the book's encode chapter fits them (`saerad.encode.probe.probe_auroc` on the demo world's class
tokens, train split against the rest, findings with prevalence ≥ 2 %); `benchmarks/ssl_encoder_probe.py`.
The bar of issue 21: median AUROC ≥ 0.90 and at least 12 of 16 findings ≥ 0.85.

{table}
"""


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", choices=sorted(RECIPES), default=None)
    parser.add_argument("--out", required=True)
    parser.add_argument("--minutes", type=float, default=25.0, help="training time budget (excluding rendering)")
    parser.add_argument("--steps", type=int, default=None, help="fixed number of steps (default: fit the budget)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    parser.add_argument("--patients", type=int, default=4000)
    parser.add_argument("--world-seed", type=int, default=DEFAULT_WORLD_SEED)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--mask-ratio", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--checkpoint-minutes", type=float, default=4.0)
    parser.add_argument("--monitor-patients", type=int, default=300,
                        help="patients of a third world probed at each checkpoint (0: none)")
    parser.add_argument("--log-every", type=int, default=20)
    parser.add_argument("--interrupt-after", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--card", action="store_true", help="only rewrite OUT/README.md (with --comparison)")
    parser.add_argument("--comparison", default=None, help="markdown table of the recipes for the model card")
    args = parser.parse_args(argv)
    if args.card:
        return write_model_card(args.out, args.comparison)
    if args.recipe is None:
        parser.error("--recipe is required to train")
    return train(args)


if __name__ == "__main__":
    main()
