"""The job queue: the one seam between the bot and the GPU workers.

Two backends implement :class:`JobQueue` and pass the same contract suite
(``tests/queue/test_queue_contract.py``): ``embedded`` (SQLite journal, worker thread in the bot
process) and ``redis`` (Redis Streams, any number of ``outpaint-worker`` processes).

Jobs may run more than once. Each finished expansion step is checkpointed under (job id, step)
before its ``Expanded`` event is published; a redelivered or resumed job continues after its last
checkpoint, so no finished step is lost or recomputed and the final ``Done`` is published once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

from outpaint_engine.job import CancelToken, Event, Job, JobState, Progress


class QueueError(Exception):
    """A queue operation that cannot be done; the message is fit to show a user or operator."""


class QueueUnavailable(QueueError):
    """The queue's backend cannot be reached (or did not answer in time). Transient: the caller
    may try again later; a follower of ``events`` resubscribes with the last sequence it saw."""


class LostClaim(Exception):
    """The worker no longer owns the job (it was reclaimed, or the worker is stopping): stop quietly."""


class JobQueue(ABC):
    """Bot-facing (and operator-facing) side of the queue."""

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
    async def retry(self, job_id: str) -> Job:
        """Requeue a failed or cancelled job; it continues after its last checkpoint."""

    @abstractmethod
    async def purge(self, *, older_than_s: float) -> int:
        """Forget finished jobs (and their images) older than the given age; returns how many."""


# --- worker side ---------------------------------------------------------------------------------


@dataclass
class Claim:
    """One delivery of a job to a worker.

    ``token`` names this delivery: every write the worker makes is checked against it, so a worker
    whose job was reclaimed cannot publish or checkpoint anymore. ``cancel`` is set when the user
    cancels (or, with ``shutdown`` also set, when the worker stops and hands the job back).
    """

    job: Job
    token: str
    cancel: CancelToken = field(default_factory=CancelToken)
    shutdown: bool = False


class WorkerSide(ABC):
    """What the shared worker loop (:mod:`outpaint_engine.worker`) needs from a backend.

    Blocking methods, called from the worker's thread (embedded) or process (Redis). Methods that
    write for a claim raise :class:`LostClaim` when the claim is no longer the job's owner.
    """

    max_deliveries: int

    @abstractmethod
    def claim(self, wait_s: float) -> Claim | None:
        """The next job in fair order (a reclaimed one first), or None after waiting ``wait_s``."""

    @abstractmethod
    def end(self, claim: Claim) -> None:
        """The worker is done with ``claim`` (whatever the outcome): stop its heartbeat."""

    @abstractmethod
    def load_source(self, claim: Claim) -> bytes | None: ...

    @abstractmethod
    def load_checkpoint(self, claim: Claim) -> tuple[int, bytes] | None:
        """``(steps_done, canvas PNG)`` of the job's last checkpoint, None if it has none."""

    @abstractmethod
    def started(self, claim: Claim, total_steps: int) -> None:
        """Record the planned step count and publish ``Started``."""

    @abstractmethod
    def progress(self, claim: Claim, event: Progress) -> None:
        """Publish ``event``; sets ``claim.cancel`` when the job's cancel flag is up."""

    @abstractmethod
    def checkpoint(self, claim: Claim, step: int, png: bytes, width: int, height: int) -> None:
        """Store the canvas after ``step`` under (job, step), then publish ``Expanded``."""

    @abstractmethod
    def done(self, claim: Claim, step: int, width: int, height: int) -> None:
        """Publish ``Done`` (once per job) and acknowledge the delivery."""

    @abstractmethod
    def cancelled(self, claim: Claim) -> None:
        """Publish ``Cancelled`` and acknowledge."""

    @abstractmethod
    def failed(self, claim: Claim, reason: str, *, retry: bool, detail: str = "") -> None:
        """Retry later (``retry``) or fail the job with ``reason`` (a sentence for the user);
        ``detail`` is for the operator (the dead-letter entry, logs)."""

    @abstractmethod
    def release(self, claim: Claim) -> None:
        """Hand the job back to the queue (the worker is stopping); the attempt does not count."""

    @abstractmethod
    def record_step_time(self, seconds: float) -> None:
        """One expansion step took ``seconds``: feeds the ETA's moving average."""

    @abstractmethod
    def step_time(self) -> float | None:
        """Moving average of seconds per expansion step, None before any was measured."""
