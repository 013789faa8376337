"""Pixel geometry of outpaint_engine.canvas: unit tests, seed equivalence and property tests."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from outpaint_engine import canvas
from outpaint_engine.canvas import (
    BLUR_KERNEL,
    GRAY,
    MASK_OFFSET,
    change_map,
    grow,
    ip_crops,
    keep_weight,
    merge,
    prepare,
    window_inputs,
)
from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.plan import (
    ASPECT_PRESETS,
    Plan,
    PlanError,
    PlanStep,
    Window,
    plan_job,
    prepared_size,
    scaled,
)

RED, BLUE = (255, 0, 0), (0, 0, 255)


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


def constants(window: int) -> tuple[int, int]:
    """(mask offset, blur radius) at this window size."""
    return scaled(MASK_OFFSET, window), scaled(BLUR_KERNEL, window, odd=True) // 2


def square(radius: int) -> np.ndarray:
    return np.ones((2 * radius + 1, 2 * radius + 1), np.uint8)


def gray_region(known: np.ndarray, offset: int) -> np.ndarray:
    return cv2.dilate((~known).astype(np.uint8), square(offset)).astype(bool)


def reference_map(known: np.ndarray, window: int) -> np.ndarray:
    """The map computed the plain way: dilate, paint, one full 2-D OpenCV blur (as uint8)."""
    offset, radius = constants(window)
    mask = np.where(gray_region(known, offset), GRAY, 255).astype(np.uint8)
    return cv2.GaussianBlur(mask, (2 * radius + 1, 2 * radius + 1), 0)


def as_uint8(cmap: np.ndarray) -> np.ndarray:
    return np.rint(cmap * 255).astype(np.uint8)


# --- prepare, grow ---------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(8, 300),
    height=st.integers(8, 300),
    direction=st.sampled_from(Direction),
    window=st.sampled_from([64, 128]),
    continued=st.booleans(),
)
def test_prepare_size(width, height, direction, window, continued):
    spec = JobSpec(direction, window=window, continue_canvas=continued)
    image = noise(height, width)
    out = prepare(image, spec)
    assert out.dtype == np.uint8
    assert (out.shape[1], out.shape[0]) == prepared_size(width, height, spec)
    if out.shape == image.shape:
        assert out is image


@pytest.mark.parametrize(("width", "height"), [(300, 200), (40, 30)])  # shrinking, enlarging
def test_prepare_keeps_colours_and_channel_order(width, height):
    image = np.zeros((height, width, 3), np.uint8)
    image[:, : width // 2] = RED
    image[:, width // 2 :] = BLUE
    out = prepare(image, JobSpec(Direction.RIGHT, window=64))
    assert out.shape[0] == 64
    assert (out[:, :4] == RED).all() and (out[:, -4:] == BLUE).all()


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(1, 90),
    height=st.integers(1, 90),
    direction=st.sampled_from(Direction),
    amount=st.integers(1, 40),
)
def test_grow_places_the_old_canvas(width, height, direction, amount):
    after = (width + amount, height) if direction.horizontal else (width, height + amount)
    step = PlanStep(0, direction, amount, (width, height), after, False, ())
    old = noise(height, width)
    grown, known = grow(old, step)
    assert grown.shape == (after[1], after[0], 3) and known.shape == (after[1], after[0])
    x, y = step.shift
    np.testing.assert_array_equal(grown[y : y + height, x : x + width], old)
    assert known[y : y + height, x : x + width].all() and known.sum() == width * height
    assert (grown[~known] == 0).all()
    nx, ny, nw, nh = step.new_region
    assert not known[ny : ny + nh, nx : nx + nw].any()


def test_grow_refuses_a_canvas_of_the_wrong_size():
    step = PlanStep(0, Direction.RIGHT, 8, (64, 64), (72, 64), False, ())
    with pytest.raises(ValueError):
        grow(noise(64, 65), step)


# --- change map ----------------------------------------------------------------------------------


def seed_mask(direction: Direction, old: int, window: int = 1024) -> np.ndarray:
    """The seed's process_image mask for a window whose old part is ``old`` px along the growth."""
    mask = np.full((window, window), 255, np.uint8)
    new = window - old
    if direction is Direction.LEFT:
        mask[:, : new + 50] = 50
    elif direction is Direction.RIGHT:
        mask[:, old - 50 :] = 50
    elif direction is Direction.UP:
        mask[: new + 50, :] = 50
    else:
        mask[old - 50 :, :] = 50
    return cv2.GaussianBlur(mask, (501, 501), 0)


