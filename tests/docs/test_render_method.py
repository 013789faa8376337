"""docs/render_method.py: the pictures of docs/method.md are rendered, and what they show holds."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).parents[2] / "docs" / "render_method.py"
WINDOW = 128


@pytest.fixture(scope="module")
def render_method():
    spec = importlib.util.spec_from_file_location("render_method", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def rendered(render_method, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("method")
    assert render_method.main(["--out", str(out), "--window", str(WINDOW)]) == 0
    return out, render_method.run_method(WINDOW)


def test_every_picture_is_written_as_a_png(render_method, rendered) -> None:
    out, _ = rendered
    assert sorted(p.name for p in out.iterdir()) == sorted(render_method.FILES)
    for name in render_method.FILES:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 100 and image.height > 100


def test_the_merged_canvas_keeps_the_photo_exact_outside_the_seam_band(rendered) -> None:
    _, m = rendered
    for step in m.steps:
        win, w = step.window, step.inputs.keep_weight
        ys, xs = slice(win.y, win.y + win.size), slice(win.x, win.x + win.size)
        before, after = step.grown[ys, xs], step.merged[ys, xs]
        kept = w == 1.0
        assert kept.mean() > 0.4  # much of the window is old pixels kept as they were
        assert np.array_equal(after[kept], before[kept])
        fresh = ~step.known[ys, xs]
        assert np.array_equal(after[fresh], step.generated[fresh])  # the strip is the generated pixels
        band = (w > 0) & (w < 1)
        assert band.any() and not (band & fresh).any()
        outside = np.ones(step.grown.shape[:2], bool)
        outside[ys, xs] = False
        assert np.array_equal(step.merged[outside], step.grown[outside])  # nothing outside the window

    height, width = m.prepared.shape[:2]
    final = m.final[:height, :width]
    exact = (final == m.prepared).all(axis=2)
    assert exact[:, : width - m.spec.window].all()  # never inside any window: untouched
    assert exact.mean() > 0.8


def test_the_stand_in_differs_from_its_input_everywhere_it_matters(rendered) -> None:
    _, m = rendered
    step = m.steps[0]
    changed = (step.generated != step.inputs.image).any(axis=2)
    assert changed.mean() > 0.9  # so the exact pixels above are the merge's doing


def test_fewer_latent_pixels_stay_pinned_as_denoising_goes_on(render_method, rendered) -> None:
    _, m = rendered
    cmap = m.steps[0].inputs.change_map
    masks = [render_method.latent_keep(cmap, i) for i in range(render_method.DENOISE_STEPS)]
    assert masks[0].all()  # at first the whole window follows the (noised) original
    assert not masks[-1][:, -1].any()  # at the end the strip is free
    for earlier, later in itertools.pairwise(masks):
        assert (later <= earlier).all()
