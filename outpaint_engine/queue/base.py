"""The job queue: the one seam between the bot and the GPU workers.

Two backends implement :class:`JobQueue` and pass the same contract suite
(``tests/queue/test_queue_contract.py``): ``embedded`` (SQLite journal, worker thread in the bot
process) and ``redis`` (Redis Streams, any number of ``outpaint-worker`` processes).

Jobs may run more than once. Each finished expansion step is checkpointed under (job id, step)
before its ``Expanded`` event is published; a redelivered or resumed job continues after its last
checkpoint, so no finished step is lost or recomputed and the final ``Done`` is published once.
Workers see a backend through :class:`outpaint_engine.worker.WorkerSide`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from outpaint_engine.job import Event, Job, JobState
from outpaint_engine.worker.status import WorkerStatus

if TYPE_CHECKING:
    from outpaint_engine.worker import Worker


class QueueError(Exception):
    """A queue operation that cannot be done; the message is fit to show a user or operator."""


class QueueUnavailable(QueueError):
    """The queue's backend cannot be reached (or did not answer in time). Transient: the caller
    may try again later; a follower of ``events`` resubscribes with the last sequence it saw.

    A write that raised it may still take effect once the backend answers again (a frozen Redis
    runs the commands it had received): ``submit`` is safe to send again with the same job id
    (:class:`JobExists` then means it landed); ``cancel`` and ``retry`` are safe to repeat."""


class JobExists(QueueError):
    """``submit`` of a job id the queue already has (a re-sent submit that had landed)."""


@dataclass(frozen=True)
class QueueDepth:
    queued: int
    running: int


class JobQueue(ABC):
    """Bot-facing (and operator-facing) side of the queue.

    No method waits on an unresponsive backend: each raises :class:`QueueUnavailable` once the
    backend has not answered within ``OUTPAINT_QUEUE_TIMEOUT_S`` (a following ``events`` waits
    for new events in longer blocking reads, and allows that timeout on top of them).
    """

    async def __aenter__(self) -> JobQueue:
        try:
            await self.start()
        except BaseException:
            await self.close()  # what start() opened (the SQLite thread would keep the process alive)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @abstractmethod
    async def start(self) -> None:
        """Connect / open the journal; the embedded backend also starts its worker and resumes
        unfinished jobs."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def submit(self, job: Job, source_png: bytes) -> Job:
        """Store the source image and enqueue ``job`` (state queued); publishes ``Queued``."""

    @abstractmethod
    async def get(self, job_id: str) -> Job | None: ...

    @abstractmethod
    async def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued or running job (a running one stops within one denoising step).

        Returns the job (its state may still be ``running`` until the worker stops), or None if it
        does not exist. Cancelling a finished job is a no-op that returns it unchanged.
        """

    @abstractmethod
    async def list_jobs(
        self,
        *,
        user_id: int | None = None,
        guild_id: int | None = None,
        states: Iterable[JobState] | None = None,
        limit: int = 100,
    ) -> list[Job]:
        """Jobs, newest first, filtered by owner and state."""

    @abstractmethod
    def events(self, job_id: str, *, after: int = 0) -> AsyncIterator[tuple[int, Event]]:
        """Replay the job's events with sequence number > ``after``, then follow new ones.

        Sequence numbers start at 1 and increase. The iterator ends after a terminal event
        (``Done``, ``Failed``, ``Cancelled``), unless an operator's retry already followed it. A
        subscriber that restarts passes the last sequence number it handled. Raises
        :class:`QueueError` (on the first iteration) for an unknown job, and
        :class:`QueueUnavailable` when the backend cannot be reached: the caller resubscribes with
        ``after`` set to the last sequence number it handled.
        """

    @abstractmethod
    async def get_canvas(self, job_id: str, step: int) -> bytes | None:
        """The PNG of the canvas checkpointed after expansion step ``step``, if still stored."""

    @abstractmethod
    async def get_candidate(self, job_id: str, step: int, candidate: int) -> bytes | None:
        """The PNG of candidate ``candidate`` of step ``step`` (0 is the step's canvas, as
        ``get_canvas``), if still stored: a step generated as several candidates says how many in
        its ``Expanded`` and ``Done`` events; they are kept as long as the job's other images."""

    @abstractmethod
    async def get_source(self, job_id: str) -> bytes | None:
        """The PNG of the job's source image, if still stored."""

    @abstractmethod
    async def position(self, job_id: str) -> int | None:
        """1-based place among queued jobs in dispatch order (fair order), None if not queued."""

    @abstractmethod
    async def eta(self, job_id: str) -> float | None:
        """Estimated seconds until the job finishes, from recent step timings; None if unknown."""

    # --- operator -------------------------------------------------------------------------------

    @abstractmethod
    async def depth(self) -> QueueDepth:
        """How many jobs are queued and running now (cheap: metrics and health checks ask often)."""

    @abstractmethod
    async def workers(self) -> list[WorkerStatus]:
        """The live workers and their state (loading, warming, ready...): the embedded worker
        thread, or the Redis workers whose last report has not expired."""

    def local_worker(self) -> Worker | None:
        """The worker running inside this process (the embedded queue's), for its metrics."""
        return None

    @abstractmethod
    async def retry(self, job_id: str) -> Job:
        """Requeue a failed or cancelled job; it continues after its last checkpoint."""

    @abstractmethod
    async def purge(self, *, older_than_s: float) -> int:
        """Forget finished jobs (and their images) older than the given age; returns how many."""
