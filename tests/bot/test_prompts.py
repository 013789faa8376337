"""The prompt a job runs with, as users see it: ``Prompt (auto): …`` written by the worker's
captioner (the engine double's), ``Prompt: …`` given by the user, escaped; /queue; and 🖋, a form
pre-filled with the prompt that redoes (or continues) the result with the edited one, also after a
restart."""

from __future__ import annotations

from bot import messages
from bot.prompt_form import CONTINUE, PROMPT, THEN
from outpaint_engine.captioner import Caption
from outpaint_engine.safety import SafetyCheck, SafetySettings
from tests.bot.conftest import EXPAND, Harness, answer, image_upload, job_id_of, reached, size_of
from tests.fakediscord import InteractionRecord, StoredMessage
from tests.fakediscord.models import FLAG_EPHEMERAL, walk_components
from tests.queue.engine_double import FastEngineDouble, Pause

CAPTION = "a misty pine forest"


def captioning(harness: Harness, caption: Caption) -> FastEngineDouble:
    engine = FastEngineDouble(caption=caption)
    harness.engine = engine
    return engine


def status_texts(harness: Harness, interaction: InteractionRecord) -> list[str]:
    """Every text the status message of ``interaction`` showed."""
    status = harness.fake.original_of(interaction)
    assert status is not None
    return [version.content for version in status.versions]


def form_inputs(interaction: InteractionRecord) -> dict[str, dict]:
    """The inputs of the form the bot answered ``interaction`` with, by custom id."""
    assert interaction.modal is not None
    return {c["custom_id"]: c for c in walk_components(interaction.modal["components"]) if "custom_id" in c}


async def test_the_auto_prompt_shows_escaped_in_the_status_the_result_and_queue(harness: Harness) -> None:
    fake = harness.fake
    engine = captioning(harness, Caption("@everyone look **here** at <@123456789012345678> [a](https://x.y)"))
    pause = Pause(seed=7, step=0, denoise=1)
    engine.hook = pause
    shown = (
        r"Prompt (auto): @\u200beveryone look \*\*here\*\* at <@\u200b123456789012345678> \[a](https://x.y)"
    )
    shown = shown.replace(r"\u200b", "\u200b")
    async with harness.running() as bot:
        command = await harness.outpaint(image_upload(96, 64), seed=7)  # no prompt
        await reached(pause)
        listing = await answer(fake, await fake.send_slash_command("queue"))
        pause.go.set()
        result = await harness.result()

        job = await bot.queue.get(job_id_of(result))
        assert job is not None and job.auto_prompt is not None and job.spec.prompt == ""
        assert shown in result.content.splitlines()  # the line under the first
        assert any(shown in text for text in status_texts(harness, command))
        assert "Prompt (auto): @\u200beveryone look" in listing.content  # shorter there
        assert "@everyone" not in result.content + listing.content
        assert engine.captions == ["right"]


async def test_a_failed_auto_prompt_says_why_and_a_user_prompt_is_shown_as_given(harness: Harness) -> None:
    captioning(harness, Caption("", "the captioner timed out"))
    async with harness.running():
        command = await harness.outpaint(image_upload(96, 64))
        first = await harness.result()
        assert "No auto prompt: the captioner timed out." in first.content
        assert any("No auto prompt" in text for text in status_texts(harness, command))

        await harness.outpaint(image_upload(96, 64), prompt="a _red_ barn")
        second = await harness.result(after=first.id)
        assert r"Prompt: a \_red\_ barn" in second.content
        assert harness.engine.captions == ["right"]  # the second was not captioned


def pen(message: StoredMessage) -> str:
    return f"outpaint:prompt:{job_id_of(message)}"


async def test_the_pen_redoes_or_continues_with_the_edited_prompt_also_after_a_restart(
    harness: Harness,
) -> None:
    fake = harness.fake
    captioning(harness, Caption(CAPTION))
    harness.safety = SafetyCheck(SafetySettings(_env_file=None, blocked_words=["gore"]))
    async with harness.running() as bot:
        await harness.outpaint(image_upload(96, 64), direction="right", times=1)
        first = await harness.result()
        assert pen(first) in first.custom_ids

        opened = await fake.click_button(first, pen(first), user=fake.bob)  # anyone may
        assert await fake.wait_response(opened) == 9  # a form
        inputs = form_inputs(opened)
        assert inputs[PROMPT]["value"] == CAPTION  # pre-filled with the prompt used

        refused = await answer(fake, await fake.submit_modal(opened, {PROMPT: "gore"}, user=fake.bob))
        assert refused.flags & FLAG_EPHEMERAL and refused.content == messages.PROMPT_NOT_ALLOWED

        await fake.submit_modal(opened, {PROMPT: "a misty pine forest at dawn"}, user=fake.bob)
        redone = await harness.result(after=first.id)
        assert size_of(redone.attachments[0]) == size_of(first.attachments[0])  # the last expansion again
        job = await bot.queue.get(job_id_of(redone))
        assert job is not None
        assert (job.user_id, job.spec.prompt, job.meta["parent"], job.meta["origin"]) == (
            fake.bob.id,
            "a misty pine forest at dawn",
            job_id_of(first),
            "prompt",
        )
        assert job.auto_prompt is None and "Prompt: a misty pine forest at dawn" in redone.content

        before_restart = await fake.click_button(redone, pen(redone))
        await fake.wait_response(before_restart)
        assert form_inputs(before_restart)[PROMPT]["value"] == "a misty pine forest at dawn"

    async with harness.running() as bot:  # a new process: the form is not in its memory
        await fake.submit_modal(before_restart, {PROMPT: "a frozen lake", THEN: CONTINUE})
        continued = await harness.result(after=redone.id)
        assert size_of(continued.attachments[0]) == (96 + 2 * EXPAND, 64)  # one expansion more
        job = await bot.queue.get(job_id_of(continued))
        assert job is not None and (job.spec.prompt, job.meta["parent"]) == (
            "a frozen lake",
            job_id_of(redone),
        )
        assert job.spec.continue_canvas
        assert len(await bot.queue.list_jobs()) == 3  # each form made one job, the refused one none
    assert harness.engine.captions == ["right"]  # only the first job had no prompt
