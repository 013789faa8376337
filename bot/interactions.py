"""What every interaction-started job does, and how any interaction gets its error message."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord

from bot.errors import user_message
from bot.jobs import Options, Requester, Source

if TYPE_CHECKING:
    from bot.app import OutpaintBot

log = logging.getLogger(__name__)


async def start_job(
    interaction: discord.Interaction[OutpaintBot],
    options: Options,
    load_source: Callable[[], Awaitable[Source]],
    origin: str,
) -> None:
    """Check, acknowledge, load the source, queue, then show the job in the interaction's response.

    The cheap checks run before the acknowledgement, so their refusals stay ephemeral; anything
    slower (download, decoding) runs after ``defer`` so Discord's 3-second deadline always holds.
    """
    bot = interaction.client
    who = Requester.of(interaction)
    await bot.jobs.precheck(who, options)
    await interaction.response.defer(thinking=True)
    source = await load_source()
    job = await bot.jobs.submit(who, source, options, origin)
    await bot.delivery.follow(
        job, channel_id=who.channel_id, filesize_limit=interaction.filesize_limit, interaction=interaction
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
