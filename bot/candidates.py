"""Candidates: a job's last expansion generated several times, shown as a numbered grid from which
its requester picks one; the pick becomes the job's result.

- **The grid** (:func:`grid_message`) is the job's result message when its ``Done`` event counts
  more than one candidate: the candidates the worker stored (``JobQueue.get_candidate``) laid out
  by :func:`outpaint_engine.grid.candidate_grid`, a spoiler when one of them is flagged, with the
  buttons 1…N and 🗑. The worker's content check saw every candidate; where it blocks, the flagged
  ones were never stored, and the grid says how many were held back.
- **The pick** (:class:`Picks`): only the requester may pick. The pick and the message posted for
  it are journaled in the bot's store, so a pick works after a restart (the job and the candidate
  are in the button's custom id), is posted once (an interrupted post is looked for in the
  channel's history first), and cannot be changed. The picked canvas is posted as an ordinary
  result with the usual buttons; from then on it is the job's result: buttons, replies and the
  message menu continue from it (:meth:`bot.jobs.JobService.source_from_result`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import discord

from bot import messages
from bot.errors import UserError
from bot.jobs import png_size
from bot.status import StatusMessage, Upload, fit_upload
from bot.store import DeliveryRecord
from bot.views import EXTEND, REDO, grid_view, result_view
from outpaint_engine.grid import candidate_grid
from outpaint_engine.imageio import decode_png, encode_png
from outpaint_engine.job import Done, Job
from outpaint_engine.safety import is_flagged, mark_flagged

if TYPE_CHECKING:
    from bot.app import OutpaintBot

log = logging.getLogger(__name__)


def withheld_note(job: Job, shown: int) -> str | None:
    """Say how many candidates the content check held back, if any."""
    held_back = job.spec.candidates - shown
    return messages.withheld(held_back) if held_back > 0 else None


async def grid_message(
    bot: OutpaintBot, job: Job, event: Done, filesize_limit: int, summary: str
) -> tuple[str, Upload, discord.ui.View] | None:
    """The grid of ``job``'s candidates to post as its result: text, image, buttons (None when
    the candidates are no longer stored)."""
    pngs = []
    for candidate in range(event.candidates):
        png = await bot.queue.get_candidate(job.id, event.step, candidate)
        if png is None:
            return None
        pngs.append(png)
    grid = await asyncio.to_thread(_grid_png, pngs)
    upload = await fit_upload(grid, filesize_limit, f"candidates-{job.id}")
    note = messages.notes(upload.note, withheld_note(job, event.candidates))
    content = messages.candidates_grid(
        job.user_id, summary, event.candidates, event.width, event.height, note
    )
    return content, upload, grid_view(job.id, event.candidates)


def _grid_png(pngs: list[bytes]) -> bytes:
    """The numbered grid as a PNG, flagged when one of the candidates is."""
    png = encode_png(candidate_grid([decode_png(p) for p in pngs]))
    return mark_flagged(png) if any(is_flagged(p) for p in pngs) else png


class Picks:
    """The picks this bot takes, one at a time per job (two clicks at once post one result)."""

    def __init__(self, bot: OutpaintBot) -> None:
        self.bot = bot
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # by job id: the lock, its users

    @asynccontextmanager
    async def _one_at_a_time(self, job_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(job_id, (asyncio.Lock(), 0))
        self._locks[job_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[job_id]
            if users == 1:
                del self._locks[job_id]
            else:
                self._locks[job_id] = (lock, users - 1)

    async def pick(self, interaction: discord.Interaction[OutpaintBot], job_id: str, candidate: int) -> None:
        """A candidate's button: for the job's requester, make ``candidate`` (0-based) its result
        (answered privately; refusals too)."""
        await interaction.response.defer(ephemeral=True, thinking=True)  # the queue may be slow
        store = self.bot.store
        record = await store.delivery(job_id)
        if record is None or candidate >= record.candidates:
            raise UserError(messages.NO_SUCH_CANDIDATE)
        if interaction.user.id != record.user_id:
            raise UserError(messages.PICK_NOT_YOURS)
        if record.result_deleted_at is not None:
            raise UserError(messages.RESULT_DELETED)
        async with self._one_at_a_time(job_id):
            record = await store.delivery(job_id)
            assert record is not None
            if record.picked is not None and record.picked != candidate:
                url = self._link(record, record.pick_message_id)
                raise UserError(messages.already_picked(record.picked + 1, url))
            if record.picked is None:
                record.picked = candidate
                await store.update_delivery(job_id, picked=candidate)
                log.info("job %s: candidate %d picked", job_id, candidate + 1)
            if record.pick_message_id is None:
                record.pick_message_id = await self._post(record, candidate)
                await store.update_delivery(job_id, pick_message_id=record.pick_message_id)
                await store.link_message(record.pick_message_id, job_id)
        url = self._link(record, record.pick_message_id)
        await self._mark_grid(record, messages.picked_grid(candidate + 1, url))
        await interaction.edit_original_response(content=messages.picked(candidate + 1, url))

    async def _post(self, record: DeliveryRecord, candidate: int) -> int:
        """Post the picked candidate as the job's result, in reply to its grid; once, even when an
        earlier post was interrupted (then it is found in the channel's history)."""
        job_id = record.job_id
        # The result answers the grid (its reference), in the grid's channel.
        status = StatusMessage(
            self.bot,
            dataclasses.replace(record, reply_to_message_id=record.result_message_id),
            record.guild_id,
            None,
        )
        if record.pick_posting_since is not None:
            found = await status.find_result(record.pick_posting_since, actions=(*EXTEND, REDO))
            if found is not None:
                log.info("job %s: its pick was posted before the interruption; not posting it again", job_id)
                return found.id
        job = await self.bot.queue.get(job_id)
        png = (
            None
            if job is None
            else await self.bot.queue.get_candidate(job_id, job.total_steps - 1, candidate)
        )
        if job is None or png is None:
            raise UserError(messages.RESULT_GONE)
        upload = await fit_upload(png, record.filesize_limit, f"outpaint-{job_id}")
        summary = f"{messages.describe_spec(job.spec)}, candidate {candidate + 1}"
        content = messages.result(
            job.user_id, summary, *png_size(png), upload.note, messages.prompt_line(job)
        )
        record.pick_posting_since = time.time()
        await self.bot.store.update_delivery(job_id, pick_posting_since=record.pick_posting_since)
        message = await status.post_result(content, upload, result_view(job_id), job.user_id)
        return message.id

    def _link(self, record: DeliveryRecord, message_id: int | None) -> str | None:
        if message_id is None:
            return None
        channel = self.bot.get_partial_messageable(record.channel_id, guild_id=record.guild_id)
        return channel.get_partial_message(message_id).jump_url

    async def _mark_grid(self, record: DeliveryRecord, text: str) -> None:
        """The grid says which candidate was picked and loses its buttons (its image stays)."""
        if record.result_message_id is None:
            return
        channel = self.bot.get_partial_messageable(record.channel_id, guild_id=record.guild_id)
        try:
            await channel.get_partial_message(record.result_message_id).edit(content=text, view=None)
        except discord.HTTPException as error:  # deleted meanwhile: the pick stands
            log.info("job %s: could not mark its grid as picked (%s)", record.job_id, error)
