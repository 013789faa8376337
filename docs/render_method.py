"""Render the pictures of docs/method.md: the engine's geometry on a real photo, with no model.

The photo is scikit-image's bundled sample ``chelsea`` (a cat, 451×300; no download). Every
picture comes from the engine's own code (:mod:`outpaint_engine.plan` and the public functions of
:mod:`outpaint_engine.canvas`); only the generation itself is replaced by a stand-in (the Telea
pre-fill, blurred, tinted and noised), so the pictures show which pixels the merge keeps exact.

    pip install -e '.[docs]'
    python docs/render_method.py            # writes docs/method/*.png at the real 1024 window

``--window 128`` renders the same pictures at a small window (the tests do that).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from skimage import data

from outpaint_engine import canvas
from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.plan import Window, plan_job, scaled

OUT = Path(__file__).parent / "method"
DISPLAY = 256
"""Pixels a window takes in the pictures, whatever the window size."""
DENOISE_STEPS = 25
KEEP_STEPS = (2, 6, 12, 20)
"""Denoising steps *i* at which the pictures show ``keep[i] = map > i/N``."""
LATENT_SCALE = 8
"""SDXL's VAE: one latent pixel per 8×8 image pixels."""
FILES = (
    "1-prepare.png",
    "2-window.png",
    "3-change-map.png",
    "4-prefill.png",
    "5-ip-crops.png",
    "6-merge.png",
    "7-job.png",
)

WINDOW_COLOUR = (255, 204, 0)
STRIP_COLOUR = (255, 0, 170)
CROP_COLOUR = (0, 200, 255)
FRAME_COLOUR = (190, 190, 190)
EXACT, BLENDED, GENERATED = (150, 150, 150), (255, 140, 0), (0, 190, 255)


@dataclass
class Expansion:
    """One expansion step, before and after its window is merged."""

    grown: np.ndarray  # the grown canvas, new strip blank
    known: np.ndarray  # its known mask
    window: Window
    new_region: tuple[int, int, int, int]  # the new strip: x, y, width, height
    inputs: canvas.WindowInputs
    generated: np.ndarray  # the stand-in for the model's output
    merged: np.ndarray  # the canvas after the merge


@dataclass
class Method:
    source: np.ndarray
    prepared: np.ndarray
    spec: JobSpec
    steps: list[Expansion]

    @property
    def final(self) -> np.ndarray:
        return self.steps[-1].merged


def stand_in_for_the_model(inputs: canvas.WindowInputs, seed: int) -> np.ndarray:
    """NOT a model: the pre-fill blurred, tinted and noised over the whole window.

    Like SDXL's output it differs from the input everywhere (the real window goes through the VAE),
    so the merge has to decide which pixels to keep.
    """
    size = inputs.image.shape[0]
    blurred = Image.fromarray(inputs.image).filter(ImageFilter.GaussianBlur(size / 256))
    rng = np.random.default_rng(seed)
    noisy = np.asarray(blurred, np.float32) + rng.normal(0, 8, inputs.image.shape) + (12, 0, -8)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def run_method(window: int = 1024, times: int = 2) -> Method:
    """Run the engine's geometry on the photo, ``times`` steps to the right, with the stand-in."""
    source = data.chelsea()
    spec = JobSpec(Direction.RIGHT, times=times, expand_px=scaled(256, window), window=window)
    plan = plan_job(source.shape[1], source.shape[0], spec)
    prepared = current = canvas.prepare(source, spec)
    steps = []
    for step in plan.steps:
        grown, known = canvas.grow(current, step)
        merged, merged_known = grown.copy(), known.copy()
        for k, win in enumerate(step.windows):
            inputs = canvas.window_inputs(merged, merged_known, win, spec, step.direction)
            generated = stand_in_for_the_model(inputs, seed=100 * step.index + k)
            before = merged.copy(), merged_known.copy()
            canvas.merge(merged, merged_known, win, generated, inputs)
            steps.append(Expansion(*before, win, step.new_region, inputs, generated, merged.copy()))
        current = merged
    return Method(source, prepared, spec, steps)


def latent_keep(change_map: np.ndarray, i: int, n: int = DENOISE_STEPS) -> np.ndarray:
    """``keep[i] = map > i/N`` on the map at latent resolution, resized as the engine does (plain
    bilinear, like the reference pipeline: at an exact 8× reduction each latent pixel is the mean
    of the 2×2 map pixels at the centre of its 8×8 block)."""
    f = LATENT_SCALE
    a, b = f // 2 - 1, f // 2
    m = change_map.astype(np.float32)
    latent = (m[a::f, a::f] + m[a::f, b::f] + m[b::f, a::f] + m[b::f, b::f]) / 4
    return latent > i / n


# --- drawing -------------------------------------------------------------------------------------


def _font(size: int = 13) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=size)


