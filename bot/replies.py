"""Replies to a result: ``left 2``, ``up``, ``right 3 a misty forest``, ``@bot ⬇ x2`` continue it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord

from bot import messages
from bot.errors import user_message
from bot.jobs import Options, Requester
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

_MENTIONS = re.compile(r"^(?:\s*<@[!&]?\d+>)+")
_REPLY = re.compile(
    r"""^\s*(?P<direction>[a-z]+|[⬅➡⬆⬇])\ufe0f?   # a direction word or arrow
        [\s,.:;!]*
        (?:[x×]?(?P<times>\d+)[x×]?\b)?             # optional count: 2, x2, 2x
        [\s,.:;]*(?P<prompt>.*?)\s*$""",
    re.IGNORECASE | re.DOTALL | re.VERBOSE,
)


@dataclass(frozen=True)
class ReplyRequest:
    direction: Direction
    times: int = 1
    prompt: str = ""


def strip_mentions(text: str) -> str:
    """Drop the leading @mentions Discord puts in a reply that pings the bot."""
    return _MENTIONS.sub("", text).strip()


def parse_reply(text: str) -> ReplyRequest | None:
    """The request in a reply, or None when it does not start with a direction (just chatting)."""
    match = _REPLY.match(strip_mentions(text))
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
    mention it, so a reply must keep its @mention on; an unreadable reply gets a hint.
    """
    reference = message.reference
    if message.author.bot or reference is None or reference.message_id is None:
        return
    job_id = await bot.store.job_for_message(reference.message_id)
    if job_id is None:
        return
    if not message.content.strip():
        hidden = not bot.intents.message_content and bot.user not in message.mentions
        if hidden:  # Discord hid the text from us (not just a reply without text)
            await message.reply(messages.REPLY_UNREADABLE, mention_author=False)
        return
    request = parse_reply(message.content)
    if request is None:
        return
    try:
        who = Requester.of(message)
        options = Options(request.direction, request.times, request.prompt or None)
        await bot.jobs.precheck(who, options)
        parent = await bot.jobs.finished_job(job_id)
        source = await bot.jobs.source_from_result(parent)
        job = await bot.jobs.submit(who, source, options, "reply")
    except Exception as error:
        await message.reply(user_message(error), mention_author=False)
        return
    limit = message.guild.filesize_limit if message.guild else discord.utils.DEFAULT_FILE_SIZE_LIMIT_BYTES
    await bot.delivery.follow(job, channel_id=message.channel.id, filesize_limit=limit, reply_to=message.id)
