"""Helpers of the queue tests: a private ``redis-server``, jobs, both backends behind one harness.

Redis tests start their own ``redis-server`` (Debian package ``redis-server``) on a free loopback
port with append-only persistence in a temporary directory, and stop it afterwards; they never
touch a Redis on 6379. Without the binary they are skipped with that reason.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import redis
from engine_double import RecordingEngine

from outpaint_engine.imageio import encode_png
from outpaint_engine.job import Direction, Event, Job, JobSpec
from outpaint_engine.queue.base import JobQueue, QueueUnavailable
from outpaint_engine.queue.embedded import EmbeddedQueue
from outpaint_engine.queue.redis import RedisQueue, RedisWorkerSide
from outpaint_engine.safety import SafetyCheck, SafetySettings
from outpaint_engine.settings import QueueSettings
from outpaint_engine.worker import Worker

REDIS_SERVER = shutil.which("redis-server")
WAIT_S = 30.0
"""Generous overall limit for waiting on a condition (never a timing assertion)."""
START_S = 120.0
"""The same for a new process that imports torch and loads an engine."""


def wait_until(condition, what: str, timeout: float = WAIT_S) -> None:
    """Poll ``condition()`` until true; fail the test after ``timeout`` seconds."""
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        pause.wait(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server: append-only file with fsync on every write, in ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--dir", str(self.directory),
                "--appendonly", "yes",
                "--appendfsync", "always",
                "--save", "",
                "--logfile", str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=1)

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"redis-server exited: {(self.directory / 'redis.log').read_text()[-500:]}"
                )
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(ready, "redis-server to accept connections")
        client.close()

    def kill(self) -> None:
        """SIGKILL: no shutdown save, the append-only file is all that survives."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """SIGSTOP: the server keeps its connections and answers nothing, until SIGCONT."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a test that failed while it was frozen
            self.process.terminate()
            self.process.wait(timeout=10)


def queue_settings(queue: str, data_dir: Path, **overrides: object) -> QueueSettings:
    """Short timeouts: heartbeat 0.2 s, reclaim after 1 s."""
    values = {
        "queue": queue,
        "data_dir": data_dir,
        "heartbeat_s": 0.2,
        "reclaim_after_s": 1.0,
        "max_deliveries": 3,
        "result_ttl_s": 86400,
        **overrides,
    }
    return QueueSettings(_env_file=None, **values)


# --- jobs --------------------------------------------------------------------------------------------


def source_rgb(width: int = 48, height: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


SOURCE = source_rgb()
SOURCE_PNG = encode_png(SOURCE)


def make_job(seed: int, *, user: int = 1, guild: int | None = 10, times: int = 2, prompt: str = "") -> Job:
    """A job of 1 + ``times`` steps on :data:`SOURCE` (48×64 → square-up to 64, then 16 px per
    step), two denoising steps each. The seed tells the jobs apart in the engines' hooks."""
    spec = JobSpec(Direction.RIGHT, times=times, expand_px=16, window=64, steps=2, seed=seed, prompt=prompt)
    return Job(id=f"job{seed:04d}", user_id=user, guild_id=guild, channel_id=5, spec=spec, source_sha256="x")


async def eventually(condition: Callable[[], Awaitable[bool]], what: str, limit_s: float = WAIT_S) -> None:
    """Poll ``await condition()`` (state in other processes) until true, failing after ``limit_s``."""
    try:
        async with asyncio.timeout(limit_s):
            while not await condition():  # noqa: ASYNC110 - the state lives in another process
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None


async def answer(call: Callable[[], Awaitable[object]]) -> str:
    """``"answered"``, or the message of the QueueUnavailable that ``call()`` raised; any other
    error fails the test, and so does a call that hangs."""
    try:
        async with asyncio.timeout(WAIT_S):
            await call()
    except QueueUnavailable as error:
        return str(error)
    return "answered"


async def collect(queue: JobQueue, job_id: str, *, after: int = 0) -> list[tuple[int, Event]]:
    """All events of a job from ``after`` to its terminal event."""
    async with asyncio.timeout(WAIT_S):
        return [item async for item in queue.events(job_id, after=after)]


# --- both backends behind one harness ----------------------------------------------------------------


class Harness:
    """A backend as the bot sees it, with one worker running ``engine``: embedded (worker thread
    inside the queue) or Redis (a worker thread beside the queue); ``safety``: the worker's
    content check and word list (none by default)."""

    def __init__(
        self, kind: str, settings: QueueSettings, engine: RecordingEngine, safety: SafetyCheck | None = None
    ) -> None:
        self.kind = kind
        self.settings = settings
        self.engine = engine
        self.safety = safety
        self.queue: JobQueue
        self.redis_server: RedisServer | None = None  # the Redis backend's server
        self._worker: Worker | None = None
        self._side: RedisWorkerSide | None = None
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        self.queue = await self._open_queue()
        if self.kind == "redis":
            self._side = RedisWorkerSide(self.settings, name="test-worker")
            self._side.check()
            self._worker = Worker(
                self._side, lambda: self.engine, idle_wait_s=self._side.idle_wait_s, safety=self.safety
            )
            self._thread = threading.Thread(target=self._worker.serve, daemon=True)
            self._thread.start()

    async def _open_queue(self) -> JobQueue:
        if self.kind == "embedded":
            queue: JobQueue = EmbeddedQueue(
                self.settings, engine_factory=lambda: self.engine, poll_s=0.05, safety=self.safety
            )
        else:
            queue = RedisQueue(self.settings)
        await queue.start()
        return queue

    @contextmanager
    def unresponsive(self) -> Iterator[None]:
        """The backend stops answering: Redis is frozen (SIGSTOP); the embedded journal is
        write-locked by another connection, as another process would hold it."""
        if self.redis_server is not None:
            with self.redis_server.frozen():
                yield
            return
        db = sqlite3.connect(self.settings.data_dir / "queue.sqlite3", isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            yield
        finally:
            db.close()  # rolls back

    async def restart_bot(self) -> None:
        """A new JobQueue instance, as after a bot restart (the embedded worker restarts with it)."""
        await self.queue.close()
        self.queue = await self._open_queue()

    async def close(self) -> None:
        if self._worker is not None and self._side is not None and self._thread is not None:
            self._side.stopping()
            self._worker.stop()
            await asyncio.to_thread(self._thread.join, WAIT_S)
            await asyncio.to_thread(self._side.retire, WAIT_S)  # its state is removed from Redis
            self._side.r.close()
        await self.queue.close()


class GatedCheck(SafetyCheck):
    """A content check (allow-all) whose check of a step's canvas waits for ``release`` (set by the
    test) and records whether it came in time: it shows what the engine does meanwhile."""

    def __init__(self) -> None:
        super().__init__(SafetySettings(_env_file=None, safety_model="a stub classifier"))
        self.release = threading.Event()
        self.released_in_time: list[bool] = []

    def load(self, device: str) -> None:  # nothing to load: the stub never flags
        pass

    def flags(self, canvas: np.ndarray) -> float | None:
        self.released_in_time.append(self.release.wait(WAIT_S))
        return None
