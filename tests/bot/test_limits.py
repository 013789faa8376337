"""Per-user and per-guild caps, a guild's expansions per day, cooldown, allowlist, option bounds and
the word list."""

from __future__ import annotations

import time

import pytest

from bot import messages
from bot.errors import UserError
from bot.limits import Limits, Owner
from bot.settings import BotSettings
from outpaint_engine.safety import WordList


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


def test_expansions_per_guild_per_day() -> None:
    wall = Clock()
    wall.now = 5 * 86_400 + 3600.0  # 01:00 UTC
    limits = Limits(
        BotSettings(
            _env_file=None, max_guild_expansions_per_day=5, max_user_jobs=9, max_guild_jobs=9, cooldown_s=0
        ),
        clock=Clock(),
        wall_clock=wall,
    )
    limits.reserve(ALICE, times=3).commit("a1")
    with pytest.raises(UserError) as refused:
        limits.reserve(BOB, times=3)
    assert str(refused.value).startswith("This server has 2 of its 5 expansions for today left.")
    reset = int(time.time() + 23 * 3600)  # the refusal says when: midnight UTC
    assert any(f"<t:{at}:R>" in str(refused.value) for at in (reset - 1, reset, reset + 1))
    # A request that is not queued after all gives the guild its expansions back:
    with limits.reserve(BOB, times=2), pytest.raises(UserError, match="used all 5"):
        limits.reserve(CAROL)
    limits.reserve(CAROL, times=2).commit("c1")
    limits.reserve(Owner(4, 20), times=5).commit("d1")  # another guild has its own count
    limits.reserve(Owner(5, None), times=5).commit("e1")  # and DMs have none
    with pytest.raises(UserError):
        limits.check(BOB)

    wall.now += 23 * 3600  # midnight UTC: a new day
    limits.reserve(BOB, times=5).commit("b2")
    limits.quota.restore({10: 4})  # what the journal says (at start)
    limits.check(BOB)
    with pytest.raises(UserError):
        limits.check(BOB, times=2)


def test_no_daily_limit_with_zero() -> None:
    limits = make(max_guild_expansions_per_day=0, max_user_jobs=99, max_guild_jobs=99, cooldown_s=0)
    for n in range(20):
        limits.reserve(ALICE, times=5).commit(f"a{n}")


def test_prompts_with_a_listed_word_are_refused() -> None:
    limits = Limits(BotSettings(_env_file=None), words=WordList(["gore"]))
    with pytest.raises(UserError) as refused:
        limits.check(ALICE, prompt="some GORE please")
    assert str(refused.value) == messages.PROMPT_NOT_ALLOWED
    limits.check(ALICE, prompt="a misty forest", negative_prompt="gore")
