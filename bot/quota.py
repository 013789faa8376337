"""Expansions per server per day: the operator's daily budget for each guild.

Counted in the bot's memory when a request reserves its slot (:class:`bot.limits.Limits`), given
back if the request fails before its job is queued, and rebuilt from the bot's journal at start
(every delivery records its expansions and when it was queued), so a restart does not reset it.
A day is a UTC calendar day. What counts is the expansions asked for (:func:`expansion_cost`),
whether or not the job then finishes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Mapping

from bot import messages
from bot.errors import UserError
from outpaint_engine.job import JobSpec, Mode

DAY_S = 86_400


def expansion_cost(spec: JobSpec, planned_steps: int) -> int:
    """What a job costs its guild's daily count: a pan its ``times`` (a square-up step is free), a
    zoom or an aspect ratio every step of its plan; each candidate beyond the first one more (the
    GPU generates the step once per candidate)."""
    steps = spec.times if spec.mode is Mode.PAN else planned_steps
    return steps + spec.candidates - 1


class DailyQuota:
    """How many expansions each guild asked for today; ``limit`` 0 means no limit."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.time) -> None:
        self.limit = limit
        self._clock = clock
        self._day = self._today()
        self._used: Counter[int] = Counter()

    def _today(self) -> int:
        return int(self._clock() // DAY_S)

    def _roll(self) -> int:
        today = self._today()
        if today != self._day:
            self._day, self._used = today, Counter()
        return today

    def day_start(self) -> float:
        """When today began (UNIX time)."""
        return self._roll() * DAY_S

    def check(self, guild_id: int | None, expansions: int) -> None:
        """Raise :class:`UserError` (saying when the budget comes back) when ``guild_id`` may not
        ask for ``expansions`` more today."""
        if guild_id is None or not self.limit:
            return
        self._roll()
        left = self.limit - self._used[guild_id]
        if expansions > left:
            resets_in = (self._day + 1) * DAY_S - self._clock()
            raise UserError(messages.guild_daily_cap(self.limit, max(0, left), resets_in))

    def take(self, guild_id: int | None, expansions: int) -> int:
        """Count ``expansions`` for ``guild_id`` today; returns the day, for :meth:`give_back`."""
        day = self._roll()
        if guild_id is not None:
            self._used[guild_id] += expansions
        return day

    def give_back(self, guild_id: int | None, expansions: int, day: int) -> None:
        """Undo a :meth:`take` of ``day`` (a request that failed before its job was queued)."""
        if guild_id is not None and day == self._roll():
            self._used[guild_id] = max(0, self._used[guild_id] - expansions)

    def restore(self, used_today: Mapping[int, int]) -> None:
        """Today's counts as the journal has them (at start)."""
        self._roll()
        self._used = Counter(used_today)
