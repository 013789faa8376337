"""The device-side twins of the canvas functions give the CPU results bit for bit (run here on the
CPU; tests/engine/test_gpu.py repeats the check on CUDA), and the map reaches the loop as the
reference pipeline resizes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from outpaint_engine import canvas, device_canvas, runner
from outpaint_engine.differential import latent_change_map
from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.plan import plan_job
from outpaint_engine.runner import Outpainter
from tests.conftest import TINY_STEPS, TINY_WINDOW

CPU = torch.device("cpu")


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)


@settings(max_examples=30, deadline=None)
@given(
    direction=st.sampled_from(Direction),
    window=st.sampled_from([64, 128]),
    cross=st.integers(64, 200),
    grow=st.integers(64, 200),
    expand=st.sampled_from([8, 16, 32]),
    continued=st.booleans(),
)
def test_device_maps_and_merge_equal_the_cpu_ones(direction, window, cross, grow, expand, continued) -> None:
    spec = JobSpec(
        direction, times=1, expand_px=min(expand, window // 2), window=window, continue_canvas=continued
    )
    width, height = (grow, cross) if direction.horizontal else (cross, grow)
    source = canvas.prepare(noise(height, width), spec)
    rng = np.random.default_rng(cross * grow)
    for step in plan_job(source.shape[1], source.shape[0], spec).steps:
        grown, known = canvas.grow(source, step)
        on_device, known_device = grown.copy(), known.copy()
        for window_ in step.windows:  # later windows see a strip partly filled by earlier ones
            inputs = canvas.window_inputs(grown, known, window_, spec, step.direction)
            ys, xs = canvas.window_slices(window_, grown.shape)
            maps = device_canvas.window_maps(known_device[ys, xs], spec, CPU)
            np.testing.assert_array_equal(maps.change[0, 0].numpy(), inputs.change_map)
            np.testing.assert_array_equal(maps.keep.numpy(), inputs.keep_weight)
            generated = rng.integers(0, 256, (window_.size, window_.size, 3), np.uint8)
            canvas.merge(grown, known, window_, generated, inputs)
            device_canvas.merge(on_device, known_device, window_, torch.from_numpy(generated), maps.keep)
            np.testing.assert_array_equal(on_device, grown)
            np.testing.assert_array_equal(known_device, known)
        source = grown


def test_an_unknown_region_that_is_not_a_rectangle_takes_the_exact_slow_path() -> None:
    spec = JobSpec(Direction.RIGHT, window=64)
    known = np.ones((64, 64), bool)
    known[:, 48:] = False
    known[:20, 40:] = False  # an L-shaped hole
    assert canvas.map_factors(known, spec) is None
    maps = device_canvas.window_maps(known, spec, CPU)
    expected = canvas.change_map(known, spec)
    np.testing.assert_array_equal(maps.change[0, 0].numpy(), expected)
    np.testing.assert_array_equal(maps.keep.numpy(), canvas.keep_weight(expected, known))


def test_merge_refuses_a_window_of_the_wrong_size() -> None:
    spec = JobSpec(Direction.RIGHT, expand_px=16, window=64)
    step = plan_job(64, 64, spec).steps[0]
    grown, known = canvas.grow(noise(64, 64), step)
    (window,) = step.windows
    with pytest.raises(ValueError, match="window"):
        device_canvas.merge(
            grown, known, window, torch.zeros(32, 32, 3, dtype=torch.uint8), torch.ones(64, 64)
        )


def test_the_latent_map_is_plain_bilinear_like_the_reference() -> None:
    """torchvision's tensor ``Resize(antialias=None)`` in the reference pipeline: at an exact 8×
    reduction every latent pixel is the mean of the 2×2 map pixels at the centre of its 8×8 block,
    not the mean of the whole block (antialiasing)."""
    change = torch.rand(1, 1, 64, 64)
    latent = latent_change_map(change, (8, 8))
    centres = (
        change[0, 0, 3::8, 3::8]
        + change[0, 0, 3::8, 4::8]
        + change[0, 0, 4::8, 3::8]
        + change[0, 0, 4::8, 4::8]
    )
    torch.testing.assert_close(latent[0, 0], centres / 4)
    blocks = change[0, 0].reshape(8, 8, 8, 8).mean(dim=(1, 3))
    assert not torch.allclose(latent[0, 0], blocks)


def test_the_loop_gets_the_reference_latent_map(
    tiny_engine: Outpainter, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[torch.Tensor] = []
    denoise = runner.denoise

    def recording(unet, scheduler, x0, change_map, *args, **kwargs):
        seen.append(change_map)
        return denoise(unet, scheduler, x0, change_map, *args, **kwargs)

    monkeypatch.setattr(runner, "denoise", recording)
    spec = JobSpec(Direction.RIGHT, 1, 16, steps=TINY_STEPS, window=TINY_WINDOW)
    source = noise(TINY_WINDOW, TINY_WINDOW)
    list(tiny_engine.run(source, spec))
    step = plan_job(TINY_WINDOW, TINY_WINDOW, spec).steps[0]
    grown, known = canvas.grow(source, step)
    (window,) = step.windows
    cmap = torch.from_numpy(canvas.window_inputs(grown, known, window, spec, step.direction).change_map)[
        None, None
    ]
    latent = TINY_WINDOW // 8
    torch.testing.assert_close(seen[0], latent_change_map(cmap, (latent, latent)), rtol=0, atol=0)
