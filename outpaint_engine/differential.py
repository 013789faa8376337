"""Differential diffusion: the denoising loop, as a small function of tensors.

A change map ``m`` (1 = keep, 0 = free) pins each latent pixel to the re-noised original for the
first ``m`` fraction of the steps, then lets the model take over. With ``N`` steps and one noise
draw ``eps``::

    noised[i] = alpha_i * x0 + sigma_i * eps     # the original at step i's noise level
    keep[i]   = map > i / N
    x = noised[0]
    for i, t in enumerate(timesteps):
        if i > 0: x = noised[i] * keep[i] + x * (1 - keep[i])
        x = scheduler.step(cfg(unet(x, t)), t, x)

The noise levels come straight from the scheduler's sigmas. (``scheduler.add_noise`` is no help
here: once a pipeline has called ``set_begin_index`` it noises every timestep to the same level.)

Nothing here loads models or touches pixels, so a compiled UNet, CUDA graphs or batching across
jobs can replace pieces without a rewrite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DPMSolverMultistepScheduler

SUPPORTED_SCHEDULERS = (DPMSolverMultistepScheduler,)


class UnsupportedSchedulerError(ValueError):
    """The scheduler cannot drive differential diffusion; the message says why."""


@dataclass(frozen=True)
class Conditioning:
    """Everything the UNet reads besides the latents and the timestep.

    With classifier-free guidance the batch is 2, negative first; without it the batch is 1. For a
    batch of N candidates it is N times that, branch by branch (:func:`stack_candidates`).
    """

    # (B, 77, cross-attention width), or with static keys and values (window_context.py) every
    # cross-attention layer's keys and values of the prompt: (B, 77, packed columns)
    prompt_embeds: torch.Tensor
    pooled_embeds: torch.Tensor  # (B, pooled width)
    time_ids: torch.Tensor  # (B, 6)
    # IP-Adapter, per adapter: (B, images, tokens, width), or packed (B, images × 16, packed columns)
    image_embeds: list[torch.Tensor] | None = None

    @property
    def batch(self) -> int:
        return self.prompt_embeds.shape[0]

    @property
    def added_cond_kwargs(self) -> dict[str, Any]:
        """The UNet's ``added_cond_kwargs``: pooled text, time ids and the image embeddings if any."""
        added: dict[str, Any] = {"text_embeds": self.pooled_embeds, "time_ids": self.time_ids}
        if self.image_embeds is not None:
            added["image_embeds"] = self.image_embeds
        return added


@dataclass(frozen=True)
class DenoiseStep:
    """Reported after each denoising step."""

    index: int  # 0-based
    total: int
    latents: torch.Tensor  # x after this step
    denoised: torch.Tensor  # the model's estimate of the clean latents at this step


StepCallback = Callable[[DenoiseStep], None]


def check_scheduler(scheduler: object) -> None:
    """Refuse schedulers the loop cannot drive: one change-map level per model evaluation."""
    name = type(scheduler).__name__
    order = getattr(scheduler, "order", 1)
    if order != 1:
        raise UnsupportedSchedulerError(
            f"{name} is a second-order scheduler (it evaluates the model {order} times per step), "
            "but differential diffusion needs one change-map level per evaluation; "
            "use DPM++ 2M Karras (DPMSolverMultistepScheduler)"
        )
    if not isinstance(scheduler, SUPPORTED_SCHEDULERS):
        raise UnsupportedSchedulerError(
            f"{name} is not supported; use DPM++ 2M Karras (DPMSolverMultistepScheduler)"
        )
    config = scheduler.config
    if config.get("use_flow_sigmas") or config.get("prediction_type") == "flow_prediction":
        raise UnsupportedSchedulerError(f"{name} with flow-matching sigmas is not supported")


