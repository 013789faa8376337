"""The geometry of a job as plain arithmetic: sizes, steps and window positions.

No pixels here and no heavy imports, so the bot can check a request (final size, step count, a
line that says the plan) before it queues anything. :mod:`outpaint_engine.canvas` does the pixel
work along this plan.

A job grows the canvas in one of three modes (:class:`outpaint_engine.job.Mode`):

- **pan**: a square-up step when the growing axis is shorter than the window, then ``times`` steps
  of ``expand_px`` towards ``direction``;
- **zoom**: every side grows by ``(zoom - 1) / 2`` of the prepared image's size along it, so the
  image sits in the middle of a canvas ``zoom`` times wider and taller;
- **aspect**: two opposite sides grow by the same amount until the canvas has the ratio.

A zoom or aspect step adds at most half a window (the window keeps the other half as context),
except a square-up step, which adds what it takes to make the growing axis one window long. Each
side's amount, a multiple of :data:`GRID`, is split into as few steps as that allows; opposite
sides take turns, and a zoom interleaves the two axes so the plan needs the fewest windows.

Coordinates are ``(x, y)`` / ``(width, height)``. Window positions are given in the coordinates of
the canvas *after* the step has grown it.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections import Counter
from dataclasses import dataclass, replace

from outpaint_engine.job import Direction, JobSpec, Mode

REFERENCE_WINDOW = 1024
"""The window size at which the seed's constants (501-px blur, 50-px band) were chosen."""

MIN_WINDOW = 64
GRID = 8
"""Zoom and aspect steps add multiples of this many pixels (one latent pixel)."""
MAX_CANDIDATES = 4
ZOOM_RANGE = (1.1, 4.0)
ASPECT_PRESETS = ("16:9", "9:16", "1:1", "21:9", "4:5", "3:2")
"""The common ratios (the bot's choices); any ``W:H`` within :data:`ASPECT_LIMIT` works."""
ASPECT_LIMIT = 4.0
"""Aspect ratios from 1:ASPECT_LIMIT to ASPECT_LIMIT:1."""
MAX_GROWTH = 4.0
"""An aspect job makes its growing axis at most this many times longer."""

_SIDES = (Direction.LEFT, Direction.RIGHT, Direction.UP, Direction.DOWN)


class PlanError(ValueError):
    """A request that cannot be planned; the message is fit to show a user."""


@dataclass(frozen=True)
class Window:
    """A square region of the grown canvas that one generation covers."""

    x: int
    y: int
    size: int


@dataclass(frozen=True)
class PlanStep:
    index: int
    direction: Direction
    amount: int  # pixels added along the growing axis
    size_before: tuple[int, int]
    size_after: tuple[int, int]
    squares_up: bool  # the growing axis was shorter than the window before this step
    windows: tuple[Window, ...]  # generated in this order; later ones see earlier ones' pixels
    candidates: int = 1  # generated this many times with different noise (a job's last step)

    @property
    def shift(self) -> tuple[int, int]:
        """Where the old canvas's origin lands in the grown canvas."""
        if self.direction is Direction.LEFT:
            return (self.amount, 0)
        if self.direction is Direction.UP:
            return (0, self.amount)
        return (0, 0)

    @property
    def new_region(self) -> tuple[int, int, int, int]:
        """The new strip as ``(x, y, width, height)`` in the grown canvas."""
        w, h = self.size_after
        a = self.amount
        return {
            Direction.LEFT: (0, 0, a, h),
            Direction.RIGHT: (w - a, 0, a, h),
            Direction.UP: (0, 0, w, a),
            Direction.DOWN: (0, h - a, w, a),
        }[self.direction]


