"""Who may queue what: guild allowlist, per-user and per-guild caps, a guild's expansions per day
(:mod:`bot.quota`), cooldown, option bounds and the operator's word list for prompts.

Every check runs in the bot's own memory, never on the queue: a request is answered (refused
privately, or acknowledged) within Discord's 3 seconds however slow or unreachable the queue is.
The bot knows the jobs it queued and has not seen finish (:meth:`Limits.track`, rebuilt from its
journal at start); :meth:`Limits.reserve` checks and takes a slot in one synchronous step, so
simultaneous requests cannot all pass the same check before any of them is queued.

Fairness between users *inside* the queue is the queue's business (round-robin dispatch); these
limits keep one user or one server from filling it in the first place.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from bot import messages
from bot.errors import UserError
from bot.quota import DailyQuota
from bot.settings import BotSettings
from outpaint_engine.safety import WordList


@dataclass(frozen=True)
class Owner:
    user_id: int
    guild_id: int | None


class Reservation:
    """A slot taken for one request until its job is queued (:meth:`commit`) or the request fails
    (:meth:`release`, which also gives the cooldown and the guild's expansions back). Use it as a
    context manager: leaving the block without a commit releases it."""

    def __init__(
        self, limits: Limits, owner: Owner, previous_start: float | None, expansions: int, day: int
    ) -> None:
        self._limits = limits
        self.owner = owner
        self._previous_start = previous_start
        self._taken = (expansions, day)  # the guild's expansions counted for this request, and the day
        self._open = True

    def settle(self, expansions: int) -> None:
        """The request turned out to cost ``expansions`` (its plan is known now: a zoom, an aspect
        ratio, candidates): count the difference, or raise :class:`UserError` when the guild has
        not that many left today."""
        taken, day = self._taken
        quota = self._limits.quota
        if self._open and expansions != taken:
            quota.give_back(self.owner.guild_id, taken, day)
            try:
                quota.check(self.owner.guild_id, expansions)
            except UserError:
                quota.take(self.owner.guild_id, taken)
                raise
            self._taken = (expansions, quota.take(self.owner.guild_id, expansions))

    def commit(self, job_id: str) -> None:
        if self._open:
            self._open = False
            self._limits._pending[self.owner] -= 1
            self._limits.track(job_id, self.owner)

    def release(self) -> None:
        if self._open:
            self._open = False
            self._limits._pending[self.owner] -= 1
            self._limits._restore_start(self.owner.user_id, self._previous_start)
            self._limits.quota.give_back(self.owner.guild_id, *self._taken)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Limits:
    def __init__(
        self,
        settings: BotSettings,
        clock: Callable[[], float] = time.monotonic,
        *,
        words: WordList | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.words = words or WordList()
        self.quota = DailyQuota(settings.max_guild_expansions_per_day, wall_clock)
        self._clock = clock
        self._last_start: dict[int, float] = {}
        self._active: dict[str, Owner] = {}  # job id -> owner: queued by this bot, not seen finish
        self._pending: Counter[Owner] = Counter()  # reservations not yet committed

    # --- the ledger ----------------------------------------------------------------------------

    def track(self, job_id: str, owner: Owner) -> None:
        """Count ``job_id`` against its owner's caps until :meth:`finished`."""
        self._active[job_id] = owner

    def finished(self, job_id: str) -> None:
        self._active.pop(job_id, None)

    def _counts(self, owner: Owner) -> tuple[int, int]:
        users = sum(1 for o in self._active.values() if o.user_id == owner.user_id)
        users += sum(n for o, n in self._pending.items() if o.user_id == owner.user_id)
        if owner.guild_id is None:
            return users, 0
        guilds = sum(1 for o in self._active.values() if o.guild_id == owner.guild_id)
        guilds += sum(n for o, n in self._pending.items() if o.guild_id == owner.guild_id)
        return users, guilds

    # --- checks --------------------------------------------------------------------------------

    def check(
        self,
        owner: Owner,
        times: int = 1,
        prompt: str = "",
        negative_prompt: str = "",
        expansions: int | None = None,
    ) -> None:
        """Raise :class:`UserError` with the reason when ``owner`` may not start a job now.
        ``expansions`` is what the request costs the guild's daily count (default: ``times``)."""
        self.check_guild(owner.guild_id)
        self.check_options(times, prompt, negative_prompt)
        self._check_cooldown(owner.user_id)
        self._check_active(*self._counts(owner))
        self.quota.check(owner.guild_id, times if expansions is None else expansions)

    def reserve(
        self,
        owner: Owner,
        times: int = 1,
        prompt: str = "",
        negative_prompt: str = "",
        expansions: int | None = None,
    ) -> Reservation:
        """:meth:`check`, then take the slot, count the expansions and start the cooldown,
        atomically (no ``await``)."""
        self.check(owner, times, prompt, negative_prompt, expansions)
        expansions = times if expansions is None else expansions
        previous = self._last_start.get(owner.user_id)
        self._last_start[owner.user_id] = self._clock()
        self._pending[owner] += 1
        day = self.quota.take(owner.guild_id, expansions)
        return Reservation(self, owner, previous, expansions, day)

    def _restore_start(self, user_id: int, previous: float | None) -> None:
        if previous is None:
            self._last_start.pop(user_id, None)
        else:
            self._last_start[user_id] = previous

    def check_guild(self, guild_id: int | None) -> None:
        allow = self.settings.guild_allowlist
        if allow and guild_id not in allow:
            raise UserError(messages.GUILD_NOT_ALLOWED)

    def _check_cooldown(self, user_id: int) -> None:
        last = self._last_start.get(user_id)
        if last is None:
            return
        left = self.settings.cooldown_s - (self._clock() - last)
        if left > 0:
            raise UserError(messages.cooldown(left))

    def _check_active(self, user_jobs: int, guild_jobs: int) -> None:
        if user_jobs >= self.settings.max_user_jobs:
            raise UserError(messages.user_cap(self.settings.max_user_jobs))
        if guild_jobs >= self.settings.max_guild_jobs:
            raise UserError(messages.guild_cap(self.settings.max_guild_jobs))

    def check_options(self, times: int, prompt: str, negative_prompt: str) -> None:
        if not 1 <= times <= self.settings.max_times:
            raise UserError(messages.bad_times(self.settings.max_times))
        limit = self.settings.max_prompt_chars
        if len(prompt) > limit:
            raise UserError(messages.prompt_too_long("prompt", limit))
        if len(negative_prompt) > limit:
            raise UserError(messages.prompt_too_long("negative prompt", limit))
        self.check_words(prompt)

    def check_words(self, prompt: str) -> None:
        """The operator's word list (the negative prompt is not checked: it says what to avoid)."""
        if self.words.find(prompt) is not None:
            raise UserError(messages.PROMPT_NOT_ALLOWED)

    def check_canvas(self, width: int, height: int) -> None:
        s = self.settings
        if max(width, height) > s.max_canvas_side or width * height > s.max_canvas_pixels:
            raise UserError(messages.canvas_too_large(width, height, s.max_canvas_side, s.max_canvas_pixels))
