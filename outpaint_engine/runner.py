"""The engine: :class:`Outpainter` runs a job's plan, window by window, and yields each canvas.

Per job: the prompt (written by the optional captioner when the job has none) is encoded once.
Per window: the canvas geometry (:mod:`outpaint_engine.canvas`) gives the pre-filled window, its
change map and six crops; the models encode them; the loop of :mod:`outpaint_engine.differential`
denoises; the result is decoded and merged back. Every window's noise is seeded by
:func:`outpaint_engine.api.step_seed`, so resuming from a checkpoint gives the same pixels as an
uninterrupted run. A step with several candidates denoises them as one batch, each from its own
seed (:func:`outpaint_engine.api.candidate_seed`), and yields every candidate's canvas.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import numpy as np
import torch

from outpaint_engine import canvas, device_canvas
from outpaint_engine.api import (
    Checkpoint,
    ProgressCallback,
    StepProgress,
    StepResult,
    candidate_seed,
    step_seed,
)
from outpaint_engine.captioner import Caption, Captioner, write_caption
from outpaint_engine.differential import (
    DenoiseStep,
    StepCallback,
    denoise,
    latent_change_map,
    latent_preview,
    stack_candidates,
)
from outpaint_engine.job import CancelToken, Direction, JobSpec
from outpaint_engine.models import Models, load_captioner, load_models
from outpaint_engine.observability.stages import WARMING, report_load_stage, timed, unmeasured
from outpaint_engine.plan import Plan, PlanStep, Window, plan_job
from outpaint_engine.settings import EngineSettings

log = logging.getLogger(__name__)

PREVIEW_EVERY = 5
"""A preview goes with every this many denoising steps (and with the last one of a window)."""
FILL_SCALES = {"telea": 1, "telea-fast": 4}
"""``OUTPAINT_FILL``: how many times the Telea pre-fill's working resolution is reduced."""


BATCH_JOBS_ON_CUDA = 4
"""Jobs a CUDA worker runs at once by default (``OUTPAINT_BATCH_JOBS``)."""


