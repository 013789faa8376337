"""A burst of simultaneous ``/outpaint`` commands, for the burst test and for measuring how fast
they are acknowledged: ``python -m tests.bot.burst [COUNT] [USERS] [QUEUE]`` prints the ack times
on this machine (an ``outpaint-bot`` process with the default limits, on the embedded queue with
the engine double or on the Redis queue at QUEUE, against the fake Discord in this process)."""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

from tests.bot.conftest import Harness, image_upload
from tests.bot.processes import Processes
from tests.fakediscord import FakeDiscord, InteractionRecord, User


def add_users(fake: FakeDiscord, count: int) -> list[User]:
    """``count`` users (alice, bob, carol and more); before the bot starts."""
    users = [fake.alice, fake.bob, fake.carol]
    users += [fake.add_user(f"user{n}") for n in range(len(users), count)]
    return users[:count]


async def burst(harness: Harness, users: list[User], count: int) -> list[InteractionRecord]:
    """``count`` ``/outpaint`` commands sent at once, round-robin over ``users``; returns once the
    bot acknowledged all of them."""
    upload = image_upload()
    interactions = await asyncio.gather(
        *(harness.outpaint(upload, user=users[n % len(users)]) for n in range(count))
    )
    await harness.fake.wait_for(lambda _: all(i.acknowledged for i in interactions))
    return interactions


def ack_times(interactions: list[InteractionRecord]) -> dict[str, float]:
    seconds = sorted(i.ack_s for i in interactions if i.ack_s is not None)
    percentiles = statistics.quantiles(seconds, n=100, method="inclusive")
    return {"p50": percentiles[49], "p99": percentiles[98], "max": seconds[-1]}


async def measure(count: int, users: int, queue: str = "embedded") -> dict[str, float]:
    """The ack times of a burst sent to an ``outpaint-bot`` process (Discord and the bot in
    different processes, as in production)."""
    async with FakeDiscord() as fake:
        with tempfile.TemporaryDirectory() as tmp:
            people = add_users(fake, users)
            processes = Processes(Path(tmp))
            try:
                bot = processes.bot(fake, Path(tmp) / "data", OUTPAINT_COOLDOWN_S="10", OUTPAINT_QUEUE=queue)
                await processes.until_output(bot, "logged in as")
                return ack_times(await burst(Harness(fake, Path(tmp)), people, count))
            finally:
                processes.stop_all()


if __name__ == "__main__":
    defaults = ["200", "10", "embedded"]
    count, users, queue = [*sys.argv[1:4], *defaults[len(sys.argv[1:4]) :]]
    times = asyncio.run(measure(int(count), int(users), queue))
    summary = ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in times.items())
    print(f"{count} /outpaint from {users} users acknowledged in: {summary}")
