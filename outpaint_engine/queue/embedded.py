"""The embedded queue (default): one machine, no server.

Jobs and their events are journaled in SQLite (``data_dir/queue.sqlite3``, WAL mode) through
aiosqlite; images are files under ``data_dir/jobs/<job id>/``. The GPU work runs in one worker
thread of the bot process (the shared loop of :mod:`outpaint_engine.worker`), never on the event
loop; its engine is created in that thread, on the first job, by the ``engine_factory`` given to
the queue, so the bot starts fast. The thread talks to the journal through the event loop.

On start, jobs left running by a previous process go back to the queue and continue after their
last checkpoint. While it runs, the queue forgets jobs that finished more than ``result_ttl_s``
ago, with their images (every :data:`PURGE_EVERY_S`), as the Redis backend lets them expire. A
queue opened without an engine factory (the operator command) runs no worker, purges nothing on
its own and leaves running jobs alone; a cancel it writes reaches the bot's worker through the
journal at its next denoising step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import aiosqlite

from outpaint_engine.job import (
    Cancelled,
    Done,
    Event,
    Expanded,
    Failed,
    Job,
    JobState,
    Progress,
    Queued,
    Started,
)
from outpaint_engine.queue import fair
from outpaint_engine.queue.base import Claim, JobQueue, LostClaim, QueueError, WorkerSide
from outpaint_engine.settings import QueueSettings
from outpaint_engine.store import FileImageStore, check_job_id, is_job_id
from outpaint_engine.worker import FAILED_POLITELY, EngineFactory, Worker

log = logging.getLogger(__name__)
T = TypeVar("T")

JOIN_TIMEOUT_S = 60.0
"""How long :meth:`EmbeddedQueue.close` waits for the worker thread to hand its job back."""
PURGE_EVERY_S = 3600.0
"""How often the bot's queue forgets jobs that finished more than ``result_ttl_s`` ago."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL,
    guild_id INTEGER,
    state TEXT NOT NULL,
    round INTEGER NOT NULL,          -- fair order: (round, seq), see outpaint_engine.queue.fair
    seq INTEGER NOT NULL,
    created_at REAL NOT NULL,
    finished_at REAL,
    owner TEXT,                      -- the claim token of the worker running it
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    data TEXT NOT NULL               -- Job.to_dict() as JSON
);
CREATE INDEX IF NOT EXISTS jobs_by_user ON jobs (user_id, state);
CREATE INDEX IF NOT EXISTS jobs_by_guild ON jobs (guild_id, state);
CREATE INDEX IF NOT EXISTS jobs_in_order ON jobs (state, round, seq);
CREATE INDEX IF NOT EXISTS jobs_by_age ON jobs (created_at);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fair (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
"""


@dataclass
class _Row:
    job: Job
    round: int
    seq: int
    owner: str | None
    cancel_requested: bool


class EmbeddedQueue(JobQueue):
    """SQLite-journaled queue with an in-process worker thread.

    ``engine_factory`` makes the engine, in the worker thread, when the first job comes (again on
    the next job if it failed); without it the queue runs no worker (operator use). ``poll_s``
    bounds how late a change written by another process (the operator command) is noticed.
    """

    def __init__(
        self, settings: QueueSettings, *, engine_factory: EngineFactory | None = None, poll_s: float = 1.0
    ) -> None:
        self.settings = settings
        self.path = settings.data_dir / "queue.sqlite3"
        self.images = FileImageStore(settings.data_dir / "jobs")
        self._engine_factory = engine_factory
        self._poll_s = poll_s
        self._db: aiosqlite.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()
        self._tick = asyncio.Event()
        self.work_ready = threading.Event()  # set when a job may have become claimable
        self._tokens: dict[str, Claim] = {}
        self._timings: deque[float] = deque(maxlen=fair.RECENT_STEPS)
        self._timings_lock = threading.Lock()
        self._worker: Worker | None = None
        self._thread: threading.Thread | None = None
        self._purger: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._closed = False

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            self.settings.data_dir.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=10000"):
                await self._db.execute(f"PRAGMA {pragma}")
            await self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise QueueError(f"Cannot open the job journal {self.path}: {error}.") from error
        if self._engine_factory is None:
            return
        await self._requeue_interrupted()
        self._worker = Worker(_EmbeddedSide(self), self._engine_factory, idle_wait_s=self._poll_s)
        self._thread = threading.Thread(target=self._worker.serve, name="outpaint-worker", daemon=True)
        self._thread.start()
        self._purger = asyncio.create_task(self._purge_regularly(), name="outpaint-queue-purge")

    async def close(self) -> None:
        self._closing.set()
        if self._purger is not None:
            await self._purger  # a purge under way finishes (its images too)
        if self._worker is not None and self._thread is not None:
            self._worker.stop()
            self.work_ready.set()
            await asyncio.to_thread(self._thread.join, JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                log.warning("the worker thread did not stop within %.0f s", JOIN_TIMEOUT_S)
        self._closed = True
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _purge_regularly(self) -> None:
        while not self._closing.is_set():
            try:
                purged = await self.purge(older_than_s=self.settings.result_ttl_s)
            except Exception:
                log.exception("could not purge old jobs")
            else:
                if purged:
                    log.info("forgot %d jobs finished more than %d s ago", purged, self.settings.result_ttl_s)
            with suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), PURGE_EVERY_S)

    async def _requeue_interrupted(self) -> None:
        async with self._tx() as db:
            rows = await db.execute_fetchall("SELECT id FROM jobs WHERE state = 'running'")
            for (job_id,) in rows:
                row = await self._load(db, job_id)
                assert row is not None
                log.info("job %s was interrupted after %d steps; it will resume", job_id, row.job.steps_done)
                row.job.state, row.owner = JobState.QUEUED, None
                await self._save(db, row)
        self.work_ready.set()

    # --- journal helpers -------------------------------------------------------------------------

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise QueueError("The job queue is not open.")
        return self._db

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``: other processes wait); wakes subscribers."""
        async with self._lock:
            db = self._conn()
            await db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")
        self._tick.set()
        self._tick = asyncio.Event()

    async def _fetch(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        async with self._lock:
            return list(await self._conn().execute_fetchall(sql, tuple(params)))

    @staticmethod
    async def _load(db: aiosqlite.Connection, job_id: str) -> _Row | None:
        rows = await db.execute_fetchall(
            "SELECT data, round, seq, owner, cancel_requested FROM jobs WHERE id = ?", (job_id,)
        )
        if not rows:
            return None
        data, round_, seq, owner, cancel = rows[0]
        return _Row(Job.from_dict(json.loads(data)), round_, seq, owner, bool(cancel))

    @staticmethod
    async def _save(db: aiosqlite.Connection, row: _Row) -> None:
        job = row.job
        await db.execute(
            "UPDATE jobs SET state = ?, round = ?, seq = ?, finished_at = ?, owner = ?,"
            " cancel_requested = ?, data = ? WHERE id = ?",
            (
                str(job.state),
                row.round,
                row.seq,
                job.finished_at,
                row.owner,
                int(row.cancel_requested),
                json.dumps(job.to_dict()),
                job.id,
            ),
        )

    @staticmethod
    async def _publish(db: aiosqlite.Connection, event: Event) -> int:
        rows = await db.execute_fetchall(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?", (event.job_id,)
        )
        seq = rows[0][0]
        await db.execute(
            "INSERT INTO events (job_id, seq, data) VALUES (?, ?, ?)",
            (event.job_id, seq, json.dumps(event.to_dict())),
        )
        return seq

    @staticmethod
    async def _fair_value(db: aiosqlite.Connection, key: str) -> int | None:
        rows = await db.execute_fetchall("SELECT value FROM fair WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    @staticmethod
    async def _set_fair_value(db: aiosqlite.Connection, key: str, value: int) -> None:
        await db.execute(
            "INSERT INTO fair (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    async def _new_key(self, db: aiosqlite.Connection, user_id: int) -> tuple[int, int]:
        """A fresh fair-order key ``(round, seq)`` for a new (or retried) job of ``user_id``."""
        rows = await db.execute_fetchall(
            "SELECT MAX(round) FROM jobs WHERE user_id = ? AND state = 'queued'", (user_id,)
        )
        lasts = [v for v in (rows[0][0], await self._fair_value(db, f"served:{user_id}")) if v is not None]
        round_ = fair.next_round(await self._fair_value(db, "round") or 0, max(lasts) if lasts else None)
        seq = (await self._fair_value(db, "seq") or 0) + 1
        await self._set_fair_value(db, "seq", seq)
        return round_, seq

    async def _dispatched(self, db: aiosqlite.Connection, row: _Row) -> None:
        """Advance the fair-order state past ``row``'s key (it leaves the queue)."""
        for key in ("round", f"served:{row.job.user_id}"):
            await self._set_fair_value(db, key, max(row.round, await self._fair_value(db, key) or 0))

    @staticmethod
    async def _ahead(db: aiosqlite.Connection, row: _Row) -> list[Job]:
        rows = await db.execute_fetchall(
            "SELECT data FROM jobs WHERE state = 'queued' AND (round < ? OR (round = ? AND seq < ?))",
            (row.round, row.round, row.seq),
        )
        return [Job.from_dict(json.loads(data)) for (data,) in rows]

    async def _eta(self, db: aiosqlite.Connection, row: _Row) -> float | None:
        step_s = self.step_time()
        if step_s is None or row.job.state is not JobState.QUEUED:
            return fair.eta_s(step_s, row.job)
        running = await db.execute_fetchall("SELECT data FROM jobs WHERE state = 'running'")
        return fair.eta_s(
            step_s,
            row.job,
            ahead=await self._ahead(db, row),
            running=[Job.from_dict(json.loads(data)) for (data,) in running],
        )

    async def _announce(self, db: aiosqlite.Connection, row: _Row) -> None:
        position = len(await self._ahead(db, row)) + 1
        await self._publish(db, Queued(row.job.id, position, await self._eta(db, row)))

    async def _finish(
        self, db: aiosqlite.Connection, row: _Row, event: Event, error: str | None = None
    ) -> None:
        job = row.job
        job.state = {Done: JobState.DONE, Failed: JobState.FAILED, Cancelled: JobState.CANCELLED}[type(event)]
        job.finished_at, job.error = time.time(), error
        row.owner, row.cancel_requested = None, False
        await self._save(db, row)
        await self._publish(db, event)

    # --- bot side --------------------------------------------------------------------------------

    async def submit(self, job: Job, source_png: bytes) -> Job:
        check_job_id(job.id)
        job.state, job.steps_done, job.attempts = JobState.QUEUED, 0, 0
        job.started_at = job.finished_at = job.error = None
        async with self._tx() as db:
            if await self._load(db, job.id) is not None:
                raise QueueError(f"Job {job.id} already exists.")
            await asyncio.to_thread(self.images.put_source, job.id, source_png)
            round_, seq = await self._new_key(db, job.user_id)
            await db.execute(
                "INSERT INTO jobs (id, user_id, guild_id, state, round, seq, created_at, data)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.user_id,
                    job.guild_id,
                    str(job.state),
                    round_,
                    seq,
                    job.created_at,
                    json.dumps(job.to_dict()),
                ),
            )
            await self._announce(db, _Row(job, round_, seq, None, False))
        self.work_ready.set()
        return job

    async def get(self, job_id: str) -> Job | None:
        if not is_job_id(job_id):
            return None
        rows = await self._fetch("SELECT data FROM jobs WHERE id = ?", (job_id,))
        return Job.from_dict(json.loads(rows[0][0])) if rows else None

    async def cancel(self, job_id: str) -> Job | None:
        if not is_job_id(job_id):
            return None
        async with self._tx() as db:
            row = await self._load(db, job_id)
            if row is None:
                return None
            if row.job.state is JobState.QUEUED:
                await self._finish(db, row, Cancelled(job_id))
            elif row.job.state is JobState.RUNNING:
                row.cancel_requested = True
                await self._save(db, row)
        claim = self._tokens.get(job_id)
        if claim is not None and row.job.state is JobState.RUNNING:
            claim.cancel.cancel()
        return row.job

    async def list_jobs(
        self,
        *,
        user_id: int | None = None,
        guild_id: int | None = None,
        states: Iterable[JobState] | None = None,
        limit: int = 100,
    ) -> list[Job]:
        where, params = [], []
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if guild_id is not None:
            where.append("guild_id = ?")
            params.append(guild_id)
        if states is not None:
            wanted = [str(JobState(s)) for s in states]
            if not wanted:
                return []
            where.append(f"state IN ({', '.join('?' * len(wanted))})")
            params.extend(wanted)
        sql = "SELECT data FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self._fetch(sql + " ORDER BY created_at DESC LIMIT ?", [*params, limit])
        return [Job.from_dict(json.loads(data)) for (data,) in rows]

    async def events(self, job_id: str, *, after: int = 0) -> AsyncIterator[tuple[int, Event]]:
        if await self.get(job_id) is None:
            raise QueueError(f"There is no job {job_id}.")
        last = after
        while True:
            tick = self._tick
            rows = await self._fetch(
                "SELECT seq, data FROM events WHERE job_id = ? AND seq > ? ORDER BY seq", (job_id, last)
            )
            event = None
            for last, data in rows:
                event = Event.from_dict(json.loads(data))
                yield last, event
            if event is not None and event.terminal:
                newer = await self._fetch("SELECT 1 FROM events WHERE job_id = ? AND seq > ?", (job_id, last))
                if not newer:  # a terminal event ends the stream unless a retry followed it
                    return
            elif not rows:
                with suppress(TimeoutError):
                    await asyncio.wait_for(tick.wait(), self._poll_s)

    async def get_canvas(self, job_id: str, step: int) -> bytes | None:
        if not is_job_id(job_id):
            return None
        return await asyncio.to_thread(self.images.get_step, job_id, step)

    async def get_source(self, job_id: str) -> bytes | None:
        if not is_job_id(job_id):
            return None
        return await asyncio.to_thread(self.images.get_source, job_id)

    async def position(self, job_id: str) -> int | None:
        if not is_job_id(job_id):
            return None
        async with self._lock:
            row = await self._load(self._conn(), job_id)
            if row is None or row.job.state is not JobState.QUEUED:
                return None
            return len(await self._ahead(self._conn(), row)) + 1

    async def eta(self, job_id: str) -> float | None:
        if not is_job_id(job_id):
            return None
        async with self._lock:
            row = await self._load(self._conn(), job_id)
            return None if row is None else await self._eta(self._conn(), row)

    # --- operator --------------------------------------------------------------------------------

    async def retry(self, job_id: str) -> Job:
        check_job_id(job_id)
        async with self._tx() as db:
            row = await self._load(db, job_id)
            if row is None:
                raise QueueError(f"There is no job {job_id}.")
            if row.job.state not in (JobState.FAILED, JobState.CANCELLED):
                raise QueueError(
                    f"Job {job_id} is {row.job.state}; only failed or cancelled jobs can be retried."
                )
            job = row.job
            job.state, job.attempts, job.error, job.finished_at = JobState.QUEUED, 0, None, None
            row.round, row.seq = await self._new_key(db, job.user_id)
            row.owner, row.cancel_requested = None, False
            await self._save(db, row)
            await self._announce(db, row)
        self.work_ready.set()
        return job

    async def purge(self, *, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        async with self._tx() as db:
            rows = await db.execute_fetchall(
                "SELECT id FROM jobs WHERE state IN ('done', 'failed', 'cancelled') AND finished_at < ?",
                (cutoff,),
            )
            ids = [job_id for (job_id,) in rows]
            for job_id in ids:
                await db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
                await db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        for job_id in ids:
            await asyncio.to_thread(self.images.delete, job_id)
        return len(ids)

    # --- worker side (coroutines run on the loop for the worker thread) --------------------------

    def call(self, coro: Awaitable[T]) -> T:
        """Run ``coro`` on the queue's event loop from the worker thread and wait for it."""
        if self._closed or self._loop is None:
            if asyncio.iscoroutine(coro):
                coro.close()
            raise LostClaim("the queue is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    async def claim_next(self, token: str) -> Claim | None:
        async with self._tx() as db:
            while True:
                rows = await db.execute_fetchall(
                    "SELECT id FROM jobs WHERE state = 'queued' ORDER BY round, seq LIMIT 1"
                )
                if not rows:
                    return None
                row = await self._load(db, rows[0][0])
                assert row is not None
                job = row.job
                await self._dispatched(db, row)
                if row.cancel_requested:  # cancelled while it was running, then interrupted
                    await self._finish(db, row, Cancelled(job.id))
                    continue
                if job.attempts >= self.settings.max_deliveries:
                    log.error("job %s: interrupted %d times, giving up", job.id, job.attempts)
                    await self._finish(db, row, Failed(job.id, FAILED_POLITELY), FAILED_POLITELY)
                    continue
                job.attempts += 1
                job.state, job.started_at = JobState.RUNNING, job.started_at or time.time()
                row.owner = token
                await self._save(db, row)
                claim = Claim(job, token)
                self._tokens[job.id] = claim
                return claim

    @asynccontextmanager
    async def owned(self, claim: Claim) -> AsyncIterator[tuple[aiosqlite.Connection, _Row]]:
        """A write transaction on ``claim``'s job; LostClaim if the claim no longer owns it."""
        async with self._tx() as db:
            row = await self._load(db, claim.job.id)
            if row is None or row.owner != claim.token:
                raise LostClaim("the job was taken over or removed")
            yield db, row

    async def publish_for(self, claim: Claim, event: Event, *, total_steps: int | None = None) -> None:
        async with self.owned(claim) as (db, row):
            if total_steps is not None:
                row.job.total_steps = total_steps
                await self._save(db, row)
            await self._publish(db, event)
            cancel = row.cancel_requested
        if cancel:
            claim.cancel.cancel()

    async def checkpointed(self, claim: Claim, event: Expanded) -> None:
        async with self.owned(claim) as (db, row):
            if row.job.steps_done < event.step:
                raise RuntimeError(f"checkpoint of step {event.step} after {row.job.steps_done} steps")
            if row.job.steps_done == event.step:
                row.job.steps_done = claim.job.steps_done = event.step + 1
                await self._save(db, row)
                await self._publish(db, event)

    async def finish(self, claim: Claim, event: Event, error: str | None = None) -> None:
        async with self.owned(claim) as (db, row):
            await self._finish(db, row, event, error)

    async def requeue(self, claim: Claim, *, refund: bool) -> None:
        async with self.owned(claim) as (db, row):
            row.job.state, row.owner = JobState.QUEUED, None
            if refund:
                row.job.attempts -= 1
            await self._save(db, row)
        self.work_ready.set()

    def forget(self, claim: Claim) -> None:
        self._tokens.pop(claim.job.id, None)

    def record_step_time(self, seconds: float) -> None:
        with self._timings_lock:
            self._timings.append(seconds)

    def step_time(self) -> float | None:
        with self._timings_lock:
            return fair.moving_average(self._timings)


class _EmbeddedSide(WorkerSide):
    """The worker thread's view of an :class:`EmbeddedQueue`."""

    def __init__(self, queue: EmbeddedQueue) -> None:
        self.q = queue
        self.max_deliveries = queue.settings.max_deliveries

    def claim(self, wait_s: float) -> Claim | None:
        self.q.work_ready.clear()
        claim = self.q.call(self.q.claim_next(uuid.uuid4().hex))
        if claim is None:
            self.q.work_ready.wait(wait_s)
        return claim

    def end(self, claim: Claim) -> None:
        self.q.forget(claim)

    def load_source(self, claim: Claim) -> bytes | None:
        return self.q.images.get_source(claim.job.id)

    def load_checkpoint(self, claim: Claim) -> tuple[int, bytes] | None:
        done = claim.job.steps_done
        png = self.q.images.get_step(claim.job.id, done - 1) if done else None
        return (done, png) if png is not None else None

    def started(self, claim: Claim, total_steps: int) -> None:
        self.q.call(self.q.publish_for(claim, Started(claim.job.id, total_steps), total_steps=total_steps))
        claim.job.total_steps = total_steps

    def progress(self, claim: Claim, event: Progress) -> None:
        self.q.call(self.q.publish_for(claim, event))

    def checkpoint(self, claim: Claim, step: int, png: bytes, width: int, height: int) -> None:
        self.q.images.put_step(claim.job.id, step, png)
        event = Expanded(claim.job.id, step, claim.job.total_steps, width, height)
        self.q.call(self.q.checkpointed(claim, event))

    def done(self, claim: Claim, step: int, width: int, height: int) -> None:
        self.q.call(self.q.finish(claim, Done(claim.job.id, step, width, height)))

    def cancelled(self, claim: Claim) -> None:
        self.q.call(self.q.finish(claim, Cancelled(claim.job.id)))

    def failed(self, claim: Claim, reason: str, *, retry: bool, detail: str = "") -> None:
        if retry:
            self.q.call(self.q.requeue(claim, refund=False))
        else:
            self.q.call(self.q.finish(claim, Failed(claim.job.id, reason), reason))

    def release(self, claim: Claim) -> None:
        self.q.call(self.q.requeue(claim, refund=True))

    def record_step_time(self, seconds: float) -> None:
        self.q.record_step_time(seconds)

    def step_time(self) -> float | None:
        return self.q.step_time()
