"""The bot: a discord.py client wired to the job queue.

Its life: ``setup_hook`` (after login, before the gateway) starts the metrics and health server
when a port is set (:mod:`bot.observability`), opens the bot's journal and the queue, registers the
persistent buttons, syncs the commands when asked to, and resumes showing every job it had not
finished showing (their owners' caps, and the guilds' expansions today, rebuilt from the journal).
``close`` first lets the requests being taken in finish (``shutdown_grace_s``), then stops all of
it in the reverse order.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import discord
from discord import app_commands

from bot import commands, messages, moderation, prompt_form, replies
from bot.candidates import Picks
from bot.delivery import Delivery
from bot.errors import UserError
from bot.interactions import report_error
from bot.jobs import JobService
from bot.lifecycle import InFlight
from bot.limits import Limits
from bot.metrics import discord_trace
from bot.observability import BotOps
from bot.settings import BotSettings
from bot.store import BotStore
from bot.views import JobButton, is_ours
from outpaint_engine.queue.base import JobQueue
from outpaint_engine.safety import WordList
from outpaint_engine.settings import EngineSettings, OpsSettings

log = logging.getLogger(__name__)


def intents_for(settings: BotSettings) -> discord.Intents:
    """Only what the bot uses: guilds (upload limits), messages (replies), and message content
    when the operator enabled the privileged intent."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    intents.message_content = settings.message_content
    return intents


class OutpaintBot(discord.Client):
    def __init__(
        self,
        settings: BotSettings,
        queue: JobQueue,
        *,
        engine: EngineSettings,
        data_dir: Path,
        sync_commands: bool = False,
        words: WordList | None = None,
        ops: OpsSettings | None = None,
        **client_options: object,
    ) -> None:
        super().__init__(
            intents=intents_for(settings),
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True),
            http_trace=discord_trace(),  # Discord's answers and rate limits, for the metrics
            **client_options,
        )
        self.settings = settings
        self.queue = queue
        self.store = BotStore(data_dir / "bot.sqlite3")
        self.limits = Limits(settings, words=words)
        self.jobs = JobService(queue, settings, engine, self.limits, self.store)
        self.delivery = Delivery(self)
        self.picks = Picks(self)
        self.inflight = InFlight()
        self.forms = commands.OpenForms()
        self.ops = BotOps(self, ops)
        self._stopping: asyncio.Future[None] | None = None
        self.tree = app_commands.CommandTree(self)
        self.sync_commands = sync_commands
        commands.register(self)

    async def setup_hook(self) -> None:
        self.ops.start()
        await self.store.open()
        await self.queue.start()
        self.add_dynamic_items(JobButton)
        if self.sync_commands:
            await self.sync()
        quota = self.limits.quota
        quota.restore(await self.store.guild_expansions_since(quota.day_start()))
        await self.delivery.resume()

    async def sync(self) -> None:
        """Tell Discord about the commands: to the dev guild (instant) if set, else globally."""
        if self.settings.dev_guild is not None:
            guild = discord.Object(self.settings.dev_guild)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %s", len(synced), guild.id)
        else:
            synced = await self.tree.sync()
            log.info("synced %d commands globally (may take up to an hour to show)", len(synced))

    async def on_ready(self) -> None:
        self.ops.gateway_ready()
        log.info("logged in as %s in %d guilds", self.user, len(self.guilds))
        log.info("invite link: %s", messages.invite_url(self.application_id or "YOUR_APPLICATION_ID"))

    async def on_resumed(self) -> None:
        self.ops.gateway_ready()

    async def on_disconnect(self) -> None:
        self.ops.gateway_lost()

    async def on_message(self, message: discord.Message) -> None:
        await replies.handle_message(self, message)

    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        await moderation.on_message_deleted(self, payload.message_id)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """The 🖋 forms (their state is in their custom id: see :mod:`bot.prompt_form`), and a short
        answer, instead of Discord's "This interaction failed", for what nothing else handles: a
        button whose custom id this version does not know, a form sent before a restart."""
        custom_id = (interaction.data or {}).get("custom_id", "")
        form = interaction.type is discord.InteractionType.modal_submit
        if interaction.type is discord.InteractionType.component and not is_ours(custom_id):
            await report_error(interaction, UserError(messages.BUTTON_OUTDATED))
        elif form and prompt_form.is_prompt_form(custom_id):
            await prompt_form.submit(interaction)
        elif form and custom_id not in self.forms:
            await report_error(interaction, UserError(messages.FORM_EXPIRED))

    @property
    def closing(self) -> bool:
        """True once a stop began: new requests are turned away politely."""
        return self._stopping is not None

    async def close(self) -> None:
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await self._stopping

    async def _stop(self) -> None:
        await self.inflight.drain(self.settings.shutdown_grace_s)
        await self.delivery.close()
        await super().close()
        await self.queue.close()
        await self.store.close()
        self.ops.close()
