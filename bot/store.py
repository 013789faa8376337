"""The bot's own small journal (SQLite under the data dir): where each job is being shown.

The queue knows jobs; this knows Discord: which channel and status message show a job, the last
event already shown (so a restarted bot picks up where it stopped), and which result message
belongs to which job (so a reply to a result finds the canvas to continue).
"""

from __future__ import annotations

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


@dataclass
class DeliveryRecord:
    job_id: str
    channel_id: int
    status_message_id: int | None  # a channel message of the bot (None: shown via the interaction)
    reply_to_message_id: int | None  # the user's message the result answers, for reply-started jobs
    filesize_limit: int
    last_seq: int = 0
    finished: bool = False


class BotStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.executescript(_SCHEMA)
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
        await self.db.execute(
            "INSERT OR REPLACE INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                record.job_id,
                record.channel_id,
                record.status_message_id,
                record.reply_to_message_id,
                record.filesize_limit,
                record.last_seq,
                int(record.finished),
            ),
        )
        await self.db.commit()

    async def update_delivery(
        self,
        job_id: str,
        *,
        last_seq: int | None = None,
        status_message_id: int | None = None,
        finished: bool | None = None,
    ) -> None:
        changes = {"last_seq": last_seq, "status_message_id": status_message_id, "finished": finished}
        changes = {k: int(v) for k, v in changes.items() if v is not None}
        if not changes:
            return
        assignments = ", ".join(f"{name} = ?" for name in changes)
        await self.db.execute(
            f"UPDATE deliveries SET {assignments} WHERE job_id = ?", (*changes.values(), job_id)
        )
        await self.db.commit()

    async def unfinished_deliveries(self) -> list[DeliveryRecord]:
        async with self.db.execute("SELECT * FROM deliveries WHERE finished = 0") as cursor:
            rows = await cursor.fetchall()
        return [
            DeliveryRecord(
                job_id=r[0],
                channel_id=r[1],
                status_message_id=r[2],
                reply_to_message_id=r[3],
                filesize_limit=r[4],
                last_seq=r[5],
                finished=bool(r[6]),
            )
            for r in rows
        ]

    async def link_message(self, message_id: int, job_id: str) -> None:
        await self.db.execute("INSERT OR REPLACE INTO messages VALUES (?, ?)", (message_id, job_id))
        await self.db.commit()

    async def job_for_message(self, message_id: int) -> str | None:
        async with self.db.execute("SELECT job_id FROM messages WHERE message_id = ?", (message_id,)) as cur:
            row = await cur.fetchone()
        return row[0] if row else None