class Outpainter:
    """The real engine (implements :class:`outpaint_engine.api.Engine`).

    Several jobs may run at once, one thread each (up to :attr:`concurrency` is what pays): their
    UNet calls meet in the models' batcher. Every job must use the same IP-Adapter scale.
    """

    def __init__(
        self, models: Models, settings: EngineSettings | None = None, captioner: Captioner | None = None
    ) -> None:
        self.models = models
        self.settings = settings or EngineSettings()
        self.captioner = captioner  # writes the prompt of jobs that have none
        self._caption_lock = threading.Lock()  # one caption at a time, whatever runs concurrently

    @property
    def concurrency(self) -> int:
        """How many jobs to run at once (``OUTPAINT_BATCH_JOBS``; by default 4 on CUDA, else 1)."""
        if self.settings.batch_jobs is not None:
            return self.settings.batch_jobs
        on_cuda = self.models.device.type == "cuda" and not self.settings.low_vram
        return BATCH_JOBS_ON_CUDA if on_cuda else 1

    @classmethod
    def load(cls, settings: EngineSettings | None = None, **overrides: Any) -> Outpainter:
        """Load the models named by ``settings`` (default: from the environment), with overrides.

        ``Outpainter.load(model="path/to/sdxl", ip_adapter="", device="cpu")``. Raises
        :class:`outpaint_engine.models.ModelLoadError` with a one-line reason.
        """
        settings = settings or EngineSettings()
        unknown = set(overrides) - set(EngineSettings.model_fields)
        if unknown:
            raise TypeError(f"unknown engine settings: {', '.join(sorted(unknown))}")
        settings = settings.model_copy(update=overrides)
        began = time.monotonic()
        log.info("loading the weights of %s", settings.model)
        engine = cls(load_models(settings), settings, load_captioner(settings))
        log.info("weights loaded in %.1f s", time.monotonic() - began)
        if engine.models.compiled:
            report_load_stage(WARMING)  # the worker's state: waiting jobs say "warming up the GPU"
            with unmeasured():
                engine.warm_up()
        return engine

    def warm_up(self) -> None:
        """Run one short job at the configured window size, so a compiled UNet is compiled (and its
        CUDA graphs recorded) before the first real job rather than during it.

        The job has a prompt, so the captioner (never compiled) is not asked for one.
        """
        s, began = self.settings, time.monotonic()
        log.info(
            "compiling and capturing the UNet (%s) for 1 job at once: minutes on a first start, "
            "seconds with the compile cache",
            self.models.compile_mode,
        )
        ramp = np.linspace(0, 255, s.window, dtype=np.float32).astype(np.uint8)
        source = np.dstack([np.tile(ramp, (s.window, 1))] * 3)
        spec = JobSpec(
            Direction.RIGHT, 1, s.window // 4, prompt="warm-up", steps=2, guidance=s.guidance,
            window=s.window, ip_adapter_scale=s.ip_scale, continue_canvas=True,
        )  # fmt: skip
        for _ in range(2):  # the second run replays what the first compiled (and records graphs)
            for _ in self.run(source, spec):
                pass
        self._warm_up_batches(spec)
        log.info("warm-up done in %.1f s", time.monotonic() - began)

    @torch.inference_mode()
    def _warm_up_batches(self, spec: JobSpec) -> None:
        """Call the UNet as the batcher will for 2 to :attr:`concurrency` jobs at once, so each batch
        size is compiled and captured now rather than in the middle of real jobs."""
        m = self.models
        text = m.encode_text(spec.prompt, "", guidance=spec.guidance > 1)
        crops = [np.full((224, 224, 3), 128, np.uint8)] * 6
        cond = m.conditioning(
            text, m.encode_crops(crops, guidance=spec.guidance > 1) if m.ip_adapter else None, spec.window
        )
        scheduler = m.new_scheduler()
        scheduler.set_timesteps(spec.steps, device=m.device)
        latent = spec.window // 8
        sample = torch.randn(cond.batch, 4, latent, latent, device=m.device).to(cond.prompt_embeds.dtype)
        for jobs in range(2, self.concurrency + 1):
            log.info("compiling and capturing the UNet for %d jobs at once", jobs)
            for _ in range(2):  # as the warm-up jobs: compile or capture, then replay
                m.batcher.call_as_batch(
                    jobs,
                    sample,
                    scheduler.timesteps[0],
                    encoder_hidden_states=cond.prompt_embeds,
                    added_cond_kwargs=cond.added_cond_kwargs,
                )

    def plan(self, width: int, height: int, spec: JobSpec) -> Plan:
        return plan_job(width, height, spec)

    def run(
        self,
        source: np.ndarray,
        spec: JobSpec,
        *,
        resume: Checkpoint | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        auto_prompt: bool = True,
    ) -> Iterator[StepResult]:
        """Yield the canvas after each expansion step, starting after ``resume`` if given.

        ``source`` is the H×W×3 uint8 RGB input. A job without a prompt is captioned first
        (:meth:`caption`) unless ``auto_prompt`` is False (a caller that captioned it itself). Raises
        :class:`outpaint_engine.job.JobCancelledError` within one denoising step of ``cancel``
        being set, :class:`outpaint_engine.plan.PlanError` for a request it cannot plan and
        ``ValueError`` for a checkpoint that does not fit the plan.
        """
        height, width = source.shape[:2]
        plan = self.plan(width, height, spec)
        done = resume.steps_done if resume else 0
        if not 0 <= done <= plan.total_steps:
            raise ValueError(f"checkpoint after step {done} does not fit a plan of {plan.total_steps} steps")
        if done:
            image = resume.canvas
            w, h = plan.steps[done - 1].size_after
            if image.shape[:2] != (h, w):
                raise ValueError(f"checkpoint canvas is {image.shape[1]}×{image.shape[0]}, expected {w}×{h}")
        else:
            image = canvas.prepare(source, spec)
        if done == plan.total_steps:
            return
        self.models.set_ip_adapter_scale(spec.ip_adapter_scale)
        prompt = spec.prompt
        if not prompt and auto_prompt:
            prompt = self.caption(source, None if spec.zoom else spec.direction).text
        text = self._encode_text(prompt, spec.negative_prompt, spec.guidance > 1)
        for step in plan.steps[done:]:
            canvases = self._expand(image, step, plan, spec, text, progress, cancel)
            image = canvases[0]
            yield StepResult(step.index, plan.total_steps, image, tuple(canvases))

    # Inference mode is entered per call, never across a ``yield`` (it would leak into the caller).

    def caption(self, source: np.ndarray, direction: str | None) -> Caption:
        """The captioner's prompt for ``source`` growing towards ``direction`` (None: all sides).

        Never raises for the captioner's sake: with none configured, or one that fails, is slow or
        answers nonsense, the text is "" and ``reason`` says why ("the captioner timed out").
        Thread-safe: concurrent jobs take turns.
        """
        if self.captioner is None:
            return Caption("", "no captioner is configured")
        with self._caption_lock:
            return write_caption(self.captioner, source, direction)

    @torch.inference_mode()
    def _encode_text(self, prompt: str, negative: str, guidance: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return self.models.encode_text(prompt, negative, guidance=guidance)

    @torch.inference_mode()
    def _expand(
        self,
        image: np.ndarray,
        step: PlanStep,
        plan: Plan,
        spec: JobSpec,
        text: tuple[torch.Tensor, torch.Tensor],
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> list[np.ndarray]:
        """The canvas after ``step``, one per candidate (candidate 0 first)."""
        grown, known = canvas.grow(image, step)
        canvases = [grown] * step.candidates  # one array until their first window tells them apart
        seeds = [candidate_seed(spec.seed, k) for k in range(step.candidates)]
        total = len(step.windows) * spec.steps
        for index, window in enumerate(step.windows):
            if cancel:
                cancel.raise_if_cancelled()
            offset = index * spec.steps

            def report(s: DenoiseStep, offset: int = offset) -> None:
                if progress:
                    show = (s.index + 1) % PREVIEW_EVERY == 0 or s.index + 1 == s.total
                    preview = partial(latent_preview, s.denoised) if show else None
                    progress(StepProgress(step.index, plan.total_steps, offset + s.index + 1, total, preview))
                if cancel:
                    cancel.raise_if_cancelled()

            window_seeds = [step_seed(seed, step.index, index) for seed in seeds]
            canvases = self._window(canvases, known, window, step.direction, spec, text, window_seeds, report)
        return canvases

    def _window(
        self,
        canvases: list[np.ndarray],
        known: np.ndarray,
        window: Window,
        direction: Direction,
        spec: JobSpec,
        text: tuple[torch.Tensor, torch.Tensor],
        seeds: list[int],
        on_step: StepCallback,
    ) -> list[np.ndarray]:
        """One window, generated for each candidate canvas (one seed each) and merged into it.

        Returns the canvases, merged in place, or copies of them where several candidates still
        shared one array (which is encoded once). The candidates are denoised as one batch, then
        decoded and merged one at a time, so the VAE holds one window at a time. The GPU work is
        queued before the CPU's (the Telea fill) so the two overlap, and the map, the decoded window
        and the merge stay on the device (:mod:`outpaint_engine.device_canvas`).
        """
        models = self.models
        ys, xs = canvas.window_slices(window, known.shape)
        maps = device_canvas.window_maps(known[ys, xs], spec, models.device)
        encoded: dict[int, tuple[torch.Tensor, list[torch.Tensor] | None]] = {}
        with timed("prepare"):  # stage durations for the metrics (no synchronisation added)
            for grown in canvases:
                if id(grown) not in encoded:
                    encoded[id(grown)] = self._encode_window(grown, known, window, direction, spec)
        x0s, embeds = zip(*(encoded[id(grown)] for grown in canvases), strict=True)
        x0 = torch.cat(x0s)
        image_embeds = None
        if embeds[0] is not None:  # per adapter, the candidates' crops side by side
            image_embeds = [stack_candidates(per_adapter) for per_adapter in zip(*embeds, strict=True)]
        batch_text = (stack_candidates([text[0]] * len(seeds)), stack_candidates([text[1]] * len(seeds)))
        generators = [torch.Generator("cpu").manual_seed(seed) for seed in seeds]
        with models.batcher.joined(), timed("unet_loop"):
            latents = denoise(
                models.batcher,
                models.new_scheduler(),
                x0,
                latent_change_map(maps.change, tuple(x0.shape[-2:])),
                models.conditioning(batch_text, image_embeds, spec.window),
                steps=spec.steps,
                guidance=spec.guidance,
                generator=generators[0] if len(generators) == 1 else generators,
                on_step=on_step,
            )
        shared = len(encoded) < len(canvases)
        merged = []
        with timed("decode_merge"):
            for grown, candidate in zip(canvases, latents.split(1), strict=True):
                target = grown.copy() if shared else grown
                device_canvas.merge(target, known, window, models.decode_pixels(candidate), maps.keep)
                merged.append(target)
        return merged

    def _encode_window(
        self, grown: np.ndarray, known: np.ndarray, window: Window, direction: Direction, spec: JobSpec
    ) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
        """A window's pre-filled latents and IP-Adapter embeddings (None without the adapter)."""
        models = self.models
        ys, xs = canvas.window_slices(window, grown.shape)
        image_embeds = None
        if models.ip_adapter:  # the newest real pixels, never the fill
            crops = canvas.ip_crops(canvas.newest_known(grown, known, window, direction))
            image_embeds = models.encode_crops(crops, guidance=spec.guidance > 1)
        filled = canvas.prefill(grown[ys, xs], known[ys, xs], scale=FILL_SCALES[self.settings.fill])
        return models.encode_image(filled), image_embeds
