"""Real processes for the fault tests, and what those tests check about a job's events.

Workers are real ``outpaint-worker`` processes (``python -m outpaint_engine.worker``) and bots are
``embedded_host.py`` processes, both running the real tiny engine (:func:`real_engine.from_env`)
unless a test says why it uses the fast engine double. Each engine appends what it computed to a
shared log, so a test can check that every expansion step was computed exactly once across all
the processes, and the final pixels are those of one direct run.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
from engine_double import GATE_ENV, LOG_ENV, ONE_STEP_ENV
from queue_helpers import SOURCE, START_S, WAIT_S, eventually
from real_engine import MODELS_ENV, direct_canvases

from outpaint_engine.imageio import decode_png
from outpaint_engine.job import Done, Event, Expanded, Progress, Started
from outpaint_engine.queue.base import JobQueue, QueueUnavailable

HERE = Path(__file__).parent
REPO = HERE.parent.parent
REAL = "real_engine:from_env"
DOUBLE = "engine_double:from_env"


class Processes:
    """Worker and bot subprocesses sharing one engine log; all killed at the end."""

    def __init__(self, tmp: Path, models: Path) -> None:
        self.tmp = tmp
        self.models = models
        self.log = tmp / "engine.log"
        self.started: list[subprocess.Popen[bytes]] = []

    def env(
        self,
        gate: Path | None = None,
        *,
        gates: dict[int, Path] | None = None,
        one_step: bool = False,
        **settings: str,
    ) -> dict[str, str]:
        """The environment of a test process: short heartbeat and reclaim times; with ``gate``
        its engine holds in step 1 until the gate file exists (``gates``: from each step on, until
        its file exists); with ``one_step`` it finishes one expansion step and holds in the next
        (see :func:`engine_double.env_hook`)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("OUTPAINT_")}
        env.update(
            {
                "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]),
                "HF_HUB_OFFLINE": "1",
                "OUTPAINT_HEARTBEAT_S": "0.2",
                "OUTPAINT_RECLAIM_AFTER_S": "1",
                LOG_ENV: str(self.log),
                MODELS_ENV: str(self.models),
                **settings,
            }
        )
        gates = {**({1: gate} if gate else {}), **(gates or {})}
        if gates:
            env[GATE_ENV] = ",".join(f"{path}:{step}" for step, path in gates.items())
        if one_step:
            env[ONE_STEP_ENV] = "1"
        return env

    def spawn(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        with self.out(name).open("ab") as out:
            process = subprocess.Popen([sys.executable, *args], cwd=self.tmp, env=env, stdout=out, stderr=out)
        self.started.append(process)
        return process

    def out(self, name: str) -> Path:
        return self.tmp / f"{name}.out"

    def worker(
        self,
        url: str,
        name: str,
        *,
        engine: str = REAL,
        gate: Path | None = None,
        gates: dict[int, Path] | None = None,
        one_step: bool = False,
        **settings: str,
    ) -> subprocess.Popen[bytes]:
        """``outpaint-worker`` running ``engine`` (:data:`REAL` or :data:`DOUBLE`); ``gate``,
        ``gates``, ``one_step`` and settings as for :meth:`env`."""
        args = ["-m", "outpaint_engine.worker", "--engine", engine, "--name", name]
        env = self.env(gate, gates=gates, one_step=one_step, OUTPAINT_QUEUE=url, **settings)
        return self.spawn(args, env, name)

    def bot(
        self,
        data: Path,
        name: str,
        *,
        engine: str = REAL,
        go: Path | None = None,
        one_step: bool = False,
        **settings: str,
    ) -> subprocess.Popen[bytes]:
        """A bot with the embedded queue on ``data`` (``embedded_host.py``); with ``go`` it loads
        its engine and waits for that file before it opens the queue."""
        args = [str(HERE / "embedded_host.py"), str(data), engine, *([str(go)] if go else [])]
        return self.spawn(args, self.env(one_step=one_step, **settings), name)

    async def says(self, process: subprocess.Popen[bytes], name: str, text: str, what: str) -> None:
        """Until ``text`` appears in the output of ``process`` (which must not exit first)."""
        out = self.out(name)

        async def said() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited ({process.returncode}): {out.read_text()[-2000:]}")
            return out.exists() and text in out.read_text()

        await eventually(said, f"{name} {what}", START_S)

    async def serving(self, process: subprocess.Popen[bytes], name: str) -> None:
        """Until the worker ``name`` has loaded its engine and serves the queue."""
        await self.says(process, name, f"worker {name} serving", "to load its engine")

    def records(self) -> list[dict[str, int]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def steps_by_pid(self, seed: int) -> list[tuple[int, int]]:
        return [(r["pid"], r["step"]) for r in self.records() if r["seed"] == seed and "step" in r]

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait()


# --- what the tests check ------------------------------------------------------------------------


def story(events: list[tuple[int, Event]]) -> list[str]:
    return [e.kind for _, e in events if not isinstance(e, Progress)]


def expanded(events: list[tuple[int, Event]]) -> int:
    return sum(isinstance(e, Expanded) for _, e in events)


def started(events: list[tuple[int, Event]]) -> int:
    return sum(isinstance(e, Started) for _, e in events)


def assert_complete_once(events: list[tuple[int, Event]], total: int) -> None:
    """Every event once, in order; every expansion once; one terminal event, ``Done``."""
    assert [seq for seq, _ in events] == list(range(1, len(events) + 1))
    assert [e.step for _, e in events if isinstance(e, Expanded)] == list(range(total))
    assert [type(e) for _, e in events if e.terminal] == [Done]


async def assert_final_canvas(queue: JobQueue, job, engine) -> None:
    """The last stored step holds the pixels of one uninterrupted direct run."""
    png = await queue.get_canvas(job.id, job.spec.times)  # a square-up step + `times` steps
    assert png is not None and np.array_equal(decode_png(png), direct_canvases(engine, SOURCE, job.spec)[-1])


async def first(events: AsyncIterator[tuple[int, Event]], predicate) -> tuple[int, Event]:
    """The first event of ``events`` that satisfies ``predicate``."""
    try:
        async with asyncio.timeout(WAIT_S):
            async for item in events:
                if predicate(item[1]):
                    return item
    except TimeoutError:
        raise AssertionError("timed out waiting for an event") from None
    raise AssertionError("the job ended first")


class Follower:
    """Follows a job as the bot does: on :class:`QueueUnavailable` it resubscribes with the last
    sequence number it handled, after a short pause, until the job's terminal event."""

    def __init__(self, queue: JobQueue, job_id: str, seen: list[tuple[int, Event]] | None = None) -> None:
        self.queue = queue
        self.job_id = job_id
        self.seen = list(seen or [])
        self.outages: list[tuple[float, str]] = []  # when (monotonic) and why it lost the queue
        self.task = asyncio.create_task(self._follow())

    async def _follow(self) -> list[tuple[int, Event]]:
        while True:
            after = self.seen[-1][0] if self.seen else 0
            try:
                async for item in self.queue.events(self.job_id, after=after):
                    self.seen.append(item)
                return self.seen
            except QueueUnavailable as error:
                self.outages.append((time.monotonic(), str(error)))
                await asyncio.sleep(0.05)  # the bot backs off longer

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        async def met() -> bool:
            if self.task.done():
                self.task.result()  # its error, if any
            return condition()

        await eventually(met, what)

    async def result(self) -> list[tuple[int, Event]]:
        async with asyncio.timeout(WAIT_S):
            return await self.task
