"""The class-token-conditioned diffusion decoder of Appendix D: model, conditioning, Eq. 12, sampling.

The model is a ``diffusers`` ``UNet2DModel`` of three resolution levels with
two residual units each (group norm, SiLU): the first level plain
convolutions, the two lower ones with spatial self-attention, and the
mirror image on the way up (two attention blocks, then a plain one). It is
conditioned on a class token ``z`` by a linear map to 1024 values, laid out
as a 32 × 32 grid and broadcast to the image's size (nearest neighbour: at
128 × 128 each value covers a 4 × 4 block, at 32 × 32 the grid *is* the
image), then concatenated to the noisy image as a second input channel.

Pixels are in ``[-1, 1]`` inside the model (``[0, 1]`` outside). Training
noises an image with the 1000-step linear DDPM schedule and regresses the
noise (Eq. 12); sampling runs DDIM with ``eta = 0`` over a few steps, so an
image is a deterministic function of (token, starting noise): two tokens
decoded from the same noise differ only because the tokens differ.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from tqdm import TqdmWarning

from saerad.checkpoints import known_fields, require_positive

with warnings.catch_warnings():
    # diffusers imports tqdm.auto, which warns in a notebook without ipywidgets; we never use its bars.
    warnings.simplefilter("ignore", TqdmWarning)
    from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

#: The paper's conditioning vector length (Appendix D).
CONDITION_DIM = 1024


@dataclass(frozen=True)
class DecoderConfig:
    """Shape of the decoder.

    Parameters
    ----------
    token_dim
        Length of the class token (768 for Rad-DINO, 256 for the demo encoder).
    image_size
        Side of the square images the decoder draws (paper: 128).
    channels
        Feature maps at the three resolution levels (top to bottom).
    layers_per_block
        Residual units per level on the way down (Appendix D: two; ``diffusers``
        puts one more on the way up, to take the skip connection).
    norm_groups
        Groups of every group norm; must divide each of ``channels``.
    condition_dim
        Length of the projected token, a perfect square (Appendix D: 1024 = 32²).
    train_timesteps
        Length of the DDPM noise schedule (Eq. 12: 1000).
    seed
        Seed of the initial weights.
    """

    token_dim: int
    image_size: int = 32
    channels: tuple[int, int, int] = (32, 64, 64)
    layers_per_block: int = 2
    norm_groups: int = 8
    condition_dim: int = CONDITION_DIM
    train_timesteps: int = 1000
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        require_positive(self, ("token_dim", "image_size", "layers_per_block", "norm_groups", "condition_dim",
                                "train_timesteps"))
        if len(self.channels) != 3:
            raise ValueError(f"DecoderConfig.channels must give three levels (Appendix D), got {self.channels}")
        bad = [c for c in self.channels if c % self.norm_groups]
        if bad:
            raise ValueError(f"DecoderConfig.norm_groups={self.norm_groups} must divide every channel count, "
                             f"not {bad}")
        if self.image_size % 4:
            raise ValueError(f"DecoderConfig.image_size must be divisible by 4 (two downsamplings), "
                             f"got {self.image_size}")
        side = math.isqrt(self.condition_dim)
        if side * side != self.condition_dim:
            raise ValueError(f"DecoderConfig.condition_dim must be a perfect square to form a grid, "
                             f"got {self.condition_dim}")

    def to_dict(self) -> dict[str, Any]:
        payload = asdict(self)
        payload["channels"] = list(self.channels)
        return payload

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> "DecoderConfig":
        known_fields(cls, payload)
        return cls(**{**payload, "channels": tuple(payload.get("channels", cls.channels))})


class ConditionalDDPM(nn.Module):
    """``ε_θ(x_t, t, z)``: the UNet with the token as a second input channel.

    Attributes
    ----------
    project
        ``nn.Linear(token_dim, condition_dim)``: the token's projection.
    unet
        The ``diffusers`` ``UNet2DModel`` (2 input channels, 1 output).
    """

    def __init__(self, config: DecoderConfig):
        super().__init__()
        self.config = config
        # Initial weights from the config's seed alone, without touching the caller's global RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            self.project = nn.Linear(config.token_dim, config.condition_dim)
            self.unet = UNet2DModel(
                sample_size=config.image_size, in_channels=2, out_channels=1,
                layers_per_block=config.layers_per_block, block_out_channels=config.channels,
                down_block_types=("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
                up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                # Appendix D has three blocks and no separate bottleneck block.
                mid_block_type=None,
                norm_num_groups=config.norm_groups, act_fn="silu",
                # One head as wide as the level: on a CPU, several narrow heads cost
                # most of a training step (measured: 46 % with 8-wide heads).
                attention_head_dim=None,
            )

    def condition_map(self, tokens: Tensor) -> Tensor:
        """Project tokens to ``condition_dim`` values and lay them out as a ``[n, 1, size, size]`` map.

        The vector becomes a ``g × g`` grid (``g² = condition_dim``) that is
        broadcast to the image by nearest-neighbour repetition, so every
        projected value conditions one block of pixels.
        """
        if tokens.dim() != 2 or tokens.shape[1] != self.config.token_dim:
            raise ValueError(f"tokens must have shape [n, {self.config.token_dim}], got {list(tokens.shape)}")
        side = math.isqrt(self.config.condition_dim)
        grid = self.project(tokens).view(-1, 1, side, side)
        size = self.config.image_size
        return grid if side == size else F.interpolate(grid, size=(size, size), mode="nearest")

    def forward(self, noisy: Tensor, timesteps: Tensor, tokens: Tensor) -> Tensor:
        """Predicted noise ``ε_θ(x_t, t, z)``, shape ``[n, 1, size, size]``."""
        inputs = torch.cat([noisy, self.condition_map(tokens)], dim=1)
        return self.unet(inputs, timesteps).sample


def noise_schedule(config: DecoderConfig) -> DDPMScheduler:
    """The DDPM training schedule: ``train_timesteps`` steps, betas linear from 1e-4 to 0.02 (Ho et al.)."""
    return DDPMScheduler(num_train_timesteps=config.train_timesteps, beta_schedule="linear",
                         beta_start=1e-4, beta_end=0.02, clip_sample=True)


def to_model_range(pixels: Tensor) -> Tensor:
    """``[0, 1]`` grey values to the model's ``[-1, 1]``."""
    return pixels * 2.0 - 1.0


