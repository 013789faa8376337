"""Requests under load and downloads that go wrong: refused privately, answered, never flooding."""

from __future__ import annotations

import logging

import pytest

from bot import messages
from tests.bot.burst import add_users, burst
from tests.bot.conftest import Harness, answer, is_result, png
from tests.fakediscord import Upload


async def test_a_burst_of_200_commands_from_10_users_refuses_privately_and_downloads_only_what_runs(
    harness: Harness,
) -> None:
    fake = harness.fake
    users = add_users(fake, 10)
    async with harness.running(cooldown_s=60, max_user_jobs=2, max_guild_jobs=10):
        interactions = await burst(harness, users, 200)
        accepted = [i for i in interactions if i.response_type == 5]  # deferred: "thinking…"
        refused = [fake.original_of(i) for i in interactions if i.response_type == 4]
        assert len(accepted) == 10 and {i.user.id for i in accepted} == {u.id for u in users}
        assert len(refused) == 190
        assert all(m is not None and m.is_ephemeral and m.content.startswith("Please wait") for m in refused)

        await fake.wait_for(lambda f: len([m for m in f.bot_messages() if is_result(m)]) == 10)
        assert len(fake.downloads()) == 10  # nothing downloaded for a refused request
        public = [m for m in fake.bot_messages() if not m.is_ephemeral]
        assert len(public) == 20  # ten status messages and ten results: no flood


@pytest.mark.parametrize("fault", ["hang", "drop"])
async def test_a_download_that_hangs_or_drops_gets_a_clear_answer_and_one_log_line(
    harness: Harness, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    fake = harness.fake
    caplog.set_level(logging.WARNING)
    async with harness.running(download_timeout_s=0.2) as bot:
        interaction = await harness.outpaint(Upload("photo.png", png(), "image/png", cdn_fault=fault))
        assert (await answer(fake, interaction)).content == messages.DOWNLOAD_FAILED
        assert await bot.queue.list_jobs() == []
        ours = [r for r in caplog.records if r.name.startswith("bot.")]
        assert len(ours) == 1 and "photo.png" in ours[0].getMessage() and ours[0].exc_info is None

        retry = await harness.outpaint()  # the user may try again at once
        assert await fake.wait_response(retry) == 5
        await harness.result()
