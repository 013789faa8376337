"""Bot fixtures: the real discord.py client (our bot) against the fake Discord, on the embedded
queue with the fast engine double (tiny sizes: window 64, expand 16, 2 denoising steps)."""

from __future__ import annotations

import asyncio
import io
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot.app import OutpaintBot
from bot.settings import BotSettings
from outpaint_engine.queue import JobQueue, open_queue
from outpaint_engine.queue.embedded import EmbeddedQueue
from outpaint_engine.safety import SafetyCheck
from outpaint_engine.settings import EngineSettings, OpsSettings, QueueSettings
from outpaint_engine.worker import EngineFactory
from tests.bot.processes import QUEUE_TESTS, Processes
from tests.fakediscord import (
    WAIT_S,
    FakeDiscord,
    InteractionRecord,
    MessageVersion,
    StoredAttachment,
    StoredMessage,
    Upload,
)
from tests.fakediscord.models import walk_components
from tests.queue.engine_double import FastEngineDouble, Pause

sys.path.insert(0, str(QUEUE_TESTS))  # queue_helpers imports its neighbours as top-level modules
from queue_helpers import REDIS_SERVER, RedisServer

WINDOW = 64
EXPAND = 16  # the default expand at a 64 px window


def png(width: int = 96, height: int = 64, color: tuple[int, int, int] = (40, 120, 200)) -> bytes:
    """A PNG with a little structure (so encoders can't shrink it to nothing)."""
    rng = np.random.default_rng(width * 1000 + height)
    pixels = np.clip(np.array(color) + rng.integers(-30, 30, (height, width, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def image_upload(width: int = 96, height: int = 64, name: str = "photo.png") -> Upload:
    return Upload(name, png(width, height), "image/png")


def size_of(attachment: StoredAttachment) -> tuple[int, int]:
    with Image.open(io.BytesIO(attachment.data)) as im:
        return im.size


def is_result(message: StoredMessage) -> bool:
    """A result message: an image plus the extend buttons."""
    return bool(message.attachments) and any(c.startswith("outpaint:left:") for c in message.custom_ids)


def creation_request(fake: FakeDiscord, message: StoredMessage) -> dict[str, Any]:
    """The JSON payload the bot sent to create ``message``."""
    return next(
        r.json
        for r in fake.requests_to("POST", "/messages")
        if isinstance(r.response, dict) and r.response.get("id") == str(message.id)
    )


def ids_of(version: MessageVersion) -> list[str]:
    """The custom ids of the components of one version of a message."""
    return [c["custom_id"] for c in walk_components(version.components) if "custom_id" in c]


async def reached(pause: Pause) -> None:
    """Until the engine double stopped at ``pause`` (set from the worker thread)."""
    assert await asyncio.to_thread(pause.reached.wait, WAIT_S), "the job never reached the pause"


def job_id_of(message: StoredMessage) -> str:
    return next(c.rsplit(":", 1)[1] for c in message.custom_ids if c.startswith("outpaint:"))


class Harness:
    """Builds bots on one data dir and one fake Discord; a "restart" is simply a second bot."""

    def __init__(self, fake: FakeDiscord, data_dir: Path, queue: str = "embedded") -> None:
        self.fake = fake
        self.data_dir = data_dir
        self.queue = queue  # "embedded" (its worker runs ``engine``) or a Redis URL (no worker)
        self.engine = FastEngineDouble()
        self.engine_factory: EngineFactory | None = None  # default: returns ``engine``
        self.load_engine_at_start = False  # as the queue tests: the engine comes with the first job
        self.engine_settings = EngineSettings(_env_file=None, window=WINDOW, steps=2)
        self.safety: SafetyCheck | None = None  # the embedded worker's content check, and the word list
        self.ops: OpsSettings | None = None  # the metrics and health server: off

    def settings(self, **overrides: Any) -> BotSettings:
        values: dict[str, Any] = {"cooldown_s": 0, "edit_interval_s": 0, "previews": False, **overrides}
        return BotSettings(_env_file=None, **values)

    def bot(self, *, sync: bool = True, **overrides: Any) -> OutpaintBot:
        settings = QueueSettings(_env_file=None, queue=self.queue, data_dir=self.data_dir, heartbeat_s=0.2)
        if self.queue == "embedded":
            queue: JobQueue = EmbeddedQueue(
                settings,
                engine_factory=self.engine_factory or (lambda: self.engine),
                load_engine_at_start=self.load_engine_at_start,
                poll_s=0.05,
                safety=self.safety,
            )
        else:
            queue = open_queue(settings)  # as `outpaint-bot` opens it: no engine in the bot
        return OutpaintBot(
            self.settings(**overrides),
            queue,
            engine=self.engine_settings,
            data_dir=self.data_dir,
            sync_commands=sync,
            words=self.safety.words if self.safety else None,
            ops=self.ops,
            guild_ready_timeout=0.1,
        )

    @asynccontextmanager
    async def running(self, **overrides: Any) -> AsyncIterator[OutpaintBot]:
        async with self.fake.running(self.bot(**overrides)) as bot:
            yield bot  # type: ignore[misc]

    async def outpaint(self, upload: Upload | None = None, **options: Any):
        """Run /outpaint as alice (or ``user=``) with an image and ``options``."""
        user = options.pop("user", None)
        values = {"direction": "right", "times": 1, **options}
        return await self.fake.send_slash_command(
            "outpaint", values, user=user, attachments={"image": upload or image_upload()}
        )

    async def result(self, *, after: int = 0) -> StoredMessage:
        """The first result message newer than message id ``after``."""
        return await self.fake.wait_for_message(lambda m: m.id > after and is_result(m))


async def answer(fake: FakeDiscord, interaction: InteractionRecord) -> StoredMessage:
    """The message that answered ``interaction`` (ephemeral reply or deferred response), once it
    has text."""

    def answered(f: FakeDiscord) -> StoredMessage | None:
        message = f.original_of(interaction)
        return message if message is not None and message.content else None

    return await fake.wait_for(answered)


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as server:
        yield server


@pytest.fixture
def harness(fake: FakeDiscord, tmp_path: Path) -> Harness:
    return Harness(fake, tmp_path / "data")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A ``redis-server`` of this test's own (it may be killed, restarted or frozen)."""
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.process.send_signal(signal.SIGCONT)  # a test that failed while Redis was frozen
    server.stop()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    """``outpaint-bot`` and ``outpaint-worker`` processes, killed at the end of the test."""
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()
