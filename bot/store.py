"""The bot's own small journal (SQLite under the data dir): where each job is being shown.

The queue knows jobs; this knows Discord: which channel and status message show a job, whose job
it is (the caps are rebuilt from it at start), the last event already shown (so a restarted bot
picks up where it stopped), whether its result is being posted or was posted (so it is posted
exactly once), whether the result was deleted since (it is no longer a source to continue), how
many expansions it asked for and when (a guild's daily count is rebuilt from it), and which
messages belong to which job (so a reply to a result or to a ✅ status finds the canvas to
continue), and for a job with candidates, which one its requester picked (its canvas is the
job's result) and where that was posted.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import aiosqlite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    job_id TEXT PRIMARY KEY,
    channel_id INTEGER NOT NULL,
    status_message_id INTEGER,
    reply_to_message_id INTEGER,
    filesize_limit INTEGER NOT NULL,
    last_seq INTEGER NOT NULL DEFAULT 0,
    finished INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS messages (
    message_id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL
);
"""

_ADDED_COLUMNS = {  # columns newer than the first schema: added to an existing journal on open
    "user_id": "INTEGER NOT NULL DEFAULT 0",
    "guild_id": "INTEGER",
    "posting_since": "REAL",
    "result_message_id": "INTEGER",
    "expansions": "INTEGER NOT NULL DEFAULT 0",
    "created_at": "REAL",
    "result_deleted_at": "REAL",
    "candidates": "INTEGER NOT NULL DEFAULT 1",
    "picked": "INTEGER",
    "pick_message_id": "INTEGER",
    "pick_posting_since": "REAL",
}


@dataclass
class DeliveryRecord:
    job_id: str
    channel_id: int
    status_message_id: int | None  # the bot's status message (the interaction's response, or its own)
    reply_to_message_id: int | None  # the user's message the result answers, for reply-started jobs
    filesize_limit: int
    last_seq: int = 0
    finished: bool = False
    user_id: int = 0
    guild_id: int | None = None
    posting_since: float | None = None  # when the bot set out to post the result (UNIX time)
    result_message_id: int | None = None  # the result, once posted
    expansions: int = 0  # the expansions the job asked for (``times``)
    created_at: float | None = None  # when it was queued (UNIX time)
    result_deleted_at: float | None = None  # when its result was deleted (🗑 or by a moderator)
    candidates: int = 1  # candidates to pick from (then the result message is their grid)
    picked: int | None = None  # the candidate picked (0-based), whose canvas is the job's result
    pick_message_id: int | None = None  # the picked candidate's result message, once posted
    pick_posting_since: float | None = None  # when the bot set out to post it (UNIX time)


_FIELDS = [f.name for f in dataclasses.fields(DeliveryRecord)]


class BotStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.executescript(_SCHEMA)
        async with self._db.execute("PRAGMA table_info(deliveries)") as cursor:
            present = {row[1] for row in await cursor.fetchall()}
        for name, declaration in _ADDED_COLUMNS.items():
            if name not in present:
                await self._db.execute(f"ALTER TABLE deliveries ADD COLUMN {name} {declaration}")
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("BotStore is not open")
        return self._db

    async def add_delivery(self, record: DeliveryRecord) -> None:
        columns, marks = ", ".join(_FIELDS), ", ".join("?" * len(_FIELDS))
        await self.db.execute(
            f"INSERT OR REPLACE INTO deliveries ({columns}) VALUES ({marks})", dataclasses.astuple(record)
        )
        await self.db.commit()

    async def update_delivery(self, job_id: str, **changes: int | float | bool | None) -> None:
        """Set the given fields of ``job_id``'s record (field names of :class:`DeliveryRecord`)."""
        if unknown := set(changes) - set(_FIELDS):
            raise ValueError(f"unknown delivery fields {sorted(unknown)}")
        if not changes:
            return
        assignments = ", ".join(f"{name} = ?" for name in changes)
        await self.db.execute(
            f"UPDATE deliveries SET {assignments} WHERE job_id = ?", (*changes.values(), job_id)
        )
        await self.db.commit()

    async def _deliveries(self, where: str, *args: object) -> list[DeliveryRecord]:
        async with self.db.execute(
            f"SELECT {', '.join(_FIELDS)} FROM deliveries WHERE {where}", args
        ) as cursor:
            rows = await cursor.fetchall()
        records = [DeliveryRecord(**dict(zip(_FIELDS, row, strict=True))) for row in rows]
        for record in records:
            record.finished = bool(record.finished)
        return records

    async def unfinished_deliveries(self) -> list[DeliveryRecord]:
        return await self._deliveries("finished = 0")

    async def delivery(self, job_id: str) -> DeliveryRecord | None:
        records = await self._deliveries("job_id = ?", job_id)
        return records[0] if records else None

    async def result_deleted(self, job_id: str) -> bool:
        async with self.db.execute(
            "SELECT result_deleted_at IS NOT NULL FROM deliveries WHERE job_id = ?", (job_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return bool(row and row[0])

    async def guild_expansions_since(self, since: float) -> dict[int, int]:
        """Expansions asked for per guild by the jobs queued since ``since`` (UNIX time)."""
        async with self.db.execute(
            "SELECT guild_id, SUM(expansions) FROM deliveries "
            "WHERE created_at >= ? AND guild_id IS NOT NULL GROUP BY guild_id",
            (since,),
        ) as cursor:
            return {guild_id: total for guild_id, total in await cursor.fetchall()}

    async def link_message(self, message_id: int, job_id: str) -> None:
        await self.db.execute("INSERT OR REPLACE INTO messages VALUES (?, ?)", (message_id, job_id))
        await self.db.commit()

    async def job_for_message(self, message_id: int) -> str | None:
        async with self.db.execute("SELECT job_id FROM messages WHERE message_id = ?", (message_id,)) as cur:
            row = await cur.fetchone()
        return row[0] if row else None
