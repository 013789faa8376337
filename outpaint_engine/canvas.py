"""Pixel geometry of an expansion: resize, grow, change map, Telea pre-fill, IP crops, merge.

Follows DESIGN.md §3 (steps 1–6 and 8) along a :class:`outpaint_engine.plan.Plan`. Every image here
is an H×W×3 ``uint8`` array in RGB order; ``known`` masks are H×W ``bool`` arrays, True where the
pixel is real (old canvas or already generated) rather than a blank of the new strip.

A step, for the runner::

    grown, known = grow(canvas, step)
    for window in step.windows:          # later windows see earlier windows' pixels as known
        inputs = window_inputs(grown, known, window, spec, step.direction)
        generated = diffuse(inputs)      # window × window × 3 uint8 RGB
        merge(grown, known, window, generated, inputs)
    canvas = grown
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.plan import PlanStep, Window, prepared_size, scaled

GRAY = 50
"""Change-map value (of 255) over the new strip: pinned for the first ~20 % of denoising steps."""
MASK_OFFSET = 50
"""How far (px at a 1024 window) the gray reaches into the known image."""
BLUR_KERNEL = 501
"""Gaussian kernel size (px at a 1024 window) that softens the change map; sigma follows OpenCV."""
TELEA_RADIUS = 3
"""Neighbourhood radius of the Telea pre-fill."""

_TELEA_MARGIN = 4 * TELEA_RADIUS + 4
"""Context kept around the hole when inpainting. Telea reads known pixels up to ``radius`` away
(``radius + 1`` is the measured minimum for identical results); the margin is generous."""


@dataclass(frozen=True)
class WindowInputs:
    """Everything one generation needs besides the models, at window resolution."""

    image: np.ndarray  # window×window×3 uint8 RGB: known pixels, unknown ones pre-filled by Telea
    change_map: np.ndarray  # window×window float32 in [0, 1]: 1 = keep, GRAY/255 = new strip
    keep_weight: np.ndarray  # window×window float32 in [0, 1]: weight of the old pixel in merge
    crops: list[np.ndarray]  # six square RGB crops of the newest known content, for the IP-Adapter


def _check_image(image: np.ndarray, name: str = "image") -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must be an H×W×3 uint8 array, got {image.dtype} {image.shape}")


def prepare(image: np.ndarray, spec: JobSpec) -> np.ndarray:
    """Resize a source as its plan starts (see :func:`plan.prepared_size`).

    Returns ``image`` itself when the size does not change.
    """
    _check_image(image)
    h, w = image.shape[:2]
    new_w, new_h = prepared_size(w, h, spec)
    if (new_w, new_h) == (w, h):
        return image
    shrinking = new_w * new_h < w * h
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    return cv2.resize(image, (new_w, new_h), interpolation=interpolation)


def grow(canvas: np.ndarray, step: PlanStep) -> tuple[np.ndarray, np.ndarray]:
    """Place ``canvas`` on a blank canvas of ``step.size_after``; return it and its ``known`` mask."""
    _check_image(canvas, "canvas")
    old_w, old_h = step.size_before
    if canvas.shape[:2] != (old_h, old_w):
        raise ValueError(f"canvas is {canvas.shape[1]}×{canvas.shape[0]}, the step expects {old_w}×{old_h}")
    new_w, new_h = step.size_after
    x, y = step.shift
    grown = np.zeros((new_h, new_w, 3), np.uint8)
    known = np.zeros((new_h, new_w), bool)
    grown[y : y + old_h, x : x + old_w] = canvas
    known[y : y + old_h, x : x + old_w] = True
    return grown, known


def window_slices(window: Window, shape: tuple[int, ...]) -> tuple[slice, slice]:
    h, w = shape[:2]
    if window.x < 0 or window.y < 0 or window.x + window.size > w or window.y + window.size > h:
        raise ValueError(f"window {window} does not fit in a {w}×{h} canvas")
    return slice(window.y, window.y + window.size), slice(window.x, window.x + window.size)


# --- change map ----------------------------------------------------------------------------------


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` of the True pixels of a non-empty mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


@functools.cache
def _fixed_point_kernel(ksize: int) -> np.ndarray | None:
    """OpenCV's integer Gaussian kernel for uint8 images (taps in 1/256), or None if not exposed.

    ``cv2.GaussianBlur`` on uint8 uses a bit-exact fixed-point kernel that sums to 256. Blurring
    an impulse of 255 reads it back exactly (each tap is at most 128, and 255·k/256 rounds to k).
    """
    impulse = np.zeros((1, 2 * ksize + 1), np.uint8)
    impulse[0, ksize] = 255
    r = ksize // 2
    taps = cv2.GaussianBlur(impulse, (ksize, ksize), 0)[0, ksize - r : ksize + r + 1][::-1].astype(np.int64)
    return taps if taps.sum() == 256 else None


def map_factors(known: np.ndarray, spec: JobSpec) -> tuple[np.ndarray, np.ndarray] | None:
    """The change map of a window as two exact integer profiles, when its unknown pixels form a
    rectangle (one strip per window, the usual case); None otherwise (or when nothing is unknown).

    With a rectangular gray region the seed's mask is ``255 - (255 - GRAY)·R(y)·C(x)`` (``R``, ``C``
    the region's row and column indicators), so OpenCV's fixed-point separable blur of it is
    ``255 - (255 - GRAY)·r(y)·c(x)`` with ``r``, ``c`` the blurred indicators in 1/256, rounded once
    (:func:`map_from_factors`). The profiles are ``(r, c)`` as int64 arrays.
    """
    unknown = ~known
    if not unknown.any():
        return None
    y0, y1, x0, x1 = bounding_box(unknown)
    ksize = scaled(BLUR_KERNEL, spec.window, odd=True)
    taps = _fixed_point_kernel(ksize)
    if taps is None or not unknown[y0:y1, x0:x1].all():
        return None
    offset = scaled(MASK_OFFSET, spec.window)

    def blurred_indicator(length: int, start: int, stop: int) -> np.ndarray:
        inside = np.zeros(length, np.int64)
        inside[max(0, start - offset) : stop + offset] = 1  # the dilation, clipped to the window
        padded = np.pad(inside, ksize // 2, mode="reflect")  # OpenCV's default BORDER_REFLECT_101
        return np.convolve(padded, taps, mode="valid")  # in 1/256

    h, w = known.shape
    return blurred_indicator(h, y0, y1), blurred_indicator(w, x0, x1)


MAP_SCALE_SHIFT = 16
""":func:`map_from_factors` works in 1/65536 (two factors in 1/256) and rounds once."""


def map_from_factors(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The blurred uint8 mask from :func:`map_factors`, exactly as ``cv2.GaussianBlur`` rounds it."""
    gray_weight = np.outer(rows, cols)  # in 1/65536
    half = 1 << (MAP_SCALE_SHIFT - 1)
    return ((255 * 65536 + half - (255 - GRAY) * gray_weight) >> MAP_SCALE_SHIFT).astype(np.uint8)