class Picture:
    """Window-space drawing at display scale: ``scale`` display px per engine px."""

    def __init__(self, window: int) -> None:
        self.scale = DISPLAY / window

    def show(self, image: np.ndarray, nearest: bool = False) -> Image.Image:
        pil = Image.fromarray(image)
        size = (max(1, round(pil.width * self.scale)), max(1, round(pil.height * self.scale)))
        return pil.resize(size, Image.Resampling.NEAREST if nearest else Image.Resampling.LANCZOS)

    def box(
        self, pil: Image.Image, x: int, y: int, w: int, h: int, colour: tuple[int, ...], label: str = ""
    ) -> None:
        s = self.scale
        rect = (round(x * s), round(y * s), round((x + w) * s) - 1, round((y + h) * s) - 1)
        draw = ImageDraw.Draw(pil)
        draw.rectangle(rect, outline=colour, width=2)
        if label:
            draw.text((rect[0] + 5, rect[1] + 3), label, fill=colour, font=_font(15))

    def strip(self, pil: Image.Image, step: Expansion) -> Image.Image:
        """Outline the new strip on a picture of ``step``'s window."""
        x, y, w, h = step.new_region
        self.box(pil, x - step.window.x, y - step.window.y, w, h, STRIP_COLOUR)
        return pil


def gray(values: np.ndarray) -> np.ndarray:
    """A [0, 1] float map as an RGB image (1 = white)."""
    v = np.clip(np.rint(values * 255), 0, 255).astype(np.uint8)
    return np.repeat(v[..., None], 3, axis=2)


