"""The one exception type the bot shows to users as it is, and the mapping of everything else."""

from __future__ import annotations

import logging

import discord

from bot import messages
from bot.metrics import ERRORS
from outpaint_engine.imageio import ImageInputError
from outpaint_engine.plan import PlanError
from outpaint_engine.queue.base import QueueError

log = logging.getLogger(__name__)


class UserError(Exception):
    """A mistake or limit the user can act on; ``str(error)`` is the sentence to show them."""


def user_message(error: BaseException) -> str:
    """The sentence to show for ``error``: its own for the expected kinds, a polite generic one (and
    a logged traceback) for a bug."""
    if isinstance(error, UserError | PlanError | ImageInputError):
        ERRORS.labels("user").inc()
        return str(error)
    if isinstance(error, QueueError):
        ERRORS.labels("queue").inc()
        log.warning("queue error: %s", error)
        return messages.QUEUE_DOWN
    if isinstance(error, discord.Forbidden):  # the channel's permissions, not a bug of ours
        ERRORS.labels("forbidden").inc()
        log.warning("Discord refused a request: %s", error)
        return messages.MISSING_PERMISSIONS
    ERRORS.labels("internal").inc()
    log.error("unexpected error", exc_info=error)
    return messages.INTERNAL
