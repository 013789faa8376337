"""The bot on a Redis queue: it loads no engine; a separate worker does the work."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

from outpaint_engine.queue.redis import RedisQueue, RedisWorkerSide
from outpaint_engine.settings import QueueSettings
from outpaint_engine.worker import Worker
from tests.bot.conftest import EXPAND, Harness, RedisServer, image_upload, size_of
from tests.fakediscord import WAIT_S, FakeDiscord


async def test_slash_command_and_button_on_a_redis_queue(
    fake: FakeDiscord, tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_url = redis_server.url
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
        await asyncio.to_thread(side.retire, WAIT_S)
        side.r.close()
