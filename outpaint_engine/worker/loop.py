"""The worker loop: the one loop that runs jobs, for both queue backends.

claim → load the source and the last checkpoint → (a job without a prompt, on an engine with a
captioner: its auto prompt, written once per job, screened by the word list, stored with the job and
published as ``Prompted``) → ``engine.run`` → store a checkpoint and publish ``Expanded`` after
every expansion step → ``Done`` → acknowledge. A step generated as several candidates (a job's
last) stores candidates 1, 2... first, then candidate 0 as its checkpoint, so a job stopped in
between generates the step again (identically) and overwrites them; the content check looks at
each candidate, and ``block`` withholds the flagged ones (the job fails only when all are flagged).
The embedded queue runs this loop
in a thread of the bot process; ``outpaint-worker`` (:mod:`outpaint_engine.worker.cli`) runs it
against a Redis queue.

Outcomes: a cancelled job publishes ``Cancelled``; a request the engine cannot do (``PlanError``,
``ImageInputError``) or a canvas the content check blocks (:mod:`outpaint_engine.safety`) fails at
once with its own sentence; anything else is logged with its
traceback and retried, unless the job has now stalled (made no progress) on ``max_deliveries``
deliveries: then it fails with a polite generic reason (Redis also moves it to the dead-letter
stream). A worker that stops hands its jobs back; the next worker continues after the last
checkpoint.

The worker's state (:class:`~outpaint_engine.worker.status.WorkerState`: idle, loading, warming,
ready, stopped) goes to its backend (:meth:`WorkerSide.worker_state`) at every change, so the bot
can tell users that their job waits for a warm-up; every job event is one log line with the job's
ids and durations (:func:`~outpaint_engine.observability.logs.job_event`), and counted in
:mod:`outpaint_engine.worker.metrics`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from outpaint_engine.api import Checkpoint, Engine, StepProgress, StepResult, auto_prompter
from outpaint_engine.imageio import ImageInputError, decode_png, encode_checkpoint_png, preview_jpeg
from outpaint_engine.job import AutoPrompt, JobCancelledError, JobSpec, Progress
from outpaint_engine.observability.logs import job_event
from outpaint_engine.observability.stages import EXPANSION_SECONDS, listening_to_load_stages
from outpaint_engine.plan import PlanError
from outpaint_engine.safety import ContentBlocked, JobReview, SafetyCheck, engine_device, mark_flagged
from outpaint_engine.worker import metrics
from outpaint_engine.worker.side import Claim, LostClaim, WorkerSide
from outpaint_engine.worker.status import WorkerState, WorkerStatus

log = logging.getLogger("outpaint.worker")

FAILED_POLITELY = "Sorry, something went wrong while extending this image. Please try again later."
SOURCE_GONE = "The source image of this job is no longer stored; please start a new one."
CHECKPOINT_GONE = "The stored steps of this job have expired; please start a new one."
NOTHING_TO_DO = "There is nothing to extend: ask for at least one expansion."
WITHHELD = "the auto prompt was withheld"
"""Why a job has no auto prompt when the operator's word list refused what the captioner wrote."""
PREVIEW_EVERY_S = 1.0
"""At most one preview image per this many seconds goes into the event journal."""

EngineFactory = Callable[[], Engine]


