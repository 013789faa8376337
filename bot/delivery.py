"""Showing a job in Discord: one status message edited in place, then the result as a new message.

For every job the bot follows the queue's events (``JobQueue.events``, replay then follow) and turns
them into edits of a single status message: queue position and ETA, progress (with a small preview
while an expansion denoises), and the whole canvas after every expansion, so the image visibly
grows. When the job is done the result goes out as an ordinary channel message with the buttons
(it outlives the interaction token, and a reply to it pings its author), and the status message
shrinks to a link to it.

The status message starts as the interaction's response and moves to a channel message of the bot
when the 15-minute interaction token runs out (or the webhook refuses it). Where each job is shown
and the last event shown are journaled in :class:`~bot.store.BotStore`, so a restarted bot picks
every unfinished job up again.
"""

from __future__ import annotations

import asyncio
import datetime
import io
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord
from discord.utils import MISSING

from bot import messages
from bot.errors import user_message
from bot.store import DeliveryRecord
from bot.views import result_view, status_view
from outpaint_engine import imageio
from outpaint_engine.job import Cancelled, Done, Event, Expanded, Failed, Job, Progress, Queued, Started

if TYPE_CHECKING:
    from bot.app import OutpaintBot

log = logging.getLogger(__name__)

TOKEN_MARGIN = datetime.timedelta(seconds=30)
"""Stop using an interaction token this long before it expires (an edit must not straddle it)."""

WEBHOOK_TOKEN_ERRORS = {10015, 50027}  # Unknown Webhook, Invalid Webhook Token


def _token_refused(error: discord.HTTPException) -> bool:
    return error.status == 401 or error.code in WEBHOOK_TOKEN_ERRORS


@dataclass
class Upload:
    data: bytes
    filename: str
    note: str | None = None

    def file(self) -> discord.File:
        return discord.File(io.BytesIO(self.data), filename=self.filename)


async def fit_upload(png: bytes, limit: int, stem: str) -> Upload:
    """The PNG as it is when it fits the channel's upload limit, else a smaller encoding (with a note)."""
    if len(png) <= limit:
        return Upload(png, f"{stem}.png")

    def shrink() -> imageio.EncodedImage:
        return imageio.encode_for_upload(imageio.decode_png(png), limit, stem=stem)

    encoded = await asyncio.to_thread(shrink)
    return Upload(encoded.data, encoded.filename, encoded.note)


def _files(attachments: list[Upload | discord.Attachment] | None) -> list[discord.File | discord.Attachment]:
    """Fresh ``discord.File`` objects for one request (a File is consumed when sent)."""
    if attachments is None:
        return MISSING
    return [a.file() if isinstance(a, Upload) else a for a in attachments]


class StatusMessage:
    """The one message that shows a job while it runs.

    Edits go through the interaction webhook while its token is good, then through a channel
    message of the bot (created on first use, as a reply to the user's message when there is one).
    """

    def __init__(
        self,
        bot: OutpaintBot,
        record: DeliveryRecord,
        guild_id: int | None,
        interaction: discord.Interaction | None,
    ) -> None:
        self.bot = bot
        self.record = record
        self.interaction = interaction
        # With its guild, so the messages' jump URLs open in the server (not in "@me", the DMs).
        self.channel = bot.get_partial_messageable(record.channel_id, guild_id=guild_id)
        self.last_edit = 0.0

    def _interaction_usable(self) -> bool:
        if self.interaction is None:
            return False
        if discord.utils.utcnow() >= self.interaction.expires_at - TOKEN_MARGIN:
            self.interaction = None
        return self.interaction is not None

    async def edit(
        self,
        content: str,
        *,
        attachments: list[Upload | discord.Attachment] | None = None,
        view: discord.ui.View | None = MISSING,
    ) -> discord.Message:
        """Edit the status (create it on first use). ``attachments``: the complete new list, new
        uploads and attachments the message already has; None leaves them as they are."""
        self.last_edit = time.monotonic()
        if self._interaction_usable():
            assert self.interaction is not None
            try:
                return await self.interaction.edit_original_response(
                    content=content, attachments=_files(attachments), view=view
                )
            except discord.HTTPException as error:
                if not _token_refused(error):
                    raise
                log.info("interaction token refused for job %s; using channel messages", self.record.job_id)
                self.interaction = None
                if attachments is not None:  # attachments of the old message can't move over
                    attachments = [a for a in attachments if isinstance(a, Upload)]
        if self.record.status_message_id is not None:
            message = self.channel.get_partial_message(self.record.status_message_id)
            try:
                return await message.edit(content=content, attachments=_files(attachments), view=view)
            except discord.NotFound:  # someone deleted it: start a new one
                pass
        uploads = [a for a in attachments or () if isinstance(a, Upload)]
        return await self._create(content, uploads, view)

    async def _create(
        self, content: str, uploads: list[Upload], view: discord.ui.View | None
    ) -> discord.Message:
        message = await self.channel.send(
            content,
            files=[u.file() for u in uploads] or MISSING,
            view=view or MISSING,
            reference=self._reference(),
            mention_author=False,
        )
        self.record.status_message_id = message.id
        await self.bot.store.update_delivery(self.record.job_id, status_message_id=message.id)
        await self.bot.store.link_message(message.id, self.record.job_id)
        return message

    def _reference(self) -> discord.MessageReference | None:
        if self.record.reply_to_message_id is None:
            return None
        return discord.MessageReference(
            message_id=self.record.reply_to_message_id,
            channel_id=self.record.channel_id,
            fail_if_not_exists=False,
        )

    async def post_result(self, content: str, upload: Upload, view: discord.ui.View, user_id: int):
        """The result: an ordinary channel message (outlives the token; replies to it ping)."""
        return await self.channel.send(
            content,
            file=upload.file(),
            view=view,
            reference=self._reference(),
            allowed_mentions=discord.AllowedMentions(users=[discord.Object(user_id)], replied_user=True),
        )


