"""Fault tests: real processes die mid-job and nothing is lost or done twice.

Workers are real ``outpaint-worker`` processes (``python -m outpaint_engine.worker``) running the
real tiny engine (:func:`real_engine.from_env`); each writes what it computed to a shared log, so
the tests can check that every expansion step was computed exactly once across all the workers,
and the final pixels are those of one direct run. Two tests use the fast engine double instead,
and say why: the job that kills every worker, and 2 workers × 20 jobs.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from engine_double import GATE_ENV, LOG_ENV
from queue_helpers import (
    SOURCE,
    SOURCE_PNG,
    START_S,
    WAIT_S,
    RedisServer,
    collect,
    eventually,
    make_job,
    queue_settings,
)
from real_engine import MODELS_ENV, HookedEngine, direct_canvases

from outpaint_engine.imageio import decode_png
from outpaint_engine.job import Done, Event, Expanded, Failed, JobState, Progress, Started
from outpaint_engine.queue.embedded import EmbeddedQueue
from outpaint_engine.queue.redis import RedisQueue
from outpaint_engine.runner import Outpainter
from outpaint_engine.worker import FAILED_POLITELY

HERE = Path(__file__).parent
REPO = HERE.parent.parent
REAL = "real_engine:from_env"
DOUBLE = "engine_double:from_env"


class Processes:
    """Worker (or bot) subprocesses sharing one engine log; all killed at the end."""

    def __init__(self, tmp: Path, models: Path) -> None:
        self.tmp = tmp
        self.models = models
        self.log = tmp / "engine.log"
        self.started: list[subprocess.Popen[bytes]] = []

    def env(self, gate: Path | None, **settings: str) -> dict[str, str]:
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
        if gate is not None:
            env[GATE_ENV] = f"{gate}:1"
        return env

    def spawn(self, args: list[str], env: dict[str, str], name: str) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}.out").open("ab") as out:
            process = subprocess.Popen([sys.executable, *args], cwd=self.tmp, env=env, stdout=out, stderr=out)
        self.started.append(process)
        return process

    def worker(
        self, url: str, name: str, *, engine: str = REAL, gate: Path | None = None, **settings: str
    ) -> subprocess.Popen[bytes]:
        """``outpaint-worker`` running ``engine`` (:data:`REAL` or :data:`DOUBLE`); with ``gate``,
        it holds in step 1 until the gate file exists."""
        args = ["-m", "outpaint_engine.worker", "--engine", engine, "--name", name]
        return self.spawn(args, self.env(gate, OUTPAINT_QUEUE=url, **settings), name)

    async def serving(self, process: subprocess.Popen[bytes], name: str) -> None:
        """Until the worker ``name`` has loaded its engine and serves the queue."""
        out = self.tmp / f"{name}.out"

        async def up() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"{name} exited ({process.returncode}): {out.read_text()[-2000:]}")
            return out.exists() and f"worker {name} serving" in out.read_text()

        await eventually(up, f"{name} to load its engine", START_S)

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


@pytest.fixture
def processes(tmp_path: Path, tiny_models_root: Path):
    procs = Processes(tmp_path, tiny_models_root)
    yield procs
    procs.stop_all()


def story(events: list[tuple[int, Event]]) -> list[str]:
    return [e.kind for _, e in events if not isinstance(e, Progress)]


def assert_complete_once(events: list[tuple[int, Event]], total: int) -> None:
    assert [seq for seq, _ in events] == list(range(1, len(events) + 1))
    assert [e.step for _, e in events if isinstance(e, Expanded)] == list(range(total))
    assert [type(e) for _, e in events if e.terminal] == [Done]


async def assert_final_canvas(queue, job, engine: Outpainter) -> None:
    """The last stored step holds the pixels of one uninterrupted direct run."""
    png = await queue.get_canvas(job.id, job.spec.times)  # a square-up step + `times` steps
    assert png is not None and np.array_equal(decode_png(png), direct_canvases(engine, SOURCE, job.spec)[-1])


async def first(events, predicate) -> tuple[int, Event]:
    try:
        async with asyncio.timeout(WAIT_S):
            async for item in events:
                if predicate(item[1]):
                    return item
    except TimeoutError:
        raise AssertionError("timed out waiting for an event") from None
    raise AssertionError("the job ended first")


async def test_a_killed_worker_s_job_is_finished_by_another_from_its_checkpoint(
    redis_server: RedisServer,
    processes: Processes,
    tmp_path: Path,
    engine: Outpainter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    doomed = processes.worker(redis_server.url, "doomed", gate=tmp_path / "never")
    await processes.serving(doomed, "doomed")
    async with RedisQueue(queue_settings(redis_server.url, tmp_path)) as queue:
        job = make_job(1, times=3)
        await queue.submit(job, SOURCE_PNG)
        events = queue.events(job.id)
        await first(events, lambda e: isinstance(e, Expanded))  # step 0 stored; held in step 1
        rescuer = processes.worker(redis_server.url, "rescuer")
        await processes.serving(rescuer, "rescuer")  # idle: the job is still the doomed worker's

        doomed.kill()
        killed_at = time.monotonic()
        await first(events, lambda e: isinstance(e, Started))
        recovery_s = time.monotonic() - killed_at
        await events.aclose()
        everything = await collect(queue, job.id)

        assert_complete_once(everything, total=4)
        assert story(everything).count("started") == 2
        assert processes.steps_by_pid(1) == [(doomed.pid, 0)] + [(rescuer.pid, s) for s in (1, 2, 3)]
        assert {"pid": rescuer.pid, "seed": 1, "resume": 1} in processes.records()
        await assert_final_canvas(queue, job, engine)
        final = await queue.get(job.id)
        assert final is not None and (final.state, final.attempts) == (JobState.DONE, 2)
    with capsys.disabled():
        print(
            f"\n[queue] recovery after a worker kill: {recovery_s:.2f} s (reclaim_after_s=1, heartbeat 0.2 s)"
        )


async def test_a_stopped_worker_hands_its_job_back(
    redis_server: RedisServer, processes: Processes, tmp_path: Path, engine: Outpainter
) -> None:
    leaving = processes.worker(redis_server.url, "leaving", gate=tmp_path / "never")
    await processes.serving(leaving, "leaving")
    async with RedisQueue(queue_settings(redis_server.url, tmp_path)) as queue:
        job = make_job(6, times=2)
        await queue.submit(job, SOURCE_PNG)
        events = queue.events(job.id)
        await first(events, lambda e: isinstance(e, Expanded))

        leaving.send_signal(signal.SIGTERM)  # a deploy: stop after the current denoising step
        assert await asyncio.to_thread(leaving.wait, WAIT_S) == 0
        handed_back = await queue.get(job.id)
        assert handed_back is not None
        assert (handed_back.state, handed_back.steps_done, handed_back.attempts) == (JobState.QUEUED, 1, 0)
        assert await queue.position(job.id) == 1

        staying = processes.worker(redis_server.url, "staying")
        await events.aclose()
        await processes.serving(staying, "staying")
        assert_complete_once(await collect(queue, job.id), total=3)
        assert processes.steps_by_pid(6) == [(leaving.pid, 0), (staying.pid, 1), (staying.pid, 2)]
        await assert_final_canvas(queue, job, engine)


async def test_redis_killed_and_restarted_mid_job(
    redis_server: RedisServer, processes: Processes, tmp_path: Path, engine: Outpainter
) -> None:
    gate = tmp_path / "gate"
    worker = processes.worker(redis_server.url, "survivor", gate=gate)
    await processes.serving(worker, "survivor")
    async with RedisQueue(queue_settings(redis_server.url, tmp_path)) as queue:
        job = make_job(2, times=3)
        await queue.submit(job, SOURCE_PNG)
        seen = []
        async with asyncio.timeout(WAIT_S):
            async for item in queue.events(job.id):
                seen.append(item)
                if isinstance(item[1], Expanded):
                    break

        redis_server.kill()  # SIGKILL: only the append-only file survives
        gate.touch()  # the worker goes on and meets a dead Redis

        async def worker_retries() -> bool:
            return "Redis unavailable while" in (tmp_path / "survivor.out").read_text()

        await eventually(worker_retries, "the worker to find Redis gone")
        redis_server.start()
        rest = await collect(queue, job.id, after=seen[-1][0])

        assert_complete_once(seen + rest, total=4)
        assert sorted(step for _, step in processes.steps_by_pid(2)) == [0, 1, 2, 3]
        assert {pid for pid, _ in processes.steps_by_pid(2)} == {worker.pid}
        await assert_final_canvas(queue, job, engine)


async def test_a_job_that_kills_its_workers_ends_in_the_dead_letter_stream(
    redis_server: RedisServer, processes: Processes, tmp_path: Path
) -> None:
    # The fast engine double: an engine that always fails (it kills its process at once), and a
    # fresh worker process per delivery, which need not import torch.
    settings = queue_settings(redis_server.url, tmp_path, max_deliveries=2)
    async with RedisQueue(settings) as queue:
        poison = make_job(3, prompt="crash")
        await queue.submit(poison, SOURCE_PNG)
        workers: list[subprocess.Popen[bytes]] = []

        async def failed_while_one_worker_is_kept_alive() -> bool:
            if not workers or workers[-1].poll() is not None:
                name = f"w{len(workers)}"
                workers.append(
                    processes.worker(redis_server.url, name, engine=DOUBLE, OUTPAINT_MAX_DELIVERIES="2")
                )
            job = await queue.get(poison.id)
            return job is not None and job.state is JobState.FAILED

        await eventually(failed_while_one_worker_is_kept_alive, "the poison job to fail")
        job = await queue.get(poison.id)

        events = await collect(queue, poison.id)
        assert isinstance(events[-1][1], Failed) and events[-1][1].reason == FAILED_POLITELY
        assert story(events).count("failed") == 1
        assert [w.returncode for w in workers[:2]] == [3, 3]  # each delivery killed its worker
        assert job is not None and job.attempts == 2
        dead = await queue.dead_letters()
        assert [(d["job"], d["attempts"]) for d in dead] == [(poison.id, "2")]
        assert "stopped responding" in dead[0]["reason"]
        assert await queue.r.ttl(f"outpaint:job:{poison.id}") > 0  # it expires like a finished job

        healthy = make_job(4, user=2)
        await queue.submit(healthy, SOURCE_PNG)
        assert_complete_once(await collect(queue, healthy.id), total=3)


async def test_two_workers_twenty_jobs_five_users_in_fair_order(
    redis_server: RedisServer, processes: Processes, tmp_path: Path
) -> None:
    # The fast engine double: a many-job test about order and exactly-once, not pixels.
    users = {1: 8, 2: 3, 3: 3, 4: 3, 5: 3}  # user 1 queues 8 jobs first, then the others 3 each
    jobs = [
        make_job(100 * user + n, user=user, times=1) for user, count in users.items() for n in range(count)
    ]
    gate = tmp_path / "gate"
    async with RedisQueue(queue_settings(redis_server.url, tmp_path)) as queue:
        for job in jobs:
            await queue.submit(job, SOURCE_PNG)
        workers = [processes.worker(redis_server.url, f"w{i}", engine=DOUBLE, gate=gate) for i in range(2)]

        async def both_hold_a_job() -> bool:
            return len(await queue.list_jobs(states=[JobState.RUNNING])) == 2

        await eventually(both_hold_a_job, "each worker to hold its first job")
        gate.touch()
        for job in jobs:
            assert_complete_once(await collect(queue, job.id), total=2)

        finished = await queue.list_jobs(limit=100)
        start_order = [j.user_id for j in sorted(finished, key=lambda j: j.started_at or 0)]
        fair = [1, 2, 3, 4, 5] * 3 + [1] * 5
        assert start_order == fair
        pids = {pid for job in jobs for pid, _ in processes.steps_by_pid(job.spec.seed)}
        assert pids == {w.pid for w in workers}
        for job in jobs:
            assert sorted(step for _, step in processes.steps_by_pid(job.spec.seed)) == [0, 1]


async def test_embedded_bot_killed_mid_job_resumes_from_its_checkpoint(
    processes: Processes, tmp_path: Path, engine: Outpainter
) -> None:
    data = tmp_path / "data"
    bot = processes.spawn(
        [str(HERE / "embedded_host.py"), str(data)], processes.env(tmp_path / "never"), "bot"
    )
    job = make_job(5, times=3)
    settings = queue_settings("embedded", data)

    async def journal_exists() -> bool:
        if bot.poll() is not None:
            raise AssertionError(f"the bot exited: {(tmp_path / 'bot.out').read_text()[-2000:]}")
        return (data / "queue.sqlite3").exists()

    await eventually(journal_exists, "the bot to open its journal", START_S)
    async with EmbeddedQueue(settings, poll_s=0.02) as operator:  # no worker: the bot's runs it
        await operator.submit(job, SOURCE_PNG)
        seen = []
        async with asyncio.timeout(START_S):  # the bot loads its engine for this first job
            async for item in operator.events(job.id):
                seen.append(item)
                if isinstance(item[1], Expanded):
                    break
    bot.kill()  # SIGKILL: the journal says "running", step 0 is checkpointed

    restarted_engine = HookedEngine(engine)
    async with EmbeddedQueue(settings, engine_factory=lambda: restarted_engine, poll_s=0.02) as restarted:
        rest = await collect(restarted, job.id, after=seen[-1][0])
        assert_complete_once(seen + rest, total=4)
        assert processes.steps_by_pid(5) == [(bot.pid, 0)]
        assert restarted_engine.runs == [(5, 1)]
        assert restarted_engine.computed == [(5, 1), (5, 2), (5, 3)]
        await assert_final_canvas(restarted, job, engine)
        final = await restarted.get(job.id)
        assert final is not None and (final.state, final.attempts) == (JobState.DONE, 2)
