"""Starting and stopping the bot: SIGTERM stops it as cleanly as Ctrl-C, and a stop lets the
requests still being taken in (downloading, queueing) finish first.

``docker stop`` and ``systemctl stop`` send SIGTERM. Either signal closes the bot: requests in
flight get ``shutdown_grace_s`` to be queued (the rest are told to try again), followers stop with
their progress journaled, and the embedded worker hands its job back to the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator

import discord

log = logging.getLogger(__name__)


class InFlight:
    """The request handlers (tasks) under way, so a stop can wait for them."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            yield
        finally:
            self._tasks.discard(task)

    async def drain(self, grace_s: float) -> None:
        """Wait up to ``grace_s`` for the tracked tasks, then cancel those still running (they
        answer their user while cancelled) and wait for them to end."""
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        if not tasks:
            return
        log.info("waiting up to %.0f s for %d request(s) being taken in", grace_s, len(tasks))
        _, late = await asyncio.wait(tasks, timeout=grace_s)
        for task in late:
            task.cancel()
        if late:
            log.warning("%d request(s) did not finish in time; their users are asked to try again", len(late))
            await asyncio.wait(late)


async def serve(bot: discord.Client, token: str) -> None:
    """Run ``bot`` until it stops by itself or SIGINT / SIGTERM asks it to; then close it."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []

    def on_signal(signum: signal.Signals) -> None:
        received.append(signum.name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        async with bot:
            running = asyncio.create_task(bot.start(token), name="discord-client")
            stopping = asyncio.create_task(stop.wait(), name="stop-signal")
            await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if stopping.done():
                log.info("%s: stopping", received[0])
                await bot.close()
            else:
                stopping.cancel()
            await running  # the client's own error (bad token...), if it stopped by itself
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
