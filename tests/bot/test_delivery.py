"""How results reach Discord: token expiry, upload limits, previews, queue positions."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot import messages
from tests.bot.conftest import EXPAND, Harness, answer, image_upload, reached, size_of
from tests.fakediscord import WAIT_S, FakeDiscord
from tests.fakediscord.models import ATTACH_FILES, FLAG_EPHEMERAL
from tests.queue.engine_double import Pause


async def test_after_the_token_expires_the_same_message_is_edited_through_the_channel(
    harness: Harness,
) -> None:
    fake = harness.fake
    pause = harness.engine.hook = Pause(seed=41, step=1)
    async with harness.running():
        interaction = await harness.outpaint(image_upload(96, 64), seed=41, times=2)
        await reached(pause)
        original = await fake.wait_for(lambda f: (m := f.original_of(interaction)) and m.attachments and m)
        fake.expire(interaction)
        pause.go.set()

        result = await harness.result()
        assert size_of(result.attachments[0]) == (96 + 2 * EXPAND, 64)
        await fake.wait_for(lambda _: original.content.startswith("✅"))  # the same message, to the end
        assert [r.status for r in fake.requests_to("PATCH", "/webhooks/") if r.status >= 400]  # refused
        assert fake.requests_to("PATCH", f"/channels/{fake.channel.id}/messages/{original.id}")
        assert [m.id for m in fake.bot_messages() if not m.is_ephemeral] == [original.id, result.id]


async def test_an_oversize_result_is_reencoded_with_a_note(tmp_path: Path) -> None:
    async with FakeDiscord(upload_limit=12_000) as fake:
        harness = Harness(fake, tmp_path / "data")
        async with harness.running():
            interaction = await harness.outpaint(image_upload(160, 64), times=2)
            result = await harness.result()
            (attachment,) = result.attachments
            assert attachment.filename.endswith((".webp", ".jpg"))
            assert attachment.size <= 12_000
            assert size_of(attachment) == (160 + 2 * EXPAND, 64)
            assert "ℹ" in result.content and "limit" in result.content
            status = fake.original_of(interaction)
            assert status is not None
            canvas = next(a for v in status.edits for a in v.attachments)
            assert canvas.size <= 12_000 and not canvas.filename.endswith(".png")


async def test_previews_show_while_denoising(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running(previews=True):
        interaction = await harness.outpaint(times=1)
        await harness.result()
        status = fake.original_of(interaction)
        assert status is not None
        assert any(a.filename == "preview.jpg" for v in status.edits for a in v.attachments)
        assert any("▰" in v.content or "▱" in v.content for v in status.edits)  # a progress bar


async def test_a_waiting_job_sees_its_queue_position_move(harness: Harness) -> None:
    fake = harness.fake
    pause = harness.engine.hook = Pause(seed=61)
    async with harness.running(queue_refresh_s=0.05):
        await harness.outpaint(seed=61)
        await reached(pause)
        bob = await answer(fake, await harness.outpaint(user=fake.bob))
        carol = await answer(fake, await harness.outpaint(user=fake.carol))
        assert "position 1" in bob.content and "position 2" in carol.content

        cancel = next(c for c in bob.custom_ids if c.startswith("outpaint:cancel:"))
        await fake.click_button(bob, cancel, user=fake.bob)
        await fake.wait_for(lambda _: "position 1" in carol.content)
        pause.go.set()
        await fake.wait_for(lambda _: carol.content.startswith("✅"))


async def test_a_waiting_job_is_not_edited_while_its_position_stays(harness: Harness) -> None:
    fake = harness.fake
    pause = harness.engine.hook = Pause(seed=71)
    async with harness.running(queue_refresh_s=0.01) as bot:
        await harness.outpaint(seed=71)
        await reached(pause)
        interaction = await harness.outpaint(user=fake.bob)
        bob = await answer(fake, interaction)
        job_id = next(c for c in bob.custom_ids if c.startswith("outpaint:cancel:")).rsplit(":", 1)[1]

        refreshed = asyncio.Event()
        asked = 0
        position = bot.queue.position

        async def counting_position(asked_for: str) -> int | None:
            nonlocal asked
            if asked_for == job_id:
                asked += 1
                if asked == 2:  # the first refresh has finished (edit included)
                    refreshed.set()
            return await position(asked_for)

        bot.queue.position = counting_position  # type: ignore[method-assign]
        await asyncio.wait_for(refreshed.wait(), WAIT_S)
        assert len(bob.versions) == 2  # "thinking…", then the queue position: once
        assert bob.content.startswith("⏳ ➡ right ×1: position 1 in the queue")
        pause.go.set()


async def test_a_channel_that_refuses_files_is_refused_before_anything_is_queued(
    fake: FakeDiscord, tmp_path: Path
) -> None:
    fake.guild.everyone_permissions &= ~ATTACH_FILES  # the bot may talk here but not upload
    harness = Harness(fake, tmp_path / "data")
    async with harness.running() as bot:
        interaction = await harness.outpaint(times=1)
        refusal = await answer(fake, interaction)
        assert refusal.flags & FLAG_EPHEMERAL
        assert refusal.content == messages.missing_permissions(["Attach Files"])
        assert not fake.downloads() and await bot.queue.list_jobs() == []
