"""Replies to a result: ``left 2``, ``up``, ``right 3 a misty forest``, ``@bot ⬇ x2``, ``zoom 1.5``,
``zoom out``, ``make it 16:9`` continue it."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord

from bot import messages
from bot.errors import UserError, user_message
from bot.growth import DEFAULT_ZOOM, normal_aspect
from bot.jobs import Options, Requester
from bot.permissions import can_talk, missing_for_results
from bot.views import result_job_id
from outpaint_engine.job import Direction

if TYPE_CHECKING:
    from bot.app import OutpaintBot

_DIRECTIONS: dict[str, Direction] = {
    "left": Direction.LEFT,
    "right": Direction.RIGHT,
    "up": Direction.UP,
    "down": Direction.DOWN,
    "west": Direction.LEFT,
    "east": Direction.RIGHT,
    "north": Direction.UP,
    "south": Direction.DOWN,
    "⬅": Direction.LEFT,
    "➡": Direction.RIGHT,
    "⬆": Direction.UP,
    "⬇": Direction.DOWN,
}

log = logging.getLogger(__name__)

_MENTIONS = re.compile(r"^(?:\s*<@[!&]?\d+>)+")
_REPLY = re.compile(
    r"""^\s*(?P<direction>[a-z]+|[⬅➡⬆⬇])\ufe0f?   # a direction word or arrow
        [\s,.:;!]*
        (?:[x×]?(?P<times>\d+)[x×]?\b)?             # optional count: 2, x2, 2x
        [\s,.:;]*(?P<prompt>.*?)\s*$""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)


_ZOOM = re.compile(
    r"""^\s*(?:zoom(?:[\s-]*out)?\b|🔍)\ufe0f?          # zoom, zoom out, 🔍
        [\s,.:;!]*
        (?:[x×]?(?P<zoom>\d+(?:\.\d+)?)[x×]?(?![\d.:/]))?  # optional factor: 1.5, 2x, x2
        [\s,.:;]*(?P<prompt>.*?)\s*$""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)
_ASPECT = re.compile(
    r"""^\s*(?:make\s+it\s+|aspect(?:\s+ratio)?\s*:?\s*)?          # make it 16:9, aspect 16:9, 16:9
        (?P<aspect>\d+(?:\.\d+)?\s*[:x×/]\s*\d+(?:\.\d+)?)(?![\d.])
        [\s,.:;!]*(?P<prompt>.*?)\s*$""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)


@dataclass(frozen=True)
class ReplyRequest:
    """A pan (``direction``, ``times``), or a ``zoom`` or an ``aspect`` ratio (direction None)."""

    direction: Direction | None
    times: int = 1
    prompt: str = ""
    zoom: float | None = None
    aspect: str | None = None


def strip_mentions(text: str) -> str:
    """Drop the leading @mentions Discord puts in a reply that pings the bot."""
    return _MENTIONS.sub("", text).strip()


def parse_reply(text: str) -> ReplyRequest | None:
    """The request in a reply, or None when it does not start with a direction, ``zoom`` or an
    aspect ratio (just chatting). A ratio is checked when the job is planned."""
    text = strip_mentions(text)
    if match := _ZOOM.match(text):
        zoom = float(match["zoom"]) if match["zoom"] else DEFAULT_ZOOM
        return ReplyRequest(None, prompt=match["prompt"], zoom=zoom)
    if match := _ASPECT.match(text):
        return ReplyRequest(None, prompt=match["prompt"], aspect=match["aspect"])
    match = _REPLY.match(text)
    if match is None:
        return None
    direction = _DIRECTIONS.get(match["direction"].lower())
    if direction is None:
        return None
    times = int(match["times"]) if match["times"] else 1
    return ReplyRequest(direction, times, match["prompt"])


async def handle_message(bot: OutpaintBot, message: discord.Message) -> None:
    """Continue a result when ``message`` replies to it with a direction; ignore anything else.

    Without the message-content intent Discord only shows the bot the text of messages that
    mention it, so a reply must keep its @mention on; an unreadable reply gets a hint. A channel
    where the bot may not post its result gets a refusal (or, where it may not even talk, nothing
    but a line in the log) before anything is queued.
    """
    reference = message.reference
    if message.author.bot or reference is None or reference.message_id is None:
        return
    replied = reference.resolved if isinstance(reference.resolved, discord.Message) else None
    job_id = result_job_id(replied) if replied else None  # a result names its job in its buttons
    job_id = job_id or await bot.store.job_for_message(reference.message_id)  # e.g. a ✅ status
    if job_id is None:
        return
    if not message.content.strip():
        hidden = not bot.intents.message_content and bot.user not in message.mentions
        if hidden:  # Discord hid the text from us (not just a reply without text)
            await _answer(message, messages.REPLY_UNREADABLE)
        return
    request = parse_reply(message.content)
    if request is None:
        return
    with bot.inflight.track():
        try:
            await _continue(bot, message, job_id, request)
        except Exception as error:
            await _answer(message, user_message(error))


async def _continue(bot: OutpaintBot, message: discord.Message, job_id: str, request: ReplyRequest) -> None:
    if bot.closing:
        raise UserError(messages.RESTARTING)
    if missing := missing_for_results(_my_permissions(message), in_thread=_in_thread(message)):
        raise UserError(messages.missing_permissions(missing))
    who = Requester.of(message)
    aspect = normal_aspect(request.aspect) if request.aspect else None  # a ratio too extreme: refused
    options = Options(
        request.direction, request.times, request.prompt or None, zoom=request.zoom, aspect=aspect
    )
    with bot.limits.reserve(who.owner, *options.bounded) as reservation:
        source = await bot.jobs.continue_job(job_id)
        job = await bot.jobs.submit(who, source, options, "reply", reservation)
        reservation.commit(job.id)
    limit = message.guild.filesize_limit if message.guild else discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
    await bot.delivery.follow(job, channel_id=message.channel.id, filesize_limit=limit, reply_to=message.id)


def _my_permissions(message: discord.Message) -> discord.Permissions:
    if message.guild is None:  # a DM: the bot may do everything it needs there
        return discord.Permissions.all()
    return message.channel.permissions_for(message.guild.me)  # type: ignore[union-attr,arg-type]


def _in_thread(message: discord.Message) -> bool:
    return isinstance(message.channel, discord.Thread)


async def _answer(message: discord.Message, text: str) -> None:
    """Reply to ``message`` with ``text`` (a plain message that names its author where the bot may
    not read the history a reply needs); where the bot may not post at all, log one line instead."""
    permissions = _my_permissions(message)
    if not can_talk(permissions, in_thread=_in_thread(message)):
        log.warning(
            "can't answer a reply in channel %s (no permission to post): %s", message.channel.id, text
        )
        return
    try:
        if permissions.read_message_history:
            await message.reply(text, mention_author=False)
        else:
            await message.channel.send(f"{message.author.mention} {text}")
    except discord.HTTPException as error:
        log.warning("could not answer a reply in channel %s: %s", message.channel.id, error)
