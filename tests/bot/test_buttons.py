"""The buttons under results and status messages: extend, redo, cancel; and after a restart."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from bot import messages
from outpaint_engine.job import JobState
from tests.bot.conftest import EXPAND, Harness, answer, ids_of, image_upload, job_id_of, reached
from tests.fakediscord import StoredAttachment, StoredMessage
from tests.fakediscord.models import FLAG_EPHEMERAL
from tests.queue.engine_double import Pause


def pixels(attachment: StoredAttachment) -> np.ndarray:
    with Image.open(io.BytesIO(attachment.data)) as im:
        return np.asarray(im.convert("RGB"))


def button(message: StoredMessage, action: str) -> str:
    return f"outpaint:{action}:{job_id_of(message)}"


async def test_arrow_extends_the_result_from_its_canvas(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running() as bot:
        await harness.outpaint(image_upload(96, 64), direction="right", times=1)
        first = await harness.result()
        click = await fake.click_button(first, button(first, "left"), user=fake.bob)
        second = await harness.result(after=first.id)

        assert click.response_type == 5
        before, after = pixels(first.attachments[0]), pixels(second.attachments[0])
        assert after.shape == (64, 96 + 2 * EXPAND, 3)
        assert np.array_equal(after[:, EXPAND:], before)  # grown on the left, old pixels kept
        job = await bot.queue.get(job_id_of(second))
        assert job is not None
        assert (job.user_id, job.meta["parent"], job.spec.continue_canvas) == (
            fake.bob.id,
            job_id_of(first),
            True,
        )
        assert f"<@{fake.bob.id}>" in second.content


async def test_redo_repeats_the_last_expansion_with_a_new_seed(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running() as bot:
        await harness.outpaint(image_upload(64, 64), direction="down", times=2, seed=5)
        first = await harness.result()
        await fake.click_button(first, button(first, "redo"))
        redone = await harness.result(after=first.id)

        before, after = pixels(first.attachments[0]), pixels(redone.attachments[0])
        assert after.shape == before.shape == (64 + 2 * EXPAND, 64, 3)
        assert np.array_equal(after[: 64 + EXPAND], before[: 64 + EXPAND])  # the canvas before the last step
        assert not np.array_equal(after[64 + EXPAND :], before[64 + EXPAND :])  # a new last strip
        job = await bot.queue.get(job_id_of(redone))
        assert job is not None
        assert (job.spec.times, job.spec.direction, job.meta["parent"]) == (1, "down", job_id_of(first))
        assert job.spec.seed != 5


async def test_redo_of_a_single_step_starts_again_from_the_source(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running():
        await harness.outpaint(image_upload(96, 64), direction="left", times=1, seed=3)
        first = await harness.result()
        await fake.click_button(first, button(first, "redo"))
        redone = await harness.result(after=first.id)
        before, after = pixels(first.attachments[0]), pixels(redone.attachments[0])
        assert after.shape == before.shape
        assert np.array_equal(after[:, EXPAND:], before[:, EXPAND:])
        assert not np.array_equal(after[:, :EXPAND], before[:, :EXPAND])


async def test_only_the_requester_can_cancel(harness: Harness) -> None:
    fake = harness.fake
    pause = harness.engine.hook = Pause(seed=21)
    async with harness.running() as bot:
        interaction = await harness.outpaint(seed=21, times=2)
        await reached(pause)
        status = await fake.wait_for(
            lambda f: (
                (m := f.original_of(interaction)) and any("outpaint:cancel:" in c for c in m.custom_ids) and m
            )
        )
        cancel_id = next(c for c in status.custom_ids if c.startswith("outpaint:cancel:"))

        refused = await answer(fake, await fake.click_button(status, cancel_id, user=fake.bob))
        assert refused.flags & FLAG_EPHEMERAL and "Only the person who started" in refused.content
        job_id = cancel_id.rsplit(":", 1)[1]
        job = await bot.queue.get(job_id)
        assert job is not None and job.state is JobState.RUNNING

        accepted = await answer(fake, await fake.click_button(status, cancel_id))
        assert accepted.flags & FLAG_EPHEMERAL and "Cancelling" in accepted.content
        await fake.wait_for(lambda _: status.content == messages.cancelled("➡ right ×2"))
        assert status.custom_ids == []
        job = await bot.queue.get(job_id)
        assert job is not None and job.state is JobState.CANCELLED
        assert not [m for m in fake.bot_messages() if m.attachments and "outpaint:left:" in str(m.custom_ids)]


async def test_buttons_work_after_a_restart(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running():
        interaction = await harness.outpaint(image_upload(96, 64), direction="up", times=1)
        first = await harness.result()
        await fake.wait_for(lambda f: f.original_of(interaction).content.startswith("✅"))  # type: ignore[union-attr]
    async with harness.running(sync=False):  # a new bot process on the same data dir
        await fake.click_button(first, button(first, "down"))
        second = await harness.result(after=first.id)
        assert pixels(second.attachments[0]).shape == (64 + 2 * EXPAND, 64, 3)
        assert len([m for m in fake.bot_messages() if m.attachments and ids_of_message(m)]) == 2


async def test_a_job_running_during_a_restart_is_finished_and_shown(harness: Harness) -> None:
    fake = harness.fake
    pause = harness.engine.hook = Pause(seed=31, step=1)
    async with harness.running():
        interaction = await harness.outpaint(image_upload(96, 64), seed=31, times=2)
        await reached(pause)
    async with harness.running(sync=False):
        result = await harness.result()
        assert pixels(result.attachments[0]).shape == (64, 96 + 2 * EXPAND, 3)
        # The new process cannot use the old interaction's webhook: it edits the same status
        # message through the channel, to the end (a link to the result).
        status = fake.original_of(interaction)
        assert status is not None
        await fake.wait_for(lambda _: status.content.startswith("✅"))
        assert [m.id for m in fake.bot_messages() if not m.is_ephemeral] == [status.id, result.id]


def ids_of_message(message: StoredMessage) -> list[str]:
    return ids_of(message.versions[-1])
