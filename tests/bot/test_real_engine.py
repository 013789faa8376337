"""One end-to-end run on the real engine (tiny random SDXL + IP-Adapter on the CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from outpaint_engine.settings import EngineSettings
from tests.bot.conftest import Harness, image_upload, size_of
from tests.conftest import TINY_STEPS, TINY_WINDOW
from tests.fakediscord import FakeDiscord

pytestmark = pytest.mark.slow


async def test_slash_command_on_the_tiny_real_engine(fake: FakeDiscord, tmp_path: Path, tiny_engine) -> None:
    harness = Harness(fake, tmp_path / "data")
    harness.engine = tiny_engine
    harness.engine_settings = EngineSettings(_env_file=None, window=TINY_WINDOW, steps=TINY_STEPS)
    expand = TINY_WINDOW // 4
    async with harness.running():
        interaction = await harness.outpaint(image_upload(96, 64), direction="right", times=2, prompt="sky")
        result = await harness.result()
        assert size_of(result.attachments[0]) == (96 + 2 * expand, 64)
        status = fake.original_of(interaction)
        assert status is not None
        assert [size_of(a) for v in status.edits for a in v.attachments][:1] == [(96 + expand, 64)]
