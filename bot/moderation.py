"""Moderator and requester controls: who may cancel a job or delete a result, 🗑, and what a
deleted result means.

A job's requester may cancel it and delete its result; so may a member with **Manage Messages** in
the job's server (a moderator). Both are read from the interaction itself (``interaction.user``,
``interaction.permissions``: the member's permissions in that channel, as Discord resolved them),
so deciding costs no API call. A deleted result is journaled (:class:`bot.store.BotStore`): it no
longer serves as the source of a button, a reply or the message menu, whether it was deleted with
🗑 or by a moderator in Discord.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

import discord

from bot import messages
from bot.errors import UserError
from bot.jobs import ACTIVE
from outpaint_engine.job import Job

if TYPE_CHECKING:
    from bot.app import OutpaintBot

log = logging.getLogger(__name__)


def is_moderator(interaction: discord.Interaction) -> bool:
    """A member with Manage Messages where the interaction happened (never in DMs)."""
    return interaction.guild_id is not None and interaction.permissions.manage_messages


def may_act_on(interaction: discord.Interaction, user_id: int | None, guild_id: int | None) -> bool:
    """Whether the interaction's user may cancel, or delete the result of, a job of ``user_id`` in
    ``guild_id``: its requester, or a moderator of that guild."""
    if user_id is not None and interaction.user.id == user_id:
        return True
    return is_moderator(interaction) and guild_id == interaction.guild_id


async def delete_result(interaction: discord.Interaction[OutpaintBot], job_id: str) -> None:
    """🗑: journal the result as deleted, delete its message, and say so on the job's status."""
    await interaction.response.defer(ephemeral=True, thinking=True)  # privately; the queue may be slow
    bot = interaction.client
    record = await bot.store.delivery(job_id)
    if record is not None:
        owner, guild_id = record.user_id, record.guild_id
    else:  # a result this bot's journal does not know (e.g. a new data dir): ask the queue
        job = None if is_moderator(interaction) else await bot.queue.get(job_id)
        owner, guild_id = (job.user_id, job.guild_id) if job else (None, interaction.guild_id)
    if not may_act_on(interaction, owner, guild_id):
        raise UserError(messages.DELETE_NOT_YOURS)
    if record is not None:  # first: even if Discord's delete fails, the result is no source any more
        await bot.store.update_delivery(job_id, result_deleted_at=time.time())
    if interaction.message is not None:
        with contextlib.suppress(discord.NotFound):  # deleted meanwhile: just as well
            await interaction.message.delete()
    log.info("job %s: result deleted by user %s", job_id, interaction.user.id)
    if record is not None and record.status_message_id is not None:
        status = bot.get_partial_messageable(record.channel_id).get_partial_message(record.status_message_id)
        try:
            await status.edit(content=messages.RESULT_DELETED_STATUS, attachments=[], view=None)
        except discord.HTTPException as error:  # deleted too, or not ours to edit any more
            log.info("job %s: could not update its status after the deletion (%s)", job_id, error)
    await interaction.edit_original_response(content=messages.DELETED)


async def on_message_deleted(bot: OutpaintBot, message_id: int) -> None:
    """A message was deleted in Discord: when it was a result, it is no source any more."""
    job_id = await bot.store.job_for_message(message_id)
    if job_id is None:
        return
    record = await bot.store.delivery(job_id)
    results = (record.result_message_id, record.pick_message_id) if record is not None else ()
    if record is not None and message_id in results and record.result_deleted_at is None:
        log.info("job %s: its result was deleted in Discord", job_id)
        await bot.store.update_delivery(job_id, result_deleted_at=time.time())


async def guild_queue(bot: OutpaintBot, guild_id: int) -> list[tuple[Job, str | None]]:
    """A moderator's /queue: the guild's waiting and running jobs, each with its status's link."""
    jobs = await bot.queue.list_jobs(guild_id=guild_id, states=ACTIVE)
    listed = []
    for job in jobs:
        record = await bot.store.delivery(job.id)
        url = None
        if record is not None and record.status_message_id is not None:
            channel = bot.get_partial_messageable(record.channel_id, guild_id=guild_id)
            url = channel.get_partial_message(record.status_message_id).jump_url
        listed.append((job, url))
    return listed
