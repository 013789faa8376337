"""The embedded queue's journal: jobs, their events and the fair-order state in SQLite.

One file (``data_dir/queue.sqlite3``, WAL mode) opened through aiosqlite; the bot's queue and the
operator command may have it open at once (writes take ``BEGIN IMMEDIATE``, readers never wait in
WAL mode). A write that cannot take the lock within ``OUTPAINT_QUEUE_TIMEOUT_S``, or a journal
that fails to read or write (a full or failing disk), raises :class:`QueueUnavailable`.

Every state change of a job is one transaction here; :mod:`outpaint_engine.queue.embedded` adds the
images, the worker thread and the wake-ups around it.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from outpaint_engine.job import Cancelled, Done, Event, Failed, Job, JobState, Queued
from outpaint_engine.queue import fair
from outpaint_engine.queue.base import QueueError, QueueUnavailable

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
    stalls INTEGER NOT NULL DEFAULT 0,  -- deliveries that stored no new step (see worker.Claim)
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
_TERMINAL = {Done: JobState.DONE, Failed: JobState.FAILED, Cancelled: JobState.CANCELLED}


@dataclass
class Row:
    """A job with the journal's own columns."""

    job: Job
    round: int
    seq: int
    owner: str | None = None
    cancel_requested: bool = False
    stalls: int = 0


