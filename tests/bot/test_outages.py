"""Queue outages: the bot's followers wait them out (any length) and deliver every result once;
acknowledgements never wait on the queue.

The first tests use a real ``redis-server`` (started here on a free port, append-only with fsync)
and a real ``outpaint-worker`` process on the engine double; the last one makes the embedded queue
unreachable on demand, call by call, to pin the contract every backend follows
(:class:`~outpaint_engine.queue.base.QueueUnavailable` from any call, events resubscribed).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from bot import messages
from outpaint_engine.job import Event
from outpaint_engine.queue.base import JobQueue, QueueUnavailable
from tests.bot.conftest import (
    EXPAND,
    Harness,
    RedisServer,
    answer,
    image_upload,
    is_result,
    job_id_of,
    reached,
    size_of,
)
from tests.bot.processes import Processes
from tests.fakediscord import FakeDiscord, StoredMessage
from tests.queue.engine_double import Pause

QUICK = {"queue_refresh_s": 0.05, "reconnect_max_s": 0.2}


def results(fake: FakeDiscord) -> list[StoredMessage]:
    return [m for m in fake.bot_messages() if is_result(m)]


async def test_redis_stopped_while_jobs_are_followed_every_result_is_delivered_once(
    fake: FakeDiscord, tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    gate = tmp_path / "gate"
    worker = processes.worker(redis_server.url, OUTPAINT_TEST_ENGINE_GATE=f"{gate}:1")
    await processes.until_output(worker, "serving")
    harness = Harness(fake, tmp_path / "bot", queue=redis_server.url)
    async with harness.running(**QUICK):
        users = [fake.alice, fake.bob, fake.carol]
        statuses = [await answer(fake, await harness.outpaint(times=2, user=u)) for u in users]
        await fake.wait_for(lambda _: statuses[0].attachments)  # the first job holds in expansion 2

        redis_server.kill()
        await fake.wait_for(lambda _: any(s.content == messages.reconnecting("➡ right ×2") for s in statuses))
        redis_server.start()  # the same port and append-only file: nothing was lost
        gate.touch()
        await fake.wait_for(lambda _: all(s.content.startswith("✅") for s in statuses))

    delivered = results(fake)
    assert len({job_id_of(m) for m in delivered}) == len(delivered) == 3  # every job, once
    assert all(size_of(m.attachments[0]) == (96 + 2 * EXPAND, 64) for m in delivered)
    assert all(any(str(m.id) in s.content for s in statuses) for m in delivered)


async def test_acks_do_not_wait_for_a_frozen_redis(
    fake: FakeDiscord, tmp_path: Path, redis_server: RedisServer, processes: Processes
) -> None:
    worker = processes.worker(redis_server.url)
    await processes.until_output(worker, "serving")
    harness = Harness(fake, tmp_path / "bot", queue=redis_server.url)
    async with harness.running(**QUICK):
        await harness.outpaint(user=fake.carol)
        await harness.result()  # connected and warm
        assert redis_server.process is not None
        redis_server.process.send_signal(signal.SIGSTOP)  # frozen: connections open, no answers
        try:
            jobs = [await harness.outpaint(user=u) for u in (fake.alice, fake.bob)]
            listing = await fake.send_slash_command("queue", user=fake.carol)
            for interaction in [*jobs, listing]:
                assert await fake.wait_response(interaction) == 5  # acknowledged while Redis is frozen
        finally:
            redis_server.process.send_signal(signal.SIGCONT)

        def outcome(message: StoredMessage | None) -> bool:  # a result, or a clear "try again"
            return message is not None and message.content.startswith(("✅", messages.QUEUE_DOWN))

        def outcomes(f: FakeDiscord) -> list[StoredMessage] | None:
            shown = [f.original_of(i) for i in jobs]
            return shown if all(outcome(m) for m in shown) else None  # type: ignore[return-value]

        shown = await fake.wait_for(outcomes)
        await fake.wait_for(lambda f: (m := f.original_of(listing)) and not m.is_loading)
    assert len(results(fake)) == 1 + sum(m.content.startswith("✅") for m in shown)  # each at most once


class Outage:
    """Makes a queue unreachable on demand, the way the contract says a backend reports it: while
    it is down every call raises :class:`QueueUnavailable`, and so does an open event stream."""

    CALLS = ("get", "position", "eta", "get_canvas", "get_source", "list_jobs", "submit", "cancel")

    def __init__(self, queue: JobQueue) -> None:
        self.down = asyncio.Event()
        self.failed_calls: list[str] = []
        for name in self.CALLS:
            setattr(queue, name, self._guarded(name, getattr(queue, name)))
        follow = queue.events

        async def events(job_id: str, *, after: int = 0) -> AsyncIterator[tuple[int, Event]]:
            self._check("events")
            stream = aiter(follow(job_id, after=after))
            while True:
                step, down = asyncio.ensure_future(anext(stream)), asyncio.ensure_future(self.down.wait())
                await asyncio.wait({step, down}, return_when=asyncio.FIRST_COMPLETED)
                down.cancel()
                if not step.done():
                    step.cancel()
                    self._check("events")
                try:
                    yield step.result()
                except StopAsyncIteration:
                    return

        queue.events = events  # type: ignore[method-assign]

    def _check(self, name: str) -> None:
        if self.down.is_set():
            self.failed_calls.append(name)
            raise QueueUnavailable("The job queue is unreachable (test outage).")

    def _guarded(self, name: str, call: Any) -> Any:
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            self._check(name)
            return await call(*args, **kwargs)

        return guarded


async def test_every_queue_call_may_fail_and_the_follower_picks_up_where_it_left_off(
    harness: Harness,
) -> None:
    fake = harness.fake
    pause = harness.engine.hook = Pause(seed=8, step=1)
    async with harness.running(**QUICK) as bot:
        outage = Outage(bot.queue)
        interaction = await harness.outpaint(image_upload(96, 64), times=3, seed=8)
        await reached(pause)
        status = await fake.wait_for(lambda f: (m := f.original_of(interaction)) and m.attachments and m)
        waiting = await answer(fake, await harness.outpaint(user=fake.bob))  # queued behind it

        outage.down.set()
        pause.go.set()  # the job goes on in the worker while the bot cannot see it
        await fake.wait_for(lambda _: waiting.content == messages.reconnecting("➡ right ×1"))
        await fake.wait_for(lambda _: status.content == messages.reconnecting("➡ right ×3"))
        assert "events" in outage.failed_calls  # the streams ended with the outage; resubscribed after
        outage.down.clear()

        await fake.wait_for(lambda _: status.content.startswith("✅") and waiting.content.startswith("✅"))
    assert sorted(size_of(m.attachments[0]) for m in results(fake)) == [
        (96 + EXPAND, 64),
        (96 + 3 * EXPAND, 64),
    ]