@dataclass(frozen=True)
class Plan:
    source_size: tuple[int, int]
    prepared_size: tuple[int, int]  # after the initial resize (equal to source for a kept canvas)
    steps: tuple[PlanStep, ...]
    target: str = ""  # what a zoom or aspect plan reaches ("1.5× zoom", "16:9"); "" for a pan

    @property
    def final_size(self) -> tuple[int, int]:
        return self.steps[-1].size_after if self.steps else self.prepared_size

    @property
    def total_steps(self) -> int:
        return len(self.steps)

    @property
    def total_windows(self) -> int:
        return sum(len(s.windows) for s in self.steps)

    @property
    def origin(self) -> tuple[int, int]:
        """Where the prepared image's top-left corner lies in the final canvas."""
        return (sum(s.shift[0] for s in self.steps), sum(s.shift[1] for s in self.steps))

    @property
    def expansions(self) -> dict[Direction, int]:
        """Steps per side, for the sides that grow (in the order left, right, up, down)."""
        counts = Counter(s.direction for s in self.steps)
        return {side: counts[side] for side in _SIDES if counts[side]}

    @property
    def candidates(self) -> int:
        """How many candidates the last step is generated as."""
        return self.steps[-1].candidates if self.steps else 1

    def describe(self) -> str:
        """The plan in a few words, for a status line: ``2 expansions left, 2 right → 16:9``."""
        sides = [f"{n} {side}" for side, n in self.expansions.items()]
        if not sides:
            return "no expansion"
        first = next(iter(self.expansions.values()))
        sides[0] = sides[0].replace(" ", " expansion " if first == 1 else " expansions ", 1)
        text = ", ".join(sides)
        if self.target:
            text += f" → {self.target}"
        if self.candidates > 1:
            text += f", {self.candidates} candidates"
        return text


@dataclass(frozen=True)
class Aspect:
    """A width:height ratio as written (``16:9``)."""

    width: float
    height: float

    @property
    def ratio(self) -> float:
        return self.width / self.height

    def __str__(self) -> str:
        return f"{self.width:g}:{self.height:g}"


_ASPECT = re.compile(r"\s*(\d{1,5}(?:\.\d{1,3})?)\s*[:x×/]\s*(\d{1,5}(?:\.\d{1,3})?)\s*", re.IGNORECASE)


def parse_aspect(text: str) -> Aspect:
    """``"16:9"`` (also ``16x9``, ``16/9``, decimals like ``1.91:1``) → :class:`Aspect`.

    Raises :class:`PlanError` for text that is not a ratio or a ratio outside 1:4 … 4:1.
    """
    match = _ASPECT.fullmatch(text)
    if match is None:
        shown = text.strip()[:24] or "(empty)"
        raise PlanError(f"{shown!r} is not an aspect ratio: write it as W:H, like 16:9.")
    aspect = Aspect(float(match[1]), float(match[2]))
    if aspect.width == 0 or aspect.height == 0:
        raise PlanError(f"Both sides of an aspect ratio must be above 0 (got {aspect}).")
    if not 1 / ASPECT_LIMIT <= aspect.ratio <= ASPECT_LIMIT:
        limit = f"{ASPECT_LIMIT:g}"
        raise PlanError(f"{aspect} is too extreme: ratios from 1:{limit} to {limit}:1 are supported.")
    return aspect


def scaled(value_at_reference: int, window: int, *, odd: bool = False) -> int:
    """Scale a seed constant chosen for a 1024 window to ``window`` (``odd`` for kernel sizes)."""
    v = max(1, round(value_at_reference * window / REFERENCE_WINDOW))
    if odd and v % 2 == 0:
        v += 1
    return v


def validate_spec(spec: JobSpec) -> None:
    if spec.window % MIN_WINDOW or spec.window < MIN_WINDOW:
        raise PlanError(f"The window size must be a multiple of {MIN_WINDOW} (got {spec.window}).")
    if spec.steps < 1:
        raise PlanError("steps must be at least 1.")
    if not 1 <= spec.candidates <= MAX_CANDIDATES:
        raise PlanError(f"candidates must be between 1 and {MAX_CANDIDATES} (got {spec.candidates}).")
    if spec.zoom is not None and spec.aspect is not None:
        raise PlanError("Choose a zoom or an aspect ratio, not both.")
    if spec.mode is Mode.ZOOM:
        low, high = ZOOM_RANGE
        if not (math.isfinite(spec.zoom) and low <= spec.zoom <= high):
            raise PlanError(f"zoom must be between {low:g} and {high:g} (got {spec.zoom:g}).")
    elif spec.mode is Mode.ASPECT:
        parse_aspect(spec.aspect)
    else:
        if spec.times < 0:
            raise PlanError("times must be 0 or more.")
        if spec.expand_px % 8 or not 8 <= spec.expand_px <= spec.window // 2:
            raise PlanError(
                f"expand must be a multiple of 8 between 8 and {spec.window // 2} px (got {spec.expand_px})."
            )


