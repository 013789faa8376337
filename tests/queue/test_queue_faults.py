"""Fault tests of the Redis backend: real processes die, freeze or stop mid-job, and nothing is
lost or done twice (see :mod:`processes`).

The workers run the real tiny engine, except in two tests that use the fast engine double and say
why: the job that kills every worker, and 2 workers × 20 jobs. Timeouts are short in the settings
(heartbeat 0.2 s, reclaim after 1 s, queue timeout 0.3 s) so that no test waits long.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import redis
from engine_double import Pause
from processes import (
    DOUBLE,
    Follower,
    Processes,
    assert_complete_once,
    assert_final_canvas,
    expanded,
    started,
    story,
)
from queue_helpers import (
    SOURCE_PNG,
    WAIT_S,
    Harness,
    RedisServer,
    answer,
    collect,
    eventually,
    make_job,
    queue_settings,
)
from real_engine import HookedEngine

from outpaint_engine.job import Failed, JobState
from outpaint_engine.queue.base import QueueError
from outpaint_engine.queue.redis import RedisQueue, RedisWorkerSide
from outpaint_engine.runner import Outpainter
from outpaint_engine.worker import FAILED_POLITELY

TIMEOUT_S = 0.3
"""``queue_timeout_s`` of these tests (the default is 3 s)."""


def report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n[queue] {line}")


async def test_a_job_killed_mid_expansion_on_every_delivery_still_finishes(
    redis_server: RedisServer,
    processes: Processes,
    tmp_path: Path,
    engine: Outpainter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Three workers with max_deliveries 2; each finishes the first expansion it starts and waits in
    # the next one, where the test kills it: two deliveries killed, then a third finishes the job.
    workers = {
        name: processes.worker(redis_server.url, name, one_step=True, OUTPAINT_MAX_DELIVERIES="2")
        for name in ("w0", "w1", "w2")
    }
    for name, process in workers.items():
        await processes.serving(process, name)
    async with RedisQueue(queue_settings(redis_server.url, tmp_path)) as queue:
        job = make_job(1, times=2)  # 3 steps
        await queue.submit(job, SOURCE_PNG)
        follower = Follower(queue, job.id)
        recoveries = []
        for step in range(2):
            await follower.until(lambda n=step: expanded(follower.seen) > n, f"expansion {step}")
            holder = next(pid for pid, done in processes.steps_by_pid(1) if done == step)
            next(p for p in workers.values() if p.pid == holder).kill()
            killed_at = time.monotonic()
            await follower.until(lambda n=step: started(follower.seen) > n + 1, "a worker to take over")
            recoveries.append(time.monotonic() - killed_at)
        events = await follower.result()

        assert_complete_once(events, total=3)
        assert story(events).count("started") == 3
        computed = processes.steps_by_pid(1)
        assert [step for _, step in computed] == [0, 1, 2]  # each expansion once
        assert len({pid for pid, _ in computed}) == 3  # by three workers
        resumes = [r["resume"] for r in processes.records() if r["seed"] == 1 and "resume" in r]
        assert resumes == [0, 1, 2]
        await assert_final_canvas(queue, job, engine)
        final = await queue.get(job.id)
        assert final is not None and (final.state, final.attempts) == (JobState.DONE, 3)
        assert await queue.dead_letters() == []
    report(
        capsys,
        "recovery after each worker kill: "
        + ", ".join(f"{s:.2f}" for s in recoveries)
        + " s (reclaim_after_s=1, heartbeat 0.2 s)",
    )


async def test_a_stopped_worker_hands_its_job_back(
    redis_server: RedisServer, processes: Processes, tmp_path: Path, engine: Outpainter
) -> None:
    gate = tmp_path / "gate"
    workers = {name: processes.worker(redis_server.url, name, gate=gate) for name in ("a", "b")}
    for name, process in workers.items():
        await processes.serving(process, name)
    async with RedisQueue(queue_settings(redis_server.url, tmp_path)) as queue:
        job = make_job(6, times=2)
        await queue.submit(job, SOURCE_PNG)
        follower = Follower(queue, job.id)
        await follower.until(lambda: expanded(follower.seen) == 1, "expansion 0")
        ((leaving_pid, _),) = processes.steps_by_pid(6)
        leaving = next(p for p in workers.values() if p.pid == leaving_pid)
        staying = next(p for p in workers.values() if p is not leaving)

        leaving.send_signal(signal.SIGTERM)  # a deploy: stop after the current denoising step
        assert await asyncio.to_thread(leaving.wait, WAIT_S) == 0
        await follower.until(lambda: started(follower.seen) == 2, "the other worker to take the job")
        handed_back = await queue.get(job.id)
        assert handed_back is not None  # the stopped delivery did not count
        assert (handed_back.state, handed_back.steps_done, handed_back.attempts) == (JobState.RUNNING, 1, 1)
        gate.touch()

        assert_complete_once(await follower.result(), total=3)
        assert processes.steps_by_pid(6) == [(leaving.pid, 0), (staying.pid, 1), (staying.pid, 2)]
        await assert_final_canvas(queue, job, engine)


async def test_redis_frozen_then_killed_mid_job_loses_and_repeats_nothing(
    redis_server: RedisServer,
    processes: Processes,
    tmp_path: Path,
    engine: Outpainter,
    capsys: pytest.CaptureFixture[str],
) -> None:
    frozen_gate, killed_gate = tmp_path / "frozen", tmp_path / "killed"
    worker = processes.worker(
        redis_server.url,
        "survivor",
        gates={1: frozen_gate, 2: killed_gate},
        OUTPAINT_QUEUE_TIMEOUT_S=str(TIMEOUT_S),
    )
    await processes.serving(worker, "survivor")
    worker_log = processes.out("survivor")
    settings = queue_settings(redis_server.url, tmp_path, queue_timeout_s=TIMEOUT_S)
    async with RedisQueue(settings, follow_block_s=0.5) as queue:
        job, other = make_job(2, times=3), make_job(7, user=2)
        await queue.submit(job, SOURCE_PNG)
        follower = Follower(queue, job.id)  # as the bot follows it: resubscribes after an outage
        await follower.until(lambda: expanded(follower.seen) == 1, "expansion 0")
        calls = {
            "get": lambda: queue.get(job.id),
            "position": lambda: queue.position(job.id),
            "get_canvas": lambda: queue.get_canvas(job.id, 0),
            "submit": lambda: queue.submit(other, SOURCE_PNG),
            "cancel": lambda: queue.cancel("nosuchjob"),
        }

        with redis_server.frozen():  # SIGSTOP: connections stay open, nothing answers
            frozen_at = time.monotonic()
            while_frozen = {name: await answer(call) for name, call in calls.items()}
            await follower.until(lambda: len(follower.outages) >= 1, "the follower to notice")
            noticed_s = follower.outages[0][0] - frozen_at
            frozen_gate.touch()  # the worker's next write meets the frozen Redis: it waits

            async def worker_waits() -> bool:
                return "Redis unavailable while" in worker_log.read_text()

            await eventually(worker_waits, "the worker to find Redis frozen")
        await follower.until(lambda: expanded(follower.seen) == 2, "expansion 1 after the thaw")

        redis_server.kill()  # SIGKILL: only the append-only file survives
        killed_at, outages = time.monotonic(), len(follower.outages)
        while_killed = {name: await answer(call) for name, call in calls.items()}
        await follower.until(lambda: len(follower.outages) > outages, "the follower to notice")
        logged = worker_log.read_text().count("Redis unavailable while")
        killed_gate.touch()  # the worker goes on and meets a dead Redis

        async def worker_retries() -> bool:
            return worker_log.read_text().count("Redis unavailable while") > logged

        await eventually(worker_retries, "the worker to find Redis gone")
        redis_server.start()
        restarted_at = time.monotonic()
        events = await follower.result()
        resumed_s = time.monotonic() - restarted_at
        down_s = restarted_at - killed_at

        assert set(while_frozen.values()) == {
            f"The job queue at {settings.queue} did not answer within 0.3 s."
        }
        assert "answered" not in while_killed.values()
        assert_complete_once(events, total=4)
        progress = [(e.step, e.denoise) for _, e in events if e.kind == "progress"]
        assert len(progress) == len(set(progress))  # a report sent again during the freeze is published once
        assert processes.steps_by_pid(2) == [(worker.pid, s) for s in range(4)]
        await assert_final_canvas(queue, job, engine)
        with contextlib.suppress(QueueError):  # the submit sent during the freeze may have landed
            await queue.submit(other, SOURCE_PNG)
        assert story(await collect(queue, other.id)).count("done") == 1
    report(
        capsys,
        f"Redis frozen: calls failed after {TIMEOUT_S} s, the follower noticed in {noticed_s:.2f} s "
        f"(block 0.5 s); Redis down {down_s:.2f} s: the job finished {resumed_s:.2f} s after the restart",
    )


async def test_a_healthy_follow_logs_no_warning(
    redis_server: RedisServer, tmp_path: Path, engine: Outpainter, caplog: pytest.LogCaptureFixture
) -> None:
    # The follower's blocking read (0.5 s) is longer than the queue timeout (0.3 s): it must run on
    # connections whose socket timeout covers it, or every read would time out on a healthy Redis.
    caplog.set_level(logging.WARNING)
    settings = queue_settings(redis_server.url, tmp_path, queue_timeout_s=TIMEOUT_S)
    # The worker keeps the default timeout: on a busy 2-core machine its own writes may take
    # longer than 0.3 s, and only the follower's reads are under test here.
    harness = Harness("redis", queue_settings(redis_server.url, tmp_path), HookedEngine(engine))
    await harness.start()
    try:
        pause = Pause(seed=8, step=1)
        harness.engine.hook = pause
        job = make_job(8)
        await harness.queue.submit(job, SOURCE_PNG)
        assert await asyncio.to_thread(pause.reached.wait, WAIT_S)
        async with RedisQueue(settings, follow_block_s=0.5) as queue:
            stats = redis.Redis.from_url(redis_server.url)
            stats.config_resetstat()
            follower = Follower(queue, job.id)

            def blocking_reads() -> int:
                return stats.info("commandstats").get("cmdstat_xread", {}).get("calls", 0)

            await follower.until(lambda: blocking_reads() >= 6, "six blocking reads")  # five ran out
            pause.go.set()
            events = await follower.result()
            stats.close()
    finally:
        await harness.close()
    assert follower.outages == []
    assert [e.kind for _, e in events if e.terminal] == ["done"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_a_heartbeat_that_crosses_the_worker_s_own_finish_is_not_a_takeover(
    redis_server: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The worker finishes a job while its heartbeat is on the wire: the beat finds the claim
    ended, which must not read as another worker having taken the job over."""
    caplog.set_level(logging.WARNING)
    settings = queue_settings(redis_server.url, tmp_path, heartbeat_s=0.02)
    async with RedisQueue(settings) as queue:
        await queue.submit(make_job(90), SOURCE_PNG)
        side = RedisWorkerSide(settings, name="test-worker")
        claim = await asyncio.to_thread(side.claim, 1.0)
        assert claim is not None
        on_the_wire, finished, answered = threading.Event(), threading.Event(), threading.Event()
        beat = side._scripts["heartbeat"]

        def crossing(**kwargs: object) -> object:
            on_the_wire.set()
            finished.wait(WAIT_S)  # the beat reaches Redis after the job was finished
            try:
                return beat(**kwargs)
            finally:
                answered.set()

        side._scripts["heartbeat"] = crossing
        assert await asyncio.to_thread(on_the_wire.wait, WAIT_S)
        await asyncio.to_thread(side.done, claim, 0, 96, 64)
        finished.set()
        assert await asyncio.to_thread(answered.wait, WAIT_S)
        await asyncio.to_thread(side.end, claim)
        side.r.close()
        final = await queue.get(claim.job.id)
        assert final is not None and final.state is JobState.DONE  # finished once, not requeued
        assert [e.kind for _, e in await collect(queue, claim.job.id) if e.terminal] == ["done"]
    assert not claim.cancel.cancelled
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


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
