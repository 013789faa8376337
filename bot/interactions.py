"""What every interaction-started job does, and how any interaction gets its error message."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord

from bot import messages
from bot.errors import UserError, user_message
from bot.jobs import Options, Requester, Source
from bot.limits import Reservation
from bot.permissions import missing_for_results

if TYPE_CHECKING:
    from bot.app import OutpaintBot

log = logging.getLogger(__name__)


def check_can_start(interaction: discord.Interaction[OutpaintBot]) -> None:
    """The checks that need nothing but memory: the bot is not stopping, and it may post results
    in this channel (``interaction.app_permissions``)."""
    if interaction.client.closing:
        raise UserError(messages.RESTARTING)
    in_thread = isinstance(interaction.channel, discord.Thread)
    if missing := missing_for_results(interaction.app_permissions, in_thread=in_thread):
        raise UserError(messages.missing_permissions(missing))


async def start_job(
    interaction: discord.Interaction[OutpaintBot],
    options: Options,
    load_source: Callable[[], Awaitable[Source]],
    origin: str,
    check: Callable[[Requester, Reservation], None] | None = None,
) -> None:
    """Check, acknowledge, load the source, queue, then show the job in the interaction's response.

    Before the acknowledgement only in-memory checks run (permissions, allowlist, option bounds,
    cooldown and caps, the slot reserved at once, then ``check``), so refusals stay private and the
    3-second deadline holds however slow the queue is. The download, decoding and queueing come
    after ``defer``; a stop of the bot waits for them (see :class:`bot.lifecycle.InFlight`).
    """
    bot = interaction.client
    check_can_start(interaction)
    who = Requester.of(interaction)
    with bot.inflight.track(), bot.limits.reserve(who.owner, *options.bounded) as reservation:
        if check is not None:
            check(who, reservation)
        deferred = await interaction.response.defer(thinking=True)  # the status message, "thinking…"
        try:
            source = await load_source()
            job = await bot.jobs.submit(who, source, options, origin, reservation)
        except asyncio.CancelledError:
            if bot.closing:  # the stop's grace ran out while this request was being taken in
                await report_error(interaction, UserError(messages.RESTARTING))
            raise
        reservation.commit(job.id)
        await bot.delivery.follow(
            job,
            channel_id=who.channel_id,
            filesize_limit=interaction.filesize_limit,
            interaction=interaction,
            status_message_id=deferred.message_id if deferred else None,
        )


async def report_error(interaction: discord.Interaction, error: BaseException) -> None:
    """Answer ``error`` in whatever state the interaction is: a fresh ephemeral reply, the deferred
    response, or an ephemeral follow-up. Never raises."""
    text = user_message(error)
    response = interaction.response
    try:
        if not response.is_done():
            await response.send_message(text, ephemeral=True)
        elif response.type is discord.InteractionResponseType.deferred_channel_message:
            await interaction.edit_original_response(content=text, attachments=[], view=None)
        else:
            await interaction.followup.send(text, ephemeral=True)
    except Exception as failure:  # the interaction expired, or the bot is shutting down
        log.warning("could not report an error to the user: %s (error was: %s)", failure, text)
