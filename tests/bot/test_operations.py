"""The operator's view of the bot: its metrics and health endpoints during a real job, the
"warming up" status of jobs that wait for a worker's warm-up, and logs that never hold the token.

Scrapes go through ``asyncio.to_thread``: the in-process bot's event loop answers them.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest
from engine_double import Pause, WarmingUp
from queue_helpers import free_port
from real_engine import HookedEngine

from bot import messages
from outpaint_engine.settings import EngineSettings, OpsSettings
from tests.bot.conftest import Harness, image_upload, is_result, reached
from tests.bot.processes import Processes
from tests.conftest import TINY_STEPS, TINY_WINDOW
from tests.fakediscord import WAIT_S, FakeDiscord
from tests.ops.scrape import get, health, scrape, value

OPS = OpsSettings(_env_file=None, metrics_port=0)  # any free port on loopback
TOKEN = "MTA5ODc2NTQzMjE.fake-secret.bot-token-that-must-never-be-logged-0123456789"


@pytest.mark.slow
async def test_metrics_and_health_during_a_real_job(fake: FakeDiscord, tmp_path: Path, tiny_engine) -> None:
    harness = Harness(fake, tmp_path / "data")
    pause = Pause(seed=5)  # at the first denoising step
    harness.engine = HookedEngine(tiny_engine, pause)
    harness.engine_settings = EngineSettings(_env_file=None, window=TINY_WINDOW, steps=TINY_STEPS)
    harness.ops = OPS
    async with harness.running() as bot:
        assert bot.ops.server is not None
        url = bot.ops.server.url
        status, report = await asyncio.to_thread(health, url, "/readyz")
        assert (status, report["checks"]) == (200, {"event_loop": "ok", "gateway": "ok", "queue": "ok"})
        before = await asyncio.to_thread(scrape, url)

        fake.rate_limit_next(1, route="POST /channels/")  # the result's post meets a rate limit
        interaction = await harness.outpaint(image_upload(96, 64), times=1, seed=5, prompt="sky")
        await reached(pause)
        during = await asyncio.to_thread(scrape, url)
        assert value(during, "outpaint_queue_jobs", state="running") == 1
        assert value(during, "outpaint_worker_jobs_running") == 1
        assert value(during, "outpaint_worker_state", state="ready") == 1
        assert value(during, "outpaint_queue_workers", state="ready") == 1
        assert value(during, "outpaint_discord_gateway_connected") == 1

        fake.expire(interaction)  # the status edits through the webhook now fail with 401
        pause.go.set()
        await harness.result()
        await fake.wait_for(lambda f: (m := f.original_of(interaction)) and m.content.startswith("✅"))
        after = await asyncio.to_thread(scrape, url)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("outpaint_bot_jobs_submitted_total", origin="slash") == 1
    assert moved("outpaint_bot_jobs_finished_total", outcome="done") == 1
    assert moved("outpaint_bot_job_seconds_count", outcome="done") == 1
    assert moved("outpaint_worker_jobs_total", outcome="done") == 1
    assert moved("outpaint_expansion_seconds_count", stage="expansion") == 1
    assert moved("outpaint_expansion_seconds_count", stage="unet_loop") == 1
    assert moved("outpaint_queue_wait_seconds_count") == 1
    assert moved("outpaint_discord_rate_limits_total", scope="user") == 1
    assert moved("outpaint_discord_responses_total", api="rest", method="POST", status="429") == 1
    assert moved("outpaint_discord_responses_total", api="rest", method="PATCH", status="401") >= 1
    assert moved("outpaint_discord_responses_total", api="cdn", method="GET", status="200") == 1  # the upload
    assert value(after, "outpaint_queue_jobs", state="running") == 0


@pytest.mark.parametrize(
    "at_start", [True, False], ids=["engine loading at start", "engine loading for the job"]
)
async def test_a_job_that_waits_for_a_warm_up_says_so(harness: Harness, at_start: bool) -> None:
    warm_up = WarmingUp(harness.engine)
    harness.engine_factory, harness.load_engine_at_start, harness.ops = warm_up, at_start, OPS
    async with harness.running(queue_refresh_s=0.05) as bot:
        assert bot.ops.server is not None
        if at_start:  # outpaint-bot: the engine loads as the bot starts, the job comes meanwhile
            assert await asyncio.to_thread(warm_up.warming.wait, WAIT_S)
        interaction = await harness.outpaint()
        status = await harness.fake.wait_for(
            lambda f: (m := f.original_of(interaction)) and messages.WARMING_UP in m.content and m
        )
        assert "compiling kernels: a few minutes on a first start" in status.content
        samples = await asyncio.to_thread(scrape, bot.ops.server.url)
        assert value(samples, "outpaint_worker_state", state="warming") == 1
        assert value(samples, "outpaint_queue_workers", state="warming") == 1

        warm_up.release.set()
        await harness.result()
        await harness.fake.wait_for(lambda _: status.content.startswith("✅"))
        samples = await asyncio.to_thread(scrape, bot.ops.server.url)
        assert value(samples, "outpaint_worker_state", state="ready") == 1


async def test_the_token_stays_out_of_the_logs_and_the_endpoints(
    tmp_path: Path, processes: Processes
) -> None:
    port = free_port()
    async with FakeDiscord(token=TOKEN) as fake:
        bot = processes.bot(
            fake,
            tmp_path / "data",
            "bot",
            "--log-level",
            "DEBUG",  # discord.py logs its requests too
            OUTPAINT_METRICS_PORT=str(port),
            OUTPAINT_LOG_FORMAT="json",
        )
        await processes.until_output(bot, "logged in as")
        interaction = await Harness(fake, tmp_path / "data").outpaint(image_upload(96, 64))
        await fake.wait_for_message(is_result)
        await processes.until_output(bot, '"event": "shown_done"')  # the outcome shown and logged
        pages = [
            await asyncio.to_thread(get, f"http://127.0.0.1:{port}{path}") for path in ("/metrics", "/readyz")
        ]
        assert [status for status, _ in pages] == [200, 200]
        bot.send_signal(signal.SIGTERM)
        assert await processes.exit_code(bot) == 0

    output = processes.output(bot)
    for text in [output, *(body for _, body in pages)]:
        assert TOKEN not in text
        assert interaction.token not in text  # discord.py logs webhook URLs at DEBUG: masked
    records = [json.loads(line) for line in output.splitlines()]  # every line is one JSON object
    assert any(r["logger"].startswith("discord.") and r["level"] == "DEBUG" for r in records)
    jobs = {r["event"]: r for r in records if "job_id" in r}
    assert {"queued", "delivered", "started", "done", "shown_done"} <= set(jobs)
    assert {(r["user_id"], r["guild_id"]) for r in jobs.values()} == {(fake.alice.id, fake.guild.id)}
    assert jobs["shown_done"]["total_s"] > 0
