"""``FastEngineDouble``: a deterministic, fast engine double (not the real engine), and the test
hooks shared with the real-engine wrapper (:mod:`real_engine`).

The double is for the many-job tests (fair ordering, 2 workers × 20 jobs) and for jobs that only
ever fail; everything else runs the real tiny-model engine. It plans with the real
:func:`outpaint_engine.plan.plan_job` (pan, zoom and aspect plans alike), grows the canvas by the
planned steps, and fills each new strip with a pattern computed from ``(seed, step)`` instead of
running diffusion; a last step with several candidates is grown once per candidate, each from
its :func:`~outpaint_engine.api.candidate_seed`. It calls its hook before every denoising step
and never sleeps.

Worker subprocesses load an engine with ``outpaint-worker --engine engine_double:from_env`` (or
``real_engine:from_env``), a testing option, configured through the environment (see
:func:`env_hook`).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np

from outpaint_engine.api import (
    Checkpoint,
    Engine,
    ProgressCallback,
    StepProgress,
    StepResult,
    candidate_seed,
    step_seed,
)
from outpaint_engine.captioner import Caption
from outpaint_engine.job import CancelToken, JobSpec
from outpaint_engine.observability.stages import WARMING, report_load_stage
from outpaint_engine.plan import Plan, PlanStep, plan_job

Hook = Callable[[JobSpec, int, int, CancelToken | None], None]
"""``hook(spec, step, denoise, cancel)`` at each denoising step: tests pause or fail an engine there."""

LOG_ENV = "OUTPAINT_TEST_ENGINE_LOG"
GATE_ENV = "OUTPAINT_TEST_ENGINE_GATE"
ONE_STEP_ENV = "OUTPAINT_TEST_ENGINE_ONE_STEP"
LOAD_GATE_ENV = "OUTPAINT_TEST_ENGINE_LOAD_GATE"
CAPTION_ENV = "OUTPAINT_TEST_ENGINE_CAPTION"


class RecordingEngine:
    """What the test engines share: a ``hook``, an optional captioner and a record of what they did.

    ``runs`` lists ``(seed, steps_done)`` for every run (``steps_done`` of the checkpoint it resumed
    from), ``prompts`` the prompt of each run; ``computed`` lists ``(seed, step)`` for every
    expansion step it finished. With ``caption`` the engine has a captioner that answers it to
    every :meth:`caption` (a job without a prompt run with ``auto_prompt`` left on is captioned
    too, as the real engine does); ``captions`` lists the direction of each. With ``log_path``,
    each record is also appended to that file as a JSON line with the process id:
    ``{"pid", "seed", "resume", "prompt"}``, ``{"pid", "seed", "step"}`` or
    ``{"pid", "seed": null, "caption"}``.
    """

    def __init__(
        self, hook: Hook | None = None, *, log_path: str | None = None, caption: Caption | None = None
    ) -> None:
        self.hook = hook
        self.log_path = log_path
        self.captioner = caption  # None: the engine writes no prompts
        self.computed: list[tuple[int, int]] = []
        self.runs: list[tuple[int, int]] = []
        self.prompts: list[str] = []
        self.captions: list[str | None] = []
        self._lock = threading.Lock()

    def caption(self, source: np.ndarray, direction: str | None) -> Caption:
        assert self.captioner is not None, "the worker asked an engine without a captioner"
        with self._lock:
            self.captions.append(direction)
        self._log({"seed": None, "caption": direction})  # a caption knows no seed
        return self.captioner

    def _ran(self, source: np.ndarray, spec: JobSpec, resume: Checkpoint | None, auto_prompt: bool) -> None:
        if not spec.prompt and auto_prompt and self.captioner is not None:
            self.caption(source, None if spec.zoom else spec.direction)
        with self._lock:
            self.prompts.append(spec.prompt)
        self._record(self.runs, "resume", spec.seed, resume.steps_done if resume else 0, prompt=spec.prompt)

    def _finished(self, spec: JobSpec, step: int) -> None:
        self._record(self.computed, "step", spec.seed, step)

    def _record(self, into: list[tuple[int, int]], key: str, seed: int, value: int, **more: str) -> None:
        with self._lock:
            into.append((seed, value))
        self._log({"seed": seed, key: value, **more})

    def _log(self, record: dict[str, object]) -> None:
        if self.log_path:  # one write of one line in append mode: whole lines across processes
            fd = os.open(self.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                os.write(fd, (json.dumps({"pid": os.getpid(), **record}) + "\n").encode())
            finally:
                os.close(fd)


def _corner(canvas: np.ndarray) -> np.ndarray:
    """The double's preview: the canvas's top-left corner."""
    return canvas[:8, :8]


def _prepare(source: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize to ``size`` (width, height)."""
    h, w = source.shape[:2]
    rows = np.arange(size[1]) * h // size[1]
    cols = np.arange(size[0]) * w // size[0]
    return source[rows][:, cols]


def _fill(seed: int, step: int, width: int, height: int) -> np.ndarray:
    base = np.frombuffer(step_seed(seed, step).to_bytes(8, "little")[:3], dtype=np.uint8).astype(np.int64)
    ramp = np.arange(height)[:, None, None] + 2 * np.arange(width)[None, :, None]
    return ((base + ramp * np.array([1, 3, 5])) % 256).astype(np.uint8)


def _grow(canvas: np.ndarray, step: PlanStep, seed: int) -> np.ndarray:
    width, height = step.size_after
    grown = np.zeros((height, width, 3), np.uint8)
    ox, oy = step.shift
    grown[oy : oy + canvas.shape[0], ox : ox + canvas.shape[1]] = canvas
    x, y, w, h = step.new_region
    grown[y : y + h, x : x + w] = _fill(seed, step.index, w, h)
    return grown


