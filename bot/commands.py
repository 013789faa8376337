"""The application commands: /outpaint, /outpaint-help, /queue and the "Outpaint" message menu.

The commands are built per bot from its settings (``times`` is bounded by ``max_times`` right in the
command definition, so Discord's client enforces it too). This module deliberately does not use
``from __future__ import annotations``: discord.py reads the option types from the annotations.
"""

import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot import messages, moderation
from bot.errors import UserError
from bot.growth import ALL, DEFAULT_ZOOM, aspect_choices, growth, growth_from_word
from bot.interactions import check_can_start, report_error, start_job
from bot.jobs import ACTIVE, Options, Requester, Source
from bot.views import result_job_id
from outpaint_engine.job import Direction, Job
from outpaint_engine.plan import ZOOM_RANGE

if TYPE_CHECKING:
    from bot.app import OutpaintBot

Loader = Callable[[], Awaitable[Source]]

DIRECTION_CHOICES = [
    *(app_commands.Choice(name=f"{messages.ARROWS[d]} {d}", value=str(d)) for d in Direction),
    app_commands.Choice(name=f"{messages.ZOOM} all (zoom out)", value=ALL),
]
SEED_MAX = 2**31 - 1
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif")


def register(bot: "OutpaintBot") -> None:
    """Add the commands to ``bot.tree`` and route every command error to one handler."""
    settings = bot.settings
    max_prompt = settings.max_prompt_chars

    @app_commands.command(name="outpaint", description="Extend an image beyond its borders.")
    @app_commands.describe(
        image="The picture to extend (PNG, JPEG, WebP or GIF).",
        direction="Which side to grow; all: every side (zoom out).",
        times=f"How many expansions to one side (1–{settings.max_times}, default 1).",
        prompt="What should appear in the new area (optional; empty: an auto prompt, if enabled).",
        negative_prompt="What should not appear (optional).",
        expand=f"Pixels added per expansion: a multiple of 8, default {bot.jobs.default_expand} (optional).",
        seed="Repeat a result exactly with the same seed (optional).",
        zoom=f"Zoom out this much on every side: {DEFAULT_ZOOM:g} (default), 2, up to {ZOOM_RANGE[1]:g}.",
        aspect="Grow to this shape, e.g. 16:9 or 9:16 (any W:H), instead of a direction.",
        candidates=f"Versions of the last expansion to pick from (1–{settings.max_candidates}).",
    )
    @app_commands.choices(direction=DIRECTION_CHOICES)
    @app_commands.autocomplete(aspect=aspect_choices)
    async def outpaint(
        interaction: discord.Interaction,
        image: discord.Attachment,
        direction: app_commands.Choice[str] | None = None,
        times: app_commands.Range[int, 1, settings.max_times] | None = None,
        prompt: app_commands.Range[str, 1, max_prompt] | None = None,
        negative_prompt: app_commands.Range[str, 1, max_prompt] | None = None,
        expand: app_commands.Range[int, 8, bot.jobs.max_expand] | None = None,
        seed: app_commands.Range[int, 0, SEED_MAX] | None = None,
        zoom: app_commands.Range[float, ZOOM_RANGE[0], ZOOM_RANGE[1]] | None = None,
        aspect: app_commands.Range[str, 1, 16] | None = None,
        candidates: app_commands.Range[int, 1, settings.max_candidates] | None = None,
    ) -> None:
        bot.jobs.check_attachment(image)
        grows = growth(
            direction.value if direction else None, times=times, expand=expand, zoom=zoom, aspect=aspect
        )
        options = Options(
            **grows, prompt=prompt, negative_prompt=negative_prompt, seed=seed, candidates=candidates
        )
        await start_job(
            interaction,
            options,
            lambda: bot.jobs.source_from_attachment(image),
            "slash",
            check=lambda who, reservation: bot.jobs.check_plan(image, options, reservation),
        )

    @app_commands.command(name="outpaint-help", description="How to use the outpaint bot.")
    async def outpaint_help(interaction: discord.Interaction) -> None:
        text = messages.help_text(
            max_times=settings.max_times,
            max_prompt_chars=settings.max_prompt_chars,
            max_user_jobs=settings.max_user_jobs,
            cooldown_s=settings.cooldown_s,
            max_attachment_mb=settings.max_attachment_mb,
            max_canvas_side=settings.max_canvas_side,
            default_expand=bot.jobs.default_expand,
            max_expand=bot.jobs.max_expand,
            max_guild_expansions_per_day=settings.max_guild_expansions_per_day,
            max_candidates=settings.max_candidates,
        )
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="queue", description="Your jobs that are waiting or running.")
    async def queue(interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)  # before asking the queue
        if moderation.is_moderator(interaction):  # the whole server's, to cancel any of them
            assert interaction.guild_id is not None
            listed = await moderation.guild_queue(bot, interaction.guild_id)
            lines = [
                messages.queue_entry(
                    messages.guild_queue_line(await _queue_line(bot, job), job.user_id, url), job
                )
                for job, url in reversed(listed)
            ]
            empty = messages.NOTHING_QUEUED_IN_GUILD
        else:
            jobs = await bot.queue.list_jobs(user_id=interaction.user.id, states=ACTIVE)
            lines = [messages.queue_entry(await _queue_line(bot, job), job) for job in reversed(jobs)]
            empty = messages.NOTHING_QUEUED
        await interaction.edit_original_response(
            content=messages.listing(lines, empty), allowed_mentions=discord.AllowedMentions.none()
        )

    @app_commands.context_menu(name="Outpaint")
    async def outpaint_menu(interaction: discord.Interaction, message: discord.Message) -> None:
        check_can_start(interaction)
        load_source = await _source_loader(bot, message)
        bot.limits.check(Requester.of(interaction).owner)  # reserved when the form comes back
        modal = OutpaintModal(load_source, settings.max_times, max_prompt)
        bot.forms.add(modal.custom_id)
        await interaction.response.send_modal(modal)

    for command in (outpaint, outpaint_help, queue, outpaint_menu):
        bot.tree.add_command(command)

    @bot.tree.error
    async def on_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        await report_error(interaction, _unwrap(error))


