"""Fault tests of the embedded queue: the bot process (``embedded_host.py``, the real tiny engine
unless a test says otherwise) is SIGKILLed mid-job, again and again, and nothing is lost or done
twice (see :mod:`processes`)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from processes import (
    DOUBLE,
    Follower,
    Processes,
    assert_complete_once,
    assert_final_canvas,
    expanded,
    story,
)
from queue_helpers import SOURCE_PNG, collect, eventually, make_job, queue_settings

from outpaint_engine.job import Failed, JobState
from outpaint_engine.queue.embedded import EmbeddedQueue
from outpaint_engine.runner import Outpainter
from outpaint_engine.worker import FAILED_POLITELY


async def test_a_bot_killed_in_expansions_1_2_and_3_still_finishes_the_job(
    processes: Processes, tmp_path: Path, engine: Outpainter
) -> None:
    # Four bots load their engines ahead and open the queue one after the other, each when the
    # previous one was killed; each finishes the first expansion it starts and is killed in the
    # next: three deliveries killed mid-expansion, as many as max_deliveries (3).
    data = tmp_path / "data"
    go = [tmp_path / f"go{i}" for i in range(4)]
    bots = [processes.bot(data, f"bot{i}", go=go[i], one_step=True) for i in range(4)]
    for i, bot in enumerate(bots):
        await processes.says(bot, f"bot{i}", "engine loaded", "to load its engine")
    go[0].touch()
    await processes.says(bots[0], "bot0", "queue open", "to open its journal")
    job = make_job(5, times=3)
    async with EmbeddedQueue(queue_settings("embedded", data), poll_s=0.02) as operator:  # no worker
        await operator.submit(job, SOURCE_PNG)
        follower = Follower(operator, job.id)
        for step in range(3):
            await follower.until(lambda n=step: expanded(follower.seen) > n, f"expansion {step}")
            bots[step].kill()  # SIGKILL in the next expansion: the journal says "running"
            go[step + 1].touch()  # the next bot puts the job back in the queue and resumes it
        events = await follower.result()

        assert_complete_once(events, total=4)
        assert story(events).count("started") == 4
        assert processes.steps_by_pid(5) == [(bot.pid, step) for step, bot in enumerate(bots)]
        await assert_final_canvas(operator, job, engine)
        final = await operator.get(job.id)
        assert final is not None and (final.state, final.attempts) == (JobState.DONE, 4)


async def test_a_job_that_kills_the_bot_every_time_fails_after_max_deliveries(
    processes: Processes, tmp_path: Path
) -> None:
    # The fast engine double: a job that kills its process at its first denoising step, and a fresh
    # bot process per delivery, which need not import torch.
    data = tmp_path / "data"
    async with EmbeddedQueue(queue_settings("embedded", data), poll_s=0.02) as operator:  # no worker
        poison = make_job(3, prompt="crash")
        await operator.submit(poison, SOURCE_PNG)
        bots: list[subprocess.Popen[bytes]] = []

        async def failed_while_one_bot_is_kept_alive() -> bool:
            if not bots or bots[-1].poll() is not None:
                bots.append(processes.bot(data, f"bot{len(bots)}", engine=DOUBLE))
            job = await operator.get(poison.id)
            return job is not None and job.state is JobState.FAILED

        await eventually(failed_while_one_bot_is_kept_alive, "the poison job to fail")

        events = await collect(operator, poison.id)
        assert isinstance(events[-1][1], Failed) and events[-1][1].reason == FAILED_POLITELY
        assert story(events).count("started") == 3 and story(events).count("failed") == 1
        assert [bot.returncode for bot in bots[:3]] == [3, 3, 3]  # each delivery killed its bot
        final = await operator.get(poison.id)
        assert final is not None and final.attempts == 3

        healthy = make_job(4, user=2)  # the bot that refused the poison job runs the next one
        await operator.submit(healthy, SOURCE_PNG)
        assert story(await collect(operator, healthy.id))[-1] == "done"
