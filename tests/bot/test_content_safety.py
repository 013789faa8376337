"""Content safety end to end: the real tiny engine in the bot's embedded worker, a tiny ViT
classifier loaded through the real transformers pipeline (its answer fixed), the real discord.py
client against the fake Discord, in ordinary and age-restricted channels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from real_engine import THREADS, HookedEngine

from bot import messages
from bot.jobs import audience_of
from outpaint_engine.job import Audience, Done, Event, Failed, Progress
from outpaint_engine.queue.base import JobQueue
from outpaint_engine.safety import BLOCKED, SafetyCheck, SafetySettings, is_flagged
from outpaint_engine.settings import EngineSettings
from outpaint_engine.worker import loop
from tests.bot.conftest import Harness, answer, image_upload, is_result, reached
from tests.conftest import TINY_STEPS, TINY_WINDOW
from tests.fakediscord import FakeDiscord, StoredMessage
from tests.queue.engine_double import Pause

pytestmark = pytest.mark.slow

SUMMARY = "➡ right ×2"


@pytest.fixture(autouse=True)
def previews_at_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every denoising step sends a preview (the worker's once-a-second pace would hide a preview
    that should not have been sent)."""
    monkeypatch.setattr(loop, "PREVIEW_EVERY_S", 0.0)


def checked(harness: Harness, classifier: Path, **policies: str) -> SafetyCheck:
    check = SafetyCheck(SafetySettings(_env_file=None, safety_model=str(classifier), **policies))
    harness.safety = check
    return check


@pytest.fixture
def harness(fake: FakeDiscord, tmp_path: Path, tiny_engine) -> Iterator[Harness]:
    """The bot on the real tiny engine, run on one CPU thread (torch's threads, spinning on a busy
    two-core machine, would slow it down many times over)."""
    harness = Harness(fake, tmp_path / "data")
    harness.engine = HookedEngine(tiny_engine)
    harness.engine_settings = EngineSettings(_env_file=None, window=TINY_WINDOW, steps=TINY_STEPS)
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield harness
    torch.set_num_threads(before)


async def events_of(queue: JobQueue, job_id: str) -> list[Event]:
    return [event async for _, event in queue.events(job_id)]


def previewed_steps(events: list[Event]) -> list[int]:
    return [e.step for e in events if isinstance(e, Progress) and e.preview]


def filenames(message: StoredMessage) -> list[list[str]]:
    """The attachment names of each version of a message, oldest first."""
    return [[a.filename for a in version.attachments] for version in message.versions]


async def test_a_flagged_canvas_is_blocked_in_an_ordinary_channel(
    harness: Harness, tiny_classifiers: dict[str, Path]
) -> None:
    fake = harness.fake
    checked(harness, tiny_classifiers["unsafe"])  # the default policy: block
    async with harness.running(previews=True) as bot:
        interaction = await harness.outpaint(image_upload(96, 64), times=2)
        status = await fake.wait_for(
            lambda f: (m := f.original_of(interaction)) and m.content.startswith("❌") and m
        )
        (job,) = await bot.queue.list_jobs()
        events = await events_of(bot.queue, job.id)

    assert status.content == messages.failed(SUMMARY, BLOCKED)
    assert status.attachments == [] and status.custom_ids == []  # the previews shown meanwhile are gone
    assert ["preview.jpg"] in filenames(status)
    assert not [m for m in fake.bot_messages() if is_result(m)]
    assert job.audience is Audience.GENERAL
    assert [type(e) for e in events if not isinstance(e, Progress)][-1] is Failed
    assert not any(e.kind == "expanded" for e in events)  # the flagged canvas was never stored
    assert await bot.queue.get_canvas(job.id, 0) is None


