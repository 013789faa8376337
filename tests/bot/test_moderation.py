"""Moderator and requester controls: 🗑 on results, moderators cancelling and deleting, deleted
results as sources, a moderator's /queue, and a server's expansions per day across a restart."""

from __future__ import annotations

import asyncio

import pytest

import bot.moderation
from bot import messages
from tests.bot.conftest import Harness, answer, image_upload, job_id_of, reached
from tests.fakediscord import FakeDiscord, InteractionRecord, StoredMessage
from tests.fakediscord.models import DEFAULT_PERMISSIONS, MANAGE_MESSAGES
from tests.queue.engine_double import Pause

MODERATOR = DEFAULT_PERMISSIONS | MANAGE_MESSAGES


def delete_id(result: StoredMessage) -> str:
    return f"outpaint:delete:{job_id_of(result)}"


async def finished_status(fake: FakeDiscord, interaction: InteractionRecord) -> StoredMessage:
    return await fake.wait_for(
        lambda f: (m := f.original_of(interaction)) and m.content.startswith("✅") and m
    )


async def refused_reply(fake: FakeDiscord, to: StoredMessage) -> str:
    """What the bot answers to a reply ``left`` to ``to`` (mentioning it)."""
    reply = await fake.send_message(content="left", reference=to, author=fake.bob)
    return (await fake.wait_for_message(lambda m: m.reference_id == reply.id)).content


async def test_the_requester_deletes_a_result_and_it_can_no_longer_be_continued(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running() as bot:
        interaction = await harness.outpaint(image_upload(96, 64))
        result = await harness.result()
        status = await finished_status(fake, interaction)
        assert delete_id(result) in result.custom_ids

        refused = await answer(fake, await fake.click_button(result, delete_id(result), user=fake.bob))
        assert refused.is_ephemeral and refused.content == messages.DELETE_NOT_YOURS
        assert not result.deleted

        done = await answer(fake, await fake.click_button(result, delete_id(result)))
        assert done.is_ephemeral and done.content == messages.DELETED
        assert result.deleted
        await fake.wait_for(lambda _: status.content == messages.RESULT_DELETED_STATUS)
        assert status.attachments == [] and status.custom_ids == []
        assert await refused_reply(fake, status) == messages.RESULT_DELETED  # the ✅ status led to it
        assert len(await bot.queue.list_jobs()) == 1


async def test_a_moderator_cancels_and_deletes_what_others_started(harness: Harness) -> None:
    fake = harness.fake
    fake.set_member_permissions(fake.guild, fake.bob, MODERATOR)
    pause = harness.engine.hook = Pause(seed=61)
    async with harness.running():
        interaction = await harness.outpaint(seed=61, times=2)
        await reached(pause)
        status = await fake.wait_for(
            lambda f: (
                (m := f.original_of(interaction)) and any("outpaint:cancel:" in c for c in m.custom_ids) and m
            )
        )
        cancel_id = next(c for c in status.custom_ids if c.startswith("outpaint:cancel:"))
        refused = await answer(fake, await fake.click_button(status, cancel_id, user=fake.carol))
        assert refused.is_ephemeral and refused.content == messages.CANCEL_NOT_YOURS
        accepted = await answer(fake, await fake.click_button(status, cancel_id, user=fake.bob))
        assert accepted.content == messages.CANCELLING
        await fake.wait_for(lambda _: status.content == messages.cancelled("➡ right ×2"))

        await harness.outpaint(seed=62)
        result = await harness.result()
        deleted = await answer(fake, await fake.click_button(result, delete_id(result), user=fake.bob))
        assert deleted.content == messages.DELETED and result.deleted


async def test_a_result_a_moderator_deletes_in_discord_is_no_source_any_more(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = harness.fake
    journaled = asyncio.Event()
    handler = bot.moderation.on_message_deleted

    async def noted(*args: object) -> None:
        await handler(*args)  # type: ignore[arg-type]
        journaled.set()

    monkeypatch.setattr(bot.moderation, "on_message_deleted", noted)
    async with harness.running():
        interaction = await harness.outpaint()
        result = await harness.result()
        status = await finished_status(fake, interaction)
        await fake.delete_message(result)
        await asyncio.wait_for(journaled.wait(), 30)
        assert await refused_reply(fake, status) == messages.RESULT_DELETED


async def test_queue_shows_a_moderator_the_servers_jobs(harness: Harness) -> None:
    fake = harness.fake
    fake.set_member_permissions(fake.guild, fake.carol, MODERATOR)
    pause = harness.engine.hook = Pause(seed=71)
    async with harness.running() as app:
        await harness.outpaint(seed=71)
        await reached(pause)
        waiting = await answer(fake, await harness.outpaint(seed=72, user=fake.bob))
        assert waiting.content.startswith("⏳")
        (alices,) = await app.queue.list_jobs(user_id=fake.alice.id)
        (bobs,) = await app.queue.list_jobs(user_id=fake.bob.id)

        mine = await answer(fake, await fake.send_slash_command("queue", user=fake.bob))
        assert bobs.id in mine.content and alices.id not in mine.content
        everyone = await answer(fake, await fake.send_slash_command("queue", user=fake.carol))
        lines = everyone.content.splitlines()
        assert everyone.is_ephemeral and len(lines) == 2
        assert alices.id in lines[0] and f"<@{fake.alice.id}>" in lines[0] and "running" in lines[0]
        assert bobs.id in lines[1] and f"<@{fake.bob.id}>" in lines[1] and "position 1" in lines[1]
        assert all(f"/channels/{fake.guild.id}/{fake.channel.id}/" in line for line in lines)  # status links
        elsewhere = await fake.send_slash_command("queue", user=fake.carol, channel=fake.second_channel)
        assert (await answer(fake, elsewhere)).content == messages.NOTHING_QUEUED  # no moderator there
        pause.go.set()


async def test_a_servers_expansions_per_day_survive_a_restart(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running(max_guild_expansions_per_day=3):
        await harness.outpaint(times=2)
        first = await harness.result()
        refused = await answer(fake, await harness.outpaint(times=2, user=fake.bob))
        assert refused.is_ephemeral
        assert refused.content.startswith("This server has 1 of its 3 expansions for today left.")
        assert "<t:" in refused.content
        await harness.outpaint(times=1, user=fake.bob)
        await harness.result(after=first.id)
    async with harness.running(sync=False, max_guild_expansions_per_day=3):
        again = await answer(fake, await harness.outpaint(user=fake.carol))
        assert again.is_ephemeral and again.content.startswith("This server has used all 3")
        elsewhere = await fake.send_slash_command(
            "outpaint",
            {"direction": "up", "times": 1},
            user=fake.carol,
            channel=fake.second_channel,
            attachments={"image": image_upload()},
        )
        assert await fake.wait_response(elsewhere) == 5  # another server has its own count
