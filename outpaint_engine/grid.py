"""A numbered grid of candidate canvases, for a user to pick from.

Light (numpy and Pillow only), so the bot can build it as well as the CLI. Candidates are numbered
from 1 in reading order: two side by side (or stacked, for canvases wider than tall), three or
four in two rows of two.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (24, 24, 24)
BADGE = (0, 0, 0)
INK = (255, 255, 255)


def grid_shape(count: int, width: int, height: int) -> tuple[int, int]:
    """``(rows, columns)`` of a grid of ``count`` canvases of ``width`` × ``height``."""
    if count <= 1:
        return (1, 1)
    if count == 2:
        return (2, 1) if width > height else (1, 2)
    return (-(-count // 2), 2)


def candidate_grid(canvases: Sequence[np.ndarray]) -> np.ndarray:
    """The canvases (H×W×3 uint8, all one size) in a grid with thin gaps, each numbered in a corner."""
    if not canvases:
        raise ValueError("no candidates to show")
    height, width = canvases[0].shape[:2]
    if any(c.shape != canvases[0].shape for c in canvases):
        raise ValueError("candidates must all have the same size")
    rows, columns = grid_shape(len(canvases), width, height)
    gap = max(4, min(width, height) // 64)
    out = Image.new(
        "RGB", (columns * width + (columns - 1) * gap, rows * height + (rows - 1) * gap), BACKGROUND
    )
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=max(12, min(width, height) // 12))
    pad = max(4, min(width, height) // 48)
    for number, pixels in enumerate(canvases, start=1):
        row, column = divmod(number - 1, columns)
        left, top = column * (width + gap), row * (height + gap)
        out.paste(Image.fromarray(pixels), (left, top))
        x0, y0, x1, y1 = draw.textbbox((left + 2 * pad, top + 2 * pad), str(number), font=font)
        draw.rounded_rectangle((x0 - pad, y0 - pad, x1 + pad, y1 + pad), radius=pad, fill=BADGE)
        draw.text((left + 2 * pad, top + 2 * pad), str(number), font=font, fill=INK)
    return np.asarray(out)
