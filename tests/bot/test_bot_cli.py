"""``outpaint-bot``: the no-token instructions, the light imports, and deliberate command sync."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.bot.conftest import WINDOW, Harness

ROOT = Path(__file__).resolve().parents[2]


def run_bot(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
    environment.update(PYTHONPATH=str(ROOT), **env)
    return subprocess.run(
        [sys.executable, "-m", "bot", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_a_token_it_says_what_to_do(tmp_path: Path) -> None:
    # .env.example as shipped: its empty `DISCORD_TOKEN=`, `OUTPAINT_DEV_GUILD=`... count as unset.
    (tmp_path / ".env").write_text((ROOT / ".env.example").read_text())
    done = run_bot(tmp_path)
    assert done.returncode == 2
    for step in (
        "https://discord.com/developers/applications",
        "DISCORD_TOKEN=paste-the-token-here",
        "scope=bot%20applications.commands&permissions=274878024704",
        "outpaint-bot --sync",
    ):
        assert step in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_bad_setting_is_named_in_one_line(tmp_path: Path) -> None:
    done = run_bot(tmp_path, OUTPAINT_MAX_TIMES="99", DISCORD_TOKEN="x")
    assert done.returncode == 2
    assert done.stderr.startswith("outpaint-bot: bad setting OUTPAINT_MAX_TIMES: ")
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    done = run_bot(tmp_path, OUTPAINT_WINDOW="big", DISCORD_TOKEN="x")  # an engine setting
    assert done.returncode == 2 and done.stderr.startswith("outpaint-bot: bad setting OUTPAINT_WINDOW: ")
    done = run_bot(tmp_path, OUTPAINT_BLOCKED_WORDS_FILE="missing.txt", DISCORD_TOKEN="x")  # a safety one
    assert done.returncode == 2
    assert done.stderr.startswith("outpaint-bot: bad setting OUTPAINT_BLOCKED_WORDS_FILE: ")
    done = run_bot(tmp_path, OUTPAINT_QUEUE="rabbitmq://host", DISCORD_TOKEN="x")  # before any network
    assert done.returncode == 1
    assert done.stderr == "outpaint-bot: Unknown queue 'rabbitmq://host': use 'embedded' or a redis:// URL.\n"


def test_the_bot_imports_no_torch_diffusers_or_opencv() -> None:
    code = (
        "import sys, bot.__main__, bot.app, bot.commands, bot.delivery, bot.replies, bot.views; "
        "print(sorted(m for m in ('torch', 'diffusers', 'cv2', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "[]"


async def test_commands_are_synced_only_when_asked(harness: Harness) -> None:
    fake = harness.fake
    async with harness.running(sync=False):
        assert not fake.requests_to("PUT", "/commands")
    async with harness.running(dev_guild=fake.guild.id, max_times=4, max_candidates=3):
        commands = {c["name"]: c for c in fake.commands[fake.guild.id]}
        assert set(commands) == {"outpaint", "outpaint-help", "queue", "Outpaint"}
        assert fake.commands[None] == []  # a dev guild sync stays in that guild
        options = {o["name"]: o for o in commands["outpaint"]["options"]}
        assert options["times"]["max_value"] == 4 and not options["times"]["required"]  # default 1
        assert (options["expand"]["min_value"], options["expand"]["max_value"]) == (8, WINDOW // 2)
        directions = [c["value"] for c in options["direction"]["choices"]]
        assert directions == ["left", "right", "up", "down", "all"] and not options["direction"]["required"]
        assert (options["zoom"]["type"], options["zoom"]["min_value"], options["zoom"]["max_value"]) == (
            10,
            1.1,
            4,
        )
        assert options["aspect"]["type"] == 3 and options["aspect"]["autocomplete"]  # presets, or any W:H
        assert (options["candidates"]["min_value"], options["candidates"]["max_value"]) == (1, 3)
        assert options["image"]["type"] == 11 and options["image"]["required"]
        assert commands["Outpaint"]["type"] == 3  # a message context menu


async def test_the_token_is_never_logged_nor_queued(harness: Harness, caplog) -> None:
    fake = harness.fake
    caplog.set_level("DEBUG")
    async with harness.running() as bot:
        await harness.outpaint()
        await harness.result()
        (job,) = await bot.queue.list_jobs()
    assert fake.token not in caplog.text
    assert fake.token not in repr(job.to_dict())
