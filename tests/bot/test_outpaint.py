"""/outpaint end to end: the real discord.py bot against the fake Discord, on the embedded queue."""

from __future__ import annotations

import io

from PIL import Image

from outpaint_engine.job import JobState
from tests.bot.conftest import (
    EXPAND,
    Harness,
    answer,
    creation_request,
    ids_of,
    image_upload,
    job_id_of,
    png,
    reached,
    size_of,
)
from tests.fakediscord import Upload
from tests.fakediscord.models import FLAG_EPHEMERAL
from tests.queue.engine_double import Pause

MiB = 1024 * 1024


def bmp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 64), (1, 2, 3)).save(buf, format="BMP")
    return buf.getvalue()


async def test_slash_command_shows_each_expansion_then_the_result(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running() as bot:
        interaction = await harness.outpaint(image_upload(96, 64), direction="right", times=3, seed=7)
        result = await harness.result()

        assert interaction.response_type == 5  # deferred at once ("thinking")
        assert size_of(result.attachments[0]) == (96 + 3 * EXPAND, 64)
        assert f"<@{fake.alice.id}>" in result.content
        assert fake.alice.id in map(int, creation_request(fake, result)["allowed_mentions"]["users"])
        assert result.interaction_id is None  # an ordinary channel message: outlives the token
        # One status message, edited in place: the canvas after each expansion but the last.
        status = fake.original_of(interaction)
        assert status is not None
        shown = {a.id: size_of(a) for v in status.edits for a in v.attachments}
        assert list(shown.values()) == [(96 + EXPAND, 64), (96 + 2 * EXPAND, 64)]
        assert any(f"outpaint:cancel:{job_id_of(result)}" in ids_of(v) for v in status.edits)
        final = await fake.wait_for(lambda f: status.content.startswith("✅") and status)
        assert final.attachments == [] and final.custom_ids == []
        # A link to the result that opens in the server (a link without the guild is a DM link).
        assert f"/channels/{fake.guild.id}/{fake.channel.id}/{result.id}" in final.content
        job = await bot.queue.get(job_id_of(result))
        assert job is not None and job.spec.seed == 7 and job.meta["origin"] == "slash"


async def test_a_portrait_is_squared_up_before_the_expansions_it_asked_for(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running(previews=True):
        interaction = await harness.outpaint(image_upload(64, 96), direction="right", times=2)
        result = await harness.result()

        assert size_of(result.attachments[0]) == (64 + 2 * EXPAND, 64)  # 43×64, squared up, +2
        status = fake.original_of(interaction)
        assert status is not None
        texts = [v.content for v in status.edits]
        shown: dict[int, tuple[str, tuple[int, int]]] = {}  # each canvas with the text it came with
        for version in status.edits:
            for a in version.attachments:
                if a.filename.startswith("canvas-") and a.id not in shown:
                    shown[a.id] = (version.content, size_of(a))
        assert list(shown.values()) == [
            ("🎨 ➡ right ×2: squared up to 64×64; the expansions come next.", (64, 64)),
            ("🎨 ➡ right ×2: expansion 1/2 done (80×64).", (64 + EXPAND, 64)),
        ]
        assert any(t.startswith("🎨 ➡ right ×2: squaring the picture up first ▰") for t in texts)
        assert any(t.startswith("🎨 ➡ right ×2: expansion 2/2 ▰") for t in texts)
        assert not [t for t in texts if "/3" in t]  # the user asked for 2 expansions, not 3


async def test_every_bad_attachment_gets_its_own_message(harness: Harness) -> None:
    fake = harness.fake
    cases = [
        (Upload("notes.txt", b"hello", "text/plain"), "`notes.txt` isn't an image", True),
        (Upload("big.png", png(), "image/png", size=30 * MiB), "the limit is 20.0 MiB", True),
        (Upload("fake.png", b"this is not a picture at all", "image/png"), "not an image I can read", False),
        (Upload("cut.png", png()[:300], "image/png"), "damaged or incomplete", False),
        (image_upload(32, 32), "too small (32×32 pixels)", False),
        (image_upload(640, 64), "too long and thin", False),
        (Upload("old.bmp", bmp(), "image/bmp"), "BMP images are not supported", False),
        (Upload("gone.png", png(), "image/png", cdn_status=404), "couldn't download that attachment", False),
    ]
    async with harness.running() as bot:
        for upload, expected, before_download in cases:
            interaction = await harness.outpaint(upload)
            message = await answer(fake, interaction)
            assert expected in message.content, (upload.filename, message.content)
            assert "Traceback" not in message.content
            if before_download:  # refused from the metadata: ephemeral, nothing downloaded
                assert message.flags & FLAG_EPHEMERAL
                assert not [r for r in fake.downloads() if upload.filename in r.path]
        assert await bot.queue.list_jobs() == []


async def test_bad_options_are_refused_with_the_reason(harness: Harness) -> None:
    fake = harness.fake
    cases = [
        ({"times": 9}, "times must be a whole number from 1 to 5"),
        ({"expand": 12}, "multiple of 8"),
        ({"expand": 64}, "between 8 and 32"),
        ({"prompt": "x" * 301}, "prompt is too long"),
        ({"times": 5, "direction": "up"}, "larger than I can make"),
    ]
    async with harness.running(max_canvas_side=128) as bot:
        for options, expected in cases:
            message = await answer(fake, await harness.outpaint(**options))
            assert expected in message.content, (options, message.content)
        assert await bot.queue.list_jobs() == []


async def test_help_and_queue(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running(max_times=4) as bot:
        help_message = await answer(fake, await fake.send_slash_command("outpaint-help"))
        assert help_message.flags & FLAG_EPHEMERAL
        assert "1–4" in help_message.content and "left 2" in help_message.content

        empty = await answer(fake, await fake.send_slash_command("queue"))
        assert "no jobs" in empty.content

        pause = harness.engine.hook = Pause(seed=11)
        await harness.outpaint(seed=11)
        await reached(pause)
        bob_status = await answer(fake, await harness.outpaint(seed=12, user=fake.bob))
        assert bob_status.content.startswith("⏳") and "position 1" in bob_status.content
        listing = await answer(fake, await fake.send_slash_command("queue"))
        (job,) = await bot.queue.list_jobs(user_id=fake.alice.id)
        assert job.id in listing.content and "running" in listing.content
        bob_listing = await answer(fake, await fake.send_slash_command("queue", user=fake.bob))
        assert "position 1" in bob_listing.content
        pause.go.set()
        await harness.result()


async def test_an_engine_failure_is_reported_politely(harness: Harness) -> None:
    fake = harness.fake

    def explode(*_: object) -> None:
        raise RuntimeError("CUDA out of memory (simulated)")

    harness.engine.hook = explode
    async with harness.running() as bot:
        interaction = await harness.outpaint()
        status = await fake.wait_for(
            lambda f: (m := f.original_of(interaction)) and m.content.startswith("❌") and m
        )
        assert status.content.startswith("❌ ➡ right ×1: ")
        assert "something went wrong" in status.content and "CUDA" not in status.content
        assert status.custom_ids == []
        (job,) = await bot.queue.list_jobs()
        assert job.state is JobState.FAILED