def to_pixel_range(samples: Tensor) -> Tensor:
    """The model's ``[-1, 1]`` back to ``[0, 1]`` (clipped)."""
    return ((samples + 1.0) / 2.0).clamp(0.0, 1.0)


def noise_prediction_loss(model: ConditionalDDPM, schedule: DDPMScheduler, images: Tensor, tokens: Tensor,
                          timesteps: Tensor, noise: Tensor) -> Tensor:
    """Eq. 12 for one batch: ``mean ||ε_θ(√ᾱ_t x_0 + √(1-ᾱ_t) ε, t, z) - ε||²``.

    Parameters
    ----------
    images
        ``x_0`` in the model's range, ``[n, 1, size, size]``.
    tokens
        ``z``, ``[n, token_dim]``.
    timesteps
        ``t`` per image, integers in ``[0, train_timesteps)``.
    noise
        ``ε``, same shape as ``images``.

    Returns
    -------
    Tensor
        The mean squared error over every pixel of the batch (the paper's
        expectation, estimated on the batch).
    """
    alphas_cumprod = schedule.alphas_cumprod.to(images.device, images.dtype)[timesteps].view(-1, 1, 1, 1)
    noisy = alphas_cumprod.sqrt() * images + (1.0 - alphas_cumprod).sqrt() * noise
    return F.mse_loss(model(noisy, timesteps, tokens), noise)


def starting_noise(count: int, image_size: int, seed: int) -> Tensor:
    """``x_T`` for ``count`` samples, from a generator seeded by ``seed`` alone.

    Reusing one tensor for a reconstruction and its counterfactuals is what
    makes them comparable: with DDIM at ``eta = 0`` nothing else is random.
    """
    generator = torch.Generator().manual_seed(int(seed))
    return torch.randn(count, 1, image_size, image_size, generator=generator)


@torch.no_grad()
def sample_images(model: ConditionalDDPM, tokens: Tensor | np.ndarray, noise: Tensor, steps: int,
                  batch_size: int = 64) -> np.ndarray:
    """Decode tokens to images by DDIM (``eta = 0``) from the given starting noise.

    Parameters
    ----------
    tokens
        ``[n, token_dim]`` conditioning tokens.
    noise
        ``[n, 1, size, size]`` starting noise ``x_T`` (row ``k`` for token ``k``).
    steps
        Denoising steps (the schedule's 1000 training steps, visited every ``1000 / steps``).
    batch_size
        Images denoised at once (memory only; the result does not depend on it
        beyond float rounding).

    Returns
    -------
    numpy.ndarray
        ``float32 [n, size, size]`` in ``[0, 1]``.
    """
    if steps < 1:
        raise ValueError(f"sampling steps must be positive, got {steps}")
    tokens = torch.as_tensor(np.asarray(tokens, dtype=np.float32) if isinstance(tokens, np.ndarray) else tokens)
    if len(tokens) != len(noise):
        raise ValueError(f"{len(tokens)} tokens but {len(noise)} noise images")
    device = next(model.parameters()).device
    scheduler = DDIMScheduler.from_config(noise_schedule(model.config).config)
    scheduler.set_timesteps(steps)
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(tokens), batch_size):
        z = tokens[start:start + batch_size].to(device)
        sample = noise[start:start + batch_size].to(device)
        for t in scheduler.timesteps:
            predicted = model(sample, t.expand(len(z)).to(device), z)
            sample = scheduler.step(predicted, t, sample, eta=0.0).prev_sample
        out.append(to_pixel_range(sample)[:, 0].cpu())
    model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, model.config.image_size, model.config.image_size),
                                                       dtype=np.float32)