# --- the initial resize ----------------------------------------------------------------------------


def prepared_size(width: int, height: int, spec: JobSpec) -> tuple[int, int]:
    """Size after the initial resize: the axis across the growth becomes (at least) the window.

    Pan: the cross axis equals the window. Zoom: the short side equals the window (both axes grow).
    Aspect: the cross axis equals the window, or more when the growing axis, halfway to the
    target, would still be shorter than a window (then no one-sided square-up step could fit
    without growing one side more than the other).

    A fresh upload is always resized (up or down); a continued canvas keeps its pixels unless that
    axis is shorter than it must be, in which case it is scaled up.
    """
    if width < 1 or height < 1:
        raise PlanError("The image is empty.")
    if spec.mode is Mode.ZOOM:
        horizontal, need = height <= width, spec.window  # the short side is the cross axis
    elif spec.mode is Mode.ASPECT:
        horizontal, ratio = _aspect_axis(width, height, parse_aspect(spec.aspect))
        along = (width / height) if horizontal else (height / width)
        need = max(spec.window, math.ceil(2 * spec.window / (along + ratio)))
    else:
        horizontal, need = spec.direction.horizontal, spec.window
    cross = height if horizontal else width
    if spec.continue_canvas and cross >= need:
        return (width, height)
    if horizontal:
        return (max(1, round(width * need / height)), need)
    return (need, max(1, round(height * need / width)))


def _aspect_axis(width: int, height: int, aspect: Aspect) -> tuple[bool, float]:
    """Which axis an aspect job grows (True: the width) and the target ratio along ÷ across it.

    Raises :class:`PlanError` when that axis would grow more than :data:`MAX_GROWTH` times.
    """
    horizontal = width / height < aspect.ratio
    along, target = (width / height, aspect.ratio) if horizontal else (height / width, 1 / aspect.ratio)
    if target / along > MAX_GROWTH:
        grown = "wider" if horizontal else "taller"
        raise PlanError(
            f"Making this {width}×{height} image {aspect} would make it {target / along:.1f}× {grown}; "
            f"at most {MAX_GROWTH:g}× is supported."
        )
    return horizontal, target


# --- steps -----------------------------------------------------------------------------------------


def window_offsets(cross: int, window: int) -> tuple[int, ...]:
    """Offsets along the cross axis of the windows that cover a strip ``cross`` long.

    One window when the cross axis equals the window; otherwise evenly spaced windows that overlap
    by at least a quarter window, the first at 0 and the last flush with the far edge.
    """
    if cross <= window:
        return (0,)
    stride = window - window // 4
    n = 1 + math.ceil((cross - window) / stride)
    last = cross - window
    return tuple(round(i * last / (n - 1)) for i in range(n))


def _step(index: int, direction: Direction, amount: int, size: tuple[int, int], window: int) -> PlanStep:
    w, h = size
    if direction.horizontal:
        after = (w + amount, h)
        x = 0 if direction is Direction.LEFT else after[0] - window
        windows = tuple(Window(x, y, window) for y in window_offsets(h, window))
    else:
        after = (w, h + amount)
        y = 0 if direction is Direction.UP else after[1] - window
        windows = tuple(Window(x, y, window) for x in window_offsets(w, window))
    growing = w if direction.horizontal else h
    return PlanStep(index, direction, amount, size, after, growing < window, windows)


Move = tuple[Direction, int]
"""A step before it is placed: the side it grows and by how much."""


def _round_to_grid(value: float) -> int:
    return GRID * round(value / GRID)


