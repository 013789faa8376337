"""Following a job: the queue's events become edits of one status message, then the result.

For every job the bot follows the queue's events (``JobQueue.events``, replay then follow) and turns
them into edits of its status message (:class:`~bot.status.StatusMessage`): queue position and ETA,
progress (with a small preview while an expansion denoises), and the whole canvas after every
expansion, so the image visibly grows. The status and the result also show the prompt the job runs
with: the user's, or the auto prompt its worker wrote (``Prompted``; stored with the job, so a
restarted bot shows it too). When the job is done the result goes out as an ordinary
channel message with the buttons (it outlives the interaction token, and a reply to it pings its
author), and the status message shrinks to a link to it.

Nothing ends a follower but the job's outcome shown (or the job gone from the queue):

- **Outages.** When the queue cannot be reached (:class:`QueueUnavailable`, from any call) the
  status says "reconnecting…" and the follower tries again with a backoff (a quarter second,
  doubling up to ``reconnect_max_s``), resubscribing after the last event it handled, for as long
  as it takes. Discord errors that are not the request's fault (5xx, dropped connections) are
  waited out the same way.
- **Warm-ups.** While no worker is ready and one is loading or compiling its engine, a waiting job
  says "warming up the GPU" instead of an ETA (checked with each queue update and position
  refresh).
- **Restarts.** Where each job is shown, the last event shown, and the result once posted are
  journaled in :class:`~bot.store.BotStore`; a restarted bot picks every unfinished job up again.
- **Exactly once.** The intent to post a result is journaled before posting; if the bot is
  interrupted before it journals the posted message, it looks for that message (its buttons carry
  the job id) in the channel's history instead of posting again.
- **Zoom, aspect, candidates.** A zoom or an aspect job's status shows its plan until it runs and
  names the side of every step; a job whose ``Done`` counts several candidates gets a numbered
  grid as its result message, and its requester's pick is posted as the result
  (:mod:`bot.candidates`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import aiohttp
import discord

from bot import candidates, messages, metrics
from bot.errors import user_message
from bot.limits import Owner
from bot.quota import expansion_cost
from bot.status import SPOILER_PREFIX, StatusMessage, Upload, fit_upload
from bot.store import DeliveryRecord
from bot.views import result_view, status_view
from outpaint_engine.job import (
    AutoPrompt,
    Cancelled,
    Done,
    Event,
    Expanded,
    Failed,
    Job,
    JobState,
    Progress,
    Prompted,
    Queued,
    Started,
)
from outpaint_engine.queue.base import QueueUnavailable
from outpaint_engine.safety import is_block_reason
from outpaint_engine.worker.status import warming_up

if TYPE_CHECKING:
    from bot.app import OutpaintBot

log = logging.getLogger(__name__)

TRANSIENT = (QueueUnavailable, discord.DiscordServerError, aiohttp.ClientError)
"""Failures that pass: the follower waits and tries again."""
FIRST_RETRY_S = 0.25


class JobFollower:
    """Turns one job's events into status-message edits and, at the end, the result message."""

    def __init__(self, bot: OutpaintBot, status: StatusMessage, job: Job | None = None) -> None:
        self.bot = bot
        self.status = status
        self.job = job  # None until loaded from the queue (a job resumed after a restart)
        self.catch_up = job is not None and job.state.terminal  # finished while away: the outcome only
        self.canvas: discord.Attachment | None = None  # the canvas now shown, kept across preview edits
        self.note: str | None = None
        self.queued = True
        self.position: int | None = None  # the queue position shown
        self.warm_up: str | None = None  # the warm-up shown as what the job waits for
        self.unreachable: type[BaseException] | None = None  # what is being waited out, if anything
        self.progressed = False  # an event came since the last failure (the backoff starts over)

    @property
    def record(self) -> DeliveryRecord:
        return self.status.record

    @property
    def job_id(self) -> str:
        return self.record.job_id

    @property
    def summary(self) -> str:
        return messages.describe_spec(self.job.spec) if self.job else "your job"

    @property
    def sides(self) -> list[str] | None:
        """The side each step grows, for a zoom or an aspect job (whose every step counts)."""
        return self.job.meta.get("sides") if self.job else None

    @property
    def plan_line(self) -> str:
        """The plan of a zoom or an aspect job, shown until it runs."""
        return messages.plan_line(self.job.meta.get("plan")) if self.job else ""

    async def run(self) -> None:
        delay = FIRST_RETRY_S
        while True:
            try:
                if (self.job is None or self.unreachable is not None) and not await self._load():
                    return
                await self._follow()
                return
            except TRANSIENT as error:
                if self.progressed:
                    delay, self.progressed = FIRST_RETRY_S, False
                await self._wait_out(error)
                await asyncio.sleep(delay)
                delay = min(2 * delay, self.bot.settings.reconnect_max_s)

    async def _wait_out(self, error: BaseException) -> None:
        """Say once (log, and the status for a queue outage) that the job is being waited for."""
        if self.unreachable is type(error):
            return
        self.unreachable = type(error)
        if not isinstance(error, QueueUnavailable):
            log.warning("job %s: Discord is not answering (%s); retrying", self.job_id, error)
            return
        log.warning("job %s: reconnecting (%s)", self.job_id, error)
        self.position = None  # shown again once the queue is back
        with contextlib.suppress(discord.HTTPException, *TRANSIENT):
            await self.edit_status(messages.reconnecting(self.summary), view=status_view(self.job_id))

    async def _load(self) -> bool:
        """(Re)load the job; after an outage, show where it stands. False: the job is gone."""
        job = await self.bot.queue.get(self.job_id)
        if job is None:
            await self._gone()
            return False
        self.job = job
        self.catch_up = self.catch_up or job.state.terminal
        if self.unreachable is not None:
            self.unreachable = None
            log.info("job %s: reachable again; following it from event %d", self.job_id, self.record.last_seq)
            await self._show_state(job)
        return True

    async def _show_state(self, job: Job) -> None:
        if job.state is JobState.QUEUED:
            queue = self.bot.queue
            await self._show_queued(
                await queue.position(job.id), await queue.eta(job.id), await self._warm_up()
            )
        elif job.state is JobState.RUNNING:
            text = messages.working(
                self.summary, job.steps_done, job.total_steps, job.spec.times, sides=self.sides
            )
            await self.edit_status(text, view=status_view(job.id))

    async def _gone(self) -> None:
        log.info("job %s is no longer in the queue; nothing more to show", self.job_id)
        self.bot.limits.finished(self.job_id)
        await self.edit_status(messages.JOB_GONE, view=None)
        await self.bot.store.update_delivery(self.job_id, finished=True)

    async def _follow(self) -> None:
        events: asyncio.Queue[tuple[int, Event] | BaseException | None] = asyncio.Queue()
        pump = asyncio.create_task(self._pump(events))
        try:
            while True:
                timeout = self.bot.settings.queue_refresh_s if self.queued and not self.catch_up else None
                try:
                    item = await asyncio.wait_for(events.get(), timeout)
                except TimeoutError:
                    await self._refresh_position()
                    continue
                if item is None:  # the stream ended without an outcome: the job was purged
                    await self._gone()
                    return
                if isinstance(item, BaseException):
                    raise item
                seq, event = item
                self.progressed = True
                if self.catch_up and not event.terminal:
                    continue
                if event.terminal:
                    self.bot.limits.finished(self.job_id)
                await self.handle(event)
                if event.terminal and self.job is not None:
                    metrics.outcome_shown(self.job, event)
                if event.terminal or not isinstance(event, Progress):
                    self.record.last_seq = seq
                    await self.bot.store.update_delivery(self.job_id, last_seq=seq, finished=event.terminal)
                if event.terminal:
                    return
        finally:
            pump.cancel()

    async def _pump(self, events: asyncio.Queue) -> None:
        try:
            async for item in self.bot.queue.events(self.job_id, after=self.record.last_seq):
                await events.put(item)
            await events.put(None)
        except Exception as error:  # surfaces in _follow()
            await events.put(error)

    async def _refresh_position(self) -> None:
        """A waiting job (queued, or taken by a worker whose engine still loads): its position, or
        a warm-up beginning or ending."""
        position = await self.bot.queue.position(self.job_id)
        warm_up = await self._warm_up()
        if warm_up == self.warm_up and (position is None or position == self.position):
            return
        await self._show_queued(position, await self.bot.queue.eta(self.job_id), warm_up)

    async def _warm_up(self) -> str | None:
        state = warming_up(await self.bot.queue.workers())
        return None if state is None else str(state)

    async def _show_queued(self, position: int | None, eta: float | None, warm_up: str | None) -> None:
        self.position, self.warm_up = position, warm_up
        text = messages.queued(self.summary, position, eta, warm_up=self.warm_up) + self.plan_line
        await self.edit_status(text, view=status_view(self.job_id))

    async def edit_status(self, content: str, **kwargs) -> discord.Message:
        content = messages.with_prompt(content, self.job)
        if self.note:
            content += messages.upload_note(self.note)
        message = await self.status.edit(content, **kwargs)
        self.canvas = next(
            (a for a in message.attachments if a.filename.removeprefix(SPOILER_PREFIX).startswith("canvas-")),
            None,
        )
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
                await self._show_queued(position, eta, await self._warm_up())
            case Started():
                self.queued = False
                text = messages.started(self.summary) + self.plan_line
                await self.edit_status(text, view=status_view(self.job_id))
            case Prompted(prompt=prompt, reason=reason) if self.job is not None:
                self.job.auto_prompt = AutoPrompt(prompt, reason)
                text = messages.started(self.summary) + self.plan_line
                await self.edit_status(text, view=status_view(self.job_id))
            case Progress() if self._due():
                self.queued = False
                await self._show_progress(event)
            case Expanded(step=step, total_steps=total) if step + 1 < total:
                self.queued = False
                await self._show_canvas(event)
            case Done():
                await self._deliver(event)
            case Failed(reason=reason):  # blocked by the content check: no canvas or preview stays
                attachments = [] if is_block_reason(reason) else None
                await self.edit_status(
                    messages.failed(self.summary, reason), attachments=attachments, view=None
                )
            case Cancelled():
                await self.edit_status(messages.cancelled(self.summary), view=None)

    async def _show_progress(self, event: Progress) -> None:
        assert self.job is not None
        content = messages.running(
            self.summary,
            event.step,
            event.total_steps,
            self.job.spec.times,
            event.denoise,
            event.denoise_total,
            event.eta_s,
            sides=self.sides,
        )
        attachments = None
        if event.preview and self.bot.settings.previews:
            preview = Upload(event.preview, "preview.jpg")
            attachments = [self.canvas, preview] if self.canvas else [preview]
        await self.edit_status(content, attachments=attachments, view=status_view(self.job_id))

    async def _show_canvas(self, event: Expanded) -> None:
        assert self.job is not None
        png = await self.bot.queue.get_canvas(self.job_id, event.step)
        if png is None:
            return
        upload = await fit_upload(png, self.record.filesize_limit, f"canvas-{event.step + 1}")
        self.note = upload.note
        await self._wait_until_due()
        content = messages.expanded(
            self.summary,
            event.step,
            event.total_steps,
            self.job.spec.times,
            event.width,
            event.height,
            sides=self.sides,
        )
        await self.edit_status(content, attachments=[upload], view=status_view(self.job_id))

    async def _deliver(self, event: Done) -> None:
        """Post the result once, then turn the status into a link to it."""
        result_id = self.record.result_message_id
        if result_id is None and self.record.posting_since is not None:  # interrupted while posting?
            found = await self.status.find_result(self.record.posting_since)
            if found is not None:
                log.info(
                    "job %s: its result was posted before the interruption; not posting it again", self.job_id
                )
                result_id = found.id
        if result_id is None:
            result_id = await self._post_result(event)
            if result_id is None:
                return
        if self.record.result_message_id is None:
            await self.bot.store.link_message(result_id, self.job_id)
            self.record.result_message_id = result_id
            await self.bot.store.update_delivery(self.job_id, result_message_id=result_id)
        self.note = None
        await self.edit_status(
            messages.finished_status(self.status.link(result_id)), attachments=[], view=None
        )

    async def _post_result(self, event: Done) -> int | None:
        """Post the result: the canvas, or the grid of candidates to pick from."""
        assert self.job is not None
        if self.record.candidates != event.candidates:  # fewer than asked for: see Expanded
            self.record.candidates = event.candidates
            await self.bot.store.update_delivery(self.job_id, candidates=event.candidates)
        if event.candidates > 1:
            shown = await candidates.grid_message(
                self.bot, self.job, event, self.record.filesize_limit, self.summary
            )
        else:
            shown = await self._result_message(event)
        if shown is None:
            await self.edit_status(messages.RESULT_GONE, view=None)
            return None
        content, upload, view = shown
        if self.record.posting_since is None:
            self.record.posting_since = time.time()
            await self.bot.store.update_delivery(self.job_id, posting_since=self.record.posting_since)
        result = await self.status.post_result(content, upload, view, self.job.user_id)
        return result.id

    async def _result_message(self, event: Done) -> tuple[str, Upload, discord.ui.View] | None:
        assert self.job is not None
        png = await self.bot.queue.get_canvas(self.job_id, event.step)
        if png is None:
            return None
        upload = await fit_upload(png, self.record.filesize_limit, f"outpaint-{self.job_id}")
        note = messages.notes(upload.note, candidates.withheld_note(self.job, event.candidates))
        content = messages.result(
            self.job.user_id, self.summary, event.width, event.height, note, messages.prompt_line(self.job)
        )
        return content, upload, result_view(self.job_id)


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
        status_message_id: int | None = None,
        reply_to: int | None = None,
    ) -> None:
        """Show ``job`` from now on: in the interaction's response (``status_message_id``, kept in the
        journal so it is edited to the end, across restarts), or in a new message of the bot."""
        record = DeliveryRecord(
            job.id,
            channel_id,
            status_message_id,
            reply_to,
            filesize_limit,
            user_id=job.user_id,
            guild_id=job.guild_id,
            expansions=expansion_cost(job.spec, job.total_steps),
            created_at=job.created_at,
            candidates=job.spec.candidates,
        )
        await self.bot.store.add_delivery(record)
        if status_message_id is not None:  # a reply to the ✅ status continues the job too
            await self.bot.store.link_message(status_message_id, job.id)
        self._start(JobFollower(self.bot, StatusMessage(self.bot, record, job.guild_id, interaction), job))

    async def resume(self) -> None:
        """After a restart: count every job whose delivery did not finish against its owner's caps,
        and follow it again (through channel messages: the old interactions' tokens are gone).
        The queue is not asked here; each follower waits for it if it is not reachable yet."""
        for record in await self.bot.store.unfinished_deliveries():
            self.bot.limits.track(record.job_id, Owner(record.user_id, record.guild_id))
            self._start(JobFollower(self.bot, StatusMessage(self.bot, record, record.guild_id, None)))

    def _start(self, follower: JobFollower) -> None:
        if self._closed:  # shutting down: the journal keeps it for the next start
            return
        job_id = follower.job_id
        task = asyncio.create_task(self._run(follower), name=f"deliver-{job_id}")
        self._tasks[job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job_id, None))

    async def _run(self, follower: JobFollower) -> None:
        try:
            await follower.run()
        except Exception as error:
            if self._closed:
                return
            text = user_message(error)  # logs it: one line when expected, a traceback for a bug
            log.warning("showing job %s stopped: %s", follower.job_id, text)
            try:
                await follower.edit_status(text, view=None)
            except Exception as error:
                log.warning("could not tell the user about job %s either: %s", follower.job_id, error)

    async def close(self) -> None:
        """Stop following; unfinished deliveries stay in the journal and resume on the next start."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
