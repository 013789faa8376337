"""Who may queue what: guild allowlist, per-user and per-guild caps, cooldown, option bounds.

Fairness between users *inside* the queue is the queue's business (round-robin dispatch); these
limits keep one user or one server from filling it in the first place.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bot import messages
from bot.errors import UserError
from bot.settings import BotSettings


class Limits:
    def __init__(self, settings: BotSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._clock = clock
        self._last_start: dict[int, float] = {}

    def check_guild(self, guild_id: int | None) -> None:
        allow = self.settings.guild_allowlist
        if allow and guild_id not in allow:
            raise UserError(messages.GUILD_NOT_ALLOWED)

    def check_cooldown(self, user_id: int) -> None:
        last = self._last_start.get(user_id)
        if last is None:
            return
        left = self.settings.cooldown_s - (self._clock() - last)
        if left > 0:
            raise UserError(messages.cooldown(left))

    def check_active(self, user_jobs: int, guild_jobs: int) -> None:
        """Raise when the user or the guild already has as many unfinished jobs as allowed."""
        if user_jobs >= self.settings.max_user_jobs:
            raise UserError(messages.user_cap(self.settings.max_user_jobs))
        if guild_jobs >= self.settings.max_guild_jobs:
            raise UserError(messages.guild_cap(self.settings.max_guild_jobs))

    def record_start(self, user_id: int) -> None:
        self._last_start[user_id] = self._clock()

    def check_options(self, times: int, prompt: str, negative_prompt: str) -> None:
        if not 1 <= times <= self.settings.max_times:
            raise UserError(messages.bad_times(self.settings.max_times))
        limit = self.settings.max_prompt_chars
        if len(prompt) > limit:
            raise UserError(messages.prompt_too_long("prompt", limit))
        if len(negative_prompt) > limit:
            raise UserError(messages.prompt_too_long("negative prompt", limit))

    def check_canvas(self, width: int, height: int) -> None:
        s = self.settings
        if max(width, height) > s.max_canvas_side or width * height > s.max_canvas_pixels:
            raise UserError(messages.canvas_too_large(width, height, s.max_canvas_side, s.max_canvas_pixels))
