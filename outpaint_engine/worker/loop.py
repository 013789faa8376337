"""The worker loop: the one loop that runs jobs, for both queue backends.

claim → load the source and the last checkpoint → ``engine.run`` → store a checkpoint and publish
``Expanded`` after every expansion step → ``Done`` → acknowledge. The embedded queue runs this loop
in a thread of the bot process; ``outpaint-worker`` (:mod:`outpaint_engine.worker.cli`) runs it
against a Redis queue.

Outcomes: a cancelled job publishes ``Cancelled``; a request the engine cannot do (``PlanError``,
``ImageInputError``) or a canvas the content check blocks (:mod:`outpaint_engine.safety`) fails at
once with its own sentence; anything else is logged with its traceback and retried, unless the job
has now stalled (made no progress) on ``max_deliveries`` deliveries: then it fails with a polite
generic reason (Redis also moves it to the dead-letter stream). A worker that stops hands its jobs
back; the next worker continues after the last checkpoint.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from outpaint_engine.api import Checkpoint, Engine, StepProgress
from outpaint_engine.imageio import ImageInputError, decode_png, encode_png, preview_jpeg
from outpaint_engine.job import JobCancelledError, Progress
from outpaint_engine.plan import PlanError
from outpaint_engine.safety import ContentBlocked, JobReview, SafetyCheck, engine_device
from outpaint_engine.worker.side import Claim, LostClaim, WorkerSide

log = logging.getLogger("outpaint.worker")

FAILED_POLITELY = "Sorry, something went wrong while extending this image. Please try again later."
SOURCE_GONE = "The source image of this job is no longer stored; please start a new one."
CHECKPOINT_GONE = "The stored steps of this job have expired; please start a new one."
NOTHING_TO_DO = "There is nothing to extend: ask for at least one expansion."
CHECKPOINT_PNG_LEVEL = 1
"""Checkpoints are written after every step: zlib level 1 is several times faster than 6."""
PREVIEW_EVERY_S = 1.0
"""At most one preview image per this many seconds goes into the event journal."""

EngineFactory = Callable[[], Engine]


class Worker:
    """Runs claimed jobs on an engine created (in the serving thread) by ``engine_factory``.
    :meth:`serve` loops until :meth:`stop`. Each claim's state lives on its :class:`Claim`, so
    several threads may serve one worker: once the engine is loaded, :meth:`serve` starts
    ``engine.concurrency - 1`` more serving threads (the real engine batches their UNet steps)."""

    def __init__(
        self,
        side: WorkerSide,
        engine_factory: EngineFactory,
        *,
        idle_wait_s: float = 1.0,
        safety: SafetyCheck | None = None,
    ) -> None:
        self.side = side
        self.engine_factory = engine_factory
        self.idle_wait_s = idle_wait_s
        self.safety = safety or SafetyCheck()  # the content check; off without settings
        self._engine: Engine | None = None
        self._stop = threading.Event()
        self._lock = threading.RLock()  # stop() may run in a signal handler on a serving thread
        self._loading = threading.Lock()  # serving threads share one engine
        self._claims: dict[str, Claim] = {}  # by claim token: the jobs being run now
        self._serving = False
        self._helpers: list[threading.Thread] = []  # the serving threads beside serve()'s own

    def engine(self) -> Engine:
        with self._loading:
            if self._engine is None:
                log.info("loading the engine")
                self._engine = self.engine_factory()
                self._start_helpers()
            self.safety.load(engine_device(self._engine))  # once, after the engine (its device)
            return self._engine

    def _start_helpers(self) -> None:
        """Serve ``engine.concurrency`` jobs at once: start the missing serving threads (once the
        engine is loaded and :meth:`serve` runs)."""
        with self._lock:
            if not self._serving or self._engine is None or self._helpers or self._stop.is_set():
                return
            slots = max(1, int(getattr(self._engine, "concurrency", 1)))
            for index in range(2, slots + 1):
                thread = threading.Thread(target=self._serve, name=f"outpaint-worker-{index}", daemon=True)
                self._helpers.append(thread)
                thread.start()
            if slots > 1:
                log.info("serving %d jobs at once", slots)

    def stop(self) -> None:
        """Stop after the current denoising step; running jobs go back to the queue."""
        with self._lock:
            self._stop.set()
            for claim in self._claims.values():
                self._hand_back(claim)

    @staticmethod
    def _hand_back(claim: Claim) -> None:
        claim.shutdown = True
        claim.cancel.cancel()

    def serve(self) -> None:
        """Serve until :meth:`stop`, with the helper threads once the engine is loaded; returns
        when every serving thread has handed back or finished its job."""
        with self._lock:
            self._serving = True
        self._start_helpers()
        self._serve()
        for thread in self._helpers:
            thread.join()
        log.info("worker stopped")

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                claim = self.side.claim(self.idle_wait_s)
            except LostClaim:
                break
            except Exception:
                log.exception("could not claim a job")
                self._stop.wait(self.idle_wait_s)
                continue
            if claim is None:
                continue
            with self._lock:
                self._claims[claim.token] = claim
                if self._stop.is_set():
                    self._hand_back(claim)
            try:
                self.run(claim)
            except Exception:  # the queue itself failed us: the delivery is retried or reclaimed
                log.exception("job %s: could not record its outcome", claim.job.id)
            finally:
                with self._lock:
                    del self._claims[claim.token]
                self.side.end(claim)

    def run(self, claim: Claim) -> None:
        """Run one claimed job to an outcome (or hand it back)."""
        job = claim.job
        log.info(
            "job %s: delivery %d, %d of %d allowed without progress",
            job.id,
            job.attempts,
            claim.stalls,
            self.side.max_deliveries,
        )
        try:
            try:
                self._run(claim)
            except LostClaim:  # from a write inside the engine's progress report: not its error
                raise
            except JobCancelledError:
                if claim.shutdown:
                    log.info("job %s: handed back (worker stopping)", job.id)
                    self.side.release(claim)
                else:
                    log.info("job %s: cancelled", job.id)
                    self.side.cancelled(claim)
            except (PlanError, ImageInputError, ContentBlocked) as error:
                log.info("job %s: refused: %s", job.id, error)
                self.side.failed(claim, str(error), retry=False)
            except Exception as error:
                retry = (
                    claim.stalls < self.side.max_deliveries
                )  # a delivery that progressed gave its stall back
                log.exception(
                    "job %s: delivery %d failed%s", job.id, job.attempts, "; will retry" if retry else ""
                )
                detail = f"{type(error).__name__}: {error}"
                self.side.failed(claim, FAILED_POLITELY, retry=retry, detail=detail)
        except LostClaim as lost:
            log.info("job %s: no longer ours (%s)", job.id, lost)

    def _run(self, claim: Claim) -> None:
        job, side = claim.job, self.side
        claim.cancel.raise_if_cancelled()  # cancelled while it waited for redelivery
        source_png = side.load_source(claim)
        if source_png is None:
            side.failed(claim, SOURCE_GONE, retry=False)
            return
        engine = self.engine()
        claim.cancel.raise_if_cancelled()  # the worker stopped while the engine loaded
        source = decode_png(source_png)
        total = engine.plan(source.shape[1], source.shape[0], job.spec).total_steps
        if total == 0:
            raise PlanError(NOTHING_TO_DO)
        stored = side.load_checkpoint(claim)
        if stored is None and job.steps_done:
            side.failed(claim, CHECKPOINT_GONE, retry=False)
            return
        resume = Checkpoint(stored[0], decode_png(stored[1])) if stored else None
        review = self.safety.review(job, source_png, stored[1] if stored else None)
        review.check_start()  # a flag from the source or the checkpoint is kept
        side.started(claim, total)
        last_step, canvas = (resume.steps_done - 1, resume.canvas) if resume else (-1, None)
        if last_step < total - 1:
            report = self._reporter(claim, total, review)
            began = time.monotonic()
            for result in engine.run(source, job.spec, resume=resume, progress=report, cancel=claim.cancel):
                height, width = result.canvas.shape[:2]
                review.check(result.canvas, result.step)
                png = review.stamp(encode_png(result.canvas, compress_level=CHECKPOINT_PNG_LEVEL))
                side.checkpoint(claim, result.step, png, width, height)
                now = time.monotonic()
                side.record_step_time(now - began)
                began = now
                last_step, canvas = result.step, result.canvas
        if canvas is None or last_step != total - 1:
            raise RuntimeError(f"the engine stopped after step {last_step} of {total}")
        side.done(claim, last_step, canvas.shape[1], canvas.shape[0])
        log.info("job %s: done", job.id)

    def _reporter(self, claim: Claim, total: int, review: JobReview) -> Callable[[StepProgress], None]:
        last_preview = 0.0

        def report(p: StepProgress) -> None:
            nonlocal last_preview
            preview = None
            due = time.monotonic() - last_preview >= PREVIEW_EVERY_S
            if p.preview is not None and due and not review.flagged:  # a flagged job shows none
                preview = preview_jpeg(p.preview)
                last_preview = time.monotonic()
            step_s = self.side.step_time()
            left = total - p.step - p.denoise / max(1, p.denoise_total)
            eta = None if step_s is None else max(0.0, left) * step_s
            event = Progress(claim.job.id, p.step, total, p.denoise, p.denoise_total, eta, preview)
            self.side.progress(claim, event)

        return report
