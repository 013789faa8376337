"""The bot: a discord.py client wired to the job queue.

Its life: ``setup_hook`` (after login, before the gateway) opens the bot's journal and the queue,
registers the persistent buttons, syncs the commands when asked to, and resumes showing every job
it had not finished showing. ``close`` stops all of it in the reverse order.
"""

from __future__ import annotations

import logging
from pathlib import Path

import discord
from discord import app_commands

from bot import commands, messages, replies
from bot.delivery import Delivery
from bot.jobs import JobService
from bot.limits import Limits
from bot.settings import BotSettings
from bot.store import BotStore
from bot.views import JobButton
from outpaint_engine.queue.base import JobQueue
from outpaint_engine.settings import EngineSettings

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
        **client_options: object,
    ) -> None:
        super().__init__(
            intents=intents_for(settings),
            allowed_mentions=discord.AllowedMentions(everyone=False, roles=False, users=True),
            **client_options,
        )
        self.settings = settings
        self.queue = queue
        self.store = BotStore(data_dir / "bot.sqlite3")
        self.limits = Limits(settings)
        self.jobs = JobService(queue, settings, engine, self.limits)
        self.delivery = Delivery(self)
        self.tree = app_commands.CommandTree(self)
        self.sync_commands = sync_commands
        commands.register(self)

    async def setup_hook(self) -> None:
        await self.store.open()
        await self.queue.start()
        self.add_dynamic_items(JobButton)
        if self.sync_commands:
            await self.sync()
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
        log.info("logged in as %s in %d guilds", self.user, len(self.guilds))
        log.info("invite link: %s", messages.invite_url(self.application_id or "YOUR_APPLICATION_ID"))

    async def on_message(self, message: discord.Message) -> None:
        await replies.handle_message(self, message)

    async def close(self) -> None:
        if self.is_closed():
            return
        await self.delivery.close()
        await super().close()
        await self.queue.close()
        await self.store.close()
