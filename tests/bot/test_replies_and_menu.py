"""Continuing results by replying to them, and the "Outpaint" message menu with its modal."""

from __future__ import annotations

from bot import messages
from tests.bot.conftest import EXPAND, Harness, answer, image_upload, is_result, job_id_of, size_of
from tests.fakediscord.models import FLAG_EPHEMERAL


async def test_a_reply_that_pings_the_bot_continues_the_result(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running() as bot:  # no message-content intent
        await harness.outpaint(image_upload(96, 64), direction="right", times=1)
        first = await harness.result()
        chat = await fake.send_message(content="thanks, lovely!", reference=first, author=fake.bob)
        reply = await fake.send_message(content="left 2 a misty forest", reference=first, author=fake.bob)
        second = await harness.result(after=first.id)

        assert size_of(second.attachments[0]) == (96 + 3 * EXPAND, 64)
        assert second.reference_id == reply.id  # the result answers the reply (and pings bob)
        job = await bot.queue.get(job_id_of(second))
        assert job is not None
        assert (job.user_id, job.spec.prompt, job.spec.times) == (fake.bob.id, "a misty forest", 2)
        assert (job.meta["parent"], job.meta["origin"]) == (job_id_of(first), "reply")
        status = await fake.wait_for_message(
            lambda m: m.reference_id == reply.id and m.content.startswith("✅")
        )
        assert status.id != second.id
        assert not [m for m in fake.bot_messages() if m.reference_id == chat.id]  # chat is ignored


async def test_a_reply_the_bot_cannot_read_gets_a_hint(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running():
        await harness.outpaint()
        first = await harness.result()
        reply = await fake.send_message(content="up", reference=first, ping_reply=False)
        hint = await fake.wait_for_message(lambda m: m.reference_id == reply.id)
        assert hint.content == messages.REPLY_UNREADABLE


async def test_with_the_intent_replies_work_without_a_ping(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running(message_content=True):
        await harness.outpaint(image_upload(96, 64))
        first = await harness.result()
        await fake.send_message(content="up", reference=first, ping_reply=False)
        second = await harness.result(after=first.id)
        assert size_of(second.attachments[0]) == (96 + EXPAND, 64 + EXPAND)


async def test_reply_errors_are_answered_in_the_channel(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running(max_times=3):
        await harness.outpaint()
        first = await harness.result()
        reply = await fake.send_message(content="left 7", reference=first)
        refusal = await fake.wait_for_message(lambda m: m.reference_id == reply.id)
        assert refusal.content == messages.bad_times(3)


async def test_context_menu_on_a_message_with_an_image(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running() as bot:
        post = await fake.send_message(content="look at this", attachments=[image_upload(64, 64, "cat.png")])
        menu = await fake.context_menu("Outpaint", post)
        assert await fake.wait_response(menu) == 9  # a modal
        await fake.submit_modal(menu, {"direction": "Down", "times": "2", "prompt": "a red carpet"})
        result = await harness.result()
        assert size_of(result.attachments[0]) == (64, 64 + 2 * EXPAND)
        job = await bot.queue.get(job_id_of(result))
        assert job is not None and (job.spec.prompt, job.meta["origin"]) == ("a red carpet", "menu")


async def test_context_menu_on_a_result_continues_its_canvas(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running() as bot:
        await harness.outpaint(image_upload(96, 64), direction="left")
        first = await harness.result()
        menu = await fake.context_menu("Outpaint", first, user=fake.carol)
        await fake.wait_response(menu)
        await fake.submit_modal(menu, {"direction": "left", "times": "1"}, user=fake.carol)
        second = await harness.result(after=first.id)
        assert size_of(second.attachments[0]) == (96 + 2 * EXPAND, 64)
        job = await bot.queue.get(job_id_of(second))
        assert job is not None and job.spec.continue_canvas and job.meta["parent"] == job_id_of(first)


async def test_context_menu_mistakes(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running() as bot:
        text_only = await fake.send_message(content="no picture here")
        refused = await answer(fake, await fake.context_menu("Outpaint", text_only))
        assert refused.flags & FLAG_EPHEMERAL and refused.content == messages.NO_IMAGE_IN_MESSAGE

        post = await fake.send_message(attachments=[image_upload()])
        for values, expected in [
            ({"direction": "sideways"}, messages.BAD_DIRECTION),
            ({"direction": "up", "times": "lots"}, messages.bad_times(5)),
            ({"direction": "up", "times": "0"}, messages.bad_times(5)),
        ]:
            menu = await fake.context_menu("Outpaint", post)
            await fake.wait_response(menu)
            submitted = await fake.submit_modal(menu, values)
            message = await answer(fake, submitted)
            assert message.flags & FLAG_EPHEMERAL and message.content == expected
        assert await bot.queue.list_jobs() == []
        assert not [m for m in fake.bot_messages() if is_result(m)]


async def test_a_reply_without_text_that_pings_the_bot_gets_no_hint(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running():
        await harness.outpaint(image_upload(96, 64))
        first = await harness.result()
        picture = await fake.send_message(content="", reference=first, attachments=[image_upload(64, 64)])
        await fake.send_message(content="up", reference=first)
        await harness.result(after=first.id)
        assert not [m for m in fake.bot_messages() if m.reference_id == picture.id]
