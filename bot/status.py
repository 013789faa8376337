"""The Discord side of showing one job: its status message, and its result message.

The status message starts as the interaction's response. Its id is journaled the first time it is
edited, so when the 15-minute interaction token runs out (or the webhook refuses it, or the bot
restarted and has no token at all) the bot keeps editing *that same message* through the channel
route, which a bot may do for its own messages. Only when the message is gone (a moderator deleted
it: 10008 Unknown Message) does a new channel message of the bot take over. The result is an
ordinary channel message, found again in the channel's history when the bot is not sure it was
posted (see :meth:`StatusMessage.find_result`).
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import io
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import discord
from discord.utils import MISSING

from bot import messages
from bot.store import DeliveryRecord
from bot.views import result_job_id
from outpaint_engine import imageio
from outpaint_engine.safety import is_flagged

if TYPE_CHECKING:
    from bot.app import OutpaintBot

log = logging.getLogger(__name__)

TOKEN_MARGIN = datetime.timedelta(seconds=30)
"""Stop using an interaction token this long before it expires (an edit must not straddle it)."""

WEBHOOK_TOKEN_ERRORS = {10015, 50027}  # Unknown Webhook, Invalid Webhook Token
UNKNOWN_MESSAGE = 10008
HISTORY_LIMIT = 100
"""How many channel messages after the posting intent are searched for a result already posted."""
HISTORY_MARGIN_S = 60.0
"""Searched from this long before the intent was journaled (clock differences with Discord)."""
SPOILER_PREFIX = "SPOILER_"
"""Discord blurs an attachment whose filename starts with this until it is clicked."""


def _token_refused(error: discord.HTTPException) -> bool:
    return error.status == 401 or error.code in WEBHOOK_TOKEN_ERRORS


def message_gone(error: BaseException) -> bool:
    """The message was deleted (or never existed): a new one should take its place."""
    return isinstance(error, discord.NotFound) and error.code == UNKNOWN_MESSAGE


@dataclass
class Upload:
    data: bytes
    filename: str
    note: str | None = None

    def file(self) -> discord.File:
        return discord.File(io.BytesIO(self.data), filename=self.filename)


async def fit_upload(png: bytes, limit: int, stem: str) -> Upload:
    """The PNG as it is when it fits the channel's upload limit, else a smaller encoding (with a note);
    a spoiler (with a note) when the content check flagged it (:mod:`outpaint_engine.safety`)."""
    if len(png) <= limit:
        return _spoiler_if_flagged(png, Upload(png, f"{stem}.png"))

    def shrink() -> imageio.EncodedImage:
        return imageio.encode_for_upload(imageio.decode_png(png), limit, stem=stem)

    encoded = await asyncio.to_thread(shrink)
    return _spoiler_if_flagged(png, Upload(encoded.data, encoded.filename, encoded.note))


def _spoiler_if_flagged(png: bytes, upload: Upload) -> Upload:
    if not is_flagged(png):
        return upload
    note = f"{upload.note} {messages.SPOILER_NOTE}" if upload.note else messages.SPOILER_NOTE
    return Upload(upload.data, SPOILER_PREFIX + upload.filename, note)


def _files(attachments: list[Upload | discord.Attachment] | None) -> list[discord.File | discord.Attachment]:
    """Fresh ``discord.File`` objects for one request (a File is consumed when sent)."""
    if attachments is None:
        return MISSING
    return [a.file() if isinstance(a, Upload) else a for a in attachments]


class StatusMessage:
    """The one message that shows a job while it runs, and where its result goes."""

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
        """Edit the status (create it when there is none). ``attachments``: the complete new list,
        new uploads and attachments the message already has; None leaves them as they are."""
        self.last_edit = time.monotonic()
        if self._interaction_usable():
            assert self.interaction is not None
            try:
                message = await self.interaction.edit_original_response(
                    content=content, attachments=_files(attachments), view=view
                )
            except discord.HTTPException as error:
                if message_gone(error):
                    log.info(
                        "the status message of job %s was deleted; posting a new one", self.record.job_id
                    )
                    await self._forget_message()
                elif not _token_refused(error):
                    raise
                self.interaction = None  # from now on: the channel route
            else:
                await self._remember(message.id)
                return message
        if self.record.status_message_id is not None:
            message = self.channel.get_partial_message(self.record.status_message_id)
            try:
                return await message.edit(content=content, attachments=_files(attachments), view=view)
            except discord.NotFound as error:
                if not message_gone(error):
                    raise
                log.info("the status message of job %s was deleted; posting a new one", self.record.job_id)
                await self._forget_message()
        uploads = [a for a in attachments or () if isinstance(a, Upload)]  # the old ones went with it
        return await self._create(content, uploads, view)

    async def _remember(self, message_id: int) -> None:
        """Journal the status message (and link it to the job, so replying to it continues it)."""
        if self.record.status_message_id != message_id:
            self.record.status_message_id = message_id
            await self.bot.store.update_delivery(self.record.job_id, status_message_id=message_id)
            await self.bot.store.link_message(message_id, self.record.job_id)

    async def _forget_message(self) -> None:
        self.record.status_message_id = None
        await self.bot.store.update_delivery(self.record.job_id, status_message_id=None)

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
        await self._remember(message.id)
        return message

    def _reference(self) -> discord.MessageReference | None:
        if self.record.reply_to_message_id is None:
            return None
        return discord.MessageReference(
            message_id=self.record.reply_to_message_id,
            channel_id=self.record.channel_id,
            fail_if_not_exists=False,
        )

    async def post_result(
        self, content: str, upload: Upload, view: discord.ui.View, user_id: int
    ) -> discord.Message:
        """The result: an ordinary channel message (outlives the token; replies to it ping)."""
        return await self.channel.send(
            content,
            file=upload.file(),
            view=view,
            reference=self._reference(),
            allowed_mentions=discord.AllowedMentions(users=[discord.Object(user_id)], replied_user=True),
        )

    async def find_result(
        self, since: float, actions: tuple[str, ...] | None = None
    ) -> discord.Message | None:
        """The job's result if the bot already posted it (its buttons carry the job id): searched in
        the channel's messages since ``since`` (UNIX time), for when posting was interrupted.
        ``actions``: the buttons that make a result (see :func:`bot.views.result_job_id`)."""
        job_of = result_job_id if actions is None else functools.partial(result_job_id, actions=actions)
        start = datetime.datetime.fromtimestamp(since - HISTORY_MARGIN_S, datetime.UTC)
        after = discord.Object(discord.utils.time_snowflake(start))
        me = self.bot.user
        try:
            async for message in self.channel.history(limit=HISTORY_LIMIT, after=after):
                if me is not None and message.author.id == me.id and job_of(message) == self.record.job_id:
                    return message
        except discord.HTTPException as error:
            log.warning(
                "job %s: could not read the channel's history (%s); posting its result",
                self.record.job_id,
                error,
            )
        return None

    def link(self, message_id: int) -> str:
        """The jump URL of a message in this channel."""
        return self.channel.get_partial_message(message_id).jump_url
