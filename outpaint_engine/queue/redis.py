"""The Redis backend (``OUTPAINT_QUEUE=redis://host:6379/0``): many GPU workers on many hosts.

- **Dispatch.** Queued jobs wait in a sorted set in fair order (:mod:`outpaint_engine.queue.fair`).
  A worker's claim script pops the smallest key, appends a delivery to the ``work`` stream and
  reads it through the consumer group, atomically, so every worker on every host takes jobs in the
  same fair order and a job is delivered to one worker at a time. One job per worker.
- **Heartbeat and recovery.** While it runs a job, a worker's heartbeat thread re-claims its own
  delivery every ``heartbeat_s`` (resetting the entry's idle time). A delivery idle for
  ``reclaim_after_s`` belongs to a dead worker: the next idle worker takes it over with
  ``XAUTOCLAIM`` and continues after the last checkpoint. Every write of a worker is checked against
  its claim token, so a worker that was taken over cannot publish or checkpoint anymore.
- **Retries.** ``attempts`` counts deliveries (first delivery, re-deliveries after a crash, retries
  after an error); ``stalls`` counts those that stored no new checkpoint (a delivery gives its
  stall back with its first new step). Once a job has stalled ``max_deliveries`` times it fails
  with a polite reason and an entry on the ``dead`` stream says why; a job that dies on every
  delivery but gets further each time finishes.
- **Timeouts.** Every call waits at most ``queue_timeout_s`` for Redis (a frozen server, a
  black-holed network): the bot's calls then raise :class:`QueueUnavailable`, a worker's are tried
  again until Redis answers. Following a job's events blocks in ``XREAD BLOCK`` on connections
  whose socket timeout is the block time plus ``queue_timeout_s``.
- **Events** go on a stream per job whose entry ids are ``0-<seq>``, so the bot re-reads them from
  any sequence number after its own restart. **Images** (source, checkpoints) are Redis strings
  with a TTL of ``result_ttl_s`` (shortened to :data:`INTERMEDIATE_TTL_S` for the checkpoints a
  finished job no longer needs); a finished job's record and events expire ``result_ttl_s`` after
  it finished, so Redis does not fill up with old jobs (their previews) unless an operator purges.
  **Cancel** sets a flag the worker reads with every progress
  report (each denoising step) and heartbeat.
- **Worker states.** Each worker records its state (loading, warming, ready...) under
  ``wstate:<name>`` with a TTL of ``reclaim_after_s``, refreshed every ``heartbeat_s`` by a thread
  of its own from the moment it starts loading, so the bot knows when waiting jobs wait for a
  warm-up, and a worker that died drops out of the list.

Redis must persist (``appendonly yes``) for jobs to survive a Redis restart. Standalone Redis
(or a primary) only: the scripts compute key names, which a cluster forbids.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import asdict
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis
import redis.asyncio as aioredis
import redis.asyncio.retry
import redis.retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from outpaint_engine.job import (
    AutoPrompt,
    Cancelled,
    Done,
    Event,
    Expanded,
    Failed,
    Job,
    JobState,
    Progress,
    Prompted,
    Started,
)
from outpaint_engine.queue import fair
from outpaint_engine.queue.base import JobExists, JobQueue, QueueDepth, QueueError, QueueUnavailable
from outpaint_engine.queue.redis_scripts import PRELUDE, SCRIPTS
from outpaint_engine.settings import QueueSettings
from outpaint_engine.store import check_job_id, is_job_id
from outpaint_engine.worker import (
    FAILED_POLITELY,
    Claim,
    LostClaim,
    WorkerSide,
    WorkerState,
    WorkerStatus,
    retry_while_unavailable,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

PREFIX = "outpaint:"
GROUP = "workers"
ACTIVE = frozenset({JobState.QUEUED, JobState.RUNNING})
UNREACHABLE = (RedisConnectionError, RedisTimeoutError)
INTERMEDIATE_TTL_S = 3600
"""Once a job is done, the checkpoints before its last two expire after at most this long: the bot
shows them while the job runs; continuing or redoing a result needs only the last two."""
FOLLOW_BLOCK_S = 5.0
"""How long one blocking read of a job's events waits before checking the job still exists."""


