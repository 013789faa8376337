"""The operator's view of the bot: its metrics and health server (``OUTPAINT_METRICS_PORT``).

One endpoint for the bot and, with the embedded queue, its worker thread (the worker's state, GPU
memory). ``/healthz``: the event loop answers. ``/readyz``: connected to Discord's gateway and
the queue answers. The server's thread asks the queue through the bot's event loop, each question
bounded by :data:`ASK_TIMEOUT_S`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from bot.metrics import GATEWAY_DISCONNECTS, BotCollector
from outpaint_engine.observability.gpu import GpuMemoryCollector
from outpaint_engine.observability.server import Health, OpsServer
from outpaint_engine.settings import OpsSettings
from outpaint_engine.worker.metrics import WorkerCollector

if TYPE_CHECKING:
    from bot.app import OutpaintBot

log = logging.getLogger(__name__)
T = TypeVar("T")

ASK_TIMEOUT_S = 5.0
"""The longest a scrape or health check waits for the event loop and the queue."""


class BotOps:
    """The gateway's state as the bot reports it, and the metrics and health server."""

    def __init__(self, bot: OutpaintBot, settings: OpsSettings | None) -> None:
        self.bot = bot
        self.settings = settings
        self.connected = False
        self.server: OpsServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def gateway_ready(self) -> None:
        """READY or RESUMED: connected to the gateway."""
        self.connected = True

    def gateway_lost(self) -> None:
        if self.connected:
            GATEWAY_DISCONNECTS.inc()
        self.connected = False

    def start(self) -> None:
        """Serve, when a port is set (call on the event loop, before the queue starts, so a taken
        port stops the bot before its engine loads); raises
        :class:`~outpaint_engine.observability.server.OpsServerError`."""
        if self.settings is None or self.settings.metrics_port is None:
            return
        self._loop = asyncio.get_running_loop()
        health = Health()
        health.liveness["event_loop"] = self._loop_answers
        health.readiness["gateway"] = self._gateway_connected
        health.readiness["queue"] = self._queue_answers
        health.info["workers"] = lambda: [w.to_dict() for w in self.ask(self.bot.queue.workers)]
        collectors = [
            BotCollector(self.bot, self.ask, lambda: self.connected),
            WorkerCollector(self.bot.queue.local_worker),  # the embedded worker, once the queue started
            GpuMemoryCollector(),
        ]
        self.server = OpsServer(self.settings.metrics_host, self.settings.metrics_port, health, collectors)
        self.server.start()

    def _loop_answers(self) -> None:
        self.ask(asyncio.sleep, 0)

    def _gateway_connected(self) -> str | None:
        return None if self.connected else "not connected to Discord's gateway"

    def _queue_answers(self) -> None:
        self.ask(self.bot.queue.depth)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def ask(self, make: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await make(*args)`` on the bot's event loop, from another thread, within
        :data:`ASK_TIMEOUT_S`."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("the bot's event loop is not running")

        async def bounded() -> T:
            return await asyncio.wait_for(make(*args), ASK_TIMEOUT_S)

        return asyncio.run_coroutine_threadsafe(bounded(), loop).result(ASK_TIMEOUT_S + 1)
