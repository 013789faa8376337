"""Zoom and aspect plans as arithmetic (hypothesis), the plan's description, and JobSpec's new fields."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from outpaint_engine.job import Direction, Job, JobSpec, Mode
from outpaint_engine.plan import (
    ASPECT_PRESETS,
    GRID,
    MAX_GROWTH,
    Plan,
    PlanError,
    parse_aspect,
    plan_job,
    prepared_size,
    window_offsets,
)

OPPOSITE = {Direction.LEFT: Direction.RIGHT, Direction.UP: Direction.DOWN}


def amounts(plan: Plan, side: Direction) -> list[int]:
    return [s.amount for s in plan.steps if s.direction is side]


def check_windows(plan: Plan, window: int) -> None:
    """Every window is window-sized, inside its grown canvas, holds some of the old canvas, and the
    step's windows together cover its new strip."""
    for step in plan.steps:
        w, h = step.size_after
        x0, y0, sw, sh = step.new_region
        assert step.amount < window  # every window holds some of the old canvas
        covered = set()
        for win in step.windows:
            assert win.size == window
            assert min(win.x, win.y) >= 0 and win.x + window <= w and win.y + window <= h
            if step.direction.horizontal:
                covered.update(range(win.y, win.y + window))
            else:
                covered.update(range(win.x, win.x + window))
        assert covered == set(range(sh if step.direction.horizontal else sw))
        assert x0 >= 0 and y0 >= 0


def check_sides_take_turns(plan: Plan) -> None:
    """Opposite sides alternate, the first one first, until one of them is done."""
    for first, second in OPPOSITE.items():
        order = [s.direction for s in plan.steps if s.direction in (first, second)]
        if order:
            assert order[0] is first
        for i, (a, b) in enumerate(itertools.pairwise(order)):
            if a is b:
                assert all(d is a for d in order[i:])  # the other side is done


def fewest_steps(total: int, cap: int, square_up: int) -> int:
    """The fewest steps adding ``total`` with at most ``cap`` each, the first at least ``square_up``."""
    if square_up > cap:
        return 1 + math.ceil((total - square_up) / cap)
    return math.ceil(total / cap)