def _client_options(retry_class: type, timeout_s: float, read_s: float) -> dict[str, Any]:
    """Client options: a command that meets a dropped connection (a Redis restart) reconnects and
    is tried again a few times (within 0.2 s) before the error surfaces; a connection that is
    not made within ``timeout_s``, or a command that gets no answer within ``read_s``, fails at
    once (a frozen Redis, a black-holed network)."""
    return {
        "socket_connect_timeout": timeout_s,
        "socket_timeout": read_s,
        "retry": retry_class(
            ExponentialBackoff(cap=0.1, base=0.01), 3, supported_errors=(RedisConnectionError,)
        ),
    }


def describe_url(url: str) -> str:
    """The queue URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + host).geturl()


def _key(*parts: object) -> str:
    return PREFIX + ":".join(str(p) for p in parts)


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _job_from_hash(fields: dict[bytes, bytes]) -> Job:
    h = {_text(k): _text(v) for k, v in fields.items()}
    data = json.loads(h["json"])
    data.update(
        state=h["state"],
        steps_done=int(h["steps_done"]),
        total_steps=int(h["total_steps"]),
        attempts=int(h["attempts"]),
        started_at=float(h["started_at"]) if h["started_at"] else None,
        finished_at=float(h["finished_at"]) if h["finished_at"] else None,
        error=h["error"] or None,
    )
    if h.get("auto_prompt"):
        data["auto_prompt"] = json.loads(h["auto_prompt"])
    return Job.from_dict(data)


def _event_json(event: Event) -> str:
    return json.dumps(event.to_dict())


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _seq(entry_id: bytes | str) -> int:
    return int(_text(entry_id).split("-")[1])


def _ensure_group(client: redis.Redis) -> None:
    try:
        client.xgroup_create(_key("work"), GROUP, id="$", mkstream=True)
    except ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


class RedisQueue(JobQueue):
    """The bot's (and operator's) side of the Redis queue.

    Every round trip to Redis waits at most ``settings.queue_timeout_s`` (``events`` blocks
    ``follow_block_s`` longer in its reads): then the call raises :class:`QueueUnavailable`.
    """

    def __init__(self, settings: QueueSettings, *, follow_block_s: float = FOLLOW_BLOCK_S) -> None:
        self.settings = settings
        self.url = describe_url(settings.queue)
        self.timeout_s = settings.queue_timeout_s
        self.follow_block_s = follow_block_s
        retry, backstop_s = redis.asyncio.retry.Retry, 2 * self.timeout_s  # _ask() is the deadline
        self.r = aioredis.Redis.from_url(settings.queue, **_client_options(retry, self.timeout_s, backstop_s))
        # Blocking reads of events, on connections of their own whose timeout covers the block.
        self._follow = aioredis.Redis.from_url(
            settings.queue, **_client_options(retry, self.timeout_s, follow_block_s + backstop_s)
        )
        self._scripts = {name: self.r.register_script(PRELUDE + body) for name, body in SCRIPTS.items()}

    async def _ask(self, request: Awaitable[T], *, block_s: float = 0.0) -> T:
        """Redis's answer to ``request``, or QueueUnavailable after ``queue_timeout_s`` (plus
        ``block_s`` for a blocking read) or when Redis cannot be reached."""
        try:
            async with asyncio.timeout(self.timeout_s + block_s):
                return await request
        except TimeoutError as error:
            raise QueueUnavailable(
                f"The job queue at {self.url} did not answer within {self.timeout_s + block_s:g} s."
            ) from error
        except UNREACHABLE as error:
            raise QueueUnavailable(f"The job queue at {self.url} is unreachable ({error}).") from error

    async def _script(self, name: str, *args: object) -> Any:
        return await self._ask(self._scripts[name](args=[PREFIX, *args]))

    async def start(self) -> None:
        await self._ask(self.r.ping())
        try:
            await self._ask(self.r.xgroup_create(_key("work"), GROUP, id="$", mkstream=True))
        except ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise

    async def close(self) -> None:
        await self.r.aclose()
        await self._follow.aclose()

    async def _stats(self) -> tuple[str, int]:
        """(moving average of seconds per step or '', live workers) for the ETA scripts."""
        window = max(3 * self.settings.heartbeat_s, self.settings.reclaim_after_s)
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.lrange(_key("timings"), 0, -1)
            pipe.zcount(_key("workers"), time.time() - window, "+inf")
            timings, workers = await self._ask(pipe.execute())
        step_s = fair.moving_average(float(t) for t in timings)
        return ("" if step_s is None else repr(step_s)), max(1, workers)

    async def submit(self, job: Job, source_png: bytes) -> Job:
        check_job_id(job.id)
        job.state, job.steps_done, job.attempts = JobState.QUEUED, 0, 0
        job.started_at = job.finished_at = job.error = None
        step_s, workers = await self._stats()
        position = await self._script(
            "submit",
            job.id,
            job.user_id,
            "" if job.guild_id is None else job.guild_id,
            json.dumps(job.to_dict()),
            repr(job.created_at),
            job.total_steps,
            fair.remaining_steps(job),
            step_s,
            workers,
            source_png,
            self.settings.result_ttl_s,
        )
        if position == 0:
            raise JobExists(f"Job {job.id} already exists.")
        return job

    async def _jobs(self, ids: Iterable[bytes | str]) -> list[Job]:
        ids = [_text(i) for i in ids]
        if not ids:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hgetall(_key("job", job_id))
            found = await self._ask(pipe.execute())
        return [_job_from_hash(h) for h in found if h]

    async def get(self, job_id: str) -> Job | None:
        if not is_job_id(job_id):
            return None
        jobs = await self._jobs([job_id])
        return jobs[0] if jobs else None

    async def cancel(self, job_id: str) -> Job | None:
        if not is_job_id(job_id):
            return None
        state = await self._script("cancel", job_id, self.settings.result_ttl_s)
        return await self.get(job_id) if state else None

    async def list_jobs(
        self,
        *,
        user_id: int | None = None,
        guild_id: int | None = None,
        states: Iterable[JobState] | None = None,
        limit: int = 100,
    ) -> list[Job]:
        wanted = None if states is None else {JobState(s) for s in states}
        if wanted is not None and not wanted:
            return []

        def keep(job: Job) -> bool:
            return (
                (user_id is None or job.user_id == user_id)
                and (guild_id is None or job.guild_id == guild_id)
                and (wanted is None or job.state in wanted)
            )

        if wanted is not None and wanted <= ACTIVE and (user_id is not None or guild_id is not None):
            # The caps check: a small set per user or guild instead of a scan.
            key = _key("active", "u", user_id) if user_id is not None else _key("active", "g", guild_id)
            ids = await self._ask(self.r.smembers(key))
            jobs = sorted(filter(keep, await self._jobs(ids)), key=lambda j: j.created_at, reverse=True)
            return jobs[:limit]
        found: list[Job] = []
        start, batch = 0, 200
        while len(found) < limit:
            ids = await self._ask(self.r.zrevrange(_key("jobs"), start, start + batch - 1))
            if not ids:
                break
            found.extend(filter(keep, await self._jobs(ids)))
            start += batch
        return found[:limit]

    async def events(self, job_id: str, *, after: int = 0) -> AsyncIterator[tuple[int, Event]]:
        if await self.get(job_id) is None:
            raise QueueError(f"There is no job {job_id}.")
        key, last, block_ms = _key("ev", job_id), after, int(self.follow_block_s * 1000)
        while True:
            read = self._follow.xread({key: f"0-{last}"}, block=block_ms, count=100)
            replies = await self._ask(read, block_s=self.follow_block_s)
            if not replies:
                if not await self._ask(self.r.exists(_key("job", job_id))):
                    return  # purged while we waited
                continue
            event = None
            for entry_id, fields in replies[0][1]:
                last, event = _seq(entry_id), Event.from_dict(json.loads(fields[b"e"]))
                yield last, event
            terminal = event is not None and event.terminal
            if terminal and not await self._ask(self.r.xrange(key, f"(0-{last}", "+", count=1)):
                return  # a terminal event ends the stream unless a retry followed it

    async def get_canvas(self, job_id: str, step: int) -> bytes | None:
        if step < 0:
            return None
        return await self._ask(self.r.get(_key("img", job_id, step)))

    async def get_candidate(self, job_id: str, step: int, candidate: int) -> bytes | None:
        if candidate == 0:
            return await self.get_canvas(job_id, step)
        if step < 0 or candidate < 0:
            return None
        return await self._ask(self.r.get(_key("img", job_id, step, candidate)))

    async def get_source(self, job_id: str) -> bytes | None:
        return await self._ask(self.r.get(_key("img", job_id, "source")))

    async def position(self, job_id: str) -> int | None:
        state, member = await self._ask(self.r.hmget(_key("job", job_id), ["state", "member"]))
        if _text(state) != JobState.QUEUED:
            return None
        rank = await self._ask(self.r.zrank(_key("queue"), member))
        return None if rank is None else rank + 1

    async def eta(self, job_id: str) -> float | None:
        step_s, workers = await self._stats()
        seconds = await self._script("eta", job_id, step_s, workers)
        return None if seconds is None else float(seconds)

    async def retry(self, job_id: str) -> Job:
        check_job_id(job_id)
        step_s, workers = await self._stats()
        reply = await self._script("retry", job_id, step_s, workers)
        if reply == b"":
            raise QueueError(f"There is no job {job_id}.")
        if isinstance(reply, bytes):
            raise QueueError(f"Job {job_id} is {_text(reply)}; only failed or cancelled jobs can be retried.")
        job = await self.get(job_id)
        assert job is not None
        return job

    async def purge(self, *, older_than_s: float) -> int:
        cutoff = time.time() - older_than_s
        ids = [_text(i) for i in await self._ask(self.r.zrangebyscore(_key("jobs"), "-inf", cutoff))]
        jobs = await self._jobs(ids)
        expired = set(ids) - {job.id for job in jobs}  # their keys expired (result_ttl_s)
        if expired:
            await self._ask(self.r.zrem(_key("jobs"), *expired))
        purged = 0
        for job in jobs:
            if not job.state.terminal or (job.finished_at or job.created_at) >= cutoff:
                continue
            steps = range(max(job.total_steps, job.steps_done))
            candidates = range(1, job.spec.candidates) if steps else ()  # of the last step
            await self._ask(
                self.r.delete(
                    _key("job", job.id),
                    _key("ev", job.id),
                    _key("cancel", job.id),
                    _key("img", job.id, "source"),
                    *(_key("img", job.id, s) for s in steps),
                    *(_key("img", job.id, steps[-1], k) for k in candidates),
                )
            )
            await self._ask(self.r.zrem(_key("jobs"), job.id))
            purged += 1
        await self._ask(self.r.xtrim(_key("dead"), minid=f"{int(cutoff * 1000)}-0"))
        for consumer in await self._ask(self.r.xinfo_consumers(_key("work"), GROUP)):
            if consumer["pending"] == 0 and consumer["idle"] > older_than_s * 1000:
                await self._ask(self.r.xgroup_delconsumer(_key("work"), GROUP, consumer["name"]))
        return purged

    async def depth(self) -> QueueDepth:
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.zcard(_key("queue"))
            pipe.scard(_key("running"))
            queued, running = await self._ask(pipe.execute())
        return QueueDepth(queued, running)

    async def workers(self) -> list[WorkerStatus]:
        names = sorted(_text(n) for n in await self._ask(self.r.smembers(_key("wstates"))))
        if not names:
            return []
        async with self.r.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.get(_key("wstate", name))
            found = await self._ask(pipe.execute())
        expired = [name for name, value in zip(names, found, strict=True) if value is None]
        if expired:
            await self._ask(self.r.srem(_key("wstates"), *expired))
        return [WorkerStatus.from_dict(json.loads(value)) for value in found if value is not None]

    async def dead_letters(self, count: int = 100) -> list[dict[str, str]]:
        """The newest dead-letter entries (job, attempts, reason), for the operator."""
        entries = await self._ask(self.r.xrevrange(_key("dead"), count=count))
        return [{_text(k): _text(v) for k, v in fields.items()} for _, fields in entries]


class RedisWorkerSide(WorkerSide):
    """A worker process's side of the Redis queue (blocking client, heartbeat thread)."""

    def __init__(self, settings: QueueSettings, *, name: str | None = None) -> None:
        if settings.reclaim_after_s < 2 * settings.heartbeat_s:
            raise QueueError(
                "OUTPAINT_RECLAIM_AFTER_S must be at least twice OUTPAINT_HEARTBEAT_S, or live jobs would "
                f"be taken from their workers (got {settings.reclaim_after_s} and {settings.heartbeat_s})."
            )
        self.settings = settings
        self.max_deliveries = settings.max_deliveries
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self.idle_wait_s = min(1.0, max(0.05, settings.reclaim_after_s / 5))
        self.r = redis.Redis.from_url(  # the socket timeout covers the idle wait (BLPOP)
            settings.queue,
            **_client_options(
                redis.retry.Retry,
                settings.queue_timeout_s,
                settings.queue_timeout_s + self.idle_wait_s,
            ),
        )
        self._scripts = {name: self.r.register_script(PRELUDE + body) for name, body in SCRIPTS.items()}
        self._stopping = threading.Event()
        self._beats: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self._step_s: float | None = None
        self._status: WorkerStatus | None = None  # the state the presence thread keeps recorded
        self._status_changed = threading.Event()
        self._presence: threading.Thread | None = None

    def check(self) -> None:
        """Fail fast (with the client's error) if Redis is unreachable; create the group."""
        self.r.ping()
        _ensure_group(self.r)

    def stopping(self) -> None:
        """Stop retrying through outages: the worker is shutting down."""
        self._stopping.set()

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        """``call()``, tried again while Redis is unreachable or frozen (each try waits at most
        ``queue_timeout_s``), unless the worker stops."""

        def once() -> T:
            try:
                return call()
            except ResponseError as error:
                if "NOGROUP" not in str(error):
                    raise
                log.warning("the consumer group is gone (Redis lost its data?); creating it again")
                _ensure_group(self.r)
                return call()

        return retry_while_unavailable("Redis", what, once, errors=UNREACHABLE, stopping=self._stopping)

    def _run(self, what: str, name: str, *args: object) -> Any:
        return self._retry(what, lambda: self._scripts[name](args=[PREFIX, *args]))

    def _write(self, claim: Claim, what: str, name: str, *args: object) -> None:
        """A claim-checked script: LostClaim when taken over; raises the cancel flag when up."""
        reply = self._run(what, name, claim.job.id, claim.token, *args)
        if reply == 0:
            raise LostClaim("the job was taken over by another worker")
        if reply == 2:
            claim.cancel.cancel()

    # --- claiming --------------------------------------------------------------------------------

    def claim(self, wait_s: float) -> Claim | None:
        token = uuid.uuid4().hex
        reply = self._run(
            "claiming a job",
            "claim",
            self.name,
            token,
            int(self.settings.reclaim_after_s * 1000),
            self.max_deliveries,
            FAILED_POLITELY,
            self.settings.result_ttl_s,
        )
        if reply is None:
            self._retry("waiting for work", lambda: self.r.blpop([_key("wake")], timeout=wait_s))
            return None
        job_id, stalls = _text(reply[0]), int(reply[2])
        fields = self._retry("loading a job", lambda: self.r.hgetall(_key("job", job_id)))
        claim = Claim(_job_from_hash(fields), token, stalls=stalls)
        self._refresh_step_time()
        stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(claim, stop), name=f"heartbeat-{job_id}", daemon=True
        )
        self._beats[token] = (beat, stop)
        beat.start()
        return claim

    def _heartbeat(self, claim: Claim, stop: threading.Event) -> None:
        while not stop.wait(self.settings.heartbeat_s):
            try:
                reply = self._scripts["heartbeat"](args=[PREFIX, claim.job.id, claim.token, self.name])
            except UNREACHABLE as error:
                log.warning("job %s: heartbeat failed (%s)", claim.job.id, error)
                continue
            if reply == 0:
                if not stop.is_set():  # not a beat that crossed this worker's own end of the claim
                    log.warning("job %s: taken over by another worker; stopping it here", claim.job.id)
                    claim.cancel.cancel()
                return
            if reply == 2:
                claim.cancel.cancel()

    def _ending(self, claim: Claim) -> None:
        """This worker ends its claim now: a heartbeat that crosses the end is not a takeover."""
        if (beat := self._beats.get(claim.token)) is not None:
            _, stop = beat
            stop.set()

    def end(self, claim: Claim) -> None:
        beat, stop = self._beats.pop(claim.token)
        stop.set()
        beat.join(self.settings.heartbeat_s)  # one stuck in an outage is harmless: its claim is over

    # --- running ---------------------------------------------------------------------------------

    def load_source(self, claim: Claim) -> bytes | None:
        return self._retry("loading a source", lambda: self.r.get(_key("img", claim.job.id, "source")))

    def load_checkpoint(self, claim: Claim) -> tuple[int, bytes] | None:
        job_id = claim.job.id
        done = int(self._retry("loading a job", lambda: self.r.hget(_key("job", job_id), "steps_done")) or 0)
        if not done:
            return None
        png = self._retry("loading a checkpoint", lambda: self.r.get(_key("img", job_id, done - 1)))
        return None if png is None else (done, png)

    def started(self, claim: Claim, total_steps: int) -> None:
        event = Started(claim.job.id, total_steps)
        self._write(claim, "publishing", "publish", _event_json(event), f"{claim.token}:started", total_steps)
        claim.job.total_steps = total_steps

    def prompted(self, claim: Claim, auto: AutoPrompt) -> None:
        event = Prompted(claim.job.id, auto.text, auto.reason)
        stored = json.dumps(asdict(auto))
        self._write(claim, "storing the prompt", "prompted", stored, _event_json(event))
        claim.job.auto_prompt = auto

    def progress(self, claim: Claim, event: Progress) -> None:
        key = f"{claim.token}:{event.step}:{event.denoise}"
        self._write(claim, "publishing", "publish", _event_json(event), key)

    def checkpoint(
        self, claim: Claim, step: int, png: bytes, width: int, height: int, *, candidates: int = 1
    ) -> None:
        event = Expanded(claim.job.id, step, claim.job.total_steps, width, height, candidates=candidates)
        ttl, give_back = self.settings.result_ttl_s, _flag(not claim.progressed)
        self._write(
            claim, "storing a checkpoint", "checkpoint", step, png, ttl, _event_json(event), give_back
        )
        if not claim.progressed:  # its first new step: the delivery gave its stall back
            claim.stalls, claim.progressed = claim.stalls - 1, True

    def store_candidate(self, claim: Claim, step: int, candidate: int, png: bytes) -> None:
        ttl = self.settings.result_ttl_s
        self._write(claim, "storing a candidate", "candidate", step, candidate, png, ttl)

    def candidates_stored(self, claim: Claim, step: int, wanted: int) -> int:
        keys = [_key("img", claim.job.id, step, k) for k in range(1, wanted)]

        def present() -> list[int]:
            with self.r.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.exists(key)
                return pipe.execute()

        found = self._retry("loading candidates", present)
        return 1 + next((k for k, there in enumerate(found) if not there), len(found))

    def _finish(self, claim: Claim, state: JobState, event: Event, error: str = "", dead: str = "") -> None:
        short_lived = max(0, claim.job.total_steps - 2) if state is JobState.DONE else 0
        args = (
            str(state),
            _event_json(event),
            error,
            dead,
            short_lived,
            INTERMEDIATE_TTL_S,
            self.settings.result_ttl_s,
        )
        self._ending(claim)
        self._write(claim, "finishing a job", "finish", *args)

    def done(self, claim: Claim, step: int, width: int, height: int, *, candidates: int = 1) -> None:
        self._finish(claim, JobState.DONE, Done(claim.job.id, step, width, height, candidates=candidates))

    def cancelled(self, claim: Claim) -> None:
        self._finish(claim, JobState.CANCELLED, Cancelled(claim.job.id))

    def failed(self, claim: Claim, reason: str, *, retry: bool, detail: str = "") -> None:
        if retry:
            self._ending(claim)
            self._write(claim, "requeueing a job", "requeue", _flag(False), _flag(False))
        else:
            self._finish(claim, JobState.FAILED, Failed(claim.job.id, reason), reason, detail)

    def release(self, claim: Claim) -> None:
        self._ending(claim)
        self._write(claim, "handing a job back", "requeue", _flag(True), _flag(not claim.progressed))

    def record_step_time(self, seconds: float) -> None:
        def push() -> list[bytes]:
            with self.r.pipeline(transaction=False) as pipe:
                pipe.lpush(_key("timings"), repr(seconds))
                pipe.ltrim(_key("timings"), 0, fair.RECENT_STEPS - 1)
                pipe.lrange(_key("timings"), 0, -1)
                return pipe.execute()[-1]

        self._step_s = fair.moving_average(float(t) for t in self._retry("recording a timing", push))

    def _refresh_step_time(self) -> None:
        timings = self._retry("reading timings", lambda: self.r.lrange(_key("timings"), 0, -1))
        self._step_s = fair.moving_average(float(t) for t in timings)

    def step_time(self) -> float | None:
        return self._step_s

    # --- the worker's state ----------------------------------------------------------------------

    def worker_state(self, status: WorkerStatus) -> None:
        self._status = status
        self._status_changed.set()
        if self._presence is None:
            self._presence = threading.Thread(target=self._keep_present, name="worker-state", daemon=True)
            self._presence.start()

    def retire(self, timeout_s: float) -> None:
        """After the worker stopped: wait (at most ``timeout_s``) until its state is removed."""
        if self._presence is not None:
            self._presence.join(timeout_s)

    def _keep_present(self) -> None:
        """Record the worker's state now and after each change, and refresh it every heartbeat
        (TTL ``reclaim_after_s``); remove it once the worker stopped. Outages are waited out."""
        key, ttl_ms = _key("wstate", self.name), int(self.settings.reclaim_after_s * 1000)
        failing = False
        while True:
            self._status_changed.wait(self.settings.heartbeat_s)
            self._status_changed.clear()
            status = self._status
            assert status is not None
            try:
                with self.r.pipeline(transaction=False) as pipe:
                    if status.state is WorkerState.STOPPED:
                        pipe.delete(key)
                        pipe.srem(_key("wstates"), self.name)
                    else:
                        pipe.set(key, json.dumps(status.to_dict()), px=ttl_ms)
                        pipe.sadd(_key("wstates"), self.name)
                    pipe.execute()
            except redis.RedisError as error:
                if not failing:
                    log.warning("could not record the worker's state (%s); retrying", error)
                failing = True
                continue
            failing = False
            if status.state is WorkerState.STOPPED:
                return
