"""Per-user and per-guild caps, cooldown, allowlist and option bounds."""

from __future__ import annotations

import pytest

from bot import messages
from bot.errors import UserError
from bot.limits import Limits, Owner
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


ALICE, BOB, CAROL = Owner(1, 10), Owner(2, 10), Owner(3, 10)


def test_cooldown_runs_from_the_last_reservation() -> None:
    clock = Clock()
    limits = make(clock, cooldown_s=10, max_user_jobs=5)
    limits.reserve(ALICE).commit("a1")
    clock.now += 4
    with pytest.raises(UserError, match="Please wait") as refused:
        limits.reserve(ALICE)
    assert "<t:" in str(refused.value)
    limits.reserve(BOB).commit("b1")  # other users are not affected
    clock.now += 6
    limits.reserve(ALICE).commit("a2")


def test_caps_count_jobs_and_pending_reservations_per_user_then_per_guild() -> None:
    limits = make(max_user_jobs=2, max_guild_jobs=3, cooldown_s=0)
    limits.reserve(ALICE).commit("a1")
    pending = limits.reserve(ALICE)  # not queued yet (downloading), but it holds the slot
    with pytest.raises(UserError) as user:
        limits.reserve(ALICE)
    assert str(user.value) == messages.user_cap(2)
    limits.reserve(BOB).commit("b1")
    with pytest.raises(UserError) as guild:
        limits.reserve(CAROL)
    assert str(guild.value) == messages.guild_cap(3)
    limits.reserve(Owner(3, 20))  # another guild has its own cap
    pending.release()
    limits.reserve(CAROL)
    limits.finished("a1")
    limits.reserve(ALICE)


def test_a_failed_request_gives_its_slot_and_its_cooldown_back() -> None:
    clock = Clock()
    limits = make(clock, cooldown_s=10, max_user_jobs=1)
    with limits.reserve(ALICE):
        pass  # e.g. the download failed: the block ends without a commit
    limits.reserve(ALICE).commit("a1")  # neither the cap nor the cooldown refuse it
    limits.finished("a1")
    with pytest.raises(UserError, match="Please wait"):
        limits.reserve(ALICE)


def test_jobs_tracked_from_the_journal_count() -> None:
    limits = make(max_user_jobs=1)
    limits.track("a1", ALICE)
    with pytest.raises(UserError):
        limits.check(ALICE)
    limits.finished("a1")
    limits.check(ALICE)


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
