"""The one exception type the bot shows to users as it is, and the mapping of everything else."""

from __future__ import annotations

import logging

import discord

from bot import messages
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
        return str(error)
    if isinstance(error, QueueError):
        log.warning("queue error: %s", error)
        return messages.QUEUE_DOWN
    if isinstance(error, discord.Forbidden):  # the channel's permissions, not a bug of ours
        log.warning("Discord refused a request: %s", error)
        return messages.MISSING_PERMISSIONS
    log.error("unexpected error", exc_info=error)
    return messages.INTERNAL
