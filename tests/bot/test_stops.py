"""Stopping the bot never loses a job or a request, nor posts a result twice.

The first tests stop a real ``outpaint-bot`` process (:mod:`bot_host`: the real entry point on the
fake Discord, the engine double in its embedded worker) with SIGTERM or SIGKILL; the bot restarted
after it is an in-process bot on the same data dir.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from bot import messages
from outpaint_engine.job import Job, JobState
from outpaint_engine.queue.embedded import EmbeddedQueue
from outpaint_engine.settings import QueueSettings
from tests.bot.conftest import EXPAND, Harness, answer, image_upload, is_result, job_id_of, size_of
from tests.bot.processes import Processes
from tests.fakediscord import FakeDiscord, RequestRecord, Upload

ENGINE_LOG = "OUTPAINT_TEST_ENGINE_LOG"
ENGINE_GATE = "OUTPAINT_TEST_ENGINE_GATE"


async def journaled_jobs(data_dir: Path) -> list[Job]:
    """The jobs in the embedded queue's journal (opened as the operator command does)."""
    async with EmbeddedQueue(QueueSettings(_env_file=None, data_dir=data_dir)) as queue:
        return await queue.list_jobs()


def results(fake: FakeDiscord) -> list:
    return [m for m in fake.bot_messages() if is_result(m)]


async def test_sigterm_hands_the_running_job_back_and_the_next_start_finishes_it(
    fake: FakeDiscord, tmp_path: Path, processes: Processes
) -> None:
    data, gate, log = tmp_path / "data", tmp_path / "gate", tmp_path / "engine.log"
    bot = processes.bot(fake, data, **{ENGINE_GATE: f"{gate}:1", ENGINE_LOG: str(log)})
    await processes.until_output(bot, "logged in as")
    interaction = await Harness(fake, data).outpaint(image_upload(96, 64), times=2, seed=5)
    status = await fake.wait_for(lambda f: (m := f.original_of(interaction)) and m.attachments and m)
    assert '"step": 0' in log.read_text()  # expansion 1 is stored; the engine holds in expansion 2

    bot.send_signal(signal.SIGTERM)  # as `docker stop` / `systemctl stop`
    assert await processes.exit_code(bot) == 0
    output = processes.output(bot)
    assert "SIGTERM: stopping" in output and "Traceback" not in output
    (job,) = await journaled_jobs(data)
    assert job.id == job_id_of(status) and job.state is JobState.QUEUED  # handed back, not "running"

    gate.touch()
    harness = Harness(fake, data)
    async with harness.running(sync=False):
        result = await harness.result()
        assert size_of(result.attachments[0]) == (96 + 2 * EXPAND, 64)
        await fake.wait_for(lambda _: status.content.startswith("✅"))  # the same status, to the end
    assert harness.engine.runs == [(5, 1)]  # it continued after the stored expansion
    assert [job_id_of(m) for m in results(fake)] == [job.id]


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_a_stop_right_after_posting_the_result_does_not_post_it_twice(
    fake: FakeDiscord, tmp_path: Path, processes: Processes, stop: signal.Signals
) -> None:
    data = tmp_path / "data"
    bot = processes.bot(fake, data)
    await processes.until_output(bot, "logged in as")

    async def stop_before_answering(record: RequestRecord) -> None:
        bot.send_signal(stop)  # Discord created the result; the bot never hears back
        await processes.exit_code(bot)

    fake.after_next("POST", f"/channels/{fake.channel.id}/messages", stop_before_answering)
    interaction = await Harness(fake, data).outpaint(image_upload(96, 64))
    assert await processes.exit_code(bot) == (0 if stop is signal.SIGTERM else -signal.SIGKILL)
    (posted,) = results(fake)

    harness = Harness(fake, data)
    async with harness.running(sync=False):
        status = fake.original_of(interaction)
        assert status is not None
        await fake.wait_for(lambda _: status.content.startswith("✅"))
        assert str(posted.id) in status.content  # the link goes to the result posted before the stop
        assert fake.requests_to("GET", f"/channels/{fake.channel.id}/messages")  # looked it up
    assert results(fake) == [posted]


async def test_a_stop_lets_a_request_still_downloading_finish_and_the_next_start_shows_it(
    harness: Harness,
) -> None:
    fake = harness.fake
    async with harness.running() as bot:
        interaction = await harness.outpaint(
            Upload("slow.png", image_upload().data, "image/png", cdn_fault="hang")
        )
        await fake.wait_for(lambda f: f.held_downloads == 1)
        closing = asyncio.create_task(bot.close())
        await asyncio.sleep(0)  # the task begins
        assert bot.closing
        refused = await answer(fake, await harness.outpaint(user=fake.bob))  # no new work while stopping
        assert refused.content == messages.RESTARTING
        fake.release_downloads()
        await closing
    (job,) = await journaled_jobs(harness.data_dir)  # queued before the bot stopped
    async with harness.running(sync=False):
        result = await harness.result()
        assert job_id_of(result) == job.id
        status = fake.original_of(interaction)
        assert status is not None
        await fake.wait_for(lambda _: status.content.startswith("✅") and str(result.id) in status.content)


async def test_a_request_still_downloading_when_the_grace_runs_out_is_told_to_try_again(
    harness: Harness,
) -> None:
    fake = harness.fake
    async with harness.running(shutdown_grace_s=0.1) as bot:
        interaction = await harness.outpaint(
            Upload("slow.png", image_upload().data, "image/png", cdn_fault="hang")
        )
        await fake.wait_for(lambda f: f.held_downloads == 1)
        await bot.close()
        assert (await answer(fake, interaction)).content == messages.RESTARTING  # never left "thinking"
    assert await journaled_jobs(harness.data_dir) == []