def _blurred_mask(known: np.ndarray, spec: JobSpec) -> np.ndarray:
    """The seed's mask (255 known, GRAY over the unknown dilated by the offset) after the blur.

    Bit-identical to ``cv2.GaussianBlur(mask, (ksize, ksize), 0)`` on the uint8 mask; much faster
    through :func:`map_factors` in the usual case of a rectangular unknown region.
    """
    factors = map_factors(known, spec)
    if factors is not None:
        return map_from_factors(*factors)
    offset = scaled(MASK_OFFSET, spec.window)
    ksize = scaled(BLUR_KERNEL, spec.window, odd=True)
    kernel = np.ones((2 * offset + 1, 2 * offset + 1), np.uint8)
    gray = cv2.dilate((~known).view(np.uint8), kernel).astype(bool)
    mask = np.where(gray, GRAY, 255).astype(np.uint8)
    return cv2.GaussianBlur(mask, (ksize, ksize), 0)


def change_map(known: np.ndarray, spec: JobSpec) -> np.ndarray:
    """The differential-diffusion change map of a window from its ``known`` mask (float32 in [0, 1]).

    1.0 over known pixels, GRAY/255 over the unknown ones and a ``MASK_OFFSET`` band into the known
    ones, then a ``BLUR_KERNEL`` Gaussian blur, both scaled to ``spec.window`` and computed in
    uint8 like the seed, so far from the new strip the map is exactly 1.0.
    """
    if known.dtype != bool or known.ndim != 2:
        raise ValueError(f"known must be a 2-D bool array, got {known.dtype} {known.shape}")
    if known.all():
        return np.ones(known.shape, np.float32)
    return _blurred_mask(known, spec).astype(np.float32) / np.float32(255)


