"""The bot on a Redis queue: it loads no engine; a separate worker does the work."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from outpaint_engine.queue.redis import RedisQueue, RedisWorkerSide
from outpaint_engine.settings import QueueSettings
from outpaint_engine.worker import Worker
from tests.bot.conftest import EXPAND, Harness, image_upload, size_of
from tests.fakediscord import WAIT_S, FakeDiscord

sys.path.insert(0, str(Path(__file__).parents[1] / "queue"))
from queue_helpers import REDIS_SERVER, RedisServer


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    server = RedisServer(tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    yield server.url
    server.stop()


async def test_slash_command_and_button_on_a_redis_queue(
    fake: FakeDiscord, tmp_path: Path, redis_url: str
) -> None:
    harness = Harness(fake, tmp_path / "bot-data", queue=redis_url)
    side = RedisWorkerSide(
        QueueSettings(_env_file=None, queue=redis_url, heartbeat_s=0.2), name="test-worker"
    )
    side.check()
    worker = Worker(side, lambda: harness.engine, idle_wait_s=side.idle_wait_s)
    thread = threading.Thread(target=worker.serve, daemon=True)
    thread.start()
    try:
        async with harness.running() as bot:
            assert isinstance(bot.queue, RedisQueue)
            await harness.outpaint(image_upload(96, 64), direction="right", times=2)
            first = await harness.result()
            assert size_of(first.attachments[0]) == (96 + 2 * EXPAND, 64)
            extend = next(c for c in first.custom_ids if c.startswith("outpaint:up:"))
            await fake.click_button(first, extend)
            second = await harness.result(after=first.id)
            assert size_of(second.attachments[0]) == (96 + 2 * EXPAND, 64 + EXPAND)
        assert harness.engine.computed  # the worker, not the bot, ran the engine
    finally:
        side.stopping()
        worker.stop()
        await asyncio.to_thread(thread.join, WAIT_S)
        side.r.close()
