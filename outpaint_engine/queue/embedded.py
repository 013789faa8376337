"""The embedded queue (default): one machine, no server.

Jobs and their events are journaled in SQLite (:mod:`outpaint_engine.queue.journal`); images are
files under ``data_dir/jobs/<job id>/``. The GPU work runs in one worker thread of the bot process
(the shared loop of :mod:`outpaint_engine.worker`), never on the event loop; its engine is created
in that thread by the ``engine_factory`` given to the queue: on the first job, so the bot starts
fast, or as soon as the queue starts with ``load_engine_at_start`` (``outpaint-bot``: a compiled
engine warms up before the first job comes, and waiting jobs say so). The thread talks to the
journal through the event loop (:mod:`outpaint_engine.queue.embedded_worker`).

On start, jobs left running by a previous process go back to the queue and continue after their
last checkpoint; :meth:`EmbeddedQueue.close` hands the running job back first (after the current
denoising step). A delivery that stores no new expansion counts as a stall; after
``max_deliveries`` stalls (a job that kills the bot every time) the job fails. While it runs, the
queue forgets jobs that finished more than ``result_ttl_s`` ago, with their images (every
:data:`PURGE_EVERY_S`), as the Redis backend lets them expire. A queue opened without an engine
factory (the operator command) runs no worker, purges nothing on its own and leaves running jobs
alone; a cancel it writes reaches the bot's worker through the journal at its next denoising step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import suppress

from outpaint_engine.job import Cancelled, Event, Job, JobState
from outpaint_engine.queue import fair
from outpaint_engine.queue.base import JobExists, JobQueue, QueueDepth, QueueError
from outpaint_engine.queue.embedded_worker import EmbeddedWorkerSide
from outpaint_engine.queue.journal import Journal, Row
from outpaint_engine.safety import SafetyCheck
from outpaint_engine.settings import QueueSettings
from outpaint_engine.store import FileImageStore, check_job_id, is_job_id
from outpaint_engine.worker import EngineFactory, LostClaim, Worker, WorkerState, WorkerStatus

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 60.0
"""How long :meth:`EmbeddedQueue.close` waits for the worker thread to hand its job back."""
LOADING_JOIN_S = 1.0
"""How long it waits for a worker thread that holds no job and is still loading its engine."""
PURGE_EVERY_S = 3600.0
"""How often the bot's queue forgets jobs that finished more than ``result_ttl_s`` ago."""


