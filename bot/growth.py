"""How a request grows the canvas: one side (a pan), every side (a zoom out) or two opposite sides
to an aspect ratio, from options that must agree (the same rules as the ``outpaint`` CLI's), and
the aspect ratios the /outpaint command suggests.

Only what needs no pixels is checked here; the plan itself (``outpaint_engine.plan``) refuses what
depends on the image (already that ratio, a canvas too large).
"""

from __future__ import annotations

from typing import Any

from discord import app_commands

from bot import messages
from bot.errors import UserError
from outpaint_engine.job import Direction
from outpaint_engine.plan import ASPECT_PRESETS, PlanError, parse_aspect

ALL = "all"
"""The fifth direction of /outpaint: every side (a zoom out)."""
DEFAULT_ZOOM = 1.5
"""The zoom of ``direction: all`` without a ``zoom``, of 🔍 and of the reply ``zoom``."""
ASPECT_NAMES = {
    "16:9": "widescreen",
    "9:16": "phone, standing",
    "1:1": "square",
    "21:9": "cinema",
    "4:5": "portrait post",
    "3:2": "photo",
}
assert set(ASPECT_NAMES) == set(ASPECT_PRESETS)


def normal_aspect(text: str) -> str:
    """``text`` as the ratio it names (``16x9`` → ``16:9``); PlanError (a sentence for the user)
    when it is not a ratio or one too extreme."""
    return str(parse_aspect(text))


def growth(
    direction: str | None,
    *,
    times: int | None = None,
    expand: int | None = None,
    zoom: float | None = None,
    aspect: str | None = None,
) -> dict[str, Any]:
    """The :class:`bot.jobs.Options` fields that say how the canvas grows; :class:`UserError` for
    options that do not go together (a zoom with a side, a ratio with a direction, ``times`` with
    a zoom...)."""
    zooming = zoom is not None or direction == ALL
    if zooming and aspect is not None:
        raise UserError(messages.ZOOM_OR_ASPECT)
    if zooming and direction not in (None, ALL):
        raise UserError(messages.ZOOM_NEEDS_ALL)
    if aspect is not None and direction is not None:
        raise UserError(messages.ASPECT_WITHOUT_DIRECTION)
    if (zooming or aspect is not None) and (times not in (None, 1) or expand is not None):
        raise UserError(messages.PAN_ONLY)
    if zooming:
        return {"direction": None, "zoom": DEFAULT_ZOOM if zoom is None else zoom}
    if aspect is not None:
        return {"direction": None, "aspect": normal_aspect(aspect)}
    if direction is None:
        raise UserError(messages.NO_GROWTH)
    return {"direction": Direction(direction), "times": 1 if times is None else times, "expand": expand}


def growth_from_word(word: str, times: int) -> dict[str, Any]:
    """The growth of the "Outpaint" form's direction field: a side, ``all`` or a ratio."""
    word = word.strip().lower()
    if word in (*Direction, ALL):
        return growth(word, times=times)
    if not any(ch.isdigit() for ch in word):  # neither a side nor meant as a ratio
        raise UserError(messages.BAD_DIRECTION)
    return growth(None, times=times, aspect=word)


async def aspect_choices(_: object, current: str) -> list[app_commands.Choice[str]]:
    """The /outpaint ``aspect`` suggestions: the presets that start with what was typed, and what
    was typed itself when it is another valid ratio."""
    typed = current.strip()
    presets = [ratio for ratio in ASPECT_PRESETS if ratio.startswith(typed)] or list(ASPECT_PRESETS)
    choices = [app_commands.Choice(name=f"{ratio} ({ASPECT_NAMES[ratio]})", value=ratio) for ratio in presets]
    try:
        own = normal_aspect(typed) if typed else None
    except PlanError:
        own = None
    if own is not None and own not in presets:
        choices.insert(0, app_commands.Choice(name=own, value=own))
    return choices