class Journal:
    """The SQLite journal of one data directory. Coroutines run on the opener's event loop."""

    def __init__(self, path: Path, *, timeout_s: float) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self._db: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()

    async def open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            busy_ms = int(self.timeout_s * 1000)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", f"busy_timeout={busy_ms}"):
                await self._db.execute(f"PRAGMA {pragma}")
            await self._db.executescript(_SCHEMA)
            async with self.tx() as db:  # journals written before the stall count
                columns = {row[1] for row in await db.execute_fetchall("PRAGMA table_info(jobs)")}
                if "stalls" not in columns:
                    await db.execute("ALTER TABLE jobs ADD COLUMN stalls INTEGER NOT NULL DEFAULT 0")
        except (OSError, sqlite3.Error) as error:
            raise QueueError(f"Cannot open the job journal {self.path}: {error}.") from error

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    def changed(self) -> asyncio.Event:
        """An event set by the next committed write (subscribers wait on it)."""
        return self._changed

    # --- transactions ----------------------------------------------------------------------------

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise QueueError("The job queue is not open.")
        return self._db

    def _unavailable(self, error: sqlite3.OperationalError) -> QueueUnavailable:
        return QueueUnavailable(f"The job journal {self.path} did not answer ({error}).")

    @asynccontextmanager
    async def tx(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``: other processes wait, up to the timeout)."""
        async with self._lock:
            db = self._conn()
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as error:  # locked for longer than the timeout
                raise self._unavailable(error) from error
            try:
                yield db
                await db.execute("COMMIT")
            except BaseException as error:
                with suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
                if isinstance(error, sqlite3.OperationalError):
                    raise self._unavailable(error) from error
                raise
        self._changed.set()
        self._changed = asyncio.Event()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[aiosqlite.Connection]:
        """The connection for reads (WAL: they never wait for other processes' writes)."""
        async with self._lock:
            try:
                yield self._conn()
            except sqlite3.OperationalError as error:
                raise self._unavailable(error) from error

    async def fetch(self, sql: str, params: Iterable[Any] = ()) -> list[Any]:
        async with self.read() as db:
            return list(await db.execute_fetchall(sql, tuple(params)))

    # --- rows ------------------------------------------------------------------------------------

    @staticmethod
    async def load(db: aiosqlite.Connection, job_id: str) -> Row | None:
        rows = await db.execute_fetchall(
            "SELECT data, round, seq, owner, cancel_requested, stalls FROM jobs WHERE id = ?", (job_id,)
        )
        if not rows:
            return None
        data, round_, seq, owner, cancel, stalls = rows[0]
        return Row(Job.from_dict(json.loads(data)), round_, seq, owner, bool(cancel), stalls)

    @staticmethod
    async def save(db: aiosqlite.Connection, row: Row) -> None:
        job = row.job
        await db.execute(
            "UPDATE jobs SET state = ?, round = ?, seq = ?, finished_at = ?, owner = ?,"
            " cancel_requested = ?, stalls = ?, data = ? WHERE id = ?",
            (
                str(job.state),
                row.round,
                row.seq,
                job.finished_at,
                row.owner,
                int(row.cancel_requested),
                row.stalls,
                json.dumps(job.to_dict()),
                job.id,
            ),
        )

    @staticmethod
    async def insert(db: aiosqlite.Connection, row: Row) -> None:
        job = row.job
        await db.execute(
            "INSERT INTO jobs (id, user_id, guild_id, state, round, seq, created_at, data)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.id,
                job.user_id,
                job.guild_id,
                str(job.state),
                row.round,
                row.seq,
                job.created_at,
                json.dumps(job.to_dict()),
            ),
        )

    @staticmethod
    async def publish(db: aiosqlite.Connection, event: Event) -> int:
        rows = await db.execute_fetchall(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM events WHERE job_id = ?", (event.job_id,)
        )
        seq = rows[0][0]
        await db.execute(
            "INSERT INTO events (job_id, seq, data) VALUES (?, ?, ?)",
            (event.job_id, seq, json.dumps(event.to_dict())),
        )
        return seq

    async def finish(
        self, db: aiosqlite.Connection, row: Row, event: Event, error: str | None = None
    ) -> None:
        """End ``row``'s job with the terminal ``event``."""
        job = row.job
        job.state = _TERMINAL[type(event)]
        job.finished_at, job.error = time.time(), error
        row.owner, row.cancel_requested = None, False
        await self.save(db, row)
        await self.publish(db, event)

    async def events_after(self, job_id: str, seq: int) -> list[tuple[int, Event]]:
        rows = await self.fetch(
            "SELECT seq, data FROM events WHERE job_id = ? AND seq > ? ORDER BY seq", (job_id, seq)
        )
        return [(n, Event.from_dict(json.loads(data))) for n, data in rows]

    async def has_events_after(self, job_id: str, seq: int) -> bool:
        return bool(
            await self.fetch("SELECT 1 FROM events WHERE job_id = ? AND seq > ? LIMIT 1", (job_id, seq))
        )

    async def get(self, job_id: str) -> Job | None:
        rows = await self.fetch("SELECT data FROM jobs WHERE id = ?", (job_id,))
        return Job.from_dict(json.loads(rows[0][0])) if rows else None

    async def list_jobs(
        self, *, user_id: int | None, guild_id: int | None, states: list[str] | None, limit: int
    ) -> list[Job]:
        where, params = [], []
        if user_id is not None:
            where.append("user_id = ?")
            params.append(user_id)
        if guild_id is not None:
            where.append("guild_id = ?")
            params.append(guild_id)
        if states is not None:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            params.extend(states)
        sql = "SELECT data FROM jobs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = await self.fetch(sql + " ORDER BY created_at DESC LIMIT ?", [*params, limit])
        return [Job.from_dict(json.loads(data)) for (data,) in rows]

    async def count_by_state(self, states: Iterable[JobState]) -> list[tuple[JobState, int]]:
        wanted = [str(s) for s in states]
        marks = ", ".join("?" * len(wanted))
        rows = await self.fetch(
            f"SELECT state, COUNT(*) FROM jobs WHERE state IN ({marks}) GROUP BY state", wanted
        )
        return [(JobState(state), count) for state, count in rows]

    @staticmethod
    async def ids_in_state(db: aiosqlite.Connection, state: JobState) -> list[str]:
        return [
            job_id
            for (job_id,) in await db.execute_fetchall("SELECT id FROM jobs WHERE state = ?", (str(state),))
        ]

    @staticmethod
    async def delete_finished_before(db: aiosqlite.Connection, cutoff: float) -> list[str]:
        """Forget jobs (and their events) that finished before ``cutoff``; returns their ids."""
        rows = await db.execute_fetchall(
            "SELECT id FROM jobs WHERE state IN ('done', 'failed', 'cancelled') AND finished_at < ?",
            (cutoff,),
        )
        ids = [job_id for (job_id,) in rows]
        for job_id in ids:
            await db.execute("DELETE FROM events WHERE job_id = ?", (job_id,))
            await db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        return ids

    # --- fair order ------------------------------------------------------------------------------

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

    async def new_key(self, db: aiosqlite.Connection, user_id: int) -> tuple[int, int]:
        """A fresh fair-order key ``(round, seq)`` for a new (or retried) job of ``user_id``."""
        rows = await db.execute_fetchall(
            "SELECT MAX(round) FROM jobs WHERE user_id = ? AND state = 'queued'", (user_id,)
        )
        lasts = [v for v in (rows[0][0], await self._fair_value(db, f"served:{user_id}")) if v is not None]
        round_ = fair.next_round(await self._fair_value(db, "round") or 0, max(lasts) if lasts else None)
        seq = (await self._fair_value(db, "seq") or 0) + 1
        await self._set_fair_value(db, "seq", seq)
        return round_, seq

    async def dispatched(self, db: aiosqlite.Connection, row: Row) -> None:
        """Advance the fair-order state past ``row``'s key (it leaves the queue)."""
        for key in ("round", f"served:{row.job.user_id}"):
            await self._set_fair_value(db, key, max(row.round, await self._fair_value(db, key) or 0))

    @staticmethod
    async def next_queued(db: aiosqlite.Connection) -> str | None:
        rows = await db.execute_fetchall(
            "SELECT id FROM jobs WHERE state = 'queued' ORDER BY round, seq LIMIT 1"
        )
        return rows[0][0] if rows else None

    @staticmethod
    async def ahead(db: aiosqlite.Connection, row: Row) -> list[Job]:
        rows = await db.execute_fetchall(
            "SELECT data FROM jobs WHERE state = 'queued' AND (round < ? OR (round = ? AND seq < ?))",
            (row.round, row.round, row.seq),
        )
        return [Job.from_dict(json.loads(data)) for (data,) in rows]

    async def eta(self, db: aiosqlite.Connection, row: Row, step_s: float | None) -> float | None:
        if step_s is None or row.job.state is not JobState.QUEUED:
            return fair.eta_s(step_s, row.job)
        running = await db.execute_fetchall("SELECT data FROM jobs WHERE state = 'running'")
        return fair.eta_s(
            step_s,
            row.job,
            ahead=await self.ahead(db, row),
            running=[Job.from_dict(json.loads(data)) for (data,) in running],
        )

    async def announce(self, db: aiosqlite.Connection, row: Row, step_s: float | None) -> None:
        """Publish ``Queued`` with the job's place in the fair order and its ETA."""
        position = len(await self.ahead(db, row)) + 1
        await self.publish(db, Queued(row.job.id, position, await self.eta(db, row, step_s)))
