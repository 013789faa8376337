"""The whole engine on tiny random models: sizes, kept pixels, determinism, cancel, resume."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from outpaint_engine import canvas, runner
from outpaint_engine.api import Checkpoint, StepProgress, StepResult, candidate_seed
from outpaint_engine.differential import latent_preview
from outpaint_engine.job import CancelToken, Direction, JobCancelledError, JobSpec
from outpaint_engine.plan import PlanError, plan_job, scaled
from outpaint_engine.runner import Outpainter
from tests.conftest import TINY_STEPS, TINY_WINDOW

SPEC = JobSpec(direction=Direction.RIGHT, times=2, expand_px=16, steps=TINY_STEPS, window=TINY_WINDOW, seed=5)


def _photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth gradient with some texture: a stand-in photo."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, np.full_like(x, 128)], axis=-1)
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def _run(engine: Outpainter, source: np.ndarray, spec: JobSpec, **kwargs) -> list[StepResult]:
    return list(engine.run(source, spec, **kwargs))


@pytest.mark.parametrize("direction", list(Direction))
@pytest.mark.parametrize("size", [(96, 64), (48, 80)], ids=["landscape", "portrait"])
def test_every_step_has_the_planned_size(tiny_engine: Outpainter, direction: Direction, size) -> None:
    spec = replace(SPEC, direction=direction, times=1)
    plan = tiny_engine.plan(*size, spec)
    results = _run(tiny_engine, _photo(*size), spec)
    assert [r.step for r in results] == list(range(plan.total_steps))
    assert all(r.total_steps == plan.total_steps for r in results)
    for result, step in zip(results, plan.steps, strict=True):
        width, height = step.size_after
        assert result.canvas.shape == (height, width, 3)
        assert result.canvas.dtype == np.uint8


def test_a_square_input_grows_by_expand_each_time(tiny_engine: Outpainter) -> None:
    results = _run(tiny_engine, _photo(64, 64), replace(SPEC, times=3))
    assert [r.canvas.shape[1] for r in results] == [80, 96, 112]
    assert all(r.canvas.shape[0] == 64 for r in results)


def test_kept_pixels_are_exact_and_the_new_strip_is_generated(tiny_engine: Outpainter) -> None:
    source = _photo(96, 64)
    plan = plan_job(96, 64, SPEC)
    before = canvas.prepare(source, SPEC)
    for result, step in zip(_run(tiny_engine, source, SPEC), plan.steps, strict=True):
        grown, known = canvas.grow(before, step)
        (window,) = step.windows
        inputs = canvas.window_inputs(grown, known, window, SPEC, step.direction)
        exact = known.copy()
        rows, cols = slice(window.y, window.y + window.size), slice(window.x, window.x + window.size)
        exact[rows, cols] = inputs.keep_weight == 1.0
        assert exact.sum() > 0.5 * known.sum()  # most of the old canvas is outside the seam band
        np.testing.assert_array_equal(result.canvas[exact], grown[exact])
        x, y, w, h = step.new_region
        strip = result.canvas[y : y + h, x : x + w]
        prefill = inputs.image[:, window.size - w :]
        assert not np.array_equal(strip, prefill)  # the model painted over the Telea pre-fill
        before = result.canvas


def test_same_seed_same_pixels_other_seed_other_pixels(tiny_engine: Outpainter) -> None:
    source = _photo(64, 64)
    first = _run(tiny_engine, source, SPEC)
    again = _run(tiny_engine, source, SPEC)
    other = _run(tiny_engine, source, replace(SPEC, seed=SPEC.seed + 1))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.canvas, b.canvas)
    assert not np.array_equal(first[-1].canvas, other[-1].canvas)


def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(tiny_engine: Outpainter) -> None:
    source = _photo(80, 64)
    spec = replace(SPEC, times=3)
    full = _run(tiny_engine, source, spec)
    resumed = _run(tiny_engine, source, spec, resume=Checkpoint(1, full[0].canvas))
    assert [r.step for r in resumed] == [1, 2]
    for a, b in zip(full[1:], resumed, strict=True):
        np.testing.assert_array_equal(a.canvas, b.canvas)
    assert _run(tiny_engine, source, spec, resume=Checkpoint(3, full[2].canvas)) == []


def test_a_checkpoint_that_does_not_fit_is_refused(tiny_engine: Outpainter) -> None:
    source = _photo(80, 64)
    with pytest.raises(ValueError, match="checkpoint canvas"):
        _run(tiny_engine, source, SPEC, resume=Checkpoint(1, source))
    with pytest.raises(ValueError, match="does not fit"):
        _run(tiny_engine, source, SPEC, resume=Checkpoint(5, source))


def test_cancel_stops_within_one_denoising_step(tiny_engine: Outpainter) -> None:
    token = CancelToken()
    seen: list[StepProgress] = []
    results: list[StepResult] = []

    def progress(p: StepProgress) -> None:
        seen.append(p)
        if p.step == 1 and p.denoise == 1:
            token.cancel()

    spec = replace(SPEC, times=3)
    with pytest.raises(JobCancelledError):
        for result in tiny_engine.run(_photo(64, 64), spec, progress=progress, cancel=token):
            results.append(result)
    assert [r.step for r in results] == [0]
    assert (seen[-1].step, seen[-1].denoise) == (1, 1)  # no denoising step after the cancel


def test_a_cancelled_token_stops_before_any_work(tiny_engine: Outpainter) -> None:
    token = CancelToken()
    token.cancel()
    seen: list[StepProgress] = []
    with pytest.raises(JobCancelledError):
        _run(tiny_engine, _photo(64, 64), SPEC, progress=seen.append, cancel=token)
    assert seen == []


def test_progress_reports_every_denoising_step_with_previews(tiny_engine: Outpainter) -> None:
    seen: list[StepProgress] = []
    _run(tiny_engine, _photo(64, 64), SPEC, progress=seen.append)
    assert [(p.step, p.denoise) for p in seen] == [(s, d) for s in range(2) for d in range(1, TINY_STEPS + 1)]
    assert all(p.total_steps == 2 and p.denoise_total == TINY_STEPS for p in seen)
    last = [p for p in seen if p.denoise == TINY_STEPS]
    assert all(p.preview is not None and p.preview.shape == (8, 8, 3) for p in last)


def test_a_preview_is_made_only_when_read(tiny_engine: Outpainter, monkeypatch: pytest.MonkeyPatch) -> None:
    # Making one waits for the GPU: a worker that shows one preview a second must not pay for five.
    made: list[int] = []
    monkeypatch.setattr(runner, "latent_preview", lambda latents: made.append(1) or latent_preview(latents))
    seen: list[StepProgress] = []
    _run(tiny_engine, _photo(64, 64), SPEC, progress=seen.append)
    assert made == []
    offered = [p for p in seen if p.render_preview is not None]
    assert len(offered) == 2  # the last denoising step of each expansion
    first = offered[0].preview
    assert made == [1] and offered[0].preview is first  # made once, then kept


def test_a_wide_canvas_continued_upwards_uses_several_windows(tiny_engine: Outpainter) -> None:
    source = _photo(160, 64)
    spec = replace(SPEC, direction=Direction.UP, times=1, continue_canvas=True)
    plan = plan_job(160, 64, spec)
    assert plan.prepared_size == (160, 64)  # a continued canvas keeps its pixels
    (step,) = plan.steps
    assert len(step.windows) >= 3
    seen: list[StepProgress] = []
    (result,) = _run(tiny_engine, source, spec, progress=seen.append)
    assert result.canvas.shape == (80, 160, 3)
    assert seen[-1].denoise == seen[-1].denoise_total == len(step.windows) * TINY_STEPS
    # Below the windows, the source rows are untouched.
    np.testing.assert_array_equal(result.canvas[64:], source[48:])
    assert not np.array_equal(result.canvas[:16], np.zeros((16, 160, 3), np.uint8))


def test_text_is_encoded_once_per_job(tiny_engine: Outpainter, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = tiny_engine.models.encode_text

    def counting(prompt: str, negative: str, *, guidance: bool):
        calls.append(prompt)
        return original(prompt, negative, guidance=guidance)

    monkeypatch.setattr(tiny_engine.models, "encode_text", counting)
    _run(tiny_engine, _photo(64, 64), replace(SPEC, times=3, prompt="a nest"))
    assert calls == ["a nest"]


def test_prompt_and_guidance_change_the_result(tiny_engine: Outpainter) -> None:
    source = _photo(64, 64)
    base = _run(tiny_engine, source, replace(SPEC, times=1))[-1].canvas
    prompted = _run(tiny_engine, source, replace(SPEC, times=1, prompt="eggs in a nest"))[-1].canvas
    unguided = _run(tiny_engine, source, replace(SPEC, times=1, guidance=1.0))[-1].canvas
    assert not np.array_equal(base, prompted)
    assert not np.array_equal(base, unguided)


def test_ip_adapter_reads_six_crops_and_changes_the_result(
    tiny_engine: Outpainter, tiny_engine_no_ip: Outpainter
) -> None:
    batches: list[int] = []
    hook = tiny_engine.models.pipe.image_encoder.register_forward_hook(
        lambda _m, args, _out: batches.append(args[0].shape[0])
    )
    source = _photo(64, 64)
    spec = replace(SPEC, times=1, ip_adapter_scale=1.0)
    try:
        with_ip = _run(tiny_engine, source, spec)[-1].canvas
    finally:
        hook.remove()
    without = _run(tiny_engine_no_ip, source, spec)[-1].canvas
    assert 6 in batches  # the six crops go through the encoder as one batch
    assert with_ip.shape == without.shape
    assert not np.array_equal(with_ip, without)


def test_plan_errors_reach_the_caller(tiny_engine: Outpainter) -> None:
    with pytest.raises(PlanError):
        _run(tiny_engine, _photo(64, 64), replace(SPEC, expand_px=12))


def test_inference_mode_does_not_leak_between_steps(tiny_engine: Outpainter) -> None:
    for _ in tiny_engine.run(_photo(64, 64), SPEC):
        assert not torch.is_inference_mode_enabled()


def test_load_warms_up_a_compiled_engine(
    tiny_engine: Outpainter, tiny_engine_settings: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        runner, "load_models", lambda _settings: replace(tiny_engine.models, compile_mode="graphs")
    )
    warmed: list[Outpainter] = []
    monkeypatch.setattr(Outpainter, "warm_up", lambda engine: warmed.append(engine))
    engine = Outpainter.load(**tiny_engine_settings)
    assert warmed == [engine]


def test_warm_up_runs_the_unet_at_the_window_size_without_captioning(
    tiny_engine: Outpainter, monkeypatch: pytest.MonkeyPatch
) -> None:
    captioned: list[object] = []

    class Captioner:
        def describe(self, picture: object, question: str) -> str:
            captioned.append(picture)
            return "a ramp"

    monkeypatch.setattr(tiny_engine, "captioner", Captioner())
    shapes: list[tuple[int, ...]] = []
    hook = tiny_engine.models.unet.register_forward_hook(lambda _m, args, _out: shapes.append(args[0].shape))
    try:
        tiny_engine.warm_up()
    finally:
        hook.remove()
    latent = TINY_WINDOW // 8
    assert shapes == [(2, 4, latent, latent)] * (2 * 2)  # two runs of two CFG steps, one window each
    assert captioned == []


@pytest.mark.parametrize(
    ("size", "growth"),
    [((64, 64), {"zoom": 1.5}), ((96, 64), {"aspect": "9:16"})],
    ids=["zoom-1.5", "landscape-to-9:16"],
)
def test_zoom_and_aspect_keep_the_image_exact_in_the_middle(
    tiny_engine: Outpainter, monkeypatch: pytest.MonkeyPatch, size: tuple[int, int], growth: dict
) -> None:
    spec = replace(SPEC, **growth)
    plan = plan_job(*size, spec)
    directions: list[Direction] = []  # the side each window's image prompt is read against
    newest_known = canvas.newest_known

    def recording(grown, known, window, direction):
        directions.append(direction)
        return newest_known(grown, known, window, direction)

    monkeypatch.setattr(canvas, "newest_known", recording)
    source = _photo(*size)
    results = _run(tiny_engine, source, spec)
    assert [r.canvas.shape[1::-1] for r in results] == [s.size_after for s in plan.steps]
    assert directions == [s.direction for s in plan.steps for _ in s.windows]
    final, prepared = results[-1].canvas, canvas.prepare(source, spec)
    band = scaled(canvas.MASK_OFFSET, TINY_WINDOW) + scaled(canvas.BLUR_KERNEL, TINY_WINDOW) // 2 + 1
    (x, y), (w, h) = plan.origin, plan.prepared_size
    grew = plan.expansions
    top, left = band * (Direction.UP in grew), band * (Direction.LEFT in grew)
    bottom, right = h - band * (Direction.DOWN in grew), w - band * (Direction.RIGHT in grew)
    middle = final[y : y + h, x : x + w]
    np.testing.assert_array_equal(middle[top:bottom, left:right], prepared[top:bottom, left:right])
    for side in grew:  # every new strip, corners included, was generated (a blank one is all zeros)
        x0, y0, sw, sh = next(s for s in reversed(plan.steps) if s.direction is side).new_region
        assert final[y0 : y0 + sh, x0 : x0 + sw].std() > 1.0


def test_candidates_equal_runs_of_their_own_seeds(tiny_engine: Outpainter) -> None:
    """A wide canvas grown up (two windows: the second sees each candidate's first) as two
    candidates in one batch: each equals the job run alone with its candidate seed (the first is
    the job's own seed)."""
    source = _photo(96, 64)
    spec = replace(SPEC, direction=Direction.UP, times=1, continue_canvas=True, candidates=2)
    (result,) = _run(tiny_engine, source, spec)
    assert len(result.candidates) == 2 and result.candidates[0] is result.canvas
    for k, candidate in enumerate(result.candidates):
        (alone,) = _run(tiny_engine, source, replace(spec, candidates=1, seed=candidate_seed(spec.seed, k)))
        assert len(alone.candidates) == 1 and alone.candidates[0] is alone.canvas
        moved = np.abs(candidate.astype(np.int16) - alone.canvas.astype(np.int16))
        assert moved.max() <= 1 and np.count_nonzero(moved) <= candidate.size // 1000  # batch rounding
    a, b = result.candidates
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(a[-32:], b[-32:])  # below the windows both keep the canvas


def test_candidate_seeds_start_with_the_jobs_own_and_are_stable() -> None:
    seeds = [candidate_seed(7, k) for k in range(4)]
    assert seeds[0] == 7 and len(set(seeds)) == 4
    assert seeds == [candidate_seed(7, k) for k in range(4)]
    assert candidate_seed(8, 1) != seeds[1]
    assert all(0 <= s < 2**63 for s in seeds)
    with pytest.raises(ValueError, match="candidates"):
        StepResult(0, 1, np.zeros((2, 2, 3), np.uint8), (np.ones((2, 2, 3), np.uint8),))


def test_the_quarter_resolution_fill_changes_far_less_than_a_reroll(tiny_engine: Outpainter) -> None:
    """``OUTPAINT_FILL=telea-fast`` only seeds the strip before heavy noise: the final canvases of the
    two fills differ much less than two seeds do (measured: 0.04–0.09 against 65–74 levels)."""
    source = _photo(96, 64)
    spec = replace(SPEC, steps=4)
    fast = Outpainter(tiny_engine.models, tiny_engine.settings.model_copy(update={"fill": "telea-fast"}))
    full = Outpainter(tiny_engine.models, tiny_engine.settings.model_copy(update={"fill": "telea"}))

    def final(engine: Outpainter, seed: int) -> np.ndarray:
        return _run(engine, source, replace(spec, seed=seed))[-1].canvas.astype(np.float32)

    fill_effect = np.abs(final(full, 5) - final(fast, 5)).mean()
    reroll = np.abs(final(full, 5) - final(full, 6)).mean()
    assert fill_effect < reroll / 20


def test_warm_up_makes_the_batchers_calls_for_every_number_of_jobs(tiny_engine: Outpainter) -> None:
    """With ``OUTPAINT_BATCH_JOBS=3`` the warm-up also calls the UNet as the batcher does for 2 and 3
    jobs at once (batch 4 and 6 under guidance, one timestep per sample), so those batch sizes are
    compiled and captured before the first real jobs meet."""
    engine = Outpainter(tiny_engine.models, tiny_engine.settings.model_copy(update={"batch_jobs": 3}))
    calls: list[tuple[int, tuple[int, ...]]] = []
    hook = engine.models.unet.register_forward_hook(
        lambda _m, args, _out: calls.append((args[0].shape[0], tuple(args[1].shape)))
    )
    try:
        engine.warm_up()
    finally:
        hook.remove()
    assert calls == [(2, ())] * 4 + [(4, (4,))] * 2 + [(6, (6,))] * 2