def _split(total: int, cap: int, first_at_least: int = 0) -> list[int]:
    """Amounts (multiples of :data:`GRID`, largest first) adding up to ``total``: as few as can be
    with each at most ``cap``, except a first amount that must be at least ``first_at_least``."""
    count = -(-total // cap)
    units, extra = divmod(total // GRID, count)
    amounts = [(units + (i < extra)) * GRID for i in range(count)]
    if amounts[0] >= first_at_least:
        return amounts
    rest = total - first_at_least
    return [first_at_least, *(_split(rest, cap) if rest else [])]


def _take_turns(first: list[Move], second: list[Move]) -> list[Move]:
    """Opposite sides alternate (first side first); the longer list finishes alone."""
    pairs = itertools.zip_longest(first, second)
    return [move for pair in pairs for move in pair if move is not None]


def _two_sides(sides: tuple[Direction, Direction], each: int, window: int, growing: int) -> list[Move]:
    """Grow both ``sides`` by ``each`` px in turns; when the axis (``growing`` px) is shorter than
    the window, the first step squares it up."""
    square_up = GRID * -(-(window - growing) // GRID) if growing < window else 0
    first = [(sides[0], a) for a in _split(each, window // 2, square_up)]
    second = [(sides[1], a) for a in _split(each, window // 2)]
    return _take_turns(first, second)


def _pan_moves(size: tuple[int, int], spec: JobSpec) -> list[Move]:
    growing = size[0] if spec.direction.horizontal else size[1]
    square_up = [(spec.direction, spec.window - growing)] if growing < spec.window else []
    return square_up + [(spec.direction, spec.expand_px)] * spec.times


def _aspect_moves(source: tuple[int, int], size: tuple[int, int], spec: JobSpec) -> list[Move]:
    aspect = parse_aspect(spec.aspect)
    horizontal, ratio = _aspect_axis(*source, aspect)
    along, cross = size if horizontal else size[::-1]
    each = _round_to_grid((ratio * cross - along) / 2)
    if each <= 0:
        raise PlanError(f"The image is already {aspect}.")
    sides = (Direction.LEFT, Direction.RIGHT) if horizontal else (Direction.UP, Direction.DOWN)
    if along < spec.window:  # the square-up must fit in one side's share
        each = max(each, GRID * -(-(spec.window - along) // GRID))
    return _two_sides(sides, each, spec.window, along)


def _zoom_moves(size: tuple[int, int], spec: JobSpec) -> list[Move]:
    assert spec.zoom is not None
    width, height = size
    each_x = max(GRID, _round_to_grid((spec.zoom - 1) * width / 2))
    each_y = max(GRID, _round_to_grid((spec.zoom - 1) * height / 2))
    across = _two_sides((Direction.LEFT, Direction.RIGHT), each_x, spec.window, width)
    down = _two_sides((Direction.UP, Direction.DOWN), each_y, spec.window, height)
    return _fewest_windows(size, across, down, spec.window)


def _fewest_windows(size: tuple[int, int], across: list[Move], down: list[Move], window: int) -> list[Move]:
    """Interleave the horizontal and vertical moves (each keeping its order) so that the plan needs
    the fewest windows: a horizontal step needs as many as the canvas's height calls for, a
    vertical one as many as its width. Ties go to the horizontal move first."""

    @functools.cache
    def best(i: int, j: int) -> tuple[int, tuple[Move, ...]]:  # fewest windows for what is left
        width = size[0] + sum(a for _, a in across[:i])
        height = size[1] + sum(a for _, a in down[:j])
        options = []
        if i < len(across):
            cost, rest = best(i + 1, j)
            options.append((cost + len(window_offsets(height, window)), (across[i], *rest)))
        if j < len(down):
            cost, rest = best(i, j + 1)
            options.append((cost + len(window_offsets(width, window)), (down[j], *rest)))
        return min(options, key=lambda option: option[0]) if options else (0, ())

    return list(best(0, 0)[1])


def plan_job(width: int, height: int, spec: JobSpec) -> Plan:
    """Plan a job on a source of ``width`` × ``height`` (see the module docstring for the modes)."""
    validate_spec(spec)
    prepared = size = prepared_size(width, height, spec)
    if spec.mode is Mode.ZOOM:
        moves, target = _zoom_moves(size, spec), f"{spec.zoom:g}× zoom"
    elif spec.mode is Mode.ASPECT:
        moves, target = _aspect_moves((width, height), size, spec), str(parse_aspect(spec.aspect))
    else:
        moves, target = _pan_moves(size, spec), ""
    steps: list[PlanStep] = []
    for direction, amount in moves:
        steps.append(_step(len(steps), direction, amount, size, spec.window))
        size = steps[-1].size_after
    if steps:
        steps[-1] = replace(steps[-1], candidates=spec.candidates)
    return Plan((width, height), prepared, tuple(steps), target)