class EmbeddedQueue(JobQueue):
    """SQLite-journaled queue with an in-process worker thread.

    ``engine_factory`` makes the engine, in the worker thread, when the first job comes (again on
    the next job if it failed), or at start with ``load_engine_at_start``; without it the queue
    runs no worker (operator use). ``poll_s`` bounds how late a change written by another process
    (the operator command) is noticed. ``safety`` is the worker's content check
    (:mod:`outpaint_engine.safety`; none by default).
    """

    def __init__(
        self,
        settings: QueueSettings,
        *,
        engine_factory: EngineFactory | None = None,
        load_engine_at_start: bool = False,
        poll_s: float = 1.0,
        safety: SafetyCheck | None = None,
    ) -> None:
        self.settings = settings
        self.safety = safety
        self._load_engine_at_start = load_engine_at_start
        self.journal = Journal(settings.data_dir / "queue.sqlite3", timeout_s=settings.queue_timeout_s)
        self.images = FileImageStore(settings.data_dir / "jobs")
        self._engine_factory = engine_factory
        self._poll_s = poll_s
        self.work_ready = threading.Event()  # set when a job may have become claimable
        self._timings: deque[float] = deque(maxlen=fair.RECENT_STEPS)
        self._timings_lock = threading.Lock()
        self._side: EmbeddedWorkerSide | None = None
        self._worker: Worker | None = None
        self._thread: threading.Thread | None = None
        self._purger: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.journal.open()
        if self._engine_factory is None:
            return
        await self._requeue_interrupted()
        self._side = EmbeddedWorkerSide(self, asyncio.get_running_loop())
        self._worker = Worker(
            self._side,
            self._engine_factory,
            idle_wait_s=self._poll_s,
            name="embedded",
            load_at_start=self._load_engine_at_start,
            safety=self.safety,
        )
        self._thread = threading.Thread(target=self._worker.serve, name="outpaint-worker", daemon=True)
        self._thread.start()
        self._purger = asyncio.create_task(self._purge_regularly(), name="outpaint-queue-purge")

    async def close(self) -> None:
        """Stop the worker after its current denoising step, hand its job back, close the journal.

        A job the worker thread still holds after :data:`JOIN_TIMEOUT_S` (an engine still loading)
        is handed back from here, so a clean stop never counts as a delivery. A thread that holds
        no job while its engine loads (at start) is not waited for."""
        self._closing.set()
        if self._purger is not None:
            await self._purger  # a purge under way finishes (its images too)
        if self._worker is not None and self._side is not None and self._thread is not None:
            self._side.stopping()
            self._worker.stop()
            self.work_ready.set()
            state = self._worker.status.state
            loading = state in (WorkerState.LOADING, WorkerState.WARMING) and not self._worker.running
            await asyncio.to_thread(self._thread.join, LOADING_JOIN_S if loading else JOIN_TIMEOUT_S)
            if self._thread.is_alive():
                if not loading:
                    log.warning(
                        "the worker thread did not stop within %.0f s; handing its job back", JOIN_TIMEOUT_S
                    )
                for claim in list(self._side.claims.values()):
                    with suppress(LostClaim, QueueError):
                        await self._side.requeue(claim, handed_back=True)
            self._side.closed()
        await self.journal.close()

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
        async with self.journal.tx() as db:
            for job_id in await self.journal.ids_in_state(db, JobState.RUNNING):
                row = await self.journal.load(db, job_id)
                assert row is not None
                log.info("job %s was interrupted after %d steps; it will resume", job_id, row.job.steps_done)
                row.job.state, row.owner = JobState.QUEUED, None
                await self.journal.save(db, row)
        self.work_ready.set()

    # --- bot side --------------------------------------------------------------------------------

    async def submit(self, job: Job, source_png: bytes) -> Job:
        check_job_id(job.id)
        job.state, job.steps_done, job.attempts = JobState.QUEUED, 0, 0
        job.started_at = job.finished_at = job.error = None
        async with self.journal.tx() as db:
            if await self.journal.load(db, job.id) is not None:
                raise JobExists(f"Job {job.id} already exists.")
            await asyncio.to_thread(self.images.put_source, job.id, source_png)
            row = Row(job, *await self.journal.new_key(db, job.user_id))
            await self.journal.insert(db, row)
            await self.journal.announce(db, row, self.step_time())
        self.work_ready.set()
        return job

    async def get(self, job_id: str) -> Job | None:
        return await self.journal.get(job_id) if is_job_id(job_id) else None

    async def cancel(self, job_id: str) -> Job | None:
        if not is_job_id(job_id):
            return None
        async with self.journal.tx() as db:
            row = await self.journal.load(db, job_id)
            if row is None:
                return None
            if row.job.state is JobState.QUEUED:
                await self.journal.finish(db, row, Cancelled(job_id))
            elif row.job.state is JobState.RUNNING:
                row.cancel_requested = True
                await self.journal.save(db, row)
        claim = self._side.claims.get(job_id) if self._side is not None else None
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
        wanted = None if states is None else [str(JobState(s)) for s in states]
        if wanted == []:
            return []
        return await self.journal.list_jobs(user_id=user_id, guild_id=guild_id, states=wanted, limit=limit)

    async def events(self, job_id: str, *, after: int = 0) -> AsyncIterator[tuple[int, Event]]:
        if await self.get(job_id) is None:
            raise QueueError(f"There is no job {job_id}.")
        last = after
        while True:
            changed = self.journal.changed()
            events = await self.journal.events_after(job_id, last)
            for last, event in events:
                yield last, event
            if events and events[-1][1].terminal:
                if not await self.journal.has_events_after(job_id, last):
                    return  # a terminal event ends the stream unless a retry followed it
            elif not events:
                with suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), self._poll_s)

    async def get_canvas(self, job_id: str, step: int) -> bytes | None:
        if not is_job_id(job_id):
            return None
        return await asyncio.to_thread(self.images.get_step, job_id, step)

    async def get_candidate(self, job_id: str, step: int, candidate: int) -> bytes | None:
        if not is_job_id(job_id):
            return None
        return await asyncio.to_thread(self.images.get_candidate, job_id, step, candidate)

    async def get_source(self, job_id: str) -> bytes | None:
        if not is_job_id(job_id):
            return None
        return await asyncio.to_thread(self.images.get_source, job_id)

    async def position(self, job_id: str) -> int | None:
        if not is_job_id(job_id):
            return None
        async with self.journal.read() as db:
            row = await self.journal.load(db, job_id)
            if row is None or row.job.state is not JobState.QUEUED:
                return None
            return len(await self.journal.ahead(db, row)) + 1

    async def eta(self, job_id: str) -> float | None:
        if not is_job_id(job_id):
            return None
        async with self.journal.read() as db:
            row = await self.journal.load(db, job_id)
            return None if row is None else await self.journal.eta(db, row, self.step_time())

    # --- operator --------------------------------------------------------------------------------

    async def depth(self) -> QueueDepth:
        counts = dict(await self.journal.count_by_state((JobState.QUEUED, JobState.RUNNING)))
        return QueueDepth(counts.get(JobState.QUEUED, 0), counts.get(JobState.RUNNING, 0))

    async def workers(self) -> list[WorkerStatus]:
        return [self._worker.status] if self._worker is not None else []

    def local_worker(self) -> Worker | None:
        return self._worker

    async def retry(self, job_id: str) -> Job:
        check_job_id(job_id)
        async with self.journal.tx() as db:
            row = await self.journal.load(db, job_id)
            if row is None:
                raise QueueError(f"There is no job {job_id}.")
            if row.job.state not in (JobState.FAILED, JobState.CANCELLED):
                raise QueueError(
                    f"Job {job_id} is {row.job.state}; only failed or cancelled jobs can be retried."
                )
            job = row.job
            job.state, job.attempts, job.error, job.finished_at = JobState.QUEUED, 0, None, None
            row.round, row.seq = await self.journal.new_key(db, job.user_id)
            row.owner, row.cancel_requested, row.stalls = None, False, 0
            await self.journal.save(db, row)
            await self.journal.announce(db, row, self.step_time())
        self.work_ready.set()
        return job

    async def purge(self, *, older_than_s: float) -> int:
        async with self.journal.tx() as db:
            ids = await self.journal.delete_finished_before(db, time.time() - older_than_s)
        for job_id in ids:
            await asyncio.to_thread(self.images.delete, job_id)
        return len(ids)

    def record_step_time(self, seconds: float) -> None:
        with self._timings_lock:
            self._timings.append(seconds)

    def step_time(self) -> float | None:
        with self._timings_lock:
            return fair.moving_average(self._timings)
