"""The queue contract: every test runs against both backends (embedded SQLite and Redis Streams),
with one worker running the real tiny engine (``harness``), held or broken at chosen denoising
steps by test hooks. Only tests about many jobs and their order use the fast engine double
(``double_harness``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from contextlib import aclosing
from pathlib import Path

import numpy as np
import pytest
import redis
from engine_double import Pause
from queue_helpers import (
    SOURCE,
    SOURCE_PNG,
    WAIT_S,
    GatedCheck,
    Harness,
    answer,
    collect,
    eventually,
    make_job,
    queue_settings,
)
from real_engine import HookedEngine, direct_canvases

from outpaint_engine.imageio import decode_png, encode_png
from outpaint_engine.job import (
    Cancelled,
    Done,
    Event,
    Expanded,
    Failed,
    JobState,
    Progress,
    Queued,
    Started,
)
from outpaint_engine.plan import PlanError
from outpaint_engine.queue import embedded
from outpaint_engine.queue.base import QueueDepth, QueueError
from outpaint_engine.queue.embedded import EmbeddedQueue
from outpaint_engine.queue.redis import INTERMEDIATE_TTL_S, RedisQueue
from outpaint_engine.runner import Outpainter
from outpaint_engine.worker import FAILED_POLITELY, WorkerState


def kinds(events: list[tuple[int, Event]]) -> list[str]:
    return [e.kind for _, e in events if not isinstance(e, Progress)]


def expanded_steps(events: list[tuple[int, Event]]) -> list[int]:
    return [e.step for _, e in events if isinstance(e, Expanded)]


async def reached(pause: Pause) -> None:
    assert await asyncio.to_thread(pause.reached.wait, WAIT_S), "the engine never reached the pause"


async def assert_canvases(harness: Harness, engine: Outpainter, job) -> None:
    """Every stored step holds the pixels of one uninterrupted direct run of the engine."""
    expected = direct_canvases(engine, SOURCE, job.spec)
    for step, canvas in enumerate(expected):
        png = await harness.queue.get_canvas(job.id, step)
        assert png is not None and np.array_equal(decode_png(png), canvas), f"step {step} differs"
    assert await harness.queue.get_canvas(job.id, len(expected)) is None


async def test_job_runs_to_done_with_checkpoints_and_ordered_events(
    harness: Harness, engine: Outpainter
) -> None:
    job = make_job(1)
    submitted = await harness.queue.submit(job, SOURCE_PNG)
    assert submitted.state is JobState.QUEUED

    events = await collect(harness.queue, job.id)

    assert [seq for seq, _ in events] == list(range(1, len(events) + 1))
    assert kinds(events) == ["queued", "started", "expanded", "expanded", "expanded", "done"]
    assert isinstance(events[0][1], Queued) and events[0][1].position == 1
    started = next(e for _, e in events if isinstance(e, Started))
    assert started.total_steps == 3
    progress = [e for _, e in events if isinstance(e, Progress)]
    assert [(p.step, p.denoise) for p in progress] == [(s, d) for s in range(3) for d in (1, 2)]
    previews = [p.preview for p in progress if p.preview is not None]
    assert previews and previews[0][:2] == b"\xff\xd8"  # a JPEG
    done = events[-1][1]
    assert isinstance(done, Done) and done.step == 2 and (done.width, done.height) == (96, 64)

    await assert_canvases(harness, engine, job)
    assert await harness.queue.get_source(job.id) == SOURCE_PNG
    final = await harness.queue.get(job.id)
    assert final is not None
    assert (final.state, final.steps_done, final.total_steps, final.attempts) == (JobState.DONE, 3, 3, 1)
    assert final.started_at is not None and final.finished_at is not None
    assert await harness.queue.position(job.id) is None
    if harness.kind == "redis":  # only the last two checkpoints keep the full TTL
        ttls = [await harness.queue.r.ttl(f"outpaint:img:{job.id}:{step}") for step in range(3)]
        assert ttls[0] <= INTERMEDIATE_TTL_S < ttls[1] and ttls[2] > INTERMEDIATE_TTL_S
        assert await record_ttls(harness.queue, job.id) == [RESULT_TTL_S] * 2  # the job, its events


async def test_events_replay_from_any_sequence_number(harness: Harness) -> None:
    job = make_job(2)
    await harness.queue.submit(job, SOURCE_PNG)
    everything = await collect(harness.queue, job.id)
    for after in (0, 3, len(everything) - 1):
        assert await collect(harness.queue, job.id, after=after) == everything[after:]


async def test_bot_restart_rereads_events_and_nothing_is_lost_or_repeated(
    harness: Harness, engine: Outpainter
) -> None:
    job = make_job(3)
    pause = Pause(seed=3, step=1)  # in the middle of step 1, after step 0 is checkpointed
    harness.engine.hook = pause
    await harness.queue.submit(job, SOURCE_PNG)
    await reached(pause)
    seen: list[tuple[int, Event]] = []
    async with aclosing(harness.queue.events(job.id)) as events:
        async for seq, event in events:
            seen.append((seq, event))
            if isinstance(event, Expanded):
                break

    await harness.restart_bot()  # the embedded worker stops and resumes from the checkpoint
    pause.go.set()
    rest = await collect(harness.queue, job.id, after=seen[-1][0])

    whole = seen + rest
    assert [seq for seq, _ in whole] == list(range(1, len(whole) + 1))
    assert expanded_steps(whole) == [0, 1, 2]
    assert kinds(whole).count("done") == 1
    assert harness.engine.computed == [(3, 0), (3, 1), (3, 2)]
    if harness.kind == "embedded":  # its worker stopped with the bot and resumed after step 0
        assert kinds(whole).count("started") == 2 and harness.engine.runs == [(3, 0), (3, 1)]
    else:  # the worker never stopped
        assert kinds(whole).count("started") == 1 and harness.engine.runs == [(3, 0)]
    final = await harness.queue.get(job.id)
    assert final is not None and (final.state, final.steps_done) == (JobState.DONE, 3)
    # Interrupted and resumed through the queue, the same pixels as one direct run: idempotent.
    await assert_canvases(harness, engine, job)


async def test_cancel_a_queued_job(harness: Harness) -> None:
    pause = Pause(seed=10)
    harness.engine.hook = pause
    first, second = make_job(10), make_job(11)
    await harness.queue.submit(first, SOURCE_PNG)
    await reached(pause)
    await harness.queue.submit(second, SOURCE_PNG)
    assert await harness.queue.position(second.id) == 1

    cancelled = await harness.queue.cancel(second.id)

    assert cancelled is not None and cancelled.state is JobState.CANCELLED
    assert kinds(await collect(harness.queue, second.id)) == ["queued", "cancelled"]
    assert await harness.queue.position(second.id) is None
    pause.go.set()
    assert kinds(await collect(harness.queue, first.id))[-1] == "done"
    assert all(seed != 11 for seed, _ in harness.engine.runs)


async def test_depth_and_the_workers_state(harness: Harness) -> None:
    """``depth`` counts queued and running jobs; ``workers`` shows the worker idle until its engine
    loads (with the first job, in these tests), then ready."""

    async def states() -> list[WorkerState]:
        return [w.state for w in await harness.queue.workers()]

    async def idle() -> bool:  # Redis: once the worker's state thread recorded it
        return await states() == [WorkerState.IDLE]

    await eventually(idle, "the worker to show up idle")
    assert await harness.queue.depth() == QueueDepth(queued=0, running=0)
    pause = Pause(seed=12)
    harness.engine.hook = pause
    first, second = make_job(12, times=1), make_job(13, times=1)
    await harness.queue.submit(first, SOURCE_PNG)
    await reached(pause)
    await harness.queue.submit(second, SOURCE_PNG)
    assert await harness.queue.depth() == QueueDepth(queued=1, running=1)

    async def ready() -> bool:
        return await states() == [WorkerState.READY]

    await eventually(ready, "the worker to show up ready")
    await harness.queue.cancel(second.id)
    pause.go.set()
    assert kinds(await collect(harness.queue, first.id))[-1] == "done"
    assert await harness.queue.depth() == QueueDepth(queued=0, running=0)


async def test_cancel_a_running_job_stops_it_within_a_denoising_step(harness: Harness) -> None:
    job = make_job(20)
    pause = Pause(seed=20, step=1, denoise=1)
    harness.engine.hook = pause
    await harness.queue.submit(job, SOURCE_PNG)
    await reached(pause)

    returned = await harness.queue.cancel(job.id)
    pause.go.set()
    events = await collect(harness.queue, job.id)

    assert returned is not None and returned.state in (JobState.RUNNING, JobState.CANCELLED)
    assert isinstance(events[-1][1], Cancelled)
    assert expanded_steps(events) == [0] and "done" not in kinds(events)
    assert harness.engine.computed == [(20, 0)]  # step 1 never finished
    final = await harness.queue.get(job.id)
    assert final is not None and final.state is JobState.CANCELLED
    again = await harness.queue.cancel(job.id)  # a no-op on a finished job
    assert again is not None and again.state is JobState.CANCELLED


async def test_cancel_unknown_job_and_finished_job(harness: Harness) -> None:
    assert await harness.queue.cancel("nosuchjob") is None
    job = make_job(21)
    await harness.queue.submit(job, SOURCE_PNG)
    await collect(harness.queue, job.id)
    done = await harness.queue.cancel(job.id)
    assert done is not None and done.state is JobState.DONE
    assert kinds(await collect(harness.queue, job.id)) == ["queued", "started", *["expanded"] * 3, "done"]


async def test_round_robin_between_users_positions_and_start_order(double_harness: Harness) -> None:
    # The fast engine double: seven jobs, and the point is their order, not their pixels.
    harness = double_harness
    pause = Pause(seed=100)
    harness.engine.hook = pause
    await harness.queue.submit(make_job(100, user=1), SOURCE_PNG)
    await reached(pause)
    submitted = [(101, 1), (102, 1), (103, 1), (201, 2), (202, 2), (301, 3)]
    for seed, user in submitted:
        await harness.queue.submit(make_job(seed, user=user), SOURCE_PNG)

    fair_order = [201, 301, 101, 202, 102, 103]  # user 1 already runs a job in the first round
    positions = [await harness.queue.position(make_job(seed).id) for seed in fair_order]
    assert positions == [1, 2, 3, 4, 5, 6]
    announced = {}  # the position in each Queued event, at the time of its submission
    for seed, _ in submitted:
        async with aclosing(harness.queue.events(make_job(seed).id)) as events:
            _, queued = await anext(events)
        assert isinstance(queued, Queued)
        announced[seed] = queued.position
    assert announced == {101: 1, 102: 2, 103: 3, 201: 1, 202: 3, 301: 2}

    pause.go.set()
    for seed, _ in submitted:
        await collect(harness.queue, make_job(seed).id)
    assert [seed for seed, _ in harness.engine.runs] == [100, *fair_order]


async def test_eta_from_recent_step_timings(harness: Harness) -> None:
    first = make_job(30)
    await harness.queue.submit(first, SOURCE_PNG)
    queued = await collect(harness.queue, first.id)
    assert isinstance(queued[0][1], Queued) and queued[0][1].eta_s is None  # nothing timed yet
    assert await harness.queue.eta(first.id) is None  # finished

    pause = Pause(seed=31)
    harness.engine.hook = pause
    running, waiting = make_job(31), make_job(32, user=2)
    await harness.queue.submit(running, SOURCE_PNG)
    await reached(pause)
    await harness.queue.submit(waiting, SOURCE_PNG)

    eta_running = await harness.queue.eta(running.id)
    eta_waiting = await harness.queue.eta(waiting.id)
    assert eta_running is not None and eta_waiting is not None
    assert 0 < eta_running < eta_waiting  # the waiting job also waits for the running one
    async with aclosing(harness.queue.events(waiting.id)) as events:
        first_event = await anext(events)
    assert isinstance(first_event[1], Queued) and first_event[1].eta_s is not None
    pause.go.set()
    await collect(harness.queue, waiting.id)


async def test_list_jobs_by_user_guild_and_state(harness: Harness) -> None:
    pause = Pause(seed=40)
    harness.engine.hook = pause
    specs = [(40, 1, 10), (41, 1, 10), (42, 2, 10), (43, 2, 11), (44, 3, None)]
    for n, (seed, user, guild) in enumerate(specs):
        job = make_job(seed, user=user, guild=guild)
        job.created_at = 1000.0 + n
        await harness.queue.submit(job, SOURCE_PNG)
        if seed == 40:
            await reached(pause)
    active = [JobState.QUEUED, JobState.RUNNING]

    def ids(jobs):
        return [j.id for j in jobs]

    assert ids(await harness.queue.list_jobs(user_id=1, states=active)) == ["job0041", "job0040"]
    assert ids(await harness.queue.list_jobs(guild_id=10, states=active)) == ["job0042", "job0041", "job0040"]
    assert ids(await harness.queue.list_jobs(states=[JobState.RUNNING])) == ["job0040"]
    assert ids(await harness.queue.list_jobs(user_id=2, guild_id=11)) == ["job0043"]
    assert ids(await harness.queue.list_jobs(limit=2)) == ["job0044", "job0043"]
    assert await harness.queue.list_jobs(states=[]) == []

    await harness.queue.cancel("job0041")
    assert ids(await harness.queue.list_jobs(user_id=1, states=active)) == ["job0040"]
    assert ids(await harness.queue.list_jobs(user_id=1, states=[JobState.CANCELLED])) == ["job0041"]
    pause.go.set()


async def test_a_request_the_engine_refuses_fails_with_its_message(harness: Harness) -> None:
    def refuse(spec, step, denoise, cancel):
        raise PlanError("That image is too wide to extend up.")

    harness.engine.hook = refuse
    job = make_job(50)
    await harness.queue.submit(job, SOURCE_PNG)
    events = await collect(harness.queue, job.id)
    assert (
        isinstance(events[-1][1], Failed) and events[-1][1].reason == "That image is too wide to extend up."
    )
    final = await harness.queue.get(job.id)
    assert final is not None and (final.state, final.attempts) == (JobState.FAILED, 1)
    assert final.error == "That image is too wide to extend up."


async def test_an_error_is_retried_from_the_last_checkpoint(harness: Harness, engine: Outpainter) -> None:
    failures = []

    def flaky(spec, step, denoise, cancel):
        if step == 1 and not failures:
            failures.append(step)
            raise RuntimeError("CUDA hiccup")

    harness.engine.hook = flaky
    job = make_job(60)
    await harness.queue.submit(job, SOURCE_PNG)
    events = await collect(harness.queue, job.id)

    assert expanded_steps(events) == [0, 1, 2] and kinds(events).count("done") == 1
    assert harness.engine.runs == [(60, 0), (60, 1)]  # the retry resumed after step 0
    assert harness.engine.computed == [(60, 0), (60, 1), (60, 2)]
    final = await harness.queue.get(job.id)
    assert final is not None and (final.state, final.attempts) == (JobState.DONE, 2)
    await assert_canvases(harness, engine, job)


async def test_a_poison_job_fails_politely_after_max_deliveries(harness: Harness) -> None:
    def poison(spec, step, denoise, cancel):
        if spec.seed == 66:
            raise RuntimeError("poison")

    harness.engine.hook = poison
    job, healthy = make_job(66), make_job(67, user=2)
    await harness.queue.submit(job, SOURCE_PNG)
    await harness.queue.submit(healthy, SOURCE_PNG)
    events = await collect(harness.queue, job.id)

    assert isinstance(events[-1][1], Failed) and events[-1][1].reason == FAILED_POLITELY
    assert kinds(events).count("failed") == 1 and kinds(events).count("started") == 3
    final = await harness.queue.get(job.id)
    assert final is not None and (final.state, final.attempts) == (JobState.FAILED, 3)
    assert kinds(await collect(harness.queue, healthy.id))[-1] == "done"
    if harness.kind == "redis":
        dead = await harness.queue.dead_letters()
        assert [(d["job"], d["attempts"], d["reason"]) for d in dead] == [
            (job.id, "3", "RuntimeError: poison")
        ]


async def test_a_job_that_fails_on_every_delivery_but_gets_further_each_time_finishes(
    harness: Harness, engine: Outpainter
) -> None:
    failed_in: list[int] = []

    def fail_once_per_step(spec, step, denoise, cancel):  # each delivery stores a step, then fails
        if step > 0 and step not in failed_in:
            failed_in.append(step)
            raise RuntimeError("CUDA hiccup")

    harness.engine.hook = fail_once_per_step
    job = make_job(62, times=3)  # 4 steps: 4 deliveries, more than max_deliveries (3)
    await harness.queue.submit(job, SOURCE_PNG)
    events = await collect(harness.queue, job.id)

    assert expanded_steps(events) == [0, 1, 2, 3] and kinds(events).count("done") == 1
    assert harness.engine.runs == [(62, 0), (62, 1), (62, 2), (62, 3)]
    assert harness.engine.computed == [(62, s) for s in range(4)]  # nothing computed twice
    final = await harness.queue.get(job.id)
    assert final is not None and (final.state, final.attempts) == (JobState.DONE, 4)
    await assert_canvases(harness, engine, job)


async def test_retry_a_failed_job_continues_after_its_checkpoint(
    harness: Harness, engine: Outpainter
) -> None:
    def refuse_step_1(spec, step, denoise, cancel):
        if step == 1:
            raise PlanError("Not now.")

    harness.engine.hook = refuse_step_1
    job = make_job(70)
    await harness.queue.submit(job, SOURCE_PNG)
    first = await collect(harness.queue, job.id)
    assert kinds(first)[-1] == "failed"

    harness.engine.hook = None
    retried = await harness.queue.retry(job.id)
    assert retried.state in (JobState.QUEUED, JobState.RUNNING) and retried.steps_done == 1
    whole = await collect(harness.queue, job.id)  # a fresh subscriber reads through the old failure

    assert kinds(whole)[-1] == "done" and expanded_steps(whole) == [0, 1, 2]
    assert harness.engine.runs == [(70, 0), (70, 1)]
    await assert_canvases(harness, engine, job)
    with pytest.raises(QueueError, match="only failed or cancelled"):
        await harness.queue.retry(job.id)
    with pytest.raises(QueueError, match="no job"):
        await harness.queue.retry("nosuchjob")


async def test_purge_forgets_old_finished_jobs_only(harness: Harness) -> None:
    finished = make_job(80)
    await harness.queue.submit(finished, SOURCE_PNG)
    await collect(harness.queue, finished.id)
    pause = Pause(seed=81)
    harness.engine.hook = pause
    running = make_job(81)
    await harness.queue.submit(running, SOURCE_PNG)
    await reached(pause)

    assert await harness.queue.purge(older_than_s=3600) == 0
    if harness.kind == "redis":  # a worker long gone left its name in the consumer group
        await harness.queue.r.xgroup_createconsumer("outpaint:work", "workers", "ghost")
    assert await harness.queue.purge(older_than_s=0) == 1
    if harness.kind == "redis":
        consumers = await harness.queue.r.xinfo_consumers("outpaint:work", "workers")
        assert [c["name"] for c in consumers] == [b"test-worker"]  # it holds a job: kept

    assert await harness.queue.get(finished.id) is None
    assert await harness.queue.get_canvas(finished.id, 0) is None
    assert await harness.queue.get_source(finished.id) is None
    assert await harness.queue.get(running.id) is not None
    pause.go.set()
    assert kinds(await collect(harness.queue, running.id))[-1] == "done"


async def test_unknown_and_duplicate_jobs(harness: Harness) -> None:
    assert await harness.queue.get("nosuchjob") is None
    assert await harness.queue.get("../../etc") is None
    assert await harness.queue.position("nosuchjob") is None
    assert await harness.queue.eta("nosuchjob") is None
    assert await harness.queue.get_canvas("nosuchjob", 0) is None
    with pytest.raises(QueueError, match="no job"):
        await collect(harness.queue, "nosuchjob")
    job = make_job(90)
    await harness.queue.submit(job, SOURCE_PNG)
    with pytest.raises(QueueError, match="already exists"):
        await harness.queue.submit(make_job(90), encode_png(SOURCE[::-1]))
    assert await harness.queue.get_source(job.id) == SOURCE_PNG  # the job's own source is kept
    await collect(harness.queue, job.id)


# --- how long finished jobs are kept ---------------------------------------------------------------

RESULT_TTL_S = 86400  # queue_settings()


async def record_ttls(queue: RedisQueue, job_id: str) -> list[int]:
    """TTLs of a Redis job's record and event stream, rounded up to whole hours (-1: none)."""
    ttls = [await queue.r.ttl(f"outpaint:{kind}:{job_id}") for kind in ("job", "ev")]
    return [t if t < 0 else -(-t // 3600) * 3600 for t in ttls]


async def test_redis_finished_jobs_expire_with_their_images(shared_redis, tmp_path: Path) -> None:
    with redis.Redis.from_url(shared_redis.url) as client:
        client.flushall()
    job = make_job(98)
    async with RedisQueue(queue_settings(shared_redis.url, tmp_path)) as queue:  # no worker
        await queue.submit(job, SOURCE_PNG)
        assert await record_ttls(queue, job.id) == [-1, -1]  # a live job is kept
        await queue.cancel(job.id)
        assert await record_ttls(queue, job.id) == [RESULT_TTL_S] * 2
        await queue.retry(job.id)
        assert await record_ttls(queue, job.id) == [-1, -1]  # live again
        await queue.cancel(job.id)

        await queue.r.delete(f"outpaint:job:{job.id}", f"outpaint:ev:{job.id}")  # as if expired
        assert await queue.purge(older_than_s=0) == 0
        assert await queue.r.zscore("outpaint:jobs", job.id) is None  # the index forgets it too


async def test_the_bot_s_embedded_queue_forgets_jobs_finished_result_ttl_ago(tmp_path: Path) -> None:
    settings = queue_settings("embedded", tmp_path, result_ttl_s=0)
    job = make_job(99)
    async with EmbeddedQueue(settings) as operator:
        await operator.submit(job, SOURCE_PNG)
        await operator.cancel(job.id)
    async with EmbeddedQueue(settings) as operator:  # the operator command never purges by itself
        assert await operator.get(job.id) is not None

    def no_engine() -> Outpainter:
        raise AssertionError("no job is queued")

    async with EmbeddedQueue(settings, engine_factory=no_engine, poll_s=0.05) as bot:

        async def forgotten() -> bool:
            return await bot.get(job.id) is None and await bot.get_source(job.id) is None

        await eventually(forgotten, "the bot's queue to purge the finished job")


async def test_a_worker_whose_job_was_taken_over_stops_it_quietly(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="outpaint.worker")
    job = make_job(25)
    pause = Pause(seed=25, step=1)
    harness.engine.hook = pause
    await harness.queue.submit(job, SOURCE_PNG)
    await reached(pause)
    if harness.kind == "redis":  # as when a worker that looked dead is taken over
        await harness.queue.r.hset(f"outpaint:job:{job.id}", "owner", "another-worker")
    else:
        with sqlite3.connect(harness.settings.data_dir / "queue.sqlite3") as db:
            db.execute("UPDATE jobs SET owner = 'another-worker' WHERE id = ?", (job.id,))

    pause.go.set()
    after = make_job(26)  # the worker drops the job and takes the next one
    await harness.queue.submit(after, SOURCE_PNG)
    assert kinds(await collect(harness.queue, after.id))[-1] == "done"

    assert "no longer ours" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # not an engine error
    final = await harness.queue.get(job.id)
    assert final is not None and (final.state, final.steps_done) == (JobState.RUNNING, 1)
    assert harness.engine.computed == [(25, 0), (26, 0), (26, 1), (26, 2)]


# --- a backend that stops answering ---------------------------------------------------------------


async def test_a_backend_that_stops_answering_fails_calls_and_loses_nothing(
    impatient_harness: Harness, engine: Outpainter, caplog: pytest.LogCaptureFixture
) -> None:
    harness, queue = impatient_harness, impatient_harness.queue
    caplog.set_level(logging.WARNING)
    job, other = make_job(27), make_job(28, user=2)
    pause = Pause(seed=27, step=1)
    harness.engine.hook = pause
    await queue.submit(job, SOURCE_PNG)
    await reached(pause)  # step 0 is stored
    seen = []
    async with aclosing(queue.events(job.id)) as events:
        async for item in events:
            seen.append(item)
            if isinstance(item[1], Expanded):
                break

    with harness.unresponsive():
        writes = {
            "submit": lambda: queue.submit(other, SOURCE_PNG),
            "cancel": lambda: queue.cancel("nosuchjob"),
            "retry": lambda: queue.retry("nosuchjob"),
            "purge": lambda: queue.purge(older_than_s=3600),
        }
        reads = {
            "get": lambda: queue.get(job.id),
            "list_jobs": lambda: queue.list_jobs(user_id=1, states=[JobState.RUNNING]),
            "position": lambda: queue.position(job.id),
            "eta": lambda: queue.eta(job.id),
            "get_canvas": lambda: queue.get_canvas(job.id, 0),
        }
        if harness.kind == "redis":  # the embedded journal has no new event to give meanwhile
            reads["events"] = lambda: anext(aiter(queue.events(job.id, after=seen[-1][0])))
        outcomes = {name: await answer(call) for name, call in {**writes, **reads}.items()}
        pause.go.set()  # the worker's next write meets the unresponsive backend and waits

        async def worker_waits() -> bool:
            return "unavailable while" in caplog.text

        await eventually(worker_waits, "the worker to find the backend unavailable")

    if harness.kind == "redis":  # each call gave up after queue_timeout_s
        assert set(outcomes.values()) == {
            f"The job queue at {harness.settings.queue} did not answer within 0.3 s."
        }
    else:  # a write waited queue_timeout_s for the lock; reads never wait (WAL)
        journal = harness.settings.data_dir / "queue.sqlite3"
        assert {outcomes[name] for name in writes} == {
            f"The job journal {journal} did not answer (database is locked)."
        }
        assert {outcomes[name] for name in reads} == {"answered"}
    rest = await collect(queue, job.id, after=seen[-1][0])  # the follower resubscribes
    whole = seen + rest
    assert [seq for seq, _ in whole] == list(range(1, len(whole) + 1))
    assert expanded_steps(whole) == [0, 1, 2] and kinds(whole).count("done") == 1
    assert harness.engine.computed == [(27, 0), (27, 1), (27, 2)]
    await assert_canvases(harness, engine, job)
    # A submit that failed as unavailable may still land (Redis ran the command it was sent when
    # it woke up): sending it again is safe.
    with contextlib.suppress(QueueError):
        await queue.submit(other, SOURCE_PNG)
    assert kinds(await collect(queue, other.id)).count("done") == 1


# --- the embedded queue only -----------------------------------------------------------------------


async def test_an_older_journal_gains_the_stall_count(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "queue.sqlite3") as db:  # the jobs table before stalls
        db.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, user_id INTEGER NOT NULL, guild_id INTEGER,"
            " state TEXT NOT NULL, round INTEGER NOT NULL, seq INTEGER NOT NULL, created_at REAL NOT NULL,"
            " finished_at REAL, owner TEXT, cancel_requested INTEGER NOT NULL DEFAULT 0, data TEXT NOT NULL)"
        )
    job = make_job(96)
    async with EmbeddedQueue(queue_settings("embedded", tmp_path)) as operator:
        await operator.submit(job, SOURCE_PNG)
        assert await operator.list_jobs(states=[JobState.QUEUED]) == [job]


async def test_closing_while_the_engine_loads_hands_the_job_back(
    tmp_path: Path, engine: Outpainter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embedded, "JOIN_TIMEOUT_S", 0.1)
    settings = queue_settings("embedded", tmp_path)
    loading, loaded = threading.Event(), threading.Event()

    def slow_engine() -> HookedEngine:
        loading.set()
        loaded.wait(WAIT_S)  # a model that takes minutes to load
        return HookedEngine(engine)

    job = make_job(97)
    async with EmbeddedQueue(settings, engine_factory=slow_engine, poll_s=0.05) as bot:
        await bot.submit(job, SOURCE_PNG)
        assert await asyncio.to_thread(loading.wait, WAIT_S)
    async with EmbeddedQueue(settings) as operator:
        handed_back = await operator.get(job.id)
    assert handed_back is not None and (handed_back.state, handed_back.attempts) == (JobState.QUEUED, 0)
    loaded.set()  # the old worker thread wakes up to a closed queue and drops the job

    restarted_engine = HookedEngine(engine)
    async with EmbeddedQueue(settings, engine_factory=lambda: restarted_engine, poll_s=0.05) as bot:
        assert kinds(await collect(bot, job.id))[-1] == "done"
        final = await bot.get(job.id)
        assert final is not None and final.attempts == 1  # the handed-back delivery did not count


async def test_an_engine_that_runs_several_jobs_at_once_gets_them_at_once(double_harness: Harness) -> None:
    """A worker serves ``engine.concurrency`` jobs at once (the real engine batches their UNet
    steps): two jobs both reach their first denoising step before either may go on."""
    harness = double_harness
    harness.engine.concurrency = 2
    both_running = threading.Barrier(2, timeout=WAIT_S)

    def meet(spec, step, denoise, cancel) -> None:
        if step == 0 and denoise == 1:
            both_running.wait()  # one job at a time would break the barrier after WAIT_S

    harness.engine.hook = meet
    jobs = [make_job(70, user=1), make_job(71, user=2)]
    for job in jobs:
        await harness.queue.submit(job, SOURCE_PNG)
    for job in jobs:
        assert kinds(await collect(harness.queue, job.id))[-1] == "done"
    assert not both_running.broken


async def test_the_engine_goes_on_while_the_last_expansion_is_stored(storing_harness: Harness) -> None:
    """A finished expansion is checked, encoded and written on a thread of its own while the engine
    runs the next one to its last denoising step; its Expanded event still comes before any news
    of the next."""
    harness = storing_harness
    check = harness.safety
    assert isinstance(check, GatedCheck)

    def hook(spec, step, denoise, cancel) -> None:
        if step >= 1 and denoise == spec.steps:  # past the next expansion's progress reports
            check.release.set()

    harness.engine.hook = hook
    job = make_job(80)  # three steps (the source is squared up first)
    await harness.queue.submit(job, SOURCE_PNG)
    events = await collect(harness.queue, job.id)
    assert len(check.released_in_time) >= 2 and all(check.released_in_time)  # serial: it waits in vain
    assert kinds(events) == ["queued", "started", "expanded", "expanded", "expanded", "done"]
    expanded = {e.step: seq for seq, e in events if isinstance(e, Expanded)}
    progress = [(e.step, seq) for seq, e in events if isinstance(e, Progress)]
    assert {step for step, _ in progress} == {0, 1, 2}  # no report was dropped meanwhile
    assert all(seq > expanded[step - 1] for step, seq in progress if step > 0)
