"""The worker: the one loop that runs jobs, for both queue backends, and ``outpaint-worker``.

claim → load the source and the last checkpoint → ``engine.run`` → store a checkpoint and publish
``Expanded`` after every expansion step → ``Done`` → acknowledge. The embedded queue runs this loop
in a thread of the bot process; ``outpaint-worker`` runs it against a Redis queue, one job at a
time (one worker per GPU).

Outcomes: a cancelled job publishes ``Cancelled``; a request the engine cannot do (``PlanError``,
``ImageInputError``) fails at once with the engine's own sentence; anything else is logged with its
traceback and retried until the job has been delivered ``max_deliveries`` times, then fails with a
polite generic reason (Redis also moves it to the dead-letter stream). A worker that stops hands
its job back; the next worker continues after the last checkpoint.

A worker reads only ``OUTPAINT_*`` settings (queue and engine): the bot's Discord token never
reaches it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable

from pydantic import ValidationError

from outpaint_engine.api import Checkpoint, Engine, StepProgress
from outpaint_engine.imageio import ImageInputError, decode_png, encode_png, preview_jpeg
from outpaint_engine.job import JobCancelledError, Progress
from outpaint_engine.plan import PlanError
from outpaint_engine.queue import REDIS_SCHEMES
from outpaint_engine.queue.base import Claim, LostClaim, QueueError, WorkerSide
from outpaint_engine.settings import EngineSettings, QueueSettings, describe_setting_error

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
    """Runs claimed jobs one at a time on an engine created (in the worker's thread) by
    ``engine_factory``. :meth:`serve` loops until :meth:`stop`."""

    def __init__(self, side: WorkerSide, engine_factory: EngineFactory, *, idle_wait_s: float = 1.0) -> None:
        self.side = side
        self.engine_factory = engine_factory
        self.idle_wait_s = idle_wait_s
        self._engine: Engine | None = None
        self._stop = threading.Event()
        self._lock = threading.RLock()  # stop() may run in a signal handler on the serving thread
        self._current: Claim | None = None

    def engine(self) -> Engine:
        if self._engine is None:
            log.info("loading the engine")
            self._engine = self.engine_factory()
        return self._engine

    def stop(self) -> None:
        """Stop after the current denoising step; the running job goes back to the queue."""
        with self._lock:
            self._stop.set()
            if self._current is not None:
                self._current.shutdown = True
                self._current.cancel.cancel()

    def serve(self) -> None:
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
                self._current = claim
                if self._stop.is_set():
                    claim.shutdown = True
                    claim.cancel.cancel()
            try:
                self.run(claim)
            except Exception:  # the queue itself failed us: the delivery is retried or reclaimed
                log.exception("job %s: could not record its outcome", claim.job.id)
            finally:
                with self._lock:
                    self._current = None
                self.side.end(claim)
        log.info("worker stopped")

    def run(self, claim: Claim) -> None:
        """Run one claimed job to an outcome (or hand it back)."""
        job = claim.job
        log.info("job %s: attempt %d of %d", job.id, job.attempts, self.side.max_deliveries)
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
            except (PlanError, ImageInputError) as error:
                log.info("job %s: refused: %s", job.id, error)
                self.side.failed(claim, str(error), retry=False)
            except Exception as error:
                retry = job.attempts < self.side.max_deliveries
                log.exception(
                    "job %s: attempt %d failed%s", job.id, job.attempts, "; will retry" if retry else ""
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
        source = decode_png(source_png)
        total = engine.plan(source.shape[1], source.shape[0], job.spec).total_steps
        if total == 0:
            raise PlanError(NOTHING_TO_DO)
        stored = side.load_checkpoint(claim)
        if stored is None and job.steps_done:
            side.failed(claim, CHECKPOINT_GONE, retry=False)
            return
        resume = Checkpoint(stored[0], decode_png(stored[1])) if stored else None
        side.started(claim, total)
        last_step, canvas = (resume.steps_done - 1, resume.canvas) if resume else (-1, None)
        if last_step < total - 1:
            report = self._reporter(claim, total)
            began = time.monotonic()
            for result in engine.run(source, job.spec, resume=resume, progress=report, cancel=claim.cancel):
                height, width = result.canvas.shape[:2]
                png = encode_png(result.canvas, compress_level=CHECKPOINT_PNG_LEVEL)
                side.checkpoint(claim, result.step, png, width, height)
                now = time.monotonic()
                side.record_step_time(now - began)
                began = now
                last_step, canvas = result.step, result.canvas
        if canvas is None or last_step != total - 1:
            raise RuntimeError(f"the engine stopped after step {last_step} of {total}")
        side.done(claim, last_step, canvas.shape[1], canvas.shape[0])
        log.info("job %s: done", job.id)

    def _reporter(self, claim: Claim, total: int) -> Callable[[StepProgress], None]:
        last_preview = 0.0

        def report(p: StepProgress) -> None:
            nonlocal last_preview
            preview = None
            if p.preview is not None and time.monotonic() - last_preview >= PREVIEW_EVERY_S:
                preview = preview_jpeg(p.preview)
                last_preview = time.monotonic()
            step_s = self.side.step_time()
            left = total - p.step - p.denoise / max(1, p.denoise_total)
            eta = None if step_s is None else max(0.0, left) * step_s
            event = Progress(claim.job.id, p.step, total, p.denoise, p.denoise_total, eta, preview)
            self.side.progress(claim, event)

        return report


# --- outpaint-worker ----------------------------------------------------------------------------


def _engine_factory(spec: str | None, settings: EngineSettings) -> EngineFactory:
    if spec:  # tests: "module:callable" returning an engine (e.g. the fast engine double)
        module, _, name = spec.partition(":")
        return getattr(importlib.import_module(module), name)

    def load() -> Engine:
        from outpaint_engine.runner import Outpainter

        return Outpainter.load(settings)

    return load


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="outpaint-worker",
        description="Run a GPU worker for a Redis job queue (one job at a time; run one per GPU).",
    )
    parser.add_argument("--queue", help="redis://host:port/db (default: $OUTPAINT_QUEUE)")
    parser.add_argument("--device", help="cuda, cuda:N, mps or cpu (default: $OUTPAINT_DEVICE)")
    parser.add_argument("--name", help="this worker's name in the queue (default: host-pid)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING... (default: INFO)")
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # for tests only: module:callable
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    try:
        settings, engine_settings = QueueSettings(), EngineSettings()
    except ValidationError as error:
        print(f"outpaint-worker: {describe_setting_error(error)}", file=sys.stderr)
        return 2
    if args.queue:
        settings = settings.model_copy(update={"queue": args.queue})
    if args.device:
        engine_settings = engine_settings.model_copy(update={"device": args.device})
    if not settings.queue.startswith(REDIS_SCHEMES):
        print(
            "outpaint-worker needs a Redis queue: pass --queue redis://HOST:6379/0 or set OUTPAINT_QUEUE "
            "(with the embedded queue the bot runs its own worker).",
            file=sys.stderr,
        )
        return 2

    from outpaint_engine.queue.redis import RedisWorkerSide, describe_url

    try:
        side = RedisWorkerSide(settings, name=args.name)
    except QueueError as error:
        print(f"outpaint-worker: {error}", file=sys.stderr)
        return 2
    try:
        side.check()
    except Exception as error:
        print(
            f"outpaint-worker: cannot reach Redis at {describe_url(settings.queue)}: {error}", file=sys.stderr
        )
        return 1
    try:
        worker = Worker(side, _engine_factory(args.engine, engine_settings), idle_wait_s=side.idle_wait_s)
        worker.engine()
    except KeyboardInterrupt:
        print("outpaint-worker: interrupted while loading the engine", file=sys.stderr)
        return 130
    except Exception as error:
        log.debug("engine load failed", exc_info=True)
        print(f"outpaint-worker: cannot load the engine: {error}", file=sys.stderr)
        return 1

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: stopping after the current denoising step", signal.Signals(signum).name)
        side.stopping()
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("worker %s serving %s", side.name, describe_url(settings.queue))
    worker.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
