"""The real engine in the queue tests: the tiny random SDXL + IP-Adapter Plus models of the test
session (``tests/tiny_models.py``), loaded by the real loaders and run on the CPU.

:class:`HookedEngine` wraps it with the test hooks of :mod:`engine_double` (pause, fail, gate)
and records what it computed; every pixel is the real engine's. Worker subprocesses load it with
``outpaint-worker --engine real_engine:from_env``.

The engine runs on :data:`THREADS` CPU thread, in the test process (fixture ``engine``) and in
worker processes alike: float sums depend on the thread count, and the tests compare the pixels
of jobs run by workers with a direct run in the test process. It also keeps several engine
processes from fighting over a small machine's cores.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from engine_double import LOG_ENV, Hook, RecordingEngine, env_caption, env_hook, wait_for_load_gate

from outpaint_engine.api import Checkpoint, Engine, ProgressCallback, StepProgress, StepResult
from outpaint_engine.captioner import Caption
from outpaint_engine.job import CancelToken, JobSpec
from outpaint_engine.observability.logs import route_library_logs
from outpaint_engine.plan import Plan

if TYPE_CHECKING:
    from outpaint_engine.runner import Outpainter

THREADS = 1
MODELS_ENV = "OUTPAINT_TEST_TINY_MODELS"
"""The folder holding the session's tiny ``sdxl/`` and ``ip-adapter/`` (fixture ``tiny_models_root``)."""


class HookedEngine(RecordingEngine):
    """The real ``engine`` with a test hook and a record (see :class:`RecordingEngine`).

    The hook runs at each denoising step the engine reports (after that step, before the engine
    checks the cancel token), so a paused job stops within one denoising step of a cancel.
    """

    def __init__(
        self,
        engine: Engine,
        hook: Hook | None = None,
        *,
        log_path: str | None = None,
        caption: Caption | None = None,
    ) -> None:
        super().__init__(hook, log_path=log_path, caption=caption)
        self.engine = engine

    def plan(self, width: int, height: int, spec: JobSpec) -> Plan:
        return self.engine.plan(width, height, spec)

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
        self._ran(source, spec, resume, auto_prompt)

        def report(p: StepProgress) -> None:
            if self.hook is not None:
                self.hook(spec, p.step, p.denoise, cancel)
            if progress is not None:
                progress(p)

        for result in self.engine.run(source, spec, resume=resume, progress=report, cancel=cancel):
            self._finished(spec, result.step)
            yield result


def direct_canvases(engine: Engine, source: np.ndarray, spec: JobSpec) -> list[np.ndarray]:
    """The canvases of one uninterrupted run, one per step: what any queued run must give."""
    return [result.canvas for result in engine.run(source, spec)]


def load(models: Path) -> Outpainter:
    """The tiny engine on the CPU, as the session fixture ``tiny_engine`` loads it."""
    from outpaint_engine.runner import Outpainter  # after the worker routed the libraries' logs

    return Outpainter.load(
        model=str(models / "sdxl"),
        ip_adapter=str(models / "ip-adapter"),
        device="cpu",
        dtype="fp32",
        low_vram=False,
        captioner="",
        window=64,
        steps=2,
    )


def from_env() -> HookedEngine:
    """The real engine for ``outpaint-worker --engine real_engine:from_env``: the tiny models of
    ``$OUTPAINT_TEST_TINY_MODELS`` with the hook and log of :func:`engine_double.env_hook` (and its
    load held by :func:`engine_double.wait_for_load_gate`)."""
    torch.set_num_threads(THREADS)
    route_library_logs()  # as the worker's own engine factory does, before diffusers is imported
    engine = load(Path(os.environ[MODELS_ENV]))
    wait_for_load_gate()
    return HookedEngine(engine, env_hook(), log_path=os.environ.get(LOG_ENV), caption=env_caption())