def alpha_sigma(sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The signal and noise coefficients of a variance-preserving sample at noise level ``sigma``."""
    alpha = (sigma**2 + 1).rsqrt()
    return alpha, sigma * alpha


def noised_original(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``x0`` noised to level ``sigma`` with the given noise draw."""
    alpha, sigma_t = alpha_sigma(sigma)
    return alpha * x0 + sigma_t * noise


def _denoised(
    x: torch.Tensor, model_output: torch.Tensor, sigma: torch.Tensor, prediction: str
) -> torch.Tensor:
    alpha, sigma_t = alpha_sigma(sigma)
    if prediction == "v_prediction":
        return alpha * x - sigma_t * model_output
    if prediction == "sample":
        return model_output
    return (x - sigma_t * model_output) / alpha


def latent_change_map(change_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The window's change map (1, 1, H, W) at latent resolution, as the reference pipeline makes it.

    The reference differential-diffusion pipeline resizes the map with torchvision's tensor
    ``Resize(..., antialias=None)``, which is plain bilinear interpolation (no antialiasing: each
    latent pixel reads the 2×2 map pixels around its centre). Antialiasing would average the whole
    8×8 block instead and flip some per-step keep decisions near the strip, whose gray 50/255 sits
    just under the 5/25 threshold.
    """
    return F.interpolate(change_map, size=size, mode="bilinear", align_corners=False, antialias=False)


def keep_masks(change_map: torch.Tensor, steps: int) -> torch.Tensor:
    """``keep[i] = map > i / steps`` for every step, as float (steps, 1, h, w)."""
    thresholds = torch.arange(steps, device=change_map.device, dtype=torch.float32) / steps
    return (change_map.float().reshape(1, 1, *change_map.shape[-2:]) > thresholds.view(-1, 1, 1, 1)).float()


def stack_candidates(per_candidate: Sequence[torch.Tensor]) -> torch.Tensor:
    """Conditioning tensors of several candidates (each with its branches: negative, prompt) as one
    batch in the order :func:`denoise` splits it: every candidate's negative, then every prompt."""
    return torch.stack(list(per_candidate), dim=1).flatten(0, 1)


def denoise(
    unet: Callable[..., tuple[torch.Tensor, ...]],
    scheduler: DPMSolverMultistepScheduler,
    x0: torch.Tensor,
    change_map: torch.Tensor,
    cond: Conditioning,
    *,
    steps: int,
    guidance: float,
    generator: torch.Generator | Sequence[torch.Generator],
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Run differential diffusion on one window's latents; return the final latents (float32).

    ``x0``: the original's scaled latents (1, 4, h, w), or (N, 4, h, w) for N candidates denoised
    together. ``change_map``: (h, w) or (1, 1, h, w) in [0, 1] at latent resolution, shared by the
    candidates. ``guidance`` > 1 turns on classifier-free guidance (``cond`` must then hold a batch
    of 2 per candidate). ``generator`` (one per candidate) draws each candidate's one noise tensor
    (on its own device, so a CPU generator gives the same noise on every device); every operation
    but the UNet's is elementwise, so candidate k equals a run of its own with generator k (up to
    the UNet's rounding of a larger batch). ``on_step`` may raise to stop the loop.
    """
    check_scheduler(scheduler)
    cfg = guidance > 1
    branches = 2 if cfg else 1
    generators = [generator] if isinstance(generator, torch.Generator) else list(generator)
    if x0.shape[0] != len(generators):
        raise ValueError(f"{x0.shape[0]} latents but {len(generators)} generators")
    if cond.batch != branches * len(generators):
        raise ValueError(f"conditioning batch {cond.batch} does not match guidance {guidance}")
    device = x0.device
    x0 = x0.float()
    scheduler.set_timesteps(steps, device=device)
    timesteps = scheduler.timesteps
    if len(timesteps) != steps:
        raise UnsupportedSchedulerError(
            f"{type(scheduler).__name__} gave {len(timesteps)} timesteps for {steps}"
        )
    sigmas = scheduler.sigmas.to(device=device, dtype=torch.float32)
    keep = keep_masks(change_map.to(device), steps)
    noise = torch.cat(
        [
            torch.randn((1, *x0.shape[1:]), generator=g, device=g.device, dtype=torch.float32)
            for g in generators
        ]
    ).to(device)
    prediction = scheduler.config.prediction_type
    dtype = cond.prompt_embeds.dtype  # the UNet's dtype
    added = cond.added_cond_kwargs

    x = noised_original(x0, noise, sigmas[0])
    for i, t in enumerate(timesteps):
        if i > 0:
            x = noised_original(x0, noise, sigmas[i]) * keep[i] + x * (1 - keep[i])
        model_input = scheduler.scale_model_input(torch.cat([x] * branches), t)
        output = unet(
            model_input.to(dtype),
            t,
            encoder_hidden_states=cond.prompt_embeds,
            added_cond_kwargs=added,
            return_dict=False,
        )[0].float()
        if cfg:
            uncond, text = output.chunk(2)
            output = uncond + guidance * (text - uncond)
        x_before = x
        x = scheduler.step(output, t, x, generator=generator, return_dict=False)[0]
        if on_step is not None:
            on_step(DenoiseStep(i, steps, x, _denoised(x_before, output, sigmas[i], prediction)))
    return x


# A linear approximation of the SDXL VAE decoder: scaled latent channel → RGB in [-1, 1].
# Rows are the four latent channels, columns R, G, B (rounded, from the well-known fit).
_LATENT_TO_RGB = torch.tensor(
    [
        [0.37, 0.42, 0.43],
        [-0.25, 0.00, 0.11],
        [0.11, 0.11, -0.04],
        [-0.32, -0.25, -0.22],
    ]
)
_LATENT_TO_RGB_BIAS = torch.tensor([0.11, -0.02, 0.00])


def latent_preview(latents: torch.Tensor) -> np.ndarray:
    """A cheap h×w×3 uint8 preview of scaled SDXL latents (1, 4, h, w; of a batch, the first) — no VAE
    involved."""
    lat = latents[0].detach().float().cpu().permute(1, 2, 0)
    rgb = lat @ _LATENT_TO_RGB + _LATENT_TO_RGB_BIAS
    return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