def _unwrap(error: app_commands.AppCommandError) -> BaseException:
    if isinstance(error, app_commands.CommandInvokeError):
        return error.original
    if isinstance(error, app_commands.TransformerError | app_commands.CheckFailure):
        return UserError(str(error))
    return error


async def _queue_line(bot: "OutpaintBot", job: Job) -> str:
    position = await bot.queue.position(job.id)
    eta = await bot.queue.eta(job.id)
    summary = messages.describe_spec(job.spec)
    return messages.queue_line(job.id, summary, str(job.state), position, eta)


async def _source_loader(bot: "OutpaintBot", message: discord.Message) -> Loader:
    """How to get the image of a message: a result (or ✅ status) of ours continues its job's canvas
    (looked up in the queue only when the form comes back); any other message gives its first image
    attachment. Raises when the message has none."""
    job_id = None
    if bot.user is not None and message.author.id == bot.user.id:
        job_id = result_job_id(message) or await bot.store.job_for_message(message.id)
    if job_id is not None:
        return lambda: bot.jobs.continue_job(job_id)
    for attachment in message.attachments:
        is_image = (attachment.content_type or "").startswith(
            "image/"
        ) or attachment.filename.lower().endswith(IMAGE_EXTENSIONS)
        if is_image:
            bot.jobs.check_attachment(attachment)
            return lambda: bot.jobs.source_from_attachment(attachment)
    raise UserError(messages.NO_IMAGE_IN_MESSAGE)


FORM_TIMEOUT_S = 600.0


class OpenForms:
    """The "Outpaint" forms this process sent that may still come back. A form submitted after a
    restart (or after its timeout) is not among them and gets a polite answer instead of silence."""

    def __init__(self) -> None:
        self._until: dict[str, float] = {}

    def add(self, custom_id: str) -> None:
        now = time.monotonic()
        self._until = {k: until for k, until in self._until.items() if until > now}
        self._until[custom_id] = now + FORM_TIMEOUT_S

    def __contains__(self, custom_id: object) -> bool:
        return isinstance(custom_id, str) and self._until.get(custom_id, 0.0) > time.monotonic()


class OutpaintModal(discord.ui.Modal, title="Outpaint"):
    """Asks the context menu's direction, times and prompt."""

    def __init__(self, load_source: Loader, max_times: int, max_prompt: int) -> None:
        super().__init__(timeout=FORM_TIMEOUT_S, custom_id=f"outpaint:form:{secrets.token_hex(8)}")
        self.load_source = load_source
        self.max_times = max_times
        self.direction = discord.ui.TextInput(
            custom_id="direction",
            label="Direction (all: zoom out) or a ratio",
            placeholder="left, right, up, down, all, or a ratio like 16:9",
            max_length=16,
        )
        self.times = discord.ui.TextInput(
            custom_id="times", label=f"Times (1–{max_times})", default="1", max_length=3
        )
        self.prompt = discord.ui.TextInput(
            custom_id="prompt",
            label="Prompt (optional)",
            required=False,
            max_length=max_prompt,
            style=discord.TextStyle.paragraph,
        )
        for item in (self.direction, self.times, self.prompt):
            self.add_item(item)

    def options(self) -> Options:
        try:
            times = int(self.times.value.strip())
        except ValueError:
            raise UserError(messages.bad_times(self.max_times)) from None
        return Options(
            **growth_from_word(self.direction.value, times), prompt=self.prompt.value.strip() or None
        )

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await start_job(interaction, self.options(), self.load_source, "menu")

    async def on_error(self, interaction: discord.Interaction, error: Exception) -> None:
        await report_error(interaction, error)
