"""Missing permissions are found before anything is queued, and refused privately."""

from __future__ import annotations

import logging

import pytest

from bot import messages
from tests.bot.conftest import Harness, answer, image_upload
from tests.fakediscord.models import ATTACH_FILES, DEFAULT_PERMISSIONS, FLAG_EPHEMERAL, SEND_MESSAGES


async def test_a_slash_command_where_the_bot_cannot_post_is_refused_privately(harness: Harness) -> None:
    fake = harness.fake
    fake.guild.everyone_permissions = DEFAULT_PERMISSIONS & ~SEND_MESSAGES & ~ATTACH_FILES
    async with harness.running() as bot:
        refusal = await answer(fake, await harness.outpaint())
        assert refusal.flags & FLAG_EPHEMERAL
        assert refusal.content == messages.missing_permissions(["Send Messages", "Attach Files"])
        assert not fake.downloads() and await bot.queue.list_jobs() == []


async def test_replies_where_the_bot_cannot_post_queue_nothing(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    fake = harness.fake
    async with harness.running() as bot:
        await harness.outpaint(image_upload(96, 64))
        first = await harness.result()

        await fake.set_permissions(fake.guild, DEFAULT_PERMISSIONS & ~ATTACH_FILES)
        reply = await fake.send_message(content="left", reference=first, author=fake.bob)
        refusal = await fake.wait_for_message(lambda m: m.reference_id == reply.id)
        assert refusal.content == messages.missing_permissions(["Attach Files"])

        caplog.set_level(logging.WARNING)
        await fake.set_permissions(fake.guild, DEFAULT_PERMISSIONS & ~SEND_MESSAGES)
        silent = await fake.send_message(content="up", reference=first, author=fake.carol)
        await fake.wait_for(lambda _: "can't answer a reply" in caplog.text)
        assert len(await bot.queue.list_jobs()) == 1  # the first job only
        assert not [m for m in fake.bot_messages() if m.reference_id == silent.id]
        assert len(fake.requests_to("POST", "/messages")) == 2  # the first result and the refusal
        assert "Traceback" not in caplog.text and "Ignoring exception" not in caplog.text
