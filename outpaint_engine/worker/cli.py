"""``outpaint-worker``: a GPU worker process for a Redis job queue.

It loads the engine, then serves the queue one job at a time (run one per GPU). SIGTERM (``docker
stop``, ``systemctl stop``) and SIGINT (Ctrl-C) both stop it cleanly: it finishes the current
denoising step, hands its job back to the queue (the delivery does not count) and exits 0; the
next worker continues after the last checkpoint. A worker reads only ``OUTPAINT_*`` settings
(queue and engine): the bot's Discord token never reaches it.

With ``OUTPAINT_METRICS_PORT`` (or ``--metrics-port``) it serves ``/metrics``, ``/healthz`` and
``/readyz`` from the start: ready once the engine is loaded and warmed up.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from pydantic import ValidationError

from outpaint_engine.api import Engine
from outpaint_engine.observability.gpu import GpuMemoryCollector
from outpaint_engine.observability.logs import route_library_logs, setup_logging
from outpaint_engine.observability.server import Health, OpsServer, OpsServerError
from outpaint_engine.queue import REDIS_SCHEMES
from outpaint_engine.queue.base import QueueError
from outpaint_engine.safety import SafetyCheck, SafetySettings
from outpaint_engine.settings import EngineSettings, OpsSettings, QueueSettings, describe_setting_error
from outpaint_engine.worker.loop import EngineFactory, Worker
from outpaint_engine.worker.metrics import WorkerCollector
from outpaint_engine.worker.status import WorkerState

if TYPE_CHECKING:
    from outpaint_engine.queue.redis import RedisWorkerSide

log = logging.getLogger("outpaint.worker")

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def _engine_factory(spec: str | None, settings: EngineSettings) -> EngineFactory:
    if spec:  # tests: "module:callable" returning an engine (e.g. the fast engine double)
        module, _, name = spec.partition(":")
        return getattr(importlib.import_module(module), name)

    def load() -> Engine:
        route_library_logs()  # before the engine's libraries log anything
        from outpaint_engine.runner import Outpainter

        return Outpainter.load(settings)

    return load


@contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
    """SIGTERM, like SIGINT, raises KeyboardInterrupt inside the block (an engine that loads)."""
    previous = {signum: signal.signal(signum, signal.default_int_handler) for signum in STOP_SIGNALS}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="outpaint-worker",
        description="Run a GPU worker for a Redis job queue (one job at a time; run one per GPU).",
    )
    parser.add_argument("--queue", help="redis://host:port/db (default: $OUTPAINT_QUEUE)")
    parser.add_argument("--device", help="cuda, cuda:N, mps or cpu (default: $OUTPAINT_DEVICE)")
    parser.add_argument("--name", help="this worker's name in the queue (default: host-pid)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING... (default: INFO)")
    parser.add_argument(
        "--metrics-port",
        type=int,
        help="serve /metrics, /healthz, /readyz here (default: $OUTPAINT_METRICS_PORT)",
    )
    parser.add_argument("--engine", help=argparse.SUPPRESS)  # for tests only: module:callable
    return parser


def _ops_server(ops: OpsSettings, worker: Worker) -> OpsServer | None:
    """The metrics and health server (None when no port is set): ready once the engine is warm."""
    if ops.metrics_port is None:
        return None

    def engine_ready() -> str | None:
        state = worker.status.state
        return None if state is WorkerState.READY else f"the engine is {state}"

    health = Health()
    health.readiness["engine"] = engine_ready
    health.info["worker"] = lambda: worker.status.to_dict()
    collectors = [WorkerCollector(lambda: worker), GpuMemoryCollector()]
    return OpsServer(ops.metrics_host, ops.metrics_port, health, collectors)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings, engine_settings = QueueSettings(), EngineSettings()
        safety, ops = SafetySettings(), OpsSettings()
    except ValidationError as error:
        print(f"outpaint-worker: {describe_setting_error(error)}", file=sys.stderr)
        return 2
    setup_logging(args.log_level, log_format=ops.log_format)
    if args.metrics_port is not None:
        ops = ops.model_copy(update={"metrics_port": args.metrics_port})
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
    factory = _engine_factory(args.engine, engine_settings)
    worker = Worker(side, factory, idle_wait_s=side.idle_wait_s, name=side.name, safety=SafetyCheck(safety))
    try:
        server = _ops_server(ops, worker)
    except OpsServerError as error:
        print(f"outpaint-worker: {error}", file=sys.stderr)
        return 1
    try:
        return _serve(worker, side, server, describe_url(settings.queue))
    finally:
        if server is not None:
            server.close()


def _serve(worker: Worker, side: RedisWorkerSide, server: OpsServer | None, url: str) -> int:
    if server is not None:
        server.start()
    try:
        with _stop_signals_interrupt():
            worker.engine()
    except KeyboardInterrupt:
        print("outpaint-worker: stopped while loading the engine", file=sys.stderr)
        return 130
    except Exception as error:
        log.debug("engine load failed", exc_info=True)
        print(f"outpaint-worker: cannot load the engine: {error}", file=sys.stderr)
        return 1

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s: stopping after the current denoising step", signal.Signals(signum).name)
        side.stopping()
        worker.stop()

    for signum in STOP_SIGNALS:
        signal.signal(signum, on_signal)
    log.info("worker %s serving %s", side.name, url)
    worker.serve()
    side.retire(side.settings.queue_timeout_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
