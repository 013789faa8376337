"""Per-user and per-guild caps, cooldown, allowlist and option bounds."""

from __future__ import annotations

import pytest

from bot import messages
from bot.errors import UserError
from bot.limits import Limits
from bot.settings import BotSettings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock | None = None, **overrides: object) -> Limits:
    return Limits(BotSettings(_env_file=None, **overrides), clock=clock or Clock())


def test_allowlist_empty_allows_every_guild_and_dms() -> None:
    limits = make()
    limits.check_guild(1)
    limits.check_guild(None)


def test_allowlist_refuses_other_guilds_and_dms() -> None:
    limits = make(guild_allowlist=[10, 20])
    limits.check_guild(20)
    for guild in (30, None):
        with pytest.raises(UserError, match="not enabled on this server"):
            limits.check_guild(guild)


def test_cooldown_runs_from_the_last_start() -> None:
    clock = Clock()
    limits = make(clock, cooldown_s=10)
    limits.check_cooldown(1)
    limits.record_start(1)
    clock.now += 4
    with pytest.raises(UserError, match="Please wait") as refused:
        limits.check_cooldown(1)
    assert "<t:" in str(refused.value)
    limits.check_cooldown(2)  # other users are not affected
    clock.now += 6
    limits.check_cooldown(1)


def test_caps_per_user_then_per_guild() -> None:
    limits = make(max_user_jobs=2, max_guild_jobs=3)
    limits.check_active(1, 2)
    with pytest.raises(UserError) as user:
        limits.check_active(2, 0)
    assert str(user.value) == messages.user_cap(2)
    with pytest.raises(UserError) as guild:
        limits.check_active(0, 3)
    assert str(guild.value) == messages.guild_cap(3)


@pytest.mark.parametrize(
    ("times", "prompt", "negative", "fragment"),
    [
        (0, "", "", "from 1 to 4"),
        (5, "", "", "from 1 to 4"),
        (1, "x" * 11, "", "prompt is too long"),
        (1, "", "x" * 11, "negative prompt is too long"),
    ],
)
def test_option_bounds(times: int, prompt: str, negative: str, fragment: str) -> None:
    limits = make(max_times=4, max_prompt_chars=10)
    with pytest.raises(UserError, match=fragment):
        limits.check_options(times, prompt, negative)


def test_options_within_bounds_pass() -> None:
    make(max_times=4, max_prompt_chars=10).check_options(4, "x" * 10, "")


def test_canvas_cap_on_side_and_pixels() -> None:
    limits = make(max_canvas_side=4096, max_canvas_pixels=8_000_000)
    limits.check_canvas(4096, 1024)
    with pytest.raises(UserError, match="4352×1024"):
        limits.check_canvas(4352, 1024)
    with pytest.raises(UserError, match="at most 4096 px on a side and 8,000,000 pixels in all"):
        limits.check_canvas(3000, 3000)
