"""The real engine (tiny random SDXL + IP-Adapter Plus on the CPU) through the embedded queue."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from engine_double import Pause
from queue_helpers import SOURCE, SOURCE_PNG, WAIT_S, collect, queue_settings

from outpaint_engine.api import Checkpoint, ProgressCallback, StepProgress, StepResult
from outpaint_engine.imageio import decode_png
from outpaint_engine.job import CancelToken, Direction, Done, Expanded, Job, JobSpec, JobState, Started
from outpaint_engine.plan import Plan
from outpaint_engine.queue.embedded import EmbeddedQueue

pytestmark = pytest.mark.slow


class HeldEngine:
    """The real engine, held at one denoising step by a :class:`Pause` in its progress callback.
    Every pixel is the real engine's."""

    def __init__(self, engine, pause: Pause) -> None:
        self.engine = engine
        self.pause = pause
        self.resumed_from: list[int] = []

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
    ) -> Iterator[StepResult]:
        self.resumed_from.append(resume.steps_done if resume else 0)

        def report(p: StepProgress) -> None:
            self.pause(spec, p.step, p.denoise, cancel)
            if progress is not None:
                progress(p)

        return self.engine.run(source, spec, resume=resume, progress=report, cancel=cancel)


async def test_the_tiny_real_engine_through_the_embedded_queue_across_a_restart(
    tmp_path: Path, tiny_engine
) -> None:
    spec = JobSpec(Direction.RIGHT, times=2, expand_px=16, window=64, steps=2, seed=7, prompt="sky")
    job = Job(id="realjob", user_id=1, guild_id=None, channel_id=None, spec=spec, source_sha256="x")
    pause = Pause(seed=7, step=1, denoise=1)
    engine = HeldEngine(tiny_engine, pause)
    settings = queue_settings("embedded", tmp_path)

    async with EmbeddedQueue(settings, engine_factory=lambda: engine) as queue:
        await queue.submit(job, SOURCE_PNG)
        seen = []
        async for item in queue.events(job.id):
            seen.append(item)
            if isinstance(item[1], Expanded):
                break
        assert await asyncio.to_thread(pause.reached.wait, WAIT_S)
    # The bot stopped in the middle of step 1; the next one resumes after step 0.
    async with EmbeddedQueue(settings, engine_factory=lambda: engine) as queue:
        rest = await collect(queue, job.id, after=seen[-1][0])
        canvases = [await queue.get_canvas(job.id, step) for step in range(3)]
        final = await queue.get(job.id)

    events = [e for _, e in seen + rest]
    assert [e.step for e in events if isinstance(e, Expanded)] == [0, 1, 2]
    assert sum(isinstance(e, Started) for e in events) == 2
    assert isinstance(events[-1], Done) and (events[-1].width, events[-1].height) == (96, 64)
    assert engine.resumed_from == [0, 1]
    assert final is not None and (final.state, final.steps_done) == (JobState.DONE, 3)
    # Interrupted and resumed through the queue, the same pixels as one direct run: idempotent.
    direct = [r.canvas for r in tiny_engine.run(SOURCE, spec)]
    for png, expected in zip(canvases, direct, strict=True):
        assert png is not None
        assert np.array_equal(decode_png(png), expected)