@pytest.mark.parametrize("direction", list(Direction))
@pytest.mark.parametrize("source_long", [768, 1536])  # square-up from 768, then a 256-px step
def test_map_is_the_seeds_at_1024(direction, source_long):
    size = (source_long, 1024) if direction.horizontal else (1024, source_long)
    spec = JobSpec(direction, times=1)
    plan = plan_job(*size, spec)
    step = plan.steps[0]
    _, known = grow(noise(size[1], size[0]), step)
    (window,) = step.windows
    window_known = known[window.y : window.y + 1024, window.x : window.x + 1024]
    expected = seed_mask(direction, 1024 - step.amount)
    cmap = change_map(window_known, spec)
    assert cmap.dtype == np.float32
    np.testing.assert_array_equal(as_uint8(cmap), expected)
    assert cmap.max() == 1.0 and (cmap == 1.0).sum() == (expected == 255).sum()


def test_map_of_an_inner_window_at_1024_matches_the_full_blur():
    """Second window of a step over a tall canvas: its hole is a rectangle not spanning the window."""
    known = np.ones((1024, 1024), bool)
    known[300:, 768:] = False
    np.testing.assert_array_equal(
        as_uint8(change_map(known, JobSpec(Direction.RIGHT))), reference_map(known, 1024)
    )


@st.composite
def window_masks(draw: st.DrawFn) -> tuple[np.ndarray, int]:
    """A window's known mask: a rectangular hole (the usual case) or an arbitrary set of holes."""
    window = draw(st.sampled_from([64, 128]))
    known = np.ones((window, window), bool)
    for _ in range(draw(st.integers(1, 3))):
        y0, x0 = draw(st.integers(0, window - 1)), draw(st.integers(0, window - 1))
        y1, x1 = draw(st.integers(y0 + 1, window)), draw(st.integers(x0 + 1, window))
        known[y0:y1, x0:x1] = False
    return known, window


@settings(max_examples=80, deadline=None)
@given(window_masks())
def test_map_equals_the_plain_computation(mask_and_window):
    known, window = mask_and_window
    spec = JobSpec(Direction.RIGHT, window=window)
    np.testing.assert_array_equal(as_uint8(change_map(known, spec)), reference_map(known, window))


def test_map_of_a_fully_known_window_is_all_ones():
    cmap = change_map(np.ones((64, 64), bool), JobSpec(Direction.UP, window=64))
    assert cmap.dtype == np.float32 and (cmap == 1.0).all()


@settings(max_examples=60, deadline=None)
@given(window_masks())
def test_keep_weight(mask_and_window):
    known, window = mask_and_window
    cmap = change_map(known, JobSpec(Direction.LEFT, window=window))
    keep = keep_weight(cmap, known)
    assert keep.dtype == np.float32 and keep.shape == known.shape
    assert keep.min() >= 0.0 and keep.max() <= 1.0
    assert (keep[~known] == 0.0).all()
    assert (keep[(cmap == 1.0) & known] == 1.0).all()
    # Continuous at the seam: known pixels next to a hole are (nearly) all generated.
    beside_hole = known & cv2.dilate((~known).astype(np.uint8), square(1)).astype(bool)
    assert keep[beside_hole].max(initial=0.0) <= 0.25


# --- pre-fill, crops -----------------------------------------------------------------------------