class JobFollower:
    """Turns one job's events into status-message edits and, at the end, the result message."""

    def __init__(self, bot: OutpaintBot, job: Job, status: StatusMessage) -> None:
        self.bot = bot
        self.job = job
        self.status = status
        self.catch_up = job.state.terminal  # finished while we were away: show only the outcome
        self.summary = messages.describe_job(job.spec.direction, job.spec.times)
        self.canvas: discord.Attachment | None = None  # the canvas now shown, kept across preview edits
        self.note: str | None = None
        self.queued = True
        self.position: int | None = None  # the queue position shown

    @property
    def record(self) -> DeliveryRecord:
        return self.status.record

    async def run(self) -> None:
        events: asyncio.Queue[tuple[int, Event] | BaseException] = asyncio.Queue()
        pump = asyncio.create_task(self._pump(events))
        try:
            while True:
                timeout = self.bot.settings.queue_refresh_s if self.queued else None
                try:
                    item = await asyncio.wait_for(events.get(), timeout)
                except TimeoutError:
                    await self._refresh_position()
                    continue
                if isinstance(item, BaseException):
                    raise item
                seq, event = item
                if self.catch_up and not event.terminal:
                    continue
                await self.handle(event)
                if event.terminal or not isinstance(event, Progress):
                    self.record.last_seq = seq
                    await self.bot.store.update_delivery(self.job.id, last_seq=seq, finished=event.terminal)
                if event.terminal:
                    return
        finally:
            pump.cancel()

    async def _pump(self, events: asyncio.Queue) -> None:
        try:
            async for item in self.bot.queue.events(self.job.id, after=self.record.last_seq):
                await events.put(item)
        except Exception as error:  # surfaces in run()
            await events.put(error)

    async def _refresh_position(self) -> None:
        position = await self.bot.queue.position(self.job.id)
        if position is None or position == self.position:
            return
        await self._show_queued(position, await self.bot.queue.eta(self.job.id))

    async def _show_queued(self, position: int | None, eta: float | None) -> None:
        self.position = position
        await self.edit_status(messages.queued(self.summary, position, eta), view=status_view(self.job.id))

    async def edit_status(self, content: str, **kwargs) -> discord.Message:
        if self.note:
            content += messages.upload_note(self.note)
        message = await self.status.edit(content, **kwargs)
        self.canvas = next((a for a in message.attachments if a.filename.startswith("canvas-")), None)
        return message

    def _due(self) -> bool:
        return time.monotonic() - self.status.last_edit >= self.bot.settings.edit_interval_s

    async def _wait_until_due(self) -> None:
        wait = self.bot.settings.edit_interval_s - (time.monotonic() - self.status.last_edit)
        if wait > 0:
            await asyncio.sleep(wait)  # Discord rate limits: never two edits closer than this

    async def handle(self, event: Event) -> None:
        match event:
            case Queued(position=position, eta_s=eta):
                await self._show_queued(position, eta)
            case Started():
                self.queued = False
                await self.edit_status(messages.started(self.summary), view=status_view(self.job.id))
            case Progress() if self._due():
                self.queued = False
                await self._show_progress(event)
            case Expanded(step=step, total_steps=total) if step + 1 < total:
                self.queued = False
                await self._show_canvas(event)
            case Done():
                await self._deliver(event)
            case Failed(reason=reason):
                await self.edit_status(messages.failed(self.summary, reason), view=None)
            case Cancelled():
                await self.edit_status(messages.cancelled(self.summary), view=None)

    async def _show_progress(self, event: Progress) -> None:
        content = messages.running(
            self.summary,
            event.step,
            event.total_steps,
            self.job.spec.times,
            event.denoise,
            event.denoise_total,
            event.eta_s,
        )
        attachments: list[Upload | discord.Attachment] | None = None
        if event.preview and self.bot.settings.previews:
            preview = Upload(event.preview, "preview.jpg")
            attachments = [self.canvas, preview] if self.canvas else [preview]
        await self.edit_status(content, attachments=attachments, view=status_view(self.job.id))

    async def _show_canvas(self, event: Expanded) -> None:
        png = await self.bot.queue.get_canvas(self.job.id, event.step)
        if png is None:
            return
        upload = await fit_upload(png, self.record.filesize_limit, f"canvas-{event.step + 1}")
        self.note = upload.note
        await self._wait_until_due()
        content = messages.expanded(
            self.summary, event.step, event.total_steps, self.job.spec.times, event.width, event.height
        )
        await self.edit_status(content, attachments=[upload], view=status_view(self.job.id))

    async def _deliver(self, event: Done) -> None:
        png = await self.bot.queue.get_canvas(self.job.id, event.step)
        if png is None:
            await self.edit_status(messages.RESULT_GONE, view=None)
            return
        upload = await fit_upload(png, self.record.filesize_limit, f"outpaint-{self.job.id}")
        content = messages.result(self.job.user_id, self.summary, event.width, event.height, upload.note)
        result = await self.status.post_result(content, upload, result_view(self.job.id), self.job.user_id)
        await self.bot.store.link_message(result.id, self.job.id)
        await self.bot.store.update_delivery(self.job.id, finished=True)  # never post it twice
        self.note = None
        await self.edit_status(messages.finished_status(result.jump_url), attachments=[], view=None)


