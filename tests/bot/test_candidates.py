"""Candidates end to end: the grid with its numbered buttons, the requester's pick (also after a
restart, once only), continuing from the pick, what candidates cost the server's daily count, and
candidates the content check holds back."""

from __future__ import annotations

import asyncio
import io

import numpy as np
import pytest
from PIL import Image

from bot import messages
from bot.limits import Limits, Owner
from bot.quota import expansion_cost
from bot.settings import BotSettings
from outpaint_engine.grid import grid_shape
from outpaint_engine.imageio import decode_png
from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.safety import SafetyCheck, SafetySettings
from tests.bot.conftest import EXPAND, Harness, answer, image_upload, job_id_of, size_of
from tests.fakediscord import StoredAttachment, StoredMessage
from tests.fakediscord.models import FLAG_EPHEMERAL


def pixels(attachment: StoredAttachment) -> np.ndarray:
    with Image.open(io.BytesIO(attachment.data)) as im:
        return np.asarray(im.convert("RGB"))


def is_grid(message: StoredMessage) -> bool:
    return bool(message.attachments) and any(c.startswith("outpaint:pick1:") for c in message.custom_ids)


def pick(job_id: str, number: int) -> str:
    return f"outpaint:pick{number}:{job_id}"


async def test_the_requester_picks_a_candidate_which_becomes_the_result(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running():
        interaction = await harness.outpaint(image_upload(96, 64), direction="right", times=2, candidates=3)
        grid = await fake.wait_for_message(is_grid)
        job_id = job_id_of(grid)

        assert grid.custom_ids == [*(pick(job_id, n) for n in (1, 2, 3)), f"outpaint:delete:{job_id}"]
        assert grid.content.startswith(
            f"<@{fake.alice.id}> here are 3 candidates (➡ right ×2, 3 candidates, 128×64"
        )
        rows, columns = grid_shape(3, 128, 64)
        width, height = size_of(grid.attachments[0])
        assert (width > columns * 128, height > rows * 64) == (True, True)  # with gaps between
        status = fake.original_of(interaction)
        assert status is not None
        await fake.wait_for(lambda _: status.content.startswith("✅"))
        assert f"/{grid.id}" in status.content
        reply = await fake.send_message(content="left", reference=grid)  # nothing picked yet
        first = await fake.wait_for_message(lambda m: m.reference_id == reply.id)
        assert first.content == messages.PICK_FIRST

    async with harness.running(sync=False) as bot:  # a restart: the pick still works
        refused = await answer(fake, await fake.click_button(grid, pick(job_id, 2), user=fake.bob))
        assert refused.flags & FLAG_EPHEMERAL and refused.content == messages.PICK_NOT_YOURS

        picked = await answer(fake, await fake.click_button(grid, pick(job_id, 2)))
        result = await harness.result()
        assert picked.flags & FLAG_EPHEMERAL and picked.content.startswith("Candidate 2 is now your result: ")
        job = await bot.queue.get(job_id)
        assert job is not None
        last = job.total_steps - 1
        candidate, first_one = [await bot.queue.get_candidate(job_id, last, k) for k in (1, 0)]
        assert candidate is not None and np.array_equal(pixels(result.attachments[0]), decode_png(candidate))
        assert first_one is not None and not np.array_equal(decode_png(candidate), decode_png(first_one))
        assert job_id_of(result) == job_id and result.reference_id == grid.id
        assert "➡ right ×2, 3 candidates, candidate 2, 128×64" in result.content
        assert grid.content.startswith("✅ Candidate 2 was picked: ") and grid.custom_ids == []
        assert len(grid.attachments) == 1  # the grid stays

        await fake.click_button(result, f"outpaint:left:{job_id}", user=fake.bob)  # from the pick
        extended = await harness.result(after=result.id)
        assert np.array_equal(pixels(extended.attachments[0])[:, EXPAND:], decode_png(candidate))
        assert (
            len(
                [
                    m
                    for m in fake.bot_messages()
                    if m.attachments and f"outpaint:left:{job_id}" in m.custom_ids
                ]
            )
            == 1
        )


def test_candidates_count_in_the_daily_expansions() -> None:
    pan = JobSpec(Direction.LEFT, times=2, candidates=4)
    assert expansion_cost(pan, planned_steps=3) == 5  # the square-up is free; 3 more candidates
    zoom = JobSpec(Direction.RIGHT, zoom=2.0, candidates=2)
    assert expansion_cost(zoom, planned_steps=4) == 5  # every step of the plan
    limits = Limits(
        BotSettings(_env_file=None, max_guild_expansions_per_day=6, cooldown_s=0, max_user_jobs=9)
    )
    alice, bob = Owner(1, 10), Owner(2, 10)
    with limits.reserve(alice, 1, "", "", 2) as first:  # counted before the plan: 2
        first.settle(5)  # planned: 5
        first.commit("a1")
    with pytest.raises(Exception, match="1 of its 6 expansions for today left"):
        limits.reserve(bob, 1, "", "", 2)
    with limits.reserve(bob) as second, pytest.raises(Exception, match="1 of its 6"):
        second.settle(2)  # refused: the reservation keeps what it had
    limits.reserve(bob).commit("b1")  # the one expansion left


async def test_candidates_the_content_check_flags_are_held_back_in_block_mode(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Block mode (an ordinary channel): the worker checks each candidate; the flagged one (here the
    first) is never stored, the grid shows the others and says one was held back."""
    fake = harness.fake
    spec = JobSpec(Direction.RIGHT, times=1, expand_px=EXPAND, window=64, steps=2, seed=5, candidates=3)
    flagged = list(harness.engine.run(np.zeros((64, 96, 3), np.uint8), spec))[-1].candidates[0]
    harness.safety = check = SafetyCheck(SafetySettings(_env_file=None, safety_model="a classifier"))
    monkeypatch.setattr(check, "load", lambda device: None)
    strip = np.s_[:, -EXPAND:]  # the new strip tells the candidates apart
    monkeypatch.setattr(
        check, "flags", lambda canvas: 0.9 if np.array_equal(canvas[strip], flagged[strip]) else None
    )
    async with harness.running() as bot:
        await harness.outpaint(image_upload(96, 64), times=1, seed=5, candidates=3)
        grid = await fake.wait_for_message(is_grid)

        assert [c.split(":")[1] for c in grid.custom_ids] == ["pick1", "pick2", "delete"]
        assert "ℹ 1 more candidate was held back by the automatic content check." in grid.content
        job = await bot.queue.get(job_id_of(grid))
        assert job is not None
        stored = [await bot.queue.get_candidate(job.id, 0, k) for k in range(3)]
        assert stored[2] is None and not any(
            np.array_equal(decode_png(png)[strip], flagged[strip]) for png in stored[:2] if png
        )


async def test_a_pick_interrupted_while_it_was_posted_is_not_posted_twice(harness: Harness) -> None:
    fake = harness.fake
    discord_answers = asyncio.Event()
    async with harness.running():
        await harness.outpaint(image_upload(96, 64), times=1, candidates=2)
        grid = await fake.wait_for_message(is_grid)
        job_id = job_id_of(grid)

        async def never_answered(_: object) -> None:
            await discord_answers.wait()

        fake.after_next("POST", f"/channels/{fake.channel.id}/messages", never_answered)
        await fake.click_button(grid, pick(job_id, 1))
        posted = await harness.result(after=grid.id)  # Discord created it; the bot stops unaware
    discord_answers.set()

    async with harness.running(sync=False):
        picked = await answer(fake, await fake.click_button(grid, pick(job_id, 1)))
        assert picked.content.startswith("Candidate 1 is now your result: ")
        assert picked.content.endswith(f"/{posted.id}")  # the result posted before the stop
        assert fake.requests_to("GET", f"/channels/{fake.channel.id}/messages")  # looked it up
        assert [m.id for m in fake.bot_messages() if f"outpaint:left:{job_id}" in m.custom_ids] == [posted.id]
        assert grid.content.startswith("✅ Candidate 1 was picked: ")
