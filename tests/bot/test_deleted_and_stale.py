"""Messages deleted under the bot, and interactions from before a restart or an older version."""

from __future__ import annotations

from bot import messages
from outpaint_engine.job import CancelToken, JobSpec
from tests.bot.conftest import EXPAND, Harness, answer, image_upload, is_result, job_id_of, reached, size_of
from tests.fakediscord.models import FLAG_EPHEMERAL
from tests.queue.engine_double import Pause


class Pauses:
    """Several :class:`Pause` hooks in one."""

    def __init__(self, *pauses: Pause) -> None:
        self.pauses = pauses

    def __call__(self, spec: JobSpec, step: int, denoise: int, cancel: CancelToken | None) -> None:
        for pause in self.pauses:
            pause(spec, step, denoise, cancel)


async def test_deleted_status_messages_never_stop_the_delivery(harness: Harness) -> None:
    fake = harness.fake
    first, second = Pause(seed=9, step=1), Pause(seed=9, step=2)
    harness.engine.hook = Pauses(first, second)
    async with harness.running():
        interaction = await harness.outpaint(image_upload(96, 64), times=3, seed=9)
        await reached(first)
        original = await fake.wait_for(lambda f: (m := f.original_of(interaction)) and m.attachments and m)
        await fake.delete_message(original)  # a moderator deletes the interaction's response
        first.go.set()

        await reached(second)
        replacement = await fake.wait_for_message(lambda m: m.id != original.id and bool(m.attachments))
        await fake.delete_message(replacement)  # and then the channel message that took over
        second.go.set()

        result = await harness.result()
        assert size_of(result.attachments[0]) == (96 + 3 * EXPAND, 64)
        last = await fake.wait_for_message(lambda m: m.content.startswith("✅"))
        assert str(result.id) in last.content and last.id not in (original.id, replacement.id)
    assert [m for m in fake.bot_messages() if is_result(m)] == [result]


async def test_a_reply_to_the_done_status_continues_the_job(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running() as bot:
        interaction = await harness.outpaint(image_upload(96, 64))
        first = await harness.result()
        status = fake.original_of(interaction)
        assert status is not None
        await fake.wait_for(lambda _: status.content.startswith("✅"))
        await fake.send_message(content="up", reference=status, author=fake.bob)
        second = await harness.result(after=first.id)
        assert size_of(second.attachments[0]) == (96 + EXPAND, 64 + EXPAND)
        job = await bot.queue.get(job_id_of(second))
        assert job is not None and job.meta["parent"] == job_id_of(first)


async def test_a_form_opened_before_a_restart_gets_an_answer(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running():
        post = await fake.send_message(content="look", attachments=[image_upload(64, 64)])
        menu = await fake.context_menu("Outpaint", post)
        assert await fake.wait_response(menu) == 9  # the form
    async with harness.running(sync=False):
        submitted = await fake.submit_modal(menu, {"direction": "up", "times": "1"})
        reply = await answer(fake, submitted)
        assert reply.flags & FLAG_EPHEMERAL and reply.content == messages.FORM_EXPIRED


async def test_a_button_of_an_older_version_gets_an_answer(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running():
        await harness.outpaint()
        result = await harness.result()
        click = await fake.click_button(result, f"outpaint-v0:extend-left:{job_id_of(result)}", force=True)
        reply = await answer(fake, click)
        assert reply.flags & FLAG_EPHEMERAL and reply.content == messages.BUTTON_OUTDATED
