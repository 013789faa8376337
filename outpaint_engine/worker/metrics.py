"""The workers' metrics (``docs/operations.md`` lists them): outcomes, failures, waits and run
times, counted by the worker loop in whatever process runs it; and :class:`WorkerCollector`, the
state of one worker read at each scrape (its own process's server serves it)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from outpaint_engine.worker.status import WorkerState

if TYPE_CHECKING:
    from outpaint_engine.worker.loop import Worker

LONG_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)

JOBS = Counter(
    "outpaint_worker_jobs",
    "Deliveries of jobs that this worker ended, by outcome: done, failed (for good), retried "
    "(an error; the job goes back to the queue), cancelled, handed_back (the worker stopped), lost "
    "(taken over by another worker).",
    ["outcome"],
)
FAILURES = Counter(
    "outpaint_worker_failures",
    "Deliveries that ended in an error, by reason: refused (the engine cannot do the request), "
    "source_gone, checkpoint_gone, or the type of an unexpected exception (e.g. OutOfMemoryError).",
    ["reason"],
)
QUEUE_WAIT = Histogram(
    "outpaint_queue_wait_seconds",
    "From a job's submission to the start of its first expansion (engine loading included).",
    buckets=LONG_BUCKETS,
)
JOB_RUN = Histogram(
    "outpaint_job_run_seconds",
    "From the start of a job's delivery to its Done, on the worker that finished it.",
    buckets=LONG_BUCKETS,
)


class WorkerCollector(Collector):
    """``outpaint_worker_state``, ``outpaint_worker_load_seconds`` and ``outpaint_worker_jobs_running``
    of the worker that ``worker()`` gives (nothing while it gives None), read at each scrape."""

    def __init__(self, worker: Callable[[], Worker | None]) -> None:
        self.worker = worker

    def collect(self) -> Iterator[GaugeMetricFamily]:
        worker = self.worker()
        if worker is None:
            return
        status = worker.status
        state = GaugeMetricFamily(
            "outpaint_worker_state",
            "1 for the worker's current state: idle (engine not loaded yet), loading (weights), "
            "warming (compiling kernels, capturing CUDA graphs), ready, stopped.",
            labels=["state"],
        )
        for each in WorkerState:
            state.add_metric([str(each)], 1.0 if each is status.state else 0.0)
        yield state
        load = GaugeMetricFamily(
            "outpaint_worker_load_seconds",
            "How long the engine's last load took, by stage: loading (weights), warming (compiling, "
            "capturing CUDA graphs).",
            labels=["stage"],
        )
        for stage, seconds in dict(worker.load_seconds).items():
            load.add_metric([stage], seconds)
        yield load
        running = worker.running
        yield GaugeMetricFamily("outpaint_worker_jobs_running", "Jobs this worker is running now.", running)