async def test_spoilers_hide_flagged_canvases_previews_stop_and_a_resumed_job_stays_flagged(
    harness: Harness, tiny_classifiers: dict[str, Path]
) -> None:
    fake = harness.fake
    checked(harness, tiny_classifiers["unsafe"], safety_policy="spoiler")
    pause = harness.engine.hook = Pause(seed=7, step=1)
    async with harness.running(previews=True) as bot:
        interaction = await harness.outpaint(image_upload(96, 64), times=2, seed=7)
        await reached(pause)
        status = fake.original_of(interaction)
        assert status is not None
        await fake.wait_for(lambda _: ["SPOILER_canvas-1.png"] in filenames(status))
    # A restart with a classifier that now finds nothing: the job resumes from its marked
    # checkpoint and stays flagged.
    checked(harness, tiny_classifiers["safe"], safety_policy="spoiler")
    async with harness.running(sync=False, previews=True) as bot:
        result = await harness.result()
        (job,) = await bot.queue.list_jobs()
        events = await events_of(bot.queue, job.id)
        canvases = [await bot.queue.get_canvas(job.id, step) for step in (0, 1)]

    assert (7, 1) in harness.engine.runs  # resumed after its first step
    assert previewed_steps(events) and set(previewed_steps(events)) == {0}  # none after the flag
    assert any(isinstance(e, Progress) and e.step == 1 for e in events)
    assert all(canvas is not None and is_flagged(canvas) for canvas in canvases)
    assert isinstance(events[-1], Done)
    assert [a.filename for a in result.attachments] == [f"SPOILER_outpaint-{job.id}.png"]
    assert messages.SPOILER_NOTE in result.content
    versions = filenames(status)
    first_spoiler = versions.index(["SPOILER_canvas-1.png"])
    assert not [names for names in versions[first_spoiler:] if "preview.jpg" in names]


async def test_an_age_restricted_channel_has_its_own_policy(
    harness: Harness, tiny_classifiers: dict[str, Path]
) -> None:
    fake = harness.fake
    checked(harness, tiny_classifiers["unsafe"], safety_policy="block")  # age-restricted: allow
    ordinary = next(c for c in fake.guild.channels if c.name == "results")
    async with harness.running(previews=True) as bot:
        await fake.set_channel_nsfw(fake.channel)  # #general is age-restricted now
        await harness.outpaint(image_upload(96, 64), times=2)
        result = await harness.result()
        elsewhere = await fake.send_slash_command(
            "outpaint",
            {"direction": "right", "times": 2},
            user=fake.bob,
            channel=ordinary,
            attachments={"image": image_upload(96, 64)},
        )
        blocked = await fake.wait_for(
            lambda f: (m := f.original_of(elsewhere)) and m.content.startswith("❌") and m
        )
        restricted, general = sorted(await bot.queue.list_jobs(), key=lambda j: j.created_at)
        events = await events_of(bot.queue, restricted.id)

    assert (restricted.audience, general.audience) == (Audience.AGE_RESTRICTED, Audience.GENERAL)
    assert [a.filename for a in result.attachments] == [f"outpaint-{restricted.id}.png"]
    assert messages.SPOILER_NOTE not in result.content
    assert set(previewed_steps(events)) == {0, 1}
    assert blocked.content == messages.failed(SUMMARY, BLOCKED)


async def test_prompts_with_a_listed_word_are_refused_before_anything_is_queued(harness: Harness) -> None:
    fake = harness.fake
    harness.safety = SafetyCheck(SafetySettings(_env_file=None, blocked_words="blood bath, gore"))
    async with harness.running() as bot:
        refused = await answer(fake, await harness.outpaint(prompt="a Blood-Bath at dawn"))
        assert refused.is_ephemeral and refused.content == messages.PROMPT_NOT_ALLOWED
        assert await bot.queue.list_jobs() == [] and fake.downloads() == []
        await harness.outpaint(prompt="a misty forest", negative_prompt="gore")  # what to avoid: fine
        await harness.result()


def test_the_audience_of_a_channel() -> None:
    guild = object()
    restricted = SimpleNamespace(is_nsfw=lambda: True)
    ordinary = SimpleNamespace(is_nsfw=lambda: False)
    assert audience_of(restricted, guild) is Audience.AGE_RESTRICTED
    assert audience_of(ordinary, guild) is Audience.GENERAL
    assert audience_of(None, guild) is Audience.GENERAL  # unknown: the strictest
    assert audience_of(None, None) is Audience.PRIVATE
