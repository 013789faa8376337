"""What the worker loop needs from a queue backend: claims on jobs, and the writes made for them.

Both backends implement :class:`WorkerSide` (the embedded queue for its worker thread, Redis for
``outpaint-worker`` processes). Everything a worker holds for one job lives on its
:class:`Claim`, so one worker may hold several claims at once.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from outpaint_engine.job import AutoPrompt, CancelToken, Job, Progress
from outpaint_engine.worker.status import WorkerStatus

log = logging.getLogger("outpaint.worker")
T = TypeVar("T")

RETRY_CAP_S = 2.0
"""Longest pause between two tries of a worker's call while its backend is unavailable."""


class LostClaim(Exception):
    """The worker no longer owns the job (it was reclaimed, or the worker is stopping): stop quietly."""


@dataclass
class Claim:
    """One delivery of a job to a worker.

    ``token`` names this delivery: every write the worker makes is checked against it, so a worker
    whose job was reclaimed cannot publish or checkpoint anymore. ``cancel`` is set when the user
    cancels (or, with ``shutdown`` also set, when the worker stops and hands the job back).

    ``stalls`` counts the job's deliveries that made no progress, this one included: when it
    stores its first new checkpoint the backend gives its stall back (``progressed``). A job is
    failed for good (Redis: dead-lettered) once it stalled ``max_deliveries`` times, so a job
    that dies on every attempt but gets further each time still finishes.
    """

    job: Job
    token: str
    stalls: int = 1
    cancel: CancelToken = field(default_factory=CancelToken)
    shutdown: bool = False
    progressed: bool = False


class WorkerSide(ABC):
    """What the shared worker loop (:class:`outpaint_engine.worker.Worker`) needs from a backend.

    Blocking methods, called from the worker's thread (embedded) or process (Redis). Methods that
    write for a claim raise :class:`LostClaim` when the claim is no longer the job's owner. While
    the backend is unavailable they retry (each try bounded by ``OUTPAINT_QUEUE_TIMEOUT_S``) until
    it answers or the worker stops.
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
    def prompted(self, claim: Claim, auto: AutoPrompt) -> None:
        """Store the job's auto prompt with it and publish ``Prompted``, unless one is stored
        already (a write sent twice); sets ``claim.job.auto_prompt`` and, when the job's cancel
        flag is up, ``claim.cancel``."""

    @abstractmethod
    def progress(self, claim: Claim, event: Progress) -> None:
        """Publish ``event``; sets ``claim.cancel`` when the job's cancel flag is up."""

    @abstractmethod
    def checkpoint(
        self, claim: Claim, step: int, png: bytes, width: int, height: int, *, candidates: int = 1
    ) -> None:
        """Store the canvas after ``step`` under (job, step), then publish ``Expanded`` (saying the
        step has ``candidates`` stored); the first new one of the delivery gives its stall back
        (see :class:`Claim`)."""

    @abstractmethod
    def store_candidate(self, claim: Claim, step: int, candidate: int, png: bytes) -> None:
        """Store candidate ``candidate`` (1 or more: candidate 0 is the step's checkpoint) of
        ``step`` under (job, step, candidate), with the job's other images' lifetime. Called before
        the step's checkpoint: a job stopped in between generates the step again and stores the
        same pixels under the same keys. Does nothing once the step is checkpointed."""

    @abstractmethod
    def candidates_stored(self, claim: Claim, step: int, wanted: int) -> int:
        """How many candidates of the checkpointed ``step`` are stored: 1 (the checkpoint) plus
        the candidates 1, 2... up to ``wanted`` - 1 found in a row."""

    @abstractmethod
    def done(self, claim: Claim, step: int, width: int, height: int, *, candidates: int = 1) -> None:
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
        """Hand the job back to the queue (the worker is stopping); the delivery does not count."""

    @abstractmethod
    def record_step_time(self, seconds: float) -> None:
        """One expansion step took ``seconds``: feeds the ETA's moving average."""

    @abstractmethod
    def step_time(self) -> float | None:
        """Moving average of seconds per expansion step, None before any was measured."""

    def worker_state(self, status: WorkerStatus) -> None:  # noqa: B027 - optional, a no-op by default
        """The worker's state changed (loading, warming, ready...): a backend whose bot cannot see
        the worker directly records it (Redis: with a TTL that its heartbeat refreshes). Must not
        block on the backend."""


def retry_while_unavailable(
    backend: str,
    what: str,
    call: Callable[[], T],
    *,
    errors: tuple[type[BaseException], ...],
    stopping: threading.Event,
) -> T:
    """``call()``, tried again with a growing pause while it raises one of ``errors`` (the backend
    is unreachable or did not answer in time), until it succeeds; :class:`LostClaim` once
    ``stopping`` is set, so a worker that is asked to stop during an outage stops."""
    delay = 0.05
    while True:
        try:
            return call()
        except errors as error:
            if stopping.is_set():
                raise LostClaim(f"stopping while {backend} is unavailable") from error
            log.warning("%s unavailable while %s (%s); retrying in %.2f s", backend, what, error, delay)
        stopping.wait(delay)
        delay = min(2 * delay, RETRY_CAP_S)
