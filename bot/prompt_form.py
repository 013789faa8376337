"""🖋 under a result: a form pre-filled with the prompt the job ran with (the user's or the auto
prompt), to redo its last expansion (or continue from the result) with the edited prompt.

Anyone who may use the bot can open it on any result, as with the other result buttons (the caps and
the word list apply to them). The form's ``custom_id`` names the job (``outpaint:prompt-form:<id>``)
and its submission is handled from the interaction's own data (:func:`submit`, called by the bot's
``on_interaction``), so a form opened before a restart still works: nothing is kept in memory.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import discord

from bot import messages
from bot.interactions import check_can_start, report_error, start_job
from bot.jobs import Options, Requester

if TYPE_CHECKING:
    from bot.app import OutpaintBot

FORM_ID = re.compile(r"outpaint:prompt-form:(?P<job_id>[0-9A-Za-z_-]{1,64})")
PROMPT = "prompt"
THEN = "then"
REDO = "redo"
CONTINUE = "continue"
FORM_TIMEOUT_S = 600.0
"""How long discord.py keeps the form object it is sent with (it does nothing: see :func:`submit`)."""


class PromptForm(discord.ui.Modal, title=messages.PROMPT_FORM_TITLE):
    """The form: the prompt (pre-filled), then redo the last expansion (default) or continue."""

    def __init__(self, job_id: str, prompt: str, max_prompt: int) -> None:
        super().__init__(timeout=FORM_TIMEOUT_S, custom_id=f"outpaint:prompt-form:{job_id}")
        text = discord.ui.TextInput(
            custom_id=PROMPT,
            style=discord.TextStyle.paragraph,
            required=False,
            max_length=max_prompt,
            default=prompt[:max_prompt] or None,
        )
        then = discord.ui.RadioGroup(
            custom_id=THEN,
            options=[
                discord.RadioGroupOption(label=messages.PROMPT_FORM_REDO, value=REDO, default=True),
                discord.RadioGroupOption(label=messages.PROMPT_FORM_CONTINUE, value=CONTINUE),
            ],
        )
        self.add_item(
            discord.ui.Label(
                text=messages.PROMPT_FORM_LABEL, description=messages.PROMPT_FORM_HINT, component=text
            )
        )
        self.add_item(discord.ui.Label(text=messages.PROMPT_FORM_THEN, component=then))


async def open_form(interaction: discord.Interaction[OutpaintBot], job_id: str) -> None:
    """🖋: the form for the finished job ``job_id`` (refusals first, privately: a form must be the
    first answer to the click)."""
    bot = interaction.client
    check_can_start(interaction)
    bot.limits.check(Requester.of(interaction).owner)  # reserved when the form comes back
    job = await bot.jobs.finished_job(job_id)
    await interaction.response.send_modal(
        PromptForm(job.id, job.prompt_in_use, bot.settings.max_prompt_chars)
    )


def is_prompt_form(custom_id: str) -> bool:
    return FORM_ID.fullmatch(custom_id) is not None


def _values(components: Iterable[dict[str, Any]]) -> dict[str, str]:
    """The submitted inputs by custom id (text inputs and radio groups, in labels or rows)."""
    found: dict[str, str] = {}
    for component in components:
        for child in (component.get("component"), *component.get("components", ())):
            if isinstance(child, dict) and "custom_id" in child:
                found[child["custom_id"]] = child.get("value") or ""
    return found


async def submit(interaction: discord.Interaction[OutpaintBot]) -> None:
    """A submitted 🖋 form: a new job that redoes (or continues) its job with the prompt written.
    Every error is answered here (nothing else handles this interaction)."""
    data: dict[str, Any] = dict(interaction.data or {})
    match = FORM_ID.fullmatch(data.get("custom_id", ""))
    assert match is not None, "not a prompt form"
    job_id, values = match["job_id"], _values(data.get("components", ()))
    jobs = interaction.client.jobs
    options = Options(None, prompt=values.get(PROMPT, "").strip())  # empty: no prompt (or an auto one)
    source = jobs.continue_job if values.get(THEN) == CONTINUE else jobs.redo_job  # redo by default
    try:
        await start_job(interaction, options, lambda: source(job_id), "prompt")
    except Exception as error:
        await report_error(interaction, error)
