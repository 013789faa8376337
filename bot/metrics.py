"""The bot's metrics (``docs/operations.md`` lists them all).

Counted where things happen: jobs submitted (:mod:`bot.jobs`), outcomes shown
(:mod:`bot.delivery`), errors shown to users (:mod:`bot.errors`), and every HTTP request discord.py
makes, through the client's public ``http_trace`` option (an ``aiohttp.TraceConfig``: responses by
status, 429 rate limits by scope, requests that got no answer). What the queue knows (depth,
workers) and the gateway's state are read at each scrape (:class:`BotCollector`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import aiohttp
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from outpaint_engine.job import Event, Job
from outpaint_engine.observability.logs import job_event
from outpaint_engine.queue.base import QueueDepth
from outpaint_engine.worker.status import WorkerState, WorkerStatus

if TYPE_CHECKING:
    from bot.app import OutpaintBot

log = logging.getLogger("bot.jobs")

SUBMITTED = Counter(
    "outpaint_bot_jobs_submitted",
    "Jobs the bot queued, by origin (command, menu, button, reply).",
    ["origin"],
)
FINISHED = Counter(
    "outpaint_bot_jobs_finished",
    "Jobs whose outcome the bot showed, by outcome (done, failed, cancelled).",
    ["outcome"],
)
JOB_SECONDS = Histogram(
    "outpaint_bot_job_seconds",
    "From a job's submission to its outcome shown in Discord (the result posted...), by outcome.",
    ["outcome"],
    buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600),
)
ERRORS = Counter(
    "outpaint_bot_errors",
    "Errors shown to users, by kind: user (a mistake or a limit), queue (not reachable), "
    "forbidden (Discord permissions), internal (a bug: its traceback is logged).",
    ["kind"],
)
DISCORD_RESPONSES = Counter(
    "outpaint_discord_responses",
    "HTTP responses from Discord, by api (rest, cdn: attachment downloads), method and status code.",
    ["api", "method", "status"],
)
DISCORD_RATE_LIMITS = Counter(
    "outpaint_discord_rate_limits",
    "429 answers from Discord (discord.py waits and retries), by scope (user, global, shared).",
    ["scope"],
)
DISCORD_REQUEST_ERRORS = Counter(
    "outpaint_discord_request_errors",
    "Requests to Discord that got no answer (connection errors, timeouts), by error type.",
    ["error"],
)
GATEWAY_DISCONNECTS = Counter("outpaint_discord_gateway_disconnects", "Times the gateway connection dropped.")


def job_submitted(job: Job, origin: str) -> None:
    SUBMITTED.labels(origin).inc()
    job_event(log, job, "queued", "queued (%s)", origin, origin=origin)


def outcome_shown(job: Job, event: Event) -> None:
    """The job's terminal event was shown to its user."""
    took = max(0.0, time.time() - job.created_at)
    FINISHED.labels(event.kind).inc()
    JOB_SECONDS.labels(event.kind).observe(took)
    job_event(log, job, f"shown_{event.kind}", "%s shown after %.1f s", event.kind, took, total_s=took)


def discord_trace() -> aiohttp.TraceConfig:
    """An ``http_trace`` for ``discord.Client``: counts every response and failed request."""

    async def on_end(_session: Any, _context: Any, params: aiohttp.TraceRequestEndParams) -> None:
        api = "rest" if "/api/" in params.url.path else "cdn"
        status = params.response.status
        DISCORD_RESPONSES.labels(api, params.method, str(status)).inc()
        if status == 429:
            DISCORD_RATE_LIMITS.labels(params.response.headers.get("X-RateLimit-Scope", "user")).inc()

    async def on_exception(_session: Any, _context: Any, params: aiohttp.TraceRequestExceptionParams) -> None:
        DISCORD_REQUEST_ERRORS.labels(type(params.exception).__name__).inc()

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    trace.on_request_exception.append(on_exception)
    return trace


class BotCollector(Collector):
    """What the queue and the gateway say, read at each scrape. ``ask(make)`` runs the coroutine
    ``make()`` on the bot's event loop and returns its result (bounded by the queue's timeout)."""

    def __init__(
        self,
        client: OutpaintBot,
        ask: Callable[[Callable[[], Awaitable[Any]]], Any],
        connected: Callable[[], bool],
    ) -> None:
        self.client = client
        self.ask = ask
        self.connected = connected

    def collect(self) -> Iterator[GaugeMetricFamily]:
        queue = self.client.queue
        up = GaugeMetricFamily("outpaint_queue_up", "1 when the job queue answered this scrape.")
        try:
            depth: QueueDepth = self.ask(queue.depth)
            workers: list[WorkerStatus] = self.ask(queue.workers)
        except Exception as error:
            log.debug("the queue did not answer the scrape: %s", error)
            up.add_metric([], 0.0)
            yield up
        else:
            up.add_metric([], 1.0)
            yield up
            jobs = GaugeMetricFamily("outpaint_queue_jobs", "Jobs in the queue, by state.", labels=["state"])
            jobs.add_metric(["queued"], depth.queued)
            jobs.add_metric(["running"], depth.running)
            yield jobs
            by_state = GaugeMetricFamily(
                "outpaint_queue_workers",
                "Live workers by state (idle, loading, warming, ready, stopped).",
                labels=["state"],
            )
            for state in WorkerState:
                by_state.add_metric([str(state)], sum(w.state is state for w in workers))
            yield by_state
        yield GaugeMetricFamily(
            "outpaint_discord_gateway_connected",
            "1 while the bot is connected to Discord's gateway.",
            1.0 if self.connected() else 0.0,
        )
        latency = self.client.latency
        if math.isfinite(latency):
            yield GaugeMetricFamily(
                "outpaint_discord_gateway_latency_seconds", "Gateway heartbeat round trip.", latency
            )
        yield GaugeMetricFamily("outpaint_bot_guilds", "Guilds the bot is in.", len(self.client.guilds))
