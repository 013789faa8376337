"""Zoom out and aspect ratios end to end: /outpaint direction:all and aspect:, the 🔍 button, the
replies "zoom 2" and "make it 16:9", their statuses (the plan first, every side counted) and
their private refusals; and the option rules, the reply parser and the aspect suggestions."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bot import messages
from bot.errors import UserError
from bot.growth import aspect_choices, growth, growth_from_word
from bot.replies import ReplyRequest, parse_reply
from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.plan import PlanError, plan_job
from tests.bot.conftest import WINDOW, Harness, answer, image_upload, job_id_of, png, size_of
from tests.fakediscord import FakeDiscord, InteractionRecord, StoredAttachment, Upload
from tests.fakediscord.models import FLAG_EPHEMERAL


def pixels(attachment: StoredAttachment) -> np.ndarray:
    with Image.open(io.BytesIO(attachment.data)) as im:
        return np.asarray(im.convert("RGB"))


def decoded(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


async def slash(fake: FakeDiscord, upload: Upload, **options: Any) -> InteractionRecord:
    """/outpaint with exactly ``options`` (no direction unless given)."""
    return await fake.send_slash_command("outpaint", options, attachments={"image": upload})


def texts(fake: FakeDiscord, interaction: InteractionRecord) -> list[str]:
    status = fake.original_of(interaction)
    assert status is not None
    return [version.content for version in status.versions]


async def test_direction_all_zooms_out_around_the_picture_and_counts_every_side(harness: Harness) -> None:
    fake = harness.fake
    upload = image_upload(96, 64)
    plan = plan_job(96, 64, JobSpec(Direction.RIGHT, window=WINDOW, zoom=1.5))
    async with harness.running() as bot:
        interaction = await slash(fake, upload, direction="all")
        result = await harness.result()

        assert size_of(result.attachments[0]) == plan.final_size == (144, 96)
        x, y = plan.origin
        assert np.array_equal(pixels(result.attachments[0])[y : y + 64, x : x + 96], decoded(png(96, 64)))
        job = await bot.queue.get(job_id_of(result))
        assert job is not None and (job.spec.zoom, job.spec.aspect) == (1.5, None)
        sides = [str(s.direction) for s in plan.steps]
        assert sides == ["left", "right", "up", "down"]
        shown = texts(fake, interaction)
        assert any(
            "🔍 zoom 1.5×: position" in t and f"📐 Plan: {plan.describe()} (144×96)." in t for t in shown
        )
        for number, side in enumerate(sides[:-1], start=1):  # the last one is the result
            assert any(t.startswith(f"🎨 🔍 zoom 1.5×: expansion {number}/4: {side} done (") for t in shown)
        assert "🔍 zoom 1.5×, 144×96" in result.content
        assert f"outpaint:zoom:{job.id}" in result.custom_ids


async def test_the_zoom_button_and_a_zoom_reply_zoom_out_a_result(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running() as bot:
        await harness.outpaint(image_upload(64, 64), direction="up", times=1)
        first = await harness.result()
        await fake.click_button(first, f"outpaint:zoom:{job_id_of(first)}", user=fake.bob)
        zoomed = await harness.result(after=first.id)

        before, after = pixels(first.attachments[0]), pixels(zoomed.attachments[0])
        plan = plan_job(64, 80, JobSpec(Direction.RIGHT, window=WINDOW, zoom=1.5, continue_canvas=True))
        (x, y), (width, height) = plan.origin, plan.final_size
        assert after.shape == (height, width, 3) == (112, 96, 3)
        assert np.array_equal(after[y : y + 80, x : x + 64], before)  # kept exactly, in the middle
        job = await bot.queue.get(job_id_of(zoomed))
        assert job is not None
        assert (job.user_id, job.spec.zoom, job.spec.continue_canvas) == (fake.bob.id, 1.5, True)
        assert job.meta["parent"] == job_id_of(first)

        await fake.send_message(content="zoom 2 a wide meadow", reference=zoomed)
        twice = await harness.result(after=zoomed.id)
        assert size_of(twice.attachments[0]) == (96 * 2, 112 * 2)
        job = await bot.queue.get(job_id_of(twice))
        assert job is not None and (job.spec.zoom, job.spec.prompt) == (2.0, "a wide meadow")


async def test_an_aspect_ratio_shows_its_plan_and_grows_both_sides_evenly(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running() as bot:
        interaction = await slash(fake, image_upload(96, 64), aspect="16x9")
        result = await harness.result()

        assert size_of(result.attachments[0]) == (112, 64)  # 8 px on the left and on the right
        assert np.array_equal(pixels(result.attachments[0])[:, 8:104], decoded(png(96, 64)))
        job = await bot.queue.get(job_id_of(result))
        assert job is not None and job.spec.aspect == "16:9"
        shown = texts(fake, interaction)
        assert any(
            "⇔ 16:9" in t and "📐 Plan: 1 expansion left, 1 right → 16:9 (112×64)." in t for t in shown
        )
        assert any(t.startswith("🎨 ⇔ 16:9: expansion 1/2: left done (104×64)") for t in shown)

        await fake.send_message(content="make it 9:16", reference=result, author=fake.bob)
        tall = await harness.result(after=result.id)
        width, height = size_of(tall.attachments[0])
        assert width == 112 and abs(height - 112 * 16 / 9) <= 16
        refusal_to = await fake.send_message(content="9:16", reference=tall, author=fake.bob)
        refusal = await fake.wait_for_message(lambda m: m.reference_id == refusal_to.id)
        assert refusal.content == "The image is already 9:16."


async def test_refusals_of_a_zoom_or_an_aspect_ratio_are_private(harness: Harness) -> None:
    fake = harness.fake
    cases = [
        ({"aspect": "16:9"}, image_upload(128, 72), "The image is already 16:9."),
        ({"aspect": "1:9"}, image_upload(), "1:9 is too extreme"),
        ({"aspect": "wide"}, image_upload(), "'wide' is not an aspect ratio"),
        ({"aspect": "21:9"}, image_upload(96, 64), "larger than I can make"),
        ({"direction": "left", "aspect": "16:9"}, image_upload(), messages.ASPECT_WITHOUT_DIRECTION),
        ({"direction": "all", "times": 3}, image_upload(), messages.PAN_ONLY),
        ({"direction": "up", "zoom": 2.0}, image_upload(), messages.ZOOM_NEEDS_ALL),
        ({}, image_upload(), messages.NO_GROWTH),
    ]
    async with harness.running(max_canvas_side=140, max_guild_expansions_per_day=2) as bot:
        for options, upload, expected in cases:
            message = await answer(fake, await slash(fake, upload, **options))
            assert expected in message.content, (options, message.content)
            assert message.flags & FLAG_EPHEMERAL, options
        assert fake.downloads() == [] and await bot.queue.list_jobs() == []
        await slash(fake, image_upload(96, 64), aspect="16:9")  # two expansions: nothing was counted
        await harness.result()


# --- the rules, without Discord --------------------------------------------------------------------


def test_options_that_do_not_go_together_are_refused() -> None:
    assert growth("all") == {"direction": None, "zoom": 1.5}
    assert growth(None, zoom=2.0) == growth("all", zoom=2.0) == {"direction": None, "zoom": 2.0}
    assert growth(None, aspect="16/9", times=1) == {"direction": None, "aspect": "16:9"}
    assert growth("left", times=3) == {"direction": Direction.LEFT, "times": 3, "expand": None}
    for direction, values in [("all", {"aspect": "1:1"}), ("up", {"zoom": 2.0}), ("all", {"expand": 16})]:
        with pytest.raises(UserError):
            growth(direction, **values)
    assert growth_from_word(" ALL ", 1) == {"direction": None, "zoom": 1.5}
    assert growth_from_word("4:5", 1) == {"direction": None, "aspect": "4:5"}
    with pytest.raises(UserError, match="Direction must be"):
        growth_from_word("sideways", 1)
    with pytest.raises(PlanError, match="too extreme"):
        growth_from_word("1:5", 1)


@pytest.mark.parametrize(
    ("text", "request_"),
    [
        ("zoom", ReplyRequest(None, zoom=1.5)),
        ("<@123> zoom out", ReplyRequest(None, zoom=1.5)),
        ("zoom 2x a beach", ReplyRequest(None, prompt="a beach", zoom=2.0)),
        ("🔍 1.25", ReplyRequest(None, zoom=1.25)),
        ("make it 16:9", ReplyRequest(None, aspect="16:9")),
        ("21:9, stormy sky", ReplyRequest(None, prompt="stormy sky", aspect="21:9")),
        ("aspect ratio 4x5", ReplyRequest(None, aspect="4x5")),
        ("left 2", ReplyRequest(Direction.LEFT, 2)),
        ("make it nicer", None),
        ("zoomed in on the cat?", None),
    ],
)
def test_zoom_and_aspect_replies(text: str, request_: ReplyRequest | None) -> None:
    assert parse_reply(text) == request_


async def test_the_aspect_option_suggests_the_presets_and_a_ratio_typed() -> None:
    presets = ["16:9", "9:16", "1:1", "21:9", "4:5", "3:2"]
    everything = await aspect_choices(None, "")
    assert [c.value for c in everything] == presets and everything[0].name == "16:9 (widescreen)"
    assert [c.value for c in await aspect_choices(None, "1")] == ["16:9", "1:1"]
    assert [c.value for c in await aspect_choices(None, "9:1")] == ["9:16"]
    assert [c.value for c in await aspect_choices(None, "2x1")] == ["2:1", *presets]  # another ratio
    assert [c.value for c in await aspect_choices(None, "5:1")] == presets  # too extreme: not offered


def test_the_status_names_zoom_aspect_and_candidate_jobs() -> None:
    assert messages.describe_spec(JobSpec(Direction.LEFT, times=2)) == "⬅ left ×2"
    assert (
        messages.describe_spec(JobSpec(Direction.RIGHT, zoom=2.0, candidates=4)) == "🔍 zoom 2×, 4 candidates"
    )
    assert messages.describe_spec(JobSpec(Direction.RIGHT, aspect="16:9")) == "⇔ 16:9"
    sides = ["left", "right", "up", "up", "down", "down"]
    assert messages.running("⇔ 9:16", 2, 6, 1, 1, 2, None, sides=sides) == (
        "🎨 ⇔ 9:16: expansion 3/6: up ▰▰▰▰▰▱▱▱▱▱"
    )
    assert messages.working("⇔ 9:16", 4, 6, 1, sides=sides) == "🎨 ⇔ 9:16: expansion 5/6: down…"