def check_fewest_steps(plan: Plan, window: int) -> None:
    prepared = plan.prepared_size
    for side in plan.expansions:
        steps = [s for s in plan.steps if s.direction is side]
        growing = prepared[0] if side.horizontal else prepared[1]
        square_up = steps[0].amount if steps[0].squares_up else 0
        assert all(s.amount <= window // 2 for s in steps if not s.squares_up)
        assert len(steps) == fewest_steps(sum(s.amount for s in steps), window // 2, square_up)
        assert all(s.amount % GRID == 0 for s in steps)
        if steps[0].squares_up:  # only the very first step on a short axis, and it reaches a window
            assert growing < window <= growing + steps[0].amount
            assert plan.steps.index(steps[0]) == min(
                i for i, s in enumerate(plan.steps) if s.direction.horizontal == side.horizontal
            )


def windows_of(order: tuple, size: tuple[int, int], window: int) -> int:
    width, height = size
    total = 0
    for direction, amount in order:
        if direction.horizontal:
            total += len(window_offsets(height, window))
            width += amount
        else:
            total += len(window_offsets(width, window))
            height += amount
    return total


sizes = st.integers(40, 400)
windows = st.sampled_from([64, 128])


@settings(max_examples=150, deadline=None)
@given(
    width=sizes,
    height=sizes,
    window=windows,
    zoom=st.floats(1.1, 4.0),
    continued=st.booleans(),
    candidates=st.integers(1, 4),
)
def test_zoom_plans(width, height, window, zoom, continued, candidates) -> None:
    spec = JobSpec(Direction.UP, window=window, zoom=zoom, continue_canvas=continued, candidates=candidates)
    plan = plan_job(width, height, spec)
    pw, ph = plan.prepared_size
    assert min(pw, ph) >= window  # every window fits from the first step
    if not continued or min(width, height) < window:
        assert min(pw, ph) == window
    else:
        assert (pw, ph) == (width, height)
    # Every side grows, opposite sides by the same amount: the image sits in the middle.
    assert set(plan.expansions) == set(Direction)
    each_x, each_y = sum(amounts(plan, Direction.LEFT)), sum(amounts(plan, Direction.UP))
    assert sum(amounts(plan, Direction.RIGHT)) == each_x and sum(amounts(plan, Direction.DOWN)) == each_y
    assert plan.final_size == (pw + 2 * each_x, ph + 2 * each_y)
    assert plan.origin == (each_x, each_y)
    for each, side in ((each_x, pw), (each_y, ph)):  # zoom× the size, to the grid (at least one)
        assert each == max(GRID, GRID * round((zoom - 1) * side / 2 / GRID))
    check_windows(plan, window)
    check_sides_take_turns(plan)
    check_fewest_steps(plan, window)
    assert not any(s.squares_up for s in plan.steps)
    assert [s.candidates for s in plan.steps] == [1] * (plan.total_steps - 1) + [candidates]
    # The order of the two axes needs the fewest windows of all interleavings (small plans).
    across = [(s.direction, s.amount) for s in plan.steps if s.direction.horizontal]
    down = [(s.direction, s.amount) for s in plan.steps if not s.direction.horizontal]
    n = len(across) + len(down)
    if n <= 12:
        best = min(
            windows_of(_interleave(across, down, positions), (pw, ph), window)
            for positions in itertools.combinations(range(n), len(across))
        )
        assert plan.total_windows == best


def _interleave(across: list, down: list, positions: tuple[int, ...]) -> tuple:
    a, d = iter(across), iter(down)
    return tuple(next(a) if i in positions else next(d) for i in range(len(across) + len(down)))


@settings(max_examples=150, deadline=None)
@given(
    width=sizes,
    height=sizes,
    window=windows,
    aspect=st.one_of(
        st.sampled_from(ASPECT_PRESETS),
        st.tuples(st.integers(1, 24), st.integers(1, 24)).map(lambda wh: f"{wh[0]}:{wh[1]}"),
    ),
    continued=st.booleans(),
)
def test_aspect_plans(width, height, window, aspect, continued) -> None:
    spec = JobSpec(Direction.LEFT, window=window, aspect=aspect, continue_canvas=continued)
    try:
        ratio = parse_aspect(aspect).ratio
    except PlanError:
        with pytest.raises(PlanError):
            plan_job(width, height, spec)
        return
    horizontal = width / height < ratio
    growth = (ratio * height / width) if horizontal else (width / ratio / height)
    if growth > MAX_GROWTH:
        with pytest.raises(PlanError, match="at most"):
            plan_job(width, height, spec)
        return
    try:
        plan = plan_job(width, height, spec)
    except PlanError as error:
        assert "already" in str(error)
        pw, ph = prepared_size(width, height, spec)
        along, cross = (pw, ph) if horizontal else (ph, pw)
        target = ratio if horizontal else 1 / ratio
        assert abs(target * cross - along) / 2 <= GRID / 2  # rounds to no step at all
        return
    pw, ph = plan.prepared_size
    assert min(pw, ph) >= 1 and (ph if horizontal else pw) >= window
    sides = (Direction.LEFT, Direction.RIGHT) if horizontal else (Direction.UP, Direction.DOWN)
    assert set(plan.expansions) == set(sides)  # only the two sides across the ratio's axis
    each = sum(amounts(plan, sides[0]))
    assert sum(amounts(plan, sides[1])) == each  # grown evenly
    fw, fh = plan.final_size
    assert (fw, fh) == ((pw + 2 * each, ph) if horizontal else (pw, ph + 2 * each))
    assert plan.origin == ((each, 0) if horizontal else (0, each))
    along, cross = (fw, fh) if horizontal else (fh, fw)
    target = ratio if horizontal else 1 / ratio
    assert abs(along - target * cross) <= 2 * GRID  # the ratio, to the grid
    assert min(fw, fh) >= window
    check_windows(plan, window)
    check_sides_take_turns(plan)
    check_fewest_steps(plan, window)
    assert plan.describe().endswith(f" → {parse_aspect(aspect)}")


@pytest.mark.parametrize(
    ("spec", "size", "text"),
    [
        (JobSpec(Direction.RIGHT, aspect="16:9"), (1024, 1024), "1 expansion left, 1 right → 16:9"),
        (JobSpec(Direction.RIGHT, aspect="16:9"), (1080, 1920), "2 expansions left, 2 right → 16:9"),
        (JobSpec(Direction.RIGHT, zoom=2), (1024, 1024), "1 expansion left, 1 right, 1 up, 1 down → 2× zoom"),
        (JobSpec(Direction.UP, times=3), (1024, 1024), "3 expansions up"),
        (JobSpec(Direction.RIGHT, times=2), (600, 1000), "3 expansions right"),  # square-up + 2
        (JobSpec(Direction.RIGHT, times=0), (2048, 1024), "no expansion"),
        (JobSpec(Direction.LEFT, candidates=4), (1024, 1024), "1 expansion left, 4 candidates"),
    ],
)
def test_the_plan_says_itself_in_a_status_line(spec: JobSpec, size: tuple[int, int], text: str) -> None:
    assert plan_job(*size, spec).describe() == text


def test_a_portrait_made_landscape_squares_up_on_one_side_then_evens_out() -> None:
    plan = plan_job(1080, 1920, JobSpec(Direction.RIGHT, aspect="16:9"))
    assert plan.prepared_size == (576, 1024)
    assert [(s.direction, s.amount, s.squares_up) for s in plan.steps] == [
        (Direction.LEFT, 448, True),  # 576 + 448 = one window
        (Direction.RIGHT, 312, False),
        (Direction.LEFT, 176, False),
        (Direction.RIGHT, 312, False),
    ]
    assert plan.final_size == (1824, 1024)


@pytest.mark.parametrize(
    ("text", "ratio"),
    [("16:9", 16 / 9), (" 9 : 16 ", 9 / 16), ("21x9", 21 / 9), ("4/5", 0.8), ("1.91:1", 1.91), ("1:1", 1)],
)
def test_aspect_ratios_parse(text: str, ratio: float) -> None:
    assert parse_aspect(text).ratio == pytest.approx(ratio)


@pytest.mark.parametrize(
    ("spec", "size", "message"),
    [
        (
            JobSpec(Direction.RIGHT, aspect="wide"),
            (1024, 1024),
            "'wide' is not an aspect ratio: write it as W:H",
        ),
        (JobSpec(Direction.RIGHT, aspect=""), (1024, 1024), "is not an aspect ratio"),
        (JobSpec(Direction.RIGHT, aspect="16:0"), (1024, 1024), "must be above 0"),
        (JobSpec(Direction.RIGHT, aspect="5:1"), (1024, 1024), "5:1 is too extreme: ratios from 1:4 to 4:1"),
        (JobSpec(Direction.RIGHT, aspect="1:1"), (1024, 1027), "The image is already 1:1."),
        (JobSpec(Direction.RIGHT, aspect="4:1"), (512, 1024), "would make it 8.0× wider; at most 4×"),
        (JobSpec(Direction.RIGHT, aspect="16:9", zoom=2), (1024, 1024), "not both"),
        (JobSpec(Direction.RIGHT, zoom=1.05), (1024, 1024), "zoom must be between 1.1 and 4 (got 1.05)"),
        (JobSpec(Direction.RIGHT, zoom=float("nan")), (1024, 1024), "zoom must be between"),
        (JobSpec(Direction.RIGHT, candidates=0), (1024, 1024), "candidates must be between 1 and 4"),
        (JobSpec(Direction.RIGHT, candidates=5), (1024, 1024), "candidates must be between 1 and 4"),
    ],
)
def test_bad_requests_say_what_is_wrong(spec: JobSpec, size: tuple[int, int], message: str) -> None:
    with pytest.raises(PlanError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_job(*size, spec)


def test_zoom_and_aspect_ignore_times_and_expand() -> None:
    zoom = JobSpec(Direction.RIGHT, zoom=1.5)
    assert plan_job(800, 600, zoom) == plan_job(
        800, 600, JobSpec(Direction.UP, times=9, expand_px=12, zoom=1.5)
    )
    assert zoom.mode is Mode.ZOOM and JobSpec(Direction.UP, aspect="1:1").mode is Mode.ASPECT
    assert JobSpec(Direction.UP).mode is Mode.PAN


def test_job_specs_round_trip_and_old_stored_jobs_still_load() -> None:
    spec = JobSpec(Direction.RIGHT, zoom=1.5, candidates=3, seed=9)
    assert JobSpec.from_dict(spec.to_dict()) == spec
    aspect = JobSpec(Direction.RIGHT, aspect="21:9")
    assert JobSpec.from_dict(aspect.to_dict()) == aspect
    old = {  # a job stored before zoom, aspect and candidates existed
        "direction": "left", "times": 2, "expand_px": 128, "prompt": "", "negative_prompt": "", "seed": 4,
        "steps": 25, "guidance": 4.0, "window": 1024, "ip_adapter_scale": 0.1, "continue_canvas": False,
    }  # fmt: skip
    loaded = JobSpec.from_dict(old)
    assert (loaded.zoom, loaded.aspect, loaded.candidates, loaded.mode) == (None, None, 1, Mode.PAN)
    job = Job("j1", 1, None, None, loaded, "ab" * 32)
    assert Job.from_dict(job.to_dict()).spec == loaded