class FastEngineDouble(RecordingEngine):
    """Implements :class:`outpaint_engine.api.Engine` with fake pixels (see the module docstring);
    an interrupted-and-resumed job gives exactly the pixels of an uninterrupted one."""

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
        plan = self.plan(source.shape[1], source.shape[0], spec)
        done = resume.steps_done if resume else 0
        self._ran(source, spec, resume, auto_prompt)
        canvas = resume.canvas if resume else _prepare(source, plan.prepared_size)
        for step in plan.steps[done:]:
            for denoise in range(1, spec.steps + 1):
                if self.hook is not None:
                    self.hook(spec, step.index, denoise, cancel)
                if progress is not None:
                    progress(
                        StepProgress(
                            step.index, plan.total_steps, denoise, spec.steps, partial(_corner, canvas)
                        )
                    )
                if cancel is not None:
                    cancel.raise_if_cancelled()
            candidates = tuple(
                _grow(canvas, step, candidate_seed(spec.seed, k)) for k in range(step.candidates)
            )
            canvas = candidates[0]
            self._finished(spec, step.index)
            yield StepResult(step.index, plan.total_steps, canvas, candidates)


class Pause:
    """A hook that stops an engine at denoising step ``denoise`` of step ``step`` of the job with
    ``seed``, once, until :attr:`go` is set or the job is cancelled (its token is set)."""

    def __init__(self, seed: int, step: int = 0, denoise: int = 1) -> None:
        self.at: tuple[int, int, int] | None = (seed, step, denoise)
        self.reached = threading.Event()
        self.go = threading.Event()

    def __call__(self, spec: JobSpec, step: int, denoise: int, cancel: CancelToken | None) -> None:
        if (spec.seed, step, denoise) != self.at:
            return
        self.at = None
        self.reached.set()
        for _ in range(6000):  # a 60 s safety net so a broken test cannot hang the suite
            if self.go.wait(0.01) or (cancel is not None and cancel.cancelled):
                return
        raise RuntimeError("the test never released this pause")


class WarmingUp:
    """An engine factory whose load reports a warm-up (as a compiled engine does) and lasts until
    :attr:`release` is set; then it returns ``engine``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.warming = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> Engine:
        report_load_stage(WARMING)
        self.warming.set()
        if not self.release.wait(60):  # a safety net so a broken test cannot hang the suite
            raise RuntimeError("the test never released the warm-up")
        return self.engine


# --- worker subprocesses ---------------------------------------------------------------------------


def wait_for_load_gate() -> None:
    """With ``OUTPAINT_TEST_ENGINE_LOAD_GATE=path``, an engine's load reports a warm-up and lasts
    until ``path`` exists (tests watch a worker process warm up)."""
    gate = os.environ.get(LOAD_GATE_ENV)
    if not gate:
        return
    report_load_stage(WARMING)
    pause = threading.Event()
    while not Path(gate).exists():
        pause.wait(0.01)


def env_hook() -> Hook:
    """The hook of an engine in a subprocess, set up by the environment:

    - ``OUTPAINT_TEST_ENGINE_GATE=path:step[,path:step...]``: at each denoising step of steps ≥
      ``step``, wait until ``path`` exists or the job is cancelled (tests hold a worker mid-job
      that way);
    - ``OUTPAINT_TEST_ENGINE_ONE_STEP=1``: the process finishes the first expansion step it starts,
      then waits in the next one until the job is cancelled (tests kill it there);
    - a job whose prompt is ``crash`` kills its process at its first denoising step.

    ``OUTPAINT_TEST_ENGINE_LOG=path`` names the engine's log (see :class:`RecordingEngine`), and
    ``OUTPAINT_TEST_ENGINE_CAPTION=text`` gives it a captioner that writes ``text`` (:func:`env_caption`).
    """
    gates = [gate.rpartition(":") for gate in os.environ.get(GATE_ENV, "").split(",") if gate]
    one_step = os.environ.get(ONE_STEP_ENV) == "1"
    first_step: int | None = None

    def hold(cancel: CancelToken | None, until: Path | None) -> None:
        release = threading.Event()
        while not (until is not None and until.exists()) and not (cancel is not None and cancel.cancelled):
            release.wait(0.01)

    def hook(spec: JobSpec, step: int, denoise: int, cancel: CancelToken | None) -> None:
        nonlocal first_step
        if spec.prompt == "crash":
            os._exit(3)
        first_step = step if first_step is None else first_step
        if one_step and step > first_step:
            hold(cancel, None)
        for path, _, from_step in gates:
            if step >= int(from_step):
                hold(cancel, Path(path))

    return hook


def env_caption() -> Caption | None:
    """The captioner's answer of an engine in a subprocess (``OUTPAINT_TEST_ENGINE_CAPTION``)."""
    text = os.environ.get(CAPTION_ENV)
    return None if text is None else Caption(text)


def broken() -> FastEngineDouble:
    """An engine factory that fails the way a missing GPU or model does."""
    raise RuntimeError("no CUDA device here")


def from_env() -> FastEngineDouble:
    """The double for ``outpaint-worker --engine engine_double:from_env`` (see :func:`env_hook`
    and :func:`wait_for_load_gate`)."""
    wait_for_load_gate()
    return FastEngineDouble(env_hook(), log_path=os.environ.get(LOG_ENV), caption=env_caption())
