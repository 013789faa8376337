"""The embedded queue's worker side: the worker thread's claims and writes.

Each write is one journal transaction (:mod:`outpaint_engine.queue.journal`) run on the bot's event
loop; the worker thread waits for it. A write the journal reports as unavailable (locked by another
process past ``OUTPAINT_QUEUE_TIMEOUT_S``) is tried again until it succeeds or the queue closes.
Claims are kept by job id, one per running job.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

import aiosqlite

from outpaint_engine.job import (
    AutoPrompt,
    Cancelled,
    Done,
    Event,
    Expanded,
    Failed,
    JobState,
    Progress,
    Prompted,
    Started,
)
from outpaint_engine.queue.base import QueueUnavailable
from outpaint_engine.queue.journal import Row
from outpaint_engine.worker import FAILED_POLITELY, Claim, LostClaim, WorkerSide, retry_while_unavailable

if TYPE_CHECKING:
    from outpaint_engine.queue.embedded import EmbeddedQueue

log = logging.getLogger("outpaint_engine.queue.embedded")
T = TypeVar("T")


class EmbeddedWorkerSide(WorkerSide):
    """The worker thread's view of an :class:`EmbeddedQueue` (whose event loop runs the writes)."""

    def __init__(self, queue: EmbeddedQueue, loop: asyncio.AbstractEventLoop) -> None:
        self.q = queue
        self.journal = queue.journal
        self.max_deliveries = queue.settings.max_deliveries
        self.claims: dict[str, Claim] = {}  # by job id
        self._loop = loop
        self._stopping = threading.Event()
        self._closed = False

    def stopping(self) -> None:
        """Stop retrying writes: the queue is closing."""
        self._stopping.set()

    def closed(self) -> None:
        """The journal is closed: every later write raises LostClaim."""
        self._closed = True

    def _call(self, what: str, make: Callable[[], Awaitable[T]]) -> T:
        """Run the coroutine ``make()`` on the queue's loop and wait for it, trying again while
        the journal is unavailable."""

        def once() -> T:
            if self._closed:
                raise LostClaim("the queue is closed")
            return asyncio.run_coroutine_threadsafe(make(), self._loop).result()  # type: ignore[arg-type]

        return retry_while_unavailable(
            "the job journal", what, once, errors=(QueueUnavailable,), stopping=self._stopping
        )

    # --- WorkerSide (the worker thread) ----------------------------------------------------------

    def claim(self, wait_s: float) -> Claim | None:
        self.q.work_ready.clear()
        claim = self._call("claiming a job", lambda: self.claim_next(uuid.uuid4().hex))
        if claim is None:
            self.q.work_ready.wait(wait_s)
        return claim

    def end(self, claim: Claim) -> None:
        self.claims.pop(claim.job.id, None)

    def load_source(self, claim: Claim) -> bytes | None:
        return self.q.images.get_source(claim.job.id)

    def load_checkpoint(self, claim: Claim) -> tuple[int, bytes] | None:
        done = claim.job.steps_done
        png = self.q.images.get_step(claim.job.id, done - 1) if done else None
        return (done, png) if png is not None else None

    def started(self, claim: Claim, total_steps: int) -> None:
        event = Started(claim.job.id, total_steps)
        self._call("publishing", lambda: self.publish_for(claim, event, total_steps=total_steps))
        claim.job.total_steps = total_steps

    def prompted(self, claim: Claim, auto: AutoPrompt) -> None:
        self._call("storing the prompt", lambda: self.store_prompt(claim, auto))
        claim.job.auto_prompt = auto

    def progress(self, claim: Claim, event: Progress) -> None:
        self._call("publishing", lambda: self.publish_for(claim, event))

    def checkpoint(
        self, claim: Claim, step: int, png: bytes, width: int, height: int, *, candidates: int = 1
    ) -> None:
        self.q.images.put_step(claim.job.id, step, png)
        event = Expanded(claim.job.id, step, claim.job.total_steps, width, height, candidates=candidates)
        self._call("storing a checkpoint", lambda: self.checkpointed(claim, event))

    def store_candidate(self, claim: Claim, step: int, candidate: int, png: bytes) -> None:
        if self._call("storing a candidate", lambda: self.steps_done(claim)) <= step:
            self.q.images.put_candidate(claim.job.id, step, candidate, png)

    def candidates_stored(self, claim: Claim, step: int, wanted: int) -> int:
        count = 1
        while count < wanted and self.q.images.has_candidate(claim.job.id, step, count):
            count += 1
        return count

    def done(self, claim: Claim, step: int, width: int, height: int, *, candidates: int = 1) -> None:
        event = Done(claim.job.id, step, width, height, candidates=candidates)
        self._call("finishing a job", lambda: self.finish(claim, event))

    def cancelled(self, claim: Claim) -> None:
        self._call("finishing a job", lambda: self.finish(claim, Cancelled(claim.job.id)))

    def failed(self, claim: Claim, reason: str, *, retry: bool, detail: str = "") -> None:
        if retry:
            self._call("requeueing a job", lambda: self.requeue(claim, handed_back=False))
        else:
            event = Failed(claim.job.id, reason)
            self._call("finishing a job", lambda: self.finish(claim, event, reason))

    def release(self, claim: Claim) -> None:
        self._call("handing a job back", lambda: self.requeue(claim, handed_back=True))

    def record_step_time(self, seconds: float) -> None:
        self.q.record_step_time(seconds)

    def step_time(self) -> float | None:
        return self.q.step_time()

    # --- the transactions (on the queue's event loop) --------------------------------------------

    async def claim_next(self, token: str) -> Claim | None:
        async with self.journal.tx() as db:
            while (job_id := await self.journal.next_queued(db)) is not None:
                row = await self.journal.load(db, job_id)
                assert row is not None
                job = row.job
                await self.journal.dispatched(db, row)
                if row.cancel_requested:  # cancelled while it was running, then interrupted
                    await self.journal.finish(db, row, Cancelled(job.id))
                    continue
                if row.stalls >= self.max_deliveries:
                    log.error(
                        "job %s: stopped %d times without storing a step, giving up", job.id, row.stalls
                    )
                    await self.journal.finish(db, row, Failed(job.id, FAILED_POLITELY), FAILED_POLITELY)
                    continue
                job.attempts, row.stalls = job.attempts + 1, row.stalls + 1
                job.state, job.started_at = JobState.RUNNING, job.started_at or time.time()
                row.owner = token
                await self.journal.save(db, row)
                claim = Claim(job, token, stalls=row.stalls)
                self.claims[job.id] = claim
                return claim
        return None

    @asynccontextmanager
    async def owned(self, claim: Claim) -> AsyncIterator[tuple[aiosqlite.Connection, Row]]:
        """A write transaction on ``claim``'s job; LostClaim if the claim no longer owns it."""
        async with self.journal.tx() as db:
            row = await self.journal.load(db, claim.job.id)
            if row is None or row.owner != claim.token:
                raise LostClaim("the job was taken over or removed")
            yield db, row

    async def publish_for(self, claim: Claim, event: Event, *, total_steps: int | None = None) -> None:
        async with self.owned(claim) as (db, row):
            if total_steps is not None:
                row.job.total_steps = total_steps
                await self.journal.save(db, row)
            await self.journal.publish(db, event)
            cancel = row.cancel_requested
        if cancel:
            claim.cancel.cancel()

    async def store_prompt(self, claim: Claim, auto: AutoPrompt) -> None:
        async with self.owned(claim) as (db, row):
            if row.job.auto_prompt is None:
                row.job.auto_prompt = auto
                await self.journal.save(db, row)
                await self.journal.publish(db, Prompted(claim.job.id, auto.text, auto.reason))
            cancel = row.cancel_requested
        if cancel:
            claim.cancel.cancel()

    async def steps_done(self, claim: Claim) -> int:
        """The job's stored steps; LostClaim if the claim no longer owns it."""
        async with self.owned(claim) as (_, row):
            return row.job.steps_done

    async def checkpointed(self, claim: Claim, event: Expanded) -> None:
        first = False
        async with self.owned(claim) as (db, row):
            if row.job.steps_done < event.step:
                raise RuntimeError(f"checkpoint of step {event.step} after {row.job.steps_done} steps")
            if row.job.steps_done == event.step:
                row.job.steps_done = event.step + 1
                first = not claim.progressed
                if first:  # this delivery made progress: it gives its stall back
                    row.stalls -= 1
                await self.journal.save(db, row)
                await self.journal.publish(db, event)
        claim.job.steps_done = max(claim.job.steps_done, event.step + 1)
        if first:
            claim.stalls, claim.progressed = claim.stalls - 1, True

    async def finish(self, claim: Claim, event: Event, error: str | None = None) -> None:
        async with self.owned(claim) as (db, row):
            await self.journal.finish(db, row, event, error)

    async def requeue(self, claim: Claim, *, handed_back: bool) -> None:
        """Back to the queue: to be retried, or ``handed_back`` (the delivery does not count)."""
        async with self.owned(claim) as (db, row):
            row.job.state, row.owner = JobState.QUEUED, None
            if handed_back:
                row.job.attempts -= 1
                if not claim.progressed:
                    row.stalls -= 1
            await self.journal.save(db, row)
        self.q.work_ready.set()
