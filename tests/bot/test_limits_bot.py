"""Limits as users meet them: per-user and per-guild caps, cooldown, guild allowlist."""

from __future__ import annotations

from bot import messages
from tests.bot.conftest import Harness, answer, image_upload, reached
from tests.fakediscord.models import FLAG_EPHEMERAL
from tests.queue.engine_double import Pause


async def test_user_and_guild_caps(harness: Harness) -> None:
    fake = harness.fake
    pause = harness.engine.hook = Pause(seed=51)
    async with harness.running(max_user_jobs=1, max_guild_jobs=2) as bot:
        await harness.outpaint(seed=51)
        await reached(pause)

        again = await answer(fake, await harness.outpaint())
        assert again.flags & FLAG_EPHEMERAL and again.content == messages.user_cap(1)
        assert (await answer(fake, await harness.outpaint(user=fake.bob))).content.startswith("⏳")
        carol = await answer(fake, await harness.outpaint(user=fake.carol))
        assert carol.content == messages.guild_cap(2)
        elsewhere = await harness.fake.send_slash_command(
            "outpaint",
            {"direction": "up", "times": 1},
            user=fake.carol,
            channel=fake.second_channel,
            attachments={"image": image_upload()},
        )
        assert (await answer(fake, elsewhere)).content.startswith("⏳")  # another guild has its own cap
        assert len(await bot.queue.list_jobs()) == 3
        pause.go.set()


async def test_cooldown_per_user(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running(cooldown_s=3600):
        await harness.outpaint()
        await harness.result()
        refused = await answer(fake, await harness.outpaint())
        assert refused.flags & FLAG_EPHEMERAL and refused.content.startswith("Please wait")
        assert "<t:" in refused.content
        assert await fake.wait_response(await harness.outpaint(user=fake.bob)) == 5


async def test_guild_allowlist(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running(guild_allowlist=[fake.second_guild.id]) as bot:
        refused = await answer(fake, await harness.outpaint())
        assert refused.content == messages.GUILD_NOT_ALLOWED
        assert await bot.queue.list_jobs() == []
