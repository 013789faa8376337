"""The buttons: ⬅ ➡ ⬆ ⬇ 🔍 🔄 🖋 🗑 under every result, ✖ under a running job's status, 1️⃣ 2️⃣ 3️⃣
4️⃣ under a grid of candidates (:mod:`bot.candidates`).

A button carries its whole state in its ``custom_id`` (``outpaint:<action>:<job id>``); the job
itself is in the queue's store. :class:`JobButton` is a :class:`discord.ui.DynamicItem` registered
in ``setup_hook``, so the buttons of messages sent before a restart keep working.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord

from bot import messages, moderation, prompt_form
from bot.errors import UserError
from bot.growth import DEFAULT_ZOOM
from bot.interactions import report_error, start_job
from bot.jobs import Options
from bot.messages import ARROWS
from outpaint_engine.job import Direction
from outpaint_engine.plan import MAX_CANDIDATES

if TYPE_CHECKING:
    from bot.app import OutpaintBot

log = logging.getLogger(__name__)

EXTEND = tuple(str(d) for d in Direction)
ZOOM = "zoom"
REDO = "redo"
CANCEL = "cancel"
DELETE = "delete"
PROMPT = "prompt"  # 🖋: redo (or continue) with an edited prompt (bot.prompt_form)
PICKS = tuple(f"pick{number}" for number in range(1, MAX_CANDIDATES + 1))  # pick1: candidate 0

_EMOJI = {
    **{str(d): arrow for d, arrow in ARROWS.items()},
    ZOOM: messages.ZOOM,
    REDO: "🔄",
    CANCEL: "✖",
    DELETE: "🗑",
    PROMPT: "🖋",
    **{pick: f"{number}\ufe0f\u20e3" for number, pick in enumerate(PICKS, start=1)},  # keycaps 1️⃣…
}


CUSTOM_ID = re.compile(rf"outpaint:(?P<action>{'|'.join(_EMOJI)}):(?P<job_id>[0-9A-Za-z_-]{{1,64}})")


class JobButton(discord.ui.DynamicItem[discord.ui.Button], template=CUSTOM_ID):
    def __init__(self, action: str, job_id: str) -> None:
        style = {CANCEL: discord.ButtonStyle.danger, **dict.fromkeys(PICKS, discord.ButtonStyle.primary)}.get(
            action, discord.ButtonStyle.secondary
        )
        super().__init__(
            discord.ui.Button(style=style, emoji=_EMOJI[action], custom_id=f"outpaint:{action}:{job_id}")
        )
        self.action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: Any
    ) -> JobButton:
        return cls(match["action"], match["job_id"])

    async def callback(self, interaction: discord.Interaction[OutpaintBot]) -> None:
        try:
            await self._act(interaction)
        except Exception as error:  # discord.py would only log it: the user gets an answer instead
            await report_error(interaction, error)

    async def _act(self, interaction: discord.Interaction[OutpaintBot]) -> None:
        jobs = interaction.client.jobs
        if self.action == CANCEL:
            await cancel(interaction, self.job_id)
        elif self.action == DELETE:
            await moderation.delete_result(interaction, self.job_id)
        elif self.action == PROMPT:
            await prompt_form.open_form(interaction, self.job_id)
        elif self.action == REDO:  # in the direction (or the zoom, the aspect ratio) of the job redone
            await start_job(interaction, Options(None, redo=True), lambda: jobs.redo_job(self.job_id), "redo")
        elif self.action == ZOOM:
            options = Options(None, zoom=DEFAULT_ZOOM)
            await start_job(interaction, options, lambda: jobs.continue_job(self.job_id), "button")
        elif self.action in PICKS:
            await interaction.client.picks.pick(interaction, self.job_id, PICKS.index(self.action))
        else:
            options = Options(Direction(self.action))
            await start_job(interaction, options, lambda: jobs.continue_job(self.job_id), "button")


async def cancel(interaction: discord.Interaction[OutpaintBot], job_id: str) -> None:
    """Cancel a job, for its requester or a moderator of its server (acknowledged privately first:
    the queue may be slow)."""
    await interaction.response.defer(ephemeral=True, thinking=True)
    queue = interaction.client.queue
    job = await queue.get(job_id)
    if job is None:
        raise UserError(messages.JOB_GONE)
    if not moderation.may_act_on(interaction, job.user_id, job.guild_id):
        raise UserError(messages.CANCEL_NOT_YOURS)
    if job.state.terminal:
        raise UserError(messages.ALREADY_FINISHED)
    if job.user_id != interaction.user.id:
        log.info("job %s: cancelled by moderator %s", job_id, interaction.user.id)
    await queue.cancel(job_id)
    await interaction.edit_original_response(content=messages.CANCELLING)


def result_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for action in (*EXTEND, ZOOM, REDO, PROMPT, DELETE):
        view.add_item(JobButton(action, job_id))
    return view


def grid_view(job_id: str, count: int) -> discord.ui.View:
    """The buttons under a grid of ``count`` candidates: one per candidate, then 🗑."""
    view = discord.ui.View(timeout=None)
    for action in (*PICKS[:count], DELETE):
        view.add_item(JobButton(action, job_id))
    return view


def status_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton(CANCEL, job_id))
    return view


def is_ours(custom_id: str) -> bool:
    """Whether this version of the bot knows a component ``custom_id``."""
    return CUSTOM_ID.fullmatch(custom_id) is not None


def result_job_id(message: discord.Message, actions: tuple[str, ...] = (*EXTEND, REDO, *PICKS)) -> str | None:
    """The job whose result ``message`` is (its extend buttons, or the pick buttons of its grid of
    candidates, name it), or None. ``actions``: the buttons that count."""
    for row in message.components:
        for item in getattr(row, "children", ()):
            match = CUSTOM_ID.fullmatch(getattr(item, "custom_id", None) or "")
            if match is not None and match["action"] in actions:
                return match["job_id"]
    return None
