"""The IP-Adapter crops' preprocessing on the model's device, bit for bit what transformers' PIL
image processor gives.

The pipeline's CLIP image processor resizes each crop with Pillow's bicubic filter, then rescales
and normalises it; on the worker's CPU that takes about 20 ms per window while the GPU waits for
it. :class:`CropPixels` does the same on the GPU: Pillow's 8-bit two-pass resampling (its integer
coefficients, its rounding and clipping after each pass) as two matrix products in float64, where
every partial sum is an integer small enough to be exact in any order, and the rescale and
normalisation as a 256-entry table per channel computed on the CPU by transformers' own functions.
Processor settings it does not reproduce leave the processor in charge (:meth:`CropPixels.matching`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

PRECISION_BITS = 32 - 8 - 2
"""Fraction bits of Pillow's 8-bit resampling coefficients."""
BICUBIC = 3  # PIL.Image.Resampling.BICUBIC


def _bicubic(x: float) -> float:
    """Pillow's bicubic kernel (a = -0.5), with its operations in its order."""
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


@lru_cache(maxsize=32)
def resize_coefficients(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's integer bicubic coefficients for resizing ``in_size`` pixels to ``out_size``, as an
    ``out_size × in_size`` matrix (int64; each row's taps in their columns, zero elsewhere)."""
    scale = in_size / out_size
    filter_scale = max(scale, 1.0)
    support = 2.0 * filter_scale
    matrix = np.zeros((out_size, in_size), np.int64)
    for out in range(out_size):
        center = (out + 0.5) * scale
        first = max(int(center - support + 0.5), 0)
        stop = min(int(center + support + 0.5), in_size)
        weights = [_bicubic((x + first - center + 0.5) / filter_scale) for x in range(stop - first)]
        total = 0.0
        for w in weights:  # in order: Python's sum() of floats is compensated since 3.12
            total += w
        if total != 0.0:
            weights = [w / total for w in weights]
        one = 1 << PRECISION_BITS
        matrix[out, first:stop] = [int(w * one - 0.5) if w < 0 else int(w * one + 0.5) for w in weights]
    return matrix


def _clip8(sums: torch.Tensor) -> torch.Tensor:
    """Pillow's ``clip8``: the rounded fixed-point sums shifted down and clipped to 0–255."""
    return torch.floor((sums + (1 << (PRECISION_BITS - 1))) / (1 << PRECISION_BITS)).clamp_(0, 255)


@dataclass
class CropPixels:
    """``processor(images=crops).pixel_values`` for square uint8 RGB crops, computed on a device."""

    side: int  # the processor's output side
    table: np.ndarray  # (3, 256) float32: a channel's uint8 value → its rescaled, normalised value
    _on_device: dict[tuple, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def matching(cls, processor: Any) -> CropPixels | None:
        """The device twin of ``processor``, or None where its settings are not reproduced here
        (only transformers' PIL-backed CLIP processor with a square bicubic resize and crop)."""
        if type(processor).__name__ not in ("CLIPImageProcessor", "CLIPImageProcessorPil"):
            return None
        if getattr(processor, "backend", "pil") != "pil":  # the torchvision backend resizes otherwise
            return None
        size, crop = dict(processor.size or {}), dict(processor.crop_size or {})
        side = size.get("shortest_edge") or (
            size.get("height") if size.get("height") == size.get("width") else None
        )
        if not (processor.do_resize and side and int(processor.resample) == BICUBIC):
            return None
        if processor.do_center_crop and (crop.get("height"), crop.get("width")) != (side, side):
            return None
        if getattr(processor, "do_pad", False):
            return None
        return cls(side, _value_table(processor))

    def __call__(self, crops: list[np.ndarray], device: torch.device) -> torch.Tensor:
        """(n, 3, side, side) float32 on ``device``; every crop square, H×W×3 uint8 RGB."""
        sizes = {crop.shape for crop in crops}
        if len(sizes) != 1 or (shape := sizes.pop())[0] != shape[1] or shape[2:] != (3,):
            raise ValueError(f"crops must be square H×W×3 and of one size, got {[c.shape for c in crops]}")
        pixels = torch.from_numpy(np.stack(crops)).to(device)
        values = pixels.permute(0, 3, 1, 2).to(torch.float64)
        if shape[0] != self.side:  # Pillow resamples rows first, then columns, clipping after each
            weights = self._on(
                device,
                ("resize", shape[0]),
                lambda: resize_coefficients(shape[0], self.side).astype(np.float64),
            )
            values = _clip8(values @ weights.T)
            values = _clip8(weights @ values)
        index = values.to(torch.long) + 256 * torch.arange(3, device=device)[:, None, None]
        return self._on(device, "table", lambda: self.table).flatten()[index]

    def _on(self, device: torch.device, name: object, array: Callable[[], np.ndarray]) -> torch.Tensor:
        """``array()`` on ``device``, made once per (device, name)."""
        found = self._on_device.get((device, name))
        if found is None:
            found = self._on_device[(device, name)] = torch.from_numpy(array()).to(device)
        return found


def _value_table(processor: Any) -> np.ndarray:
    """Each channel's 256 possible values through the processor's own rescale and normalisation."""
    from transformers.image_transforms import normalize, rescale
    from transformers.image_utils import ChannelDimension

    values = np.tile(np.arange(256, dtype=np.uint8), (3, 1, 1))  # channel-first, 1 × 256 each
    first = ChannelDimension.FIRST
    if processor.do_rescale:
        values = rescale(values, processor.rescale_factor, input_data_format=first)
    if processor.do_normalize:
        values = normalize(values, processor.image_mean, processor.image_std, input_data_format=first)
    return np.asarray(values, np.float32).reshape(3, 256)