class Delivery:
    """Owns the follower tasks of all jobs this bot shows."""

    def __init__(self, bot: OutpaintBot) -> None:
        self.bot = bot
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closed = False

    async def follow(
        self,
        job: Job,
        *,
        channel_id: int,
        filesize_limit: int,
        interaction: discord.Interaction | None = None,
        reply_to: int | None = None,
    ) -> None:
        record = DeliveryRecord(job.id, channel_id, None, reply_to, filesize_limit)
        await self.bot.store.add_delivery(record)
        self._start(job, StatusMessage(self.bot, record, job.guild_id, interaction))

    async def resume(self) -> None:
        """After a restart: follow every job whose delivery did not finish, via channel messages."""
        for record in await self.bot.store.unfinished_deliveries():
            job = await self.bot.queue.get(record.job_id)
            if job is None:
                await self.bot.store.update_delivery(record.job_id, finished=True)
                continue
            self._start(job, StatusMessage(self.bot, record, job.guild_id, None))

    def _start(self, job: Job, status: StatusMessage) -> None:
        if self._closed:  # shutting down: the journal keeps it for the next start
            return
        task = asyncio.create_task(self._run(JobFollower(self.bot, job, status)), name=f"deliver-{job.id}")
        self._tasks[job.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.id, None))

    async def _run(self, follower: JobFollower) -> None:
        try:
            await follower.run()
        except Exception as error:
            if self._closed:
                return
            log.warning("showing job %s failed", follower.job.id)
            try:
                await follower.edit_status(user_message(error), view=None)
            except Exception as error:
                log.warning("could not tell the user about job %s either: %s", follower.job.id, error)

    async def close(self) -> None:
        """Stop following; unfinished deliveries stay in the journal and resume on the next start."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