def checkerboard(image: np.ndarray, known: np.ndarray, cell: int = 16) -> np.ndarray:
    """``image`` with its unknown pixels drawn as a light checkerboard (the blank new strip)."""
    ys, xs = np.indices(known.shape)
    board = np.where(((ys // cell + xs // cell) % 2)[..., None] == 0, 235, 205).astype(np.uint8)
    return np.where(known[..., None], image, board)


def sheet(panels: Sequence[tuple[str, Image.Image]], pad: int = 10, title_lines: int = 2) -> Image.Image:
    """Panels side by side, each under a title (at most ``title_lines`` lines, wrapped to width)."""
    font = _font()
    line = 16
    top = pad + title_lines * line + 4
    width = pad + sum(p.width + pad for _, p in panels)
    height = top + max(p.height for _, p in panels) + pad
    out = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(out)
    x = pad
    for title, panel in panels:
        for n, text in enumerate(_wrap(draw, title, font, max(panel.width, 120))[:title_lines]):
            draw.text((x, pad + n * line), text, fill=(30, 30, 30), font=font)
        out.paste(panel, (x, top))
        draw.rectangle((x - 1, top - 1, x + panel.width, top + panel.height), outline=FRAME_COLOUR)
        x += panel.width + pad
    return out


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont, width: int) -> list[str]:
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


# --- the pictures --------------------------------------------------------------------------------


def picture_prepare(m: Method, pic: Picture) -> Image.Image:
    h, w = m.source.shape[:2]
    ph, pw = m.prepared.shape[:2]
    return sheet(
        [
            (f"The photo, {w}x{h}", pic.show(m.source)),
            (f"Prepared: resized to the window's height, {pw}x{ph}", pic.show(m.prepared)),
        ]
    )


def picture_window(m: Method, pic: Picture) -> Image.Image:
    first = m.steps[0]
    h, w = first.grown.shape[:2]
    grown = pic.show(checkerboard(first.grown, first.known))
    win = first.window
    pic.box(grown, win.x, win.y, win.size, win.size, WINDOW_COLOUR)
    pic.box(grown, *first.new_region, STRIP_COLOUR)
    return sheet(
        [
            (
                f"Grown by {m.spec.expand_px} px to {w}x{h}: the window (yellow, {win.size}x{win.size}) "
                f"holds the newest {win.size - m.spec.expand_px} px and the new strip (pink)",
                grown,
            )
        ]
    )


def picture_change_map(m: Method, pic: Picture) -> Image.Image:
    first = m.steps[0]
    cmap = first.inputs.change_map
    panels = [
        (
            "Change map: 1.0 (white) over the photo, dark over the strip",
            pic.strip(pic.show(gray(cmap)), first),
        )
    ]
    for i in KEEP_STEPS:
        keep = latent_keep(cmap, i)
        shown = Image.fromarray(gray(keep.astype(np.float32))).resize(
            (DISPLAY, DISPLAY), Image.Resampling.NEAREST
        )
        pct = 100 * keep.mean()
        title = f"keep[{i}], step {i} of {DENOISE_STEPS}: {pct:.0f} % of the latent pinned (white)"
        panels.append((title, pic.strip(shown, first)))
    return sheet(panels)


def picture_prefill(m: Method, pic: Picture) -> Image.Image:
    first = m.steps[0]
    win = first.window
    ys, xs = slice(win.y, win.y + win.size), slice(win.x, win.x + win.size)
    blank = checkerboard(first.grown[ys, xs], first.known[ys, xs])
    return sheet(
        [
            ("The window before: the new strip is blank", pic.strip(pic.show(blank), first)),
            (
                "Telea pre-fill: the model starts from these colours",
                pic.strip(pic.show(first.inputs.image), first),
            ),
        ]
    )


def picture_ip_crops(m: Method, pic: Picture) -> Image.Image:
    first = m.steps[0]
    region = canvas.newest_known(first.grown, first.known, first.window, m.spec.direction)
    crops = first.inputs.crops
    side = crops[0].shape[0]
    h, w = region.shape[:2]
    shown = pic.show(region)
    for n, crop in enumerate(crops):  # where each crop came from: 2 columns × 3 rows, kept inside
        left, top = min((n % 2) * side, w - side), min((n // 2) * side, h - side)
        if not np.array_equal(region[top : top + side, left : left + side], crop):
            raise RuntimeError(f"crop {n} is not at ({left}, {top}): has canvas.ip_crops changed?")
        pic.box(shown, left, top, side, side, CROP_COLOUR)
    gap = 4
    cell = DISPLAY // 3 - gap
    grid = Image.new("RGB", (2 * cell + gap, 3 * cell + 2 * gap), "white")
    for n, crop in enumerate(crops):
        small = Image.fromarray(crop).resize((cell, cell), Image.Resampling.LANCZOS)
        grid.paste(small, ((n % 2) * (cell + gap), (n // 2) * (cell + gap)))
    return sheet(
        [
            ("The newest known pixels next to the strip (never the pre-fill)", shown),
            (f"Six crops of {side}x{side} px: 6 x 16 image tokens", grid),
        ]
    )


def pixel_classes(step: Expansion) -> np.ndarray:
    """Per window pixel: grey where the old pixel is kept exactly, orange where old and generated
    are blended, blue where only the generated pixel is used."""
    w = step.inputs.keep_weight
    out = np.empty((*w.shape, 3), np.uint8)
    out[:] = BLENDED
    out[w == 1.0] = EXACT
    out[w == 0.0] = GENERATED
    return out


def picture_merge(m: Method, pic: Picture) -> Image.Image:
    first = m.steps[0]
    win = first.window
    ys, xs = slice(win.y, win.y + win.size), slice(win.x, win.x + win.size)
    return sheet(
        [
            (
                "Keep weight w: white = old pixel kept exactly",
                pic.strip(pic.show(gray(first.inputs.keep_weight)), first),
            ),
            ("Stand-in for the model (NOT a model: the pre-fill blurred + noise)", pic.show(first.generated)),
            ("Merged: old·w + generated·(1 - w)", pic.show(first.merged[ys, xs])),
            (
                "grey: exact old pixel, orange: seam band, blue: generated",
                pic.show(pixel_classes(first), nearest=True),
            ),
        ]
    )


def picture_job(m: Method, pic: Picture) -> Image.Image:
    final = m.final
    height, width = final.shape[:2]
    ph, pw = m.prepared.shape[:2]
    exact = np.zeros(final.shape[:2], bool)
    exact[:ph, :pw] = (final[:ph, :pw] == m.prepared).all(axis=2)
    classes = np.empty_like(final)
    classes[:] = GENERATED
    classes[:ph, :pw] = BLENDED
    classes[exact] = EXACT
    shown = pic.show(final)
    for n, step in enumerate(m.steps, 1):
        win = step.window
        pic.box(shown, win.x, win.y, win.size, win.size, WINDOW_COLOUR, label=str(n))
    return sheet(
        [
            (f"After {len(m.steps)} steps: {width}x{height}; the window of each step in yellow", shown),
            (
                "grey: still the prepared photo, bit for bit; orange: seam bands; blue: new",
                pic.show(classes, nearest=True),
            ),
        ]
    )


PICTURES = (
    picture_prepare,
    picture_window,
    picture_change_map,
    picture_prefill,
    picture_ip_crops,
    picture_merge,
    picture_job,
)


def render(out: Path = OUT, window: int = 1024) -> Method:
    """Write the pictures (:data:`FILES`) into ``out``; return what they show."""
    m = run_method(window)
    pic = Picture(window)
    out.mkdir(parents=True, exist_ok=True)
    for name, draw in zip(FILES, PICTURES, strict=True):
        draw(m, pic).save(out / name, optimize=True)
    return m


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default: {OUT})")
    parser.add_argument("--window", type=int, default=1024, help="window size in px (default: 1024)")
    args = parser.parse_args(argv)
    render(args.out, args.window)
    for name in FILES:
        path = args.out / name
        print(f"{path} ({path.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