class Worker:
    """Runs claimed jobs on an engine created (in the serving thread) by ``engine_factory``.
    :meth:`serve` loops until :meth:`stop`. Each claim's state lives on its :class:`Claim`, so
    several threads may serve one worker: once the engine is loaded, :meth:`serve` starts
    ``engine.concurrency - 1`` more serving threads (the real engine batches their UNet steps).

    The engine loads with the first job, or when :meth:`serve` starts with ``load_at_start``."""

    def __init__(
        self,
        side: WorkerSide,
        engine_factory: EngineFactory,
        *,
        idle_wait_s: float = 1.0,
        safety: SafetyCheck | None = None,
        name: str = "worker",
        load_at_start: bool = False,
    ) -> None:
        self.side = side
        self.engine_factory = engine_factory
        self.idle_wait_s = idle_wait_s
        self.safety = safety or SafetyCheck()  # the content check; off without settings
        self.name = name
        self.load_at_start = load_at_start
        self.load_seconds: dict[str, float] = {}  # the last load's time in each stage
        self._state = WorkerState.IDLE
        self._since = time.time()
        self._entered = time.monotonic()
        self._engine: Engine | None = None
        self._stop = threading.Event()
        self._lock = threading.RLock()  # stop() may run in a signal handler on a serving thread
        self._loading = threading.Lock()  # serving threads share one engine
        self._claims: dict[str, Claim] = {}  # by claim token: the jobs being run now
        self._serving = False
        self._helpers: list[threading.Thread] = []  # the serving threads beside serve()'s own

    @property
    def status(self) -> WorkerStatus:
        return WorkerStatus(self.name, self._state, self._since)

    @property
    def running(self) -> int:
        """How many jobs the worker is running now."""
        return len(self._claims)

    def _enter(self, state: WorkerState) -> None:
        """Change state: the time spent loading or warming is kept, the backend told."""
        now = time.monotonic()
        if self._state in (WorkerState.LOADING, WorkerState.WARMING):
            self.load_seconds[str(self._state)] = now - self._entered
        self._state, self._since, self._entered = state, time.time(), now
        self.side.worker_state(self.status)

    def _on_load_stage(self, stage: str) -> None:
        if stage in (WorkerState.LOADING, WorkerState.WARMING):
            self._enter(WorkerState(stage))

    def engine(self) -> Engine:
        with self._loading:
            if self._engine is None:
                self._engine = self._load()
                self._start_helpers()
            self.safety.load(engine_device(self._engine))  # once, after the engine (its device)
            return self._engine

    def _load(self) -> Engine:
        began = time.monotonic()
        self.load_seconds = {}
        self._enter(WorkerState.LOADING)
        log.info("loading the engine")
        try:
            with listening_to_load_stages(self._on_load_stage):
                engine = self.engine_factory()
        except BaseException:
            self._enter(WorkerState.IDLE)
            raise
        self._enter(WorkerState.READY)
        took = time.monotonic() - began
        log.info("engine ready after %.1f s", took, extra={"event": "engine_ready", "load_s": round(took, 3)})
        return engine

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
        self.side.worker_state(self.status)
        if self.load_at_start:
            try:
                self.engine()
            except Exception as error:
                log.error("could not load the engine (%s); trying again when a job comes", error)
        self._start_helpers()
        self._serve()
        for thread in self._helpers:
            thread.join()
        self._enter(WorkerState.STOPPED)
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
        job_event(
            log,
            job,
            "delivered",
            "delivery %d, %d of %d allowed without progress",
            job.attempts,
            claim.stalls,
            self.side.max_deliveries,
            attempt=job.attempts,
            worker=self.name,
        )
        began = time.monotonic()

        def ended(outcome: str, message: str = "", *args: object, **fields: object) -> None:
            metrics.JOBS.labels(outcome).inc()
            run_s = time.monotonic() - began
            job_event(log, job, outcome, message, *args, run_s=run_s, worker=self.name, **fields)

        try:
            try:
                gone = self._run(claim)
            except LostClaim:  # from a write inside the engine's progress report: not its error
                raise
            except JobCancelledError:
                if claim.shutdown:
                    self.side.release(claim)
                    ended("handed_back", "handed back (worker stopping)")
                else:
                    self.side.cancelled(claim)
                    ended("cancelled")
            except (PlanError, ImageInputError, ContentBlocked) as error:
                metrics.FAILURES.labels("refused").inc()
                self.side.failed(claim, str(error), retry=False)
                ended("failed", "refused: %s", error, reason="refused")
            except Exception as error:
                retry = (
                    claim.stalls < self.side.max_deliveries
                )  # a delivery that progressed gave its stall back
                reason = type(error).__name__
                metrics.FAILURES.labels(reason).inc()
                log.exception(
                    "job %s: delivery %d failed%s", job.id, job.attempts, "; will retry" if retry else ""
                )
                detail = f"{reason}: {error}"
                self.side.failed(claim, FAILED_POLITELY, retry=retry, detail=detail)
                ended("retried" if retry else "failed", reason=reason)
            else:
                if gone is None:
                    metrics.JOB_RUN.observe(time.monotonic() - began)
                    ended("done")
                else:
                    metrics.FAILURES.labels(gone).inc()
                    ended("failed", gone.replace("_", " "), reason=gone)
        except LostClaim as lost:
            ended("lost", "no longer ours (%s)", lost)

    def _run(self, claim: Claim) -> str | None:
        """Run the job; returns why it failed when it failed without an error (its stored images
        are gone), else None."""
        job, side = claim.job, self.side
        claim.cancel.raise_if_cancelled()  # cancelled while it waited for redelivery
        source_png = side.load_source(claim)
        if source_png is None:
            side.failed(claim, SOURCE_GONE, retry=False)
            return "source_gone"
        engine = self.engine()
        claim.cancel.raise_if_cancelled()  # the worker stopped while the engine loaded
        source = decode_png(source_png)
        total = engine.plan(source.shape[1], source.shape[0], job.spec).total_steps
        if total == 0:
            raise PlanError(NOTHING_TO_DO)
        stored = side.load_checkpoint(claim)
        if stored is None and job.steps_done:
            side.failed(claim, CHECKPOINT_GONE, retry=False)
            return "checkpoint_gone"
        resume = Checkpoint(stored[0], decode_png(stored[1])) if stored else None
        review = self.safety.review(job, source_png, stored[1] if stored else None)
        review.check_start()  # a flag from the source or the checkpoint is kept
        side.started(claim, total)
        if job.attempts == 1 and not job.steps_done:  # its first delivery: the wait it saw
            wait_s = max(0.0, time.time() - job.created_at)
            metrics.QUEUE_WAIT.observe(wait_s)
            job_event(log, job, "started", "started after %.1f s in the queue", wait_s, wait_s=wait_s)
        last_step, canvas = (resume.steps_done - 1, resume.canvas) if resume else (-1, None)
        shown = 0  # candidates stored for the last step, when this delivery ran it
        if last_step < total - 1:
            spec, options = self._with_prompt(claim, engine, source)
            writer = StepWriter(lambda result: self._store_step(claim, review, result))
            report = self._reporter(claim, total, review, writer)
            began = time.monotonic()
            runs = engine.run(source, spec, resume=resume, progress=report, cancel=claim.cancel, **options)
            try:
                for result in runs:
                    engine_s = time.monotonic() - began  # the engine's time for this expansion
                    EXPANSION_SECONDS.labels("expansion").observe(engine_s)
                    writer.store(result)  # while the engine goes on with the next expansion
                    now = time.monotonic()
                    side.record_step_time(now - began)
                    began = now
                    last_step, canvas = result.step, result.canvas
                shown = writer.wait()
            except BaseException:
                writer.wait_quietly()  # an error of the engine's (or a cancel) goes first
                raise
        if canvas is None or last_step != total - 1:
            raise RuntimeError(f"the engine stopped after step {last_step} of {total}")
        if not shown:  # checkpointed by an earlier delivery
            shown = (
                side.candidates_stored(claim, last_step, job.spec.candidates)
                if job.spec.candidates > 1
                else 1
            )
        side.done(claim, last_step, canvas.shape[1], canvas.shape[0], candidates=shown)
        return None

    def _store_step(self, claim: Claim, review: JobReview, result: StepResult) -> int:
        """Store a finished expansion (after the content check): its candidates, then its
        checkpoint (which publishes it); returns how many images were stored."""
        height, width = result.canvas.shape[:2]
        pngs = _stored_pngs(review, result)
        for number, png in enumerate(pngs[1:], start=1):  # before the checkpoint: see store_candidate
            self.side.store_candidate(claim, result.step, number, png)
        self.side.checkpoint(claim, result.step, pngs[0], width, height, candidates=len(pngs))
        return len(pngs)

    def _with_prompt(self, claim: Claim, engine: Engine, source: np.ndarray) -> tuple[JobSpec, dict]:
        """The spec to run (with the auto prompt filled in) and ``run``'s extra arguments. A job
        without a prompt on an engine with a captioner is captioned here, once per job: the prompt
        (or why there is none) is stored with the job and published before the first expansion, and
        a resume or retry reuses it."""
        job, caption = claim.job, auto_prompter(engine)
        if not job.spec.prompt and job.auto_prompt is None and caption is not None:
            written = caption(source, None if job.spec.zoom else job.spec.direction)
            auto = AutoPrompt(written.text, written.reason)
            if written.text and self.safety.words.find(written.text) is not None:
                log.info("job %s: the auto prompt was withheld (the word list)", job.id)
                auto = AutoPrompt("", WITHHELD)
            self.side.prompted(claim, auto)
            claim.cancel.raise_if_cancelled()
        spec = replace(job.spec, prompt=job.prompt_in_use)
        return spec, ({"auto_prompt": False} if caption is not None else {})

    def _reporter(
        self, claim: Claim, total: int, review: JobReview, writer: StepWriter
    ) -> Callable[[StepProgress], None]:
        last_preview = 0.0

        def report(p: StepProgress) -> None:
            step_s = self.side.step_time()
            left = total - p.step - p.denoise / max(1, p.denoise_total)
            eta = None if step_s is None else max(0.0, left) * step_s

            def publish() -> None:
                nonlocal last_preview
                preview = None
                due = time.monotonic() - last_preview >= PREVIEW_EVERY_S
                if p.preview is not None and due and not review.flagged:  # a flagged job shows none
                    preview = preview_jpeg(p.preview)
                    last_preview = time.monotonic()
                event = Progress(claim.job.id, p.step, total, p.denoise, p.denoise_total, eta, preview)
                self.side.progress(claim, event)

            # After the last expansion is stored (published and checked, so a flag it raised hides
            # this preview), without holding up the engine meanwhile.
            writer.then(publish)

        return report


