"""Workers warming up: an ``outpaint-worker`` process on the real tiny engine (its health and
readiness through a warm-up, its state as the queue shows it to the bot, its metrics scraped
during and after a job, its JSON log lines), and the embedded queue's worker loading its engine
as the queue starts."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

from engine_double import LOAD_GATE_ENV, FastEngineDouble, WarmingUp
from processes import Processes, first
from queue_helpers import (
    SOURCE_PNG,
    START_S,
    WAIT_S,
    RedisServer,
    eventually,
    free_port,
    make_job,
    queue_settings,
)

from outpaint_engine.job import Done, Expanded, JobState
from outpaint_engine.queue.base import QueueDepth
from outpaint_engine.queue.embedded import EmbeddedQueue
from outpaint_engine.queue.redis import RedisQueue
from outpaint_engine.worker import WorkerState
from tests.ops.scrape import health, scrape, value


async def test_a_worker_warms_up_then_serves_with_metrics_and_json_logs(
    processes: Processes, redis_server: RedisServer, tmp_path: Path
) -> None:
    port, loaded, go = free_port(), tmp_path / "loaded", tmp_path / "go"
    url = f"http://127.0.0.1:{port}"
    worker = processes.worker(
        redis_server.url,
        "w1",
        gate=go,  # the job holds in its second step until `go` exists
        OUTPAINT_METRICS_PORT=str(port),
        OUTPAINT_LOG_FORMAT="json",
        **{LOAD_GATE_ENV: str(loaded)},  # the engine's load "warms up" until `loaded` exists
    )
    async with RedisQueue(queue_settings(redis_server.url, tmp_path / "data")) as queue:

        async def warming() -> bool:
            try:
                status, report = await asyncio.to_thread(health, url, "/readyz")
            except OSError:  # not listening yet
                return False
            return status == 503 and report["checks"] == {"engine": "the engine is warming"}

        await eventually(warming, "the worker to warm up", START_S)
        assert (await asyncio.to_thread(health, url, "/healthz"))[0] == 200  # alive all the same
        assert [w.state for w in await queue.workers()] == [WorkerState.WARMING]
        assert value(await asyncio.to_thread(scrape, url), "outpaint_worker_state", state="warming") == 1

        loaded.touch()
        await processes.serving(worker, "w1")
        assert (await asyncio.to_thread(health, url, "/readyz"))[0] == 200
        assert [(w.name, w.state) for w in await queue.workers()] == [("w1", WorkerState.READY)]

        job = await queue.submit(make_job(1, user=7, guild=8), SOURCE_PNG)
        events = queue.events(job.id)
        await first(events, lambda e: isinstance(e, Expanded))  # the square-up done; held in step 1
        during = await asyncio.to_thread(scrape, url)
        assert value(during, "outpaint_worker_jobs_running") == 1
        assert value(during, "outpaint_expansion_seconds_count", stage="expansion") == 1
        assert value(during, "outpaint_expansion_seconds_count", stage="unet_loop") == 1
        assert value(during, "outpaint_queue_wait_seconds_count") == 1
        assert value(during, "outpaint_worker_load_seconds", stage="warming") > 0
        assert await queue.depth() == QueueDepth(queued=0, running=1)

        go.touch()
        _, done = await first(events, lambda e: e.terminal)
        assert isinstance(done, Done)

        async def counted() -> bool:
            after = await asyncio.to_thread(scrape, url)
            return value(after, "outpaint_worker_jobs_total", outcome="done") == 1

        await eventually(counted, "the worker to count the job")
        after = await asyncio.to_thread(scrape, url)
        assert value(after, "outpaint_expansion_seconds_count", stage="expansion") == 3
        assert value(after, "outpaint_expansion_seconds_count", stage="decode_merge") == 3
        assert value(after, "outpaint_job_run_seconds_count") == 1
        assert value(after, "outpaint_worker_jobs_running") == 0

        worker.send_signal(signal.SIGKILL)  # a dead worker's state expires (reclaim_after_s, 1 s here)
        worker.wait()

        async def forgotten() -> bool:
            return await queue.workers() == []

        await eventually(forgotten, "the dead worker's state to expire")

    records = [json.loads(line) for line in processes.out("w1").read_text().splitlines()]
    events_of_job = {r["event"]: r for r in records if r.get("job_id") == job.id}
    assert {"delivered", "started", "done"} <= set(events_of_job)
    assert all((r["user_id"], r["guild_id"]) == (7, 8) for r in events_of_job.values())
    assert events_of_job["started"]["wait_s"] >= 0 and events_of_job["done"]["run_s"] > 0
    assert any(r.get("event") == "engine_ready" for r in records)


async def test_the_embedded_queue_loads_its_engine_at_start_and_stops_at_once_during_a_warm_up(
    tmp_path: Path,
) -> None:
    warm_up = WarmingUp(FastEngineDouble())
    settings = queue_settings("embedded", tmp_path / "data")
    try:
        async with asyncio.timeout(WAIT_S):  # not the 60 s it gives a worker that holds a job
            async with EmbeddedQueue(settings, engine_factory=warm_up, load_engine_at_start=True) as queue:
                assert await asyncio.to_thread(warm_up.warming.wait, WAIT_S)  # no job needed
                assert [w.state for w in await queue.workers()] == [WorkerState.WARMING]
                job = await queue.submit(make_job(1), SOURCE_PNG)
    finally:
        warm_up.release.set()
    async with EmbeddedQueue(settings) as queue:  # the job waits for the next start
        stored = await queue.get(job.id)
        assert stored is not None and stored.state is JobState.QUEUED and stored.attempts == 0