def keep_weight(change_map: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Weight of the old pixel when merging a generated window (float32 in [0, 1]).

    ``(map - t) / (1 - t)`` clipped, where ``t`` is the highest map value over the unknown pixels:
    0 on every unknown pixel and on the known pixels next to them (so the seam is continuous),
    rising to exactly 1.0 wherever the map is 1.0 (the old pixels there are kept bit-exact).
    """
    unknown = ~known
    if not unknown.any():
        return np.ones(known.shape, np.float32)
    weight = keep_of_values(change_map, float(change_map[unknown].max()))
    weight[unknown] = 0.0
    return weight


def keep_of_values(values: np.ndarray, ceiling: float) -> np.ndarray:
    """The merge weight of known pixels with these change-map ``values`` (see :func:`keep_weight`),
    where ``ceiling`` is the highest map value over the unknown pixels."""
    weight = np.clip((values - np.float32(ceiling)) / np.float32(max(1.0 - ceiling, 1e-6)), 0.0, 1.0)
    weight[values == 1.0] = 1.0
    return weight.astype(np.float32, copy=False)


# --- pre-fill, image prompt ----------------------------------------------------------------------


def prefill(image: np.ndarray, known: np.ndarray, *, scale: int = 1) -> np.ndarray:
    """A copy of ``image`` with its unknown pixels filled by Telea inpainting (radius 3).

    Telea only reads known pixels within a few radii of the hole, so it runs on the hole's bounding
    box plus a margin; the result is identical to inpainting the whole image. With ``scale`` > 1 it
    runs on that box shrunk ``scale`` times (area-averaged; a shrunk pixel counts as known only if
    all its pixels are) and the fill is enlarged back into the unknown pixels: about ``scale²``
    times less work for a fill that only seeds the strip before heavy noise. Known pixels are
    never changed.
    """
    out = image.copy()
    unknown = ~known
    if not unknown.any():
        return out
    h, w = known.shape
    y0, y1, x0, x1 = bounding_box(unknown)
    m = _TELEA_MARGIN * scale
    ys, xs = slice(max(0, y0 - m), min(h, y1 + m)), slice(max(0, x0 - m), min(w, x1 + m))
    box, hole = np.ascontiguousarray(image[ys, xs]), np.ascontiguousarray(unknown[ys, xs])
    if scale == 1:
        filled = cv2.inpaint(box, hole.view(np.uint8) * np.uint8(255), TELEA_RADIUS, cv2.INPAINT_TELEA)
    else:
        filled = _telea_shrunk(box, hole, scale)
    out[ys, xs][hole] = filled[hole]
    return out


def _telea_shrunk(box: np.ndarray, hole: np.ndarray, scale: int) -> np.ndarray:
    """Telea on ``box`` shrunk ``scale`` times, enlarged back to its size (see :func:`prefill`)."""
    bh, bw = hole.shape
    sh, sw = -(-bh // scale), -(-bw // scale)  # ceil: every pixel belongs to one shrunk pixel
    padded = np.pad(box, ((0, sh * scale - bh), (0, sw * scale - bw), (0, 0)), mode="edge")
    small = cv2.resize(padded, (sw, sh), interpolation=cv2.INTER_AREA)
    hole_padded = np.pad(hole, ((0, sh * scale - bh), (0, sw * scale - bw)), mode="edge")
    small_hole = hole_padded.reshape(sh, scale, sw, scale).any(axis=(1, 3))
    small = cv2.inpaint(small, small_hole.view(np.uint8) * np.uint8(255), TELEA_RADIUS, cv2.INPAINT_TELEA)
    return cv2.resize(small, (sw * scale, sh * scale), interpolation=cv2.INTER_LINEAR)[:bh, :bw]


def ip_crops(image: np.ndarray) -> list[np.ndarray]:
    """Six square crops, 2 columns × 3 rows, of side ``min(w // 2, h // 3)`` (the seed's slices).

    A crop that would reach past the image is shifted back inside (in the seed, only ever the
    last column and row); crops are copies, in the image's channel order, listed row by row.
    """
    _check_image(image)
    h, w = image.shape[:2]
    side = max(1, min(w // 2, h // 3))
    lefts = [min(i * side, w - side) for i in range(2)]
    tops = [min(i * side, h - side) for i in range(3)]
    return [image[top : top + side, left : left + side].copy() for top in tops for left in lefts]


def newest_known(grown: np.ndarray, known: np.ndarray, window: Window, direction: Direction) -> np.ndarray:
    """The window moved back against the growth by the depth of its unknown strip, clipped to the canvas.

    That is the newest known content next to the window: the previous step's window (what the seed
    slices for the IP-Adapter), or the whole source on a square-up step. Never the Telea fill.
    """
    h, w = known.shape
    ys, xs = window_slices(window, known.shape)
    incomplete = ~known[ys, xs].all(axis=0 if direction.horizontal else 1)
    depth = int(np.count_nonzero(incomplete))
    back = -depth if direction in (Direction.RIGHT, Direction.DOWN) else depth
    if direction.horizontal:
        start = window.x + back
        return grown[ys, max(0, start) : min(w, start + window.size)]
    start = window.y + back
    return grown[max(0, start) : min(h, start + window.size), xs]


def window_inputs(
    grown: np.ndarray, known: np.ndarray, window: Window, spec: JobSpec, direction: Direction
) -> WindowInputs:
    """Build the inputs of one generation over ``window`` of the canvas grown towards ``direction``
    (the step's direction: a zoom or aspect job grows a different side at each step)."""
    _check_image(grown, "grown")
    if known.shape != grown.shape[:2]:
        raise ValueError(f"known is {known.shape}, the canvas {grown.shape[:2]}")
    ys, xs = window_slices(window, grown.shape)
    window_known = known[ys, xs]
    cmap = change_map(window_known, spec)
    return WindowInputs(
        image=prefill(grown[ys, xs], window_known),
        change_map=cmap,
        keep_weight=keep_weight(cmap, window_known),
        crops=ip_crops(newest_known(grown, known, window, direction)),
    )


# --- merge ---------------------------------------------------------------------------------------


def merge(
    grown: np.ndarray, known: np.ndarray, window: Window, generated: np.ndarray, inputs: WindowInputs
) -> None:
    """Blend a generated window into ``grown`` in place and mark the window known.

    ``grown = old * keep + generated * (1 - keep)``, rounded; where ``keep`` is 1.0 the old pixel is
    kept bit-exact, where it is 0 the generated one. Pixels outside the window are not touched.
    """
    _check_image(generated, "generated")
    ys, xs = window_slices(window, grown.shape)
    if generated.shape[:2] != (window.size, window.size):
        raise ValueError(f"generated is {generated.shape[:2]}, the window is {window.size}²")
    old = grown[ys, xs].astype(np.float32)
    fresh = (1.0 - inputs.keep_weight)[..., None]
    blended = old + (generated.astype(np.float32) - old) * fresh
    grown[ys, xs] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    known[ys, xs] = True
