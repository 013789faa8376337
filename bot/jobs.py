"""From a Discord request to a queued job: checks, source images, the job spec, submission.

Every entry point (slash command, button, reply, context menu) checks and reserves the user's
slot in memory first (:class:`bot.limits.Limits`, before anything is downloaded), then gets a
:class:`Source` through :class:`JobService` (an uploaded image, downloaded within
``download_timeout_s``, or an earlier result), then :meth:`JobService.submit` plans the job
without pixels, caps the result size and queues it.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from dataclasses import dataclass

import aiohttp
import discord

from bot import messages, metrics
from bot.errors import UserError
from bot.limits import Limits, Owner, Reservation
from bot.quota import expansion_cost
from bot.settings import BotSettings
from bot.store import BotStore
from outpaint_engine import imageio
from outpaint_engine.job import Audience, Direction, Job, JobSpec, JobState, Mode, new_job_id
from outpaint_engine.plan import Plan, PlanError, plan_job, scaled
from outpaint_engine.queue.base import JobExists, JobQueue, QueueUnavailable
from outpaint_engine.settings import EngineSettings

log = logging.getLogger(__name__)

ACTIVE = (JobState.QUEUED, JobState.RUNNING)


def audience_of(channel: object, guild: object | None) -> Audience:
    """Who sees a channel, for the content check: a DM, an age-restricted channel (a thread of one
    too), or an ordinary channel (also when the channel is not known: the strictest)."""
    if guild is None:
        return Audience.PRIVATE
    is_nsfw = getattr(channel, "is_nsfw", None)
    return Audience.AGE_RESTRICTED if callable(is_nsfw) and is_nsfw() else Audience.GENERAL


@dataclass(frozen=True)
class Requester:
    user_id: int
    guild_id: int | None
    channel_id: int
    audience: Audience = Audience.GENERAL

    @classmethod
    def of(cls, who: discord.Interaction | discord.Message) -> Requester:
        user = who.user if isinstance(who, discord.Interaction) else who.author
        channel_id = who.channel_id if isinstance(who, discord.Interaction) else who.channel.id
        if channel_id is None:
            raise UserError(messages.INTERNAL)
        guild_id = who.guild.id if who.guild else None
        return cls(user.id, guild_id, channel_id, audience_of(who.channel, who.guild))

    @property
    def owner(self) -> Owner:
        return Owner(self.user_id, self.guild_id)


@dataclass(frozen=True)
class Source:
    """The image a job starts from: a PNG, its size, and whether it is an earlier result."""

    png: bytes
    width: int
    height: int
    continue_canvas: bool
    parent: Job | None = None


@dataclass(frozen=True)
class Options:
    """What the user asked for. ``None`` means: the parent job's value, or the default.

    ``zoom`` or ``aspect`` (see :mod:`bot.growth`) grow more than one side, and leave
    ``direction`` None; ``candidates`` None is one. A ``redo`` takes the parent's zoom, aspect
    ratio and candidates again (with a new seed)."""

    direction: Direction | None
    times: int = 1
    prompt: str | None = None
    negative_prompt: str | None = None
    expand: int | None = None
    seed: int | None = None
    zoom: float | None = None
    aspect: str | None = None
    candidates: int | None = None
    redo: bool = False

    @property
    def bounded(self) -> tuple[int, str, str, int]:
        """What :meth:`bot.limits.Limits.check` bounds: times, prompt, negative prompt, and the
        expansions counted before the job is planned (the least it can cost: a zoom, an aspect
        ratio or a redo settles its count once planned, see :meth:`JobService.submit`)."""
        steps = self.times if self.zoom is None and self.aspect is None else 1
        return self.times, self.prompt or "", self.negative_prompt or "", steps + (self.candidates or 1) - 1


def new_seed() -> int:
    return secrets.randbelow(2**31)


MAY_TURN = ("image/jpeg", "image/webp")
"""Image types whose EXIF orientation may turn them when decoded (the size Discord reports may be
the stored one)."""

SUBMIT_TRIES = 4
"""How often a submit is sent while the queue is unreachable (each bounded by the queue timeout)."""
SUBMIT_RETRY_S = 0.25
"""The first pause between two tries; it doubles, up to ``reconnect_max_s``."""


class JobService:
    def __init__(
        self,
        queue: JobQueue,
        settings: BotSettings,
        engine: EngineSettings,
        limits: Limits,
        store: BotStore | None = None,
    ) -> None:
        self.queue = queue
        self.settings = settings
        self.engine = engine
        self.limits = limits
        self.store = store  # the bot's journal: results deleted since
        self.image_limits = imageio.ImageLimits(
            max_bytes=settings.max_attachment_bytes,
            max_pixels=settings.max_input_pixels,
            min_side=settings.min_input_side,
            max_aspect=settings.max_input_aspect,
        )

    @property
    def default_expand(self) -> int:
        return max(8, scaled(256, self.engine.window) // 8 * 8)

    @property
    def max_expand(self) -> int:
        return self.engine.window // 2

    # --- checks ------------------------------------------------------------------------------

    def check_attachment(self, attachment: discord.Attachment) -> None:
        """What the attachment's metadata already tells, before a byte is downloaded."""
        if attachment.size > self.settings.max_attachment_bytes:
            raise UserError(messages.attachment_too_big(attachment.size, self.settings.max_attachment_bytes))
        content_type = (attachment.content_type or "").split(";")[0].strip().lower()
        if content_type and not content_type.startswith("image/"):
            raise UserError(messages.not_an_image(attachment.filename))

    # --- sources -----------------------------------------------------------------------------

    async def source_from_attachment(self, attachment: discord.Attachment) -> Source:
        self.check_attachment(attachment)
        try:
            async with asyncio.timeout(self.settings.download_timeout_s):
                data = await attachment.read()
        except TimeoutError:
            timeout = self.settings.download_timeout_s
            log.warning(
                "could not download attachment %s: no answer within %g s", attachment.filename, timeout
            )
            raise UserError(messages.DOWNLOAD_FAILED) from None
        except (aiohttp.ClientError, discord.HTTPException) as error:
            reason = str(error) or type(error).__name__
            log.warning("could not download attachment %s: %s", attachment.filename, reason)
            raise UserError(messages.DOWNLOAD_FAILED) from None
        png, (width, height) = await asyncio.to_thread(self._normalise, data)
        return Source(png, width, height, continue_canvas=False)

    def _normalise(self, data: bytes) -> tuple[bytes, tuple[int, int]]:
        rgb = imageio.decode_image(data, self.image_limits)  # checks the header before decoding
        return imageio.encode_png(rgb), (rgb.shape[1], rgb.shape[0])

    async def finished_job(self, job_id: str) -> Job:
        if self.store is not None and await self.store.result_deleted(job_id):
            raise UserError(messages.RESULT_DELETED)
        job = await self.queue.get(job_id)
        if job is None:
            raise UserError(messages.JOB_GONE)
        if job.state is not JobState.DONE:
            raise UserError(messages.NOT_FINISHED)
        return job

    async def continue_job(self, job_id: str) -> Source:
        """The final canvas of the finished job ``job_id``, to extend it further."""
        return await self.source_from_result(await self.finished_job(job_id))

    async def redo_job(self, job_id: str) -> Source:
        """What the last expansion of the finished job ``job_id`` started from, to redo it."""
        return await self.source_for_redo(await self.finished_job(job_id))

    async def source_from_result(self, job: Job) -> Source:
        """The final canvas of a finished job (of a job with candidates: the one its requester
        picked), to extend it further."""
        png = await self.queue.get_candidate(job.id, job.total_steps - 1, await self._picked(job))
        if png is None:
            raise UserError(messages.RESULT_GONE)
        width, height = png_size(png)
        return Source(png, width, height, continue_canvas=True, parent=job)

    async def _picked(self, job: Job) -> int:
        """The candidate that is ``job``'s result: 0, or the one picked from its grid (UserError
        while none is)."""
        record = await self.store.delivery(job.id) if self.store is not None else None
        if record is None or record.candidates <= 1:
            return 0
        if record.picked is None:
            raise UserError(messages.PICK_FIRST)
        return record.picked

    async def source_for_redo(self, job: Job) -> Source:
        """What ``job``'s last expansion started from: the canvas before it, or the job's source
        (a zoom or an aspect job is redone as a whole)."""
        if job.total_steps > 1 and job.spec.mode is Mode.PAN:
            png = await self.queue.get_canvas(job.id, job.total_steps - 2)
            continue_canvas = True
        else:
            png = await self.queue.get_source(job.id)
            continue_canvas = job.spec.continue_canvas
        if png is None:
            raise UserError(messages.RESULT_GONE)
        width, height = png_size(png)
        return Source(png, width, height, continue_canvas=continue_canvas, parent=job)

    # --- submission --------------------------------------------------------------------------

    def build_spec(self, source: Source, options: Options) -> JobSpec:
        """The job spec: the options given, else the parent job's (for a continued result), else
        the defaults; engine parameters come from the engine settings."""
        parent = (
            source.parent.spec if source.parent else JobSpec(Direction.RIGHT, expand_px=self.default_expand)
        )
        zoom, aspect, candidates = options.zoom, options.aspect, options.candidates or 1
        if options.redo:  # the parent's growth again
            zoom, aspect = parent.zoom, parent.aspect
            candidates = min(parent.candidates, self.settings.max_candidates)
        if options.direction is None and source.parent is None and zoom is None and aspect is None:
            raise UserError(messages.BAD_DIRECTION)
        if not 1 <= candidates <= self.settings.max_candidates:
            raise UserError(messages.too_many_candidates(self.settings.max_candidates))

        def given(value, fallback):
            return fallback if value is None else value

        return JobSpec(
            direction=given(options.direction, parent.direction),
            times=options.times,
            expand_px=given(options.expand, parent.expand_px),
            prompt=given(options.prompt, parent.prompt),
            negative_prompt=given(options.negative_prompt, parent.negative_prompt),
            seed=given(options.seed, new_seed()),
            steps=self.engine.steps,
            guidance=self.engine.guidance,
            window=self.engine.window,
            ip_adapter_scale=self.engine.ip_scale,
            continue_canvas=source.continue_canvas,
            zoom=zoom,
            aspect=aspect,
            candidates=candidates,
        )

    def check_plan(self, attachment: discord.Attachment, options: Options, reservation: Reservation) -> None:
        """Refuse, before anything is downloaded, what the attachment's size already tells: a plan
        the engine cannot do (already that ratio), a result too large, more expansions than the
        server has left today (``reservation`` is settled at what the plan costs). A JPEG or WebP
        may carry an EXIF orientation that turns it once decoded: for those, only what is wrong
        whichever way up it is. Pixels decide again in :meth:`submit`."""
        width, height = attachment.width, attachment.height
        if not width or not height:
            return
        sizes = [(width, height)]
        if (attachment.content_type or "").split(";")[0].strip().lower() in MAY_TURN:
            sizes.append((height, width))
        refusals: list[Exception] = []
        costs: list[int] = []
        for width, height in sizes:
            spec = self.build_spec(Source(b"", width, height, continue_canvas=False), options)
            try:
                plan = plan_job(width, height, spec)
                self.limits.check_canvas(*plan.final_size)
            except (PlanError, UserError) as refusal:
                refusals.append(refusal)
            else:
                costs.append(expansion_cost(spec, plan.total_steps))
        if not costs:
            raise refusals[0]
        reservation.settle(min(costs))

    async def submit(
        self,
        who: Requester,
        source: Source,
        options: Options,
        origin: str,
        reservation: Reservation | None = None,
    ) -> Job:
        """Plan, cap and queue a job; raises :class:`UserError` (or PlanError) with the reason. The
        caller reserved the user's slot (:meth:`bot.limits.Limits.reserve`); ``reservation`` is
        settled at what the plan costs the guild's daily count (:func:`bot.quota.expansion_cost`)."""
        spec = self.build_spec(source, options)
        self.limits.check_words(spec.prompt)  # also a prompt kept from the job continued
        plan = plan_job(source.width, source.height, spec)
        self.limits.check_canvas(*plan.final_size)
        if reservation is not None:
            reservation.settle(expansion_cost(spec, plan.total_steps))
        digest = await asyncio.to_thread(lambda: hashlib.sha256(source.png).hexdigest())  # MBs of PNG
        job = Job(
            id=new_job_id(),
            user_id=who.user_id,
            guild_id=who.guild_id,
            channel_id=who.channel_id,
            spec=spec,
            source_sha256=digest,
            total_steps=plan.total_steps,
            meta={"origin": origin, "parent": source.parent.id if source.parent else None, **plan_meta(plan)},
            audience=who.audience,
        )
        job = await self._submit_once(job, source.png)
        metrics.job_submitted(job, origin)
        return job

    async def _submit_once(self, job: Job, png: bytes) -> Job:
        """Submit ``job``, sending it again (same id) while the queue is unreachable.

        A submit that timed out may still land (a frozen Redis runs the commands it had received
        when it wakes up): the next try then finds the job (:class:`JobExists`) and follows it
        rather than queueing a second one or telling the user it failed.
        """
        delay, attempt = SUBMIT_RETRY_S, 1
        while True:
            try:
                return await self.queue.submit(job, png)
            except JobExists:
                landed = await self.queue.get(job.id) if attempt > 1 else None
                if landed is None:  # a first try that collides: not ours
                    raise
                log.info("job %s: a submit that timed out had landed", job.id)
                return landed
            except QueueUnavailable:
                if attempt == SUBMIT_TRIES:
                    raise
            await asyncio.sleep(delay)
            delay, attempt = min(2 * delay, self.settings.reconnect_max_s), attempt + 1


def plan_meta(plan: Plan) -> dict[str, object]:
    """What the status of a zoom or an aspect job shows of its plan (kept in ``Job.meta``): the
    plan in words with its final size, and the side each step grows. Nothing for a pan."""
    if not plan.target:
        return {}
    width, height = plan.final_size
    return {"plan": f"{plan.describe()} ({width}×{height})", "sides": [str(s.direction) for s in plan.steps]}


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height from a PNG header (the canvases the queue stores are PNGs)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or len(png) < 24:
        raise UserError(messages.RESULT_GONE)
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
