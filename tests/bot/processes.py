"""Real processes for the bot's fault tests: an ``outpaint-bot`` (see :mod:`bot_host`) and
``outpaint-worker`` on the engine double, each with its output in a file, all killed at the end."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.fakediscord import WAIT_S, FakeDiscord

HERE = Path(__file__).parent
REPO = HERE.parents[1]
QUEUE_TESTS = REPO / "tests" / "queue"
WORKER = Path(sys.executable).parent / "outpaint-worker"


class Processes:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def env(self, **settings: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OUTPAINT_", "DISCORD_"))}
        quick = {"OUTPAINT_HEARTBEAT_S": "0.2", "OUTPAINT_RECLAIM_AFTER_S": "1"}
        env.update(
            PYTHONPATH=os.pathsep.join([str(REPO), str(QUEUE_TESTS)]),
            OUTPAINT_WINDOW="64",
            OUTPAINT_STEPS="2",
            **{**quick, **settings},
        )
        return env

    def spawn(self, args: list[str], name: str, **settings: str) -> subprocess.Popen[bytes]:
        out = self.tmp / f"{name}.out"
        with out.open("ab") as sink:
            process = subprocess.Popen(args, cwd=self.tmp, env=self.env(**settings), stdout=sink, stderr=sink)
        self.started.append((process, out))
        return process

    def bot(
        self, fake: FakeDiscord, data_dir: Path, name: str = "bot", *args: str, **settings: str
    ) -> subprocess.Popen[bytes]:
        """``outpaint-bot --sync [args]`` against ``fake``, on the embedded queue in ``data_dir``
        unless ``OUTPAINT_QUEUE`` says otherwise; quick settings (no cooldown, no edit interval)."""
        quick = {"OUTPAINT_COOLDOWN_S": "0", "OUTPAINT_EDIT_INTERVAL_S": "0", "OUTPAINT_PREVIEWS": "false"}
        return self.spawn(
            [sys.executable, str(HERE / "bot_host.py"), fake.base_url, "--sync", *args],
            name,
            DISCORD_TOKEN=fake.token,
            OUTPAINT_DATA_DIR=str(data_dir),
            **{**quick, **settings},
        )

    def worker(self, url: str, name: str = "worker", **settings: str) -> subprocess.Popen[bytes]:
        """``outpaint-worker`` on the engine double (see :func:`engine_double.env_hook`)."""
        args = [str(WORKER), "--engine", "engine_double:from_env", "--name", name]
        return self.spawn(args, name, OUTPAINT_QUEUE=url, **settings)

    def output(self, process: subprocess.Popen[bytes]) -> str:
        out = next(path for p, path in self.started if p is process)
        return out.read_text(errors="replace") if out.exists() else ""

    async def until_output(self, process: subprocess.Popen[bytes], text: str) -> None:
        """Until ``text`` appears in the process's output (it must not exit first)."""
        async with asyncio.timeout(WAIT_S):
            while text not in self.output(process):
                if process.poll() is not None:
                    raise AssertionError(f"exited ({process.returncode}): {self.output(process)[-3000:]}")
                await asyncio.sleep(0.02)

    async def exit_code(self, process: subprocess.Popen[bytes]) -> int:
        return await asyncio.to_thread(process.wait, WAIT_S)

    def stop_all(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.kill()
            process.wait()