class StepWriter:
    """A job's side effects, in order, without holding up its engine: each finished expansion is
    stored (checked, encoded and written: a good part of a second of CPU for a 2-MP PNG) on a
    thread of its own while the engine prepares and runs the next one, and the progress news
    that comes meanwhile is published by that thread after it.

    :meth:`store`, :meth:`then` and :meth:`wait` raise the error of a failed store, so it surfaces in
    the job's own thread at its next expansion, progress report or end (the tasks queued behind
    it are dropped); :meth:`wait_quietly` is for when the job already fails for another reason.
    """

    def __init__(self, store: Callable[[StepResult], int]) -> None:
        self._store = store
        self._tasks: deque[Callable[[], None]] = deque()  # the first one is running
        self._changed = threading.Condition()
        self._error: BaseException | None = None
        self._stored = 0

    def store(self, result: StepResult) -> None:
        """Store ``result`` on the writer's thread, after everything queued before it."""

        def write() -> None:
            self._stored = self._store(result)

        self._queue(write, here_when_idle=False)

    def then(self, task: Callable[[], None]) -> None:
        """Run ``task`` after everything queued before it: now, in this thread, when nothing is."""
        self._queue(task, here_when_idle=True)

    def wait(self) -> int:
        """Wait for everything queued; raise a store's error; how many images the last store wrote."""
        with self._changed:
            self._changed.wait_for(lambda: not self._tasks)
            self._raise_error()
        return self._stored

    def wait_quietly(self) -> None:
        try:
            self.wait()
        except BaseException as error:  # the job's own error is the one reported
            log.info("a store that ended with the job failed too: %s", error)

    def _queue(self, task: Callable[[], None], *, here_when_idle: bool) -> None:
        with self._changed:
            self._raise_error()
            if self._tasks or not here_when_idle:
                self._tasks.append(task)
                if len(self._tasks) == 1:
                    name = f"{threading.current_thread().name}-store"
                    threading.Thread(target=self._drain, name=name, daemon=True).start()
                return
        task()  # nothing queued: here, now

    def _drain(self) -> None:
        """Run the queued tasks until none is left (it ends as it empties the queue, so the next
        task queued starts a new thread)."""
        with self._changed:
            task = self._tasks[0]
        while True:
            try:
                task()
            except BaseException as error:  # handed to the job's thread by its next call
                with self._changed:
                    self._error = error
                    self._tasks.clear()
                    self._changed.notify_all()
                return
            with self._changed:
                self._tasks.popleft()
                self._changed.notify_all()
                if not self._tasks:
                    return
                task = self._tasks[0]

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error


def _stored_pngs(review: JobReview, result: StepResult) -> list[bytes]:
    """The PNGs to store for a finished step, after the content check: its canvas, or (a step
    generated as several candidates) each candidate that may be shown, candidate 0 first; each
    marked when flagged."""
    if len(result.candidates) == 1:
        review.check(result.canvas, result.step)
        return [review.stamp(encode_checkpoint_png(result.canvas))]
    pngs = []
    for canvas, flagged in review.check_candidates(result.candidates, result.step):
        png = encode_checkpoint_png(canvas)
        pngs.append(mark_flagged(png) if flagged else png)
    return pngs
