"""The geometry of a job as plain arithmetic: sizes, steps and window positions.

No pixels here and no heavy imports, so the bot can check a request (final size, step count)
before it queues anything. :mod:`outpaint_engine.canvas` does the pixel work along this plan.

Coordinates are ``(x, y)`` / ``(width, height)``. Window positions are given in the coordinates of
the canvas *after* the step has grown it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from outpaint_engine.job import Direction, JobSpec

REFERENCE_WINDOW = 1024
"""The window size at which the seed's constants (501-px blur, 50-px band) were chosen."""

MIN_WINDOW = 64


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
    squares_up: bool
    windows: tuple[Window, ...]  # generated in this order; later ones see earlier ones' pixels

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

    @property
    def final_size(self) -> tuple[int, int]:
        return self.steps[-1].size_after if self.steps else self.prepared_size

    @property
    def total_steps(self) -> int:
        return len(self.steps)

    @property
    def total_windows(self) -> int:
        return sum(len(s.windows) for s in self.steps)


def scaled(value_at_reference: int, window: int, *, odd: bool = False) -> int:
    """Scale a seed constant chosen for a 1024 window to ``window`` (``odd`` for kernel sizes)."""
    v = max(1, round(value_at_reference * window / REFERENCE_WINDOW))
    if odd and v % 2 == 0:
        v += 1
    return v


def validate_spec(spec: JobSpec) -> None:
    if spec.window % MIN_WINDOW or spec.window < MIN_WINDOW:
        raise PlanError(f"The window size must be a multiple of {MIN_WINDOW} (got {spec.window}).")
    if spec.times < 0:
        raise PlanError("times must be 0 or more.")
    if spec.expand_px % 8 or not 8 <= spec.expand_px <= spec.window // 2:
        raise PlanError(
            f"expand must be a multiple of 8 between 8 and {spec.window // 2} px (got {spec.expand_px})."
        )
    if spec.steps < 1:
        raise PlanError("steps must be at least 1.")


def prepared_size(width: int, height: int, spec: JobSpec) -> tuple[int, int]:
    """Size after the initial resize: the cross axis becomes the window size.

    A fresh upload is always resized (up or down); a continued canvas keeps its pixels unless its
    cross axis is shorter than the window, in which case it is scaled up to the window.
    """
    if width < 1 or height < 1:
        raise PlanError("The image is empty.")
    cross = height if spec.direction.horizontal else width
    if spec.continue_canvas and cross >= spec.window:
        return (width, height)
    scale = spec.window / cross
    if spec.direction.horizontal:
        return (max(1, round(width * scale)), spec.window)
    return (spec.window, max(1, round(height * scale)))


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


def _step(
    index: int, direction: Direction, amount: int, size: tuple[int, int], window: int, squares_up: bool
) -> PlanStep:
    w, h = size
    if direction.horizontal:
        after = (w + amount, h)
        x = 0 if direction is Direction.LEFT else after[0] - window
        windows = tuple(Window(x, y, window) for y in window_offsets(h, window))
    else:
        after = (w, h + amount)
        y = 0 if direction is Direction.UP else after[1] - window
        windows = tuple(Window(x, y, window) for x in window_offsets(w, window))
    return PlanStep(index, direction, amount, size, after, squares_up, windows)


def plan_job(width: int, height: int, spec: JobSpec) -> Plan:
    """Plan a job on a source of ``width`` × ``height``: square-up (if needed) then ``times`` steps."""
    validate_spec(spec)
    prepared = size = prepared_size(width, height, spec)
    steps: list[PlanStep] = []
    grow = size[0] if spec.direction.horizontal else size[1]
    if grow < spec.window:
        steps.append(_step(0, spec.direction, spec.window - grow, size, spec.window, True))
        size = steps[-1].size_after
    for _ in range(spec.times):
        steps.append(_step(len(steps), spec.direction, spec.expand_px, size, spec.window, False))
        size = steps[-1].size_after
    return Plan((width, height), prepared, tuple(steps))