def coordinates(height: int, width: int) -> np.ndarray:
    """An image whose pixels spell their own position: (x mod 256, y mod 256, high bits)."""
    y, x = np.mgrid[:height, :width]
    return np.stack([x % 256, y % 256, (x // 256) * 16 + y // 256], axis=-1).astype(np.uint8)


def position(pixel: np.ndarray) -> tuple[int, int]:
    r, g, b = (int(v) for v in pixel)
    return r + 256 * (b // 16), g + 256 * (b % 16)


@settings(max_examples=60, deadline=None)
@given(width=st.integers(1, 600), height=st.integers(1, 600))
def test_ip_crops_are_the_seeds_slices(width, height):
    crops = ip_crops(coordinates(height, width))
    side = max(1, min(width // 2, height // 3))
    assert len(crops) == 6
    expected_x = [min(i * side, width - side) for i in range(2)]
    expected_y = [min(i * side, height - side) for i in range(3)]
    for i, crop in enumerate(crops):
        assert crop.shape == (side, side, 3)  # a slice reaching outside would come out smaller
        assert position(crop[0, 0]) == (expected_x[i % 2], expected_y[i // 2])


def test_ip_crops_keep_rgb_order():
    image = np.zeros((300, 200, 3), np.uint8)
    image[:, :100] = RED
    image[:, 100:] = BLUE
    crops = ip_crops(image)
    assert all((c == RED).all() for c in crops[0::2]) and all((c == BLUE).all() for c in crops[1::2])
    crops[0][:] = 0
    assert (image[:, :100] == RED).all()  # crops are copies


@settings(max_examples=60, deadline=None)
@given(window_masks(), st.integers(0, 99))
def test_prefill_is_telea_on_the_whole_window(mask_and_window, seed):
    known, window = mask_and_window
    image = noise(window, window, seed)
    image[~known] = 0
    expected = cv2.inpaint(image, (~known).astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)
    np.testing.assert_array_equal(canvas.prefill(image, known), expected)


def test_square_up_crops_come_from_the_source_not_the_fill():
    spec = JobSpec(Direction.LEFT, times=0, expand_px=32, window=128)
    source = np.full((128, 40, 3), (10, 200, 30), np.uint8)
    plan = plan_job(40, 128, spec)
    grown, known = grow(source, plan.steps[0])
    inputs = window_inputs(grown, known, plan.steps[0].windows[0], spec, plan.steps[0].direction)
    assert all((c == (10, 200, 30)).all() for c in inputs.crops)
    assert inputs.crops[0].shape == (20, 20, 3)  # min(40 // 2, 128 // 3)


def test_later_step_crops_are_the_previous_window():
    spec = JobSpec(Direction.DOWN, times=1, expand_px=32, window=64)
    old = coordinates(100, 64)
    step = plan_job(64, 100, spec).steps[0]
    grown, known = grow(old, step)
    inputs = window_inputs(grown, known, step.windows[0], spec, step.direction)
    # The window covers rows 68..132 of the grown canvas; the previous one covered rows 36..100.
    assert position(inputs.crops[0][0, 0]) == (0, 36)
    for crop, expected in zip(inputs.crops, ip_crops(old[36:100]), strict=True):
        np.testing.assert_array_equal(crop, expected)


# --- whole steps ---------------------------------------------------------------------------------


@st.composite
def jobs(draw: st.DrawFn) -> tuple[np.ndarray, JobSpec, Plan]:
    """A source (fresh upload or a continued canvas, possibly wider than a window) and its plan."""
    window = draw(st.sampled_from([64, 128]))
    direction = draw(st.sampled_from(Direction))
    continued = draw(st.booleans())
    cross = draw(st.integers(window, 3 * window)) if continued else draw(st.integers(16, 200))
    along = draw(st.integers(16, 200))
    spec = JobSpec(
        direction,
        times=draw(st.integers(0, 2)),
        expand_px=8 * draw(st.integers(1, window // 16)),
        window=window,
        continue_canvas=continued,
    )
    width, height = (along, cross) if direction.horizontal else (cross, along)
    source = prepare(noise(height, width, seed=draw(st.integers(0, 99))), spec)
    return source, spec, plan_job(width, height, spec)


def far_from(mask: np.ndarray, distance: int) -> np.ndarray:
    return ~cv2.dilate(mask.astype(np.uint8), square(distance)).astype(bool)


def check_window(
    grown: np.ndarray, known: np.ndarray, window: Window, spec: JobSpec, direction: Direction, rng
) -> None:
    """window_inputs + merge over one window, asserting every promised property."""
    ys, xs = slice(window.y, window.y + window.size), slice(window.x, window.x + window.size)
    size = window.size
    before, known_before = grown.copy(), known.copy()
    inputs = window_inputs(grown, known, window, spec, direction)
    hole = ~known_before[ys, xs]
    cmap, keep = inputs.change_map, inputs.keep_weight

    assert inputs.image.shape == (size, size, 3) and inputs.image.dtype == np.uint8
    assert cmap.shape == keep.shape == (size, size) and cmap.dtype == keep.dtype == np.float32
    assert cmap.min() >= 0.0 and cmap.max() <= 1.0 and keep.min() >= 0.0 and keep.max() <= 1.0
    np.testing.assert_array_equal(inputs.image[~hole], before[ys, xs][~hole])
    offset, radius = constants(size)
    gray = gray_region(~hole, offset)
    assert (cmap[far_from(gray, radius)] == 1.0).all()  # the blur cannot reach these
    assert (cmap[hole] < 1.0).all()
    pure_gray = cv2.erode(gray.astype(np.uint8), square(radius)).astype(bool)
    assert (cmap[pure_gray] == np.float32(GRAY / 255)).all()
    assert (keep[hole] == 0.0).all() and (keep[cmap == 1.0] == 1.0).all()
    assert len(inputs.crops) == 6 and all(c.ndim == 3 and c.shape[0] == c.shape[1] for c in inputs.crops)

    generated = rng.integers(0, 256, (size, size, 3), np.uint8)
    merge(grown, known, window, generated, inputs)
    inside = np.zeros(known.shape, bool)
    inside[ys, xs] = True
    np.testing.assert_array_equal(grown[~inside], before[~inside])  # nothing outside the window
    kept = keep == 1.0
    np.testing.assert_array_equal(grown[ys, xs][kept], before[ys, xs][kept])  # the key property
    np.testing.assert_array_equal(grown[ys, xs][hole], generated[hole])
    assert known[ys, xs].all() and (known[~inside] == known_before[~inside]).all()


def check_every_window(source: np.ndarray, spec: JobSpec, plan: Plan, rng) -> np.ndarray:
    """:func:`check_window` over a whole plan (with random pixels as the generations); the canvas."""
    canvas_ = source
    for step in plan.steps:
        grown, known = grow(canvas_, step)
        for window in step.windows:
            check_window(grown, known, window, spec, step.direction, rng)
        assert known.all()  # the step's windows covered its whole strip, corners included
        canvas_ = grown
    assert (canvas_.shape[1], canvas_.shape[0]) == plan.final_size
    return canvas_


@settings(max_examples=40, deadline=None)
@given(jobs(), st.integers(0, 2**32 - 1))
def test_every_window_of_every_step(job, seed):
    check_every_window(*job, np.random.default_rng(seed))


@st.composite
def zoom_and_aspect_jobs(draw: st.DrawFn) -> tuple[np.ndarray, JobSpec, Plan]:
    """A source and a zoom or aspect plan on it (small windows; requests that cannot be planned skipped)."""
    width, height = draw(st.integers(24, 160)), draw(st.integers(24, 160))
    growth = draw(
        st.one_of(
            st.floats(1.1, 2.5).map(lambda zoom: {"zoom": zoom}),
            st.sampled_from(ASPECT_PRESETS).map(lambda aspect: {"aspect": aspect}),
        )
    )
    spec = JobSpec(Direction.RIGHT, window=64, continue_canvas=draw(st.booleans()), **growth)
    try:
        plan = plan_job(width, height, spec)
    except PlanError:
        assume(False)
    return prepare(noise(height, width, seed=draw(st.integers(0, 99))), spec), spec, plan


def assert_exact_in_the_middle(final: np.ndarray, source: np.ndarray, plan: Plan, spec: JobSpec) -> None:
    """The prepared image is exact at its place in the final canvas, but for a seam band on every
    side that grew (past the gray band and the blur, the change map is exactly 1.0)."""
    offset, radius = constants(spec.window)
    band = offset + radius + 1
    grew = plan.expansions
    h, w = source.shape[:2]
    top, left = band * (Direction.UP in grew), band * (Direction.LEFT in grew)
    bottom, right = h - band * (Direction.DOWN in grew), w - band * (Direction.RIGHT in grew)
    x, y = plan.origin
    kept = final[y : y + h, x : x + w][top:bottom, left:right]
    np.testing.assert_array_equal(kept, source[top:bottom, left:right])


@settings(max_examples=30, deadline=None)
@given(zoom_and_aspect_jobs(), st.integers(0, 2**32 - 1))
def test_every_window_of_zoom_and_aspect_plans(job, seed):
    source, spec, plan = job
    final = check_every_window(source, spec, plan, np.random.default_rng(seed))
    assert_exact_in_the_middle(final, source, plan, spec)


@settings(max_examples=30, deadline=None)
@given(zoom_and_aspect_jobs())
def test_zoom_and_aspect_keep_the_image_in_the_middle_and_fill_the_rest(job):
    """With a constant generator every pixel outside the prepared image is that colour, corners
    included, and the image is exact inside its seam bands."""
    source, spec, plan = job
    colour = np.array([1, 2, 3], np.uint8)
    canvas_ = source
    for step in plan.steps:
        grown, known = grow(canvas_, step)
        for window in step.windows:
            inputs = window_inputs(grown, known, window, spec, step.direction)
            merge(grown, known, window, np.broadcast_to(colour, (window.size, window.size, 3)), inputs)
        canvas_ = grown
    (x, y), (w, h) = plan.origin, plan.prepared_size
    image = np.zeros(canvas_.shape[:2], bool)
    image[y : y + h, x : x + w] = True
    assert (canvas_[~image] == colour).all()
    assert_exact_in_the_middle(canvas_, source, plan, spec)


@settings(max_examples=30, deadline=None)
@given(jobs())
def test_a_constant_generator_fills_every_new_pixel(job):
    """Run a whole plan with a fake generator; old pixels away from the seams stay bit-exact."""
    source, spec, plan = job
    colour = np.array([1, 2, 3], np.uint8)
    canvas_ = source
    for step in plan.steps:
        grown, known = grow(canvas_, step)
        was_known = known.copy()
        blended = np.zeros(known.shape, bool)
        for window in step.windows:
            inputs = window_inputs(grown, known, window, spec, step.direction)
            blended[window.y : window.y + window.size, window.x : window.x + window.size] |= (
                inputs.keep_weight < 1.0
            )
            merge(grown, known, window, np.broadcast_to(colour, (window.size, window.size, 3)), inputs)
        assert (grown[~was_known] == colour).all()
        untouched = was_known & ~blended
        x, y = step.shift
        old = np.zeros_like(grown)
        old[y : y + canvas_.shape[0], x : x + canvas_.shape[1]] = canvas_
        np.testing.assert_array_equal(grown[untouched], old[untouched])
        canvas_ = grown
    assert (canvas_.shape[1], canvas_.shape[0]) == plan.final_size


def test_merge_refuses_a_window_of_the_wrong_size():
    spec = JobSpec(Direction.RIGHT, times=0, expand_px=32, window=64)
    plan = plan_job(32, 64, spec)
    grown, known = grow(noise(64, 32), plan.steps[0])
    window = plan.steps[0].windows[0]
    inputs = window_inputs(grown, known, window, spec, spec.direction)
    with pytest.raises(ValueError):
        merge(grown, known, window, noise(64, 60), inputs)
    with pytest.raises(ValueError):
        window_inputs(grown, known, Window(8, 0, 64), spec, spec.direction)
