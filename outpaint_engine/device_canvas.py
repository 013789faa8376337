"""The per-window pixel work of :mod:`outpaint_engine.canvas` done on the model's device (torch).

The change map, the merge weight and the merge itself run where the generated window already is,
so the GPU does not wait for the CPU between windows. Each function gives exactly what its
:mod:`~outpaint_engine.canvas` twin gives (bit for bit: the same integer arithmetic for the map, the
same float32 operations for the weight and the blend), which the tests check on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from outpaint_engine import canvas
from outpaint_engine.canvas import GRAY, MAP_SCALE_SHIFT
from outpaint_engine.job import JobSpec
from outpaint_engine.plan import Window


@dataclass(frozen=True)
class WindowMaps:
    """A window's change map and merge weight, on the device."""

    change: torch.Tensor  # (1, 1, H, W) float32 in [0, 1], as canvas.change_map
    keep: torch.Tensor  # (H, W) float32 in [0, 1], as canvas.keep_weight


def window_maps(known: np.ndarray, spec: JobSpec, device: torch.device) -> WindowMaps:
    """:func:`canvas.change_map` and :func:`canvas.keep_weight` of a window's ``known`` mask.

    The uint8 map is computed on the device with the same integer arithmetic; its float values and
    the merge weight are functions of that uint8 value alone, so they come from 256-entry tables
    computed on the CPU with the CPU's own formulas (a GPU divides a tensor by a scalar through its
    reciprocal, which can differ in the last bit).
    """
    factors = canvas.map_factors(known, spec)
    if factors is None:  # nothing unknown, or an unknown region that is not one rectangle
        cmap = canvas.change_map(known, spec)
        keep = canvas.keep_weight(cmap, known)
        return WindowMaps(_on(cmap, device)[None, None], _on(keep, device))
    rows, cols = (torch.from_numpy(f.astype(np.int32)).to(device) for f in factors)
    half = 1 << (MAP_SCALE_SHIFT - 1)
    u8 = (255 * 65536 + half - (255 - GRAY) * rows[:, None] * cols[None, :]) >> MAP_SCALE_SHIFT
    # The highest map value over the unknown rectangle sits where the gray weight is least.
    y0, y1, x0, x1 = canvas.bounding_box(~known)
    least = canvas.map_from_factors(
        factors[0][y0:y1].min(keepdims=True), factors[1][x0:x1].min(keepdims=True)
    )
    values = np.arange(256, dtype=np.uint8)
    as_map = values.astype(np.float32) / np.float32(255)  # as canvas.change_map
    as_keep = canvas.keep_of_values(as_map, float(np.float32(least[0, 0]) / np.float32(255)))
    index = u8.to(torch.long)
    keep = _on(as_keep, device)[index]
    keep[y0:y1, x0:x1] = 0.0  # the unknown rectangle
    return WindowMaps(_on(as_map, device)[index][None, None], keep)


def _on(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array)).to(device)


def merge(
    grown: np.ndarray, known: np.ndarray, window: Window, generated: torch.Tensor, keep: torch.Tensor
) -> None:
    """:func:`canvas.merge` with the generated window (H×W×3 uint8) and the weight on the device.

    Blends on the device and writes the window back into ``grown`` in place; marks it known.
    """
    ys, xs = slice(window.y, window.y + window.size), slice(window.x, window.x + window.size)
    if tuple(generated.shape) != (window.size, window.size, 3):
        raise ValueError(f"generated is {tuple(generated.shape)}, the window is {window.size}²")
    old = _on(grown[ys, xs], generated.device).to(torch.float32)
    fresh = (1.0 - keep)[..., None]
    blended = old + (generated.to(torch.float32) - old) * fresh
    grown[ys, xs] = torch.round(blended).clamp(0, 255).to(torch.uint8).cpu().numpy()
    known[ys, xs] = True
