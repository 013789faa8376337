"""Every text a user (or the operator starting the bot) reads, in one place.

Plain functions and constants, no Discord objects: easy to review, easy to test.
"""

from __future__ import annotations

import time

import discord

from outpaint_engine.job import Direction, Job, JobSpec, Mode
from outpaint_engine.plan import ASPECT_LIMIT, ZOOM_RANGE

ARROWS = {Direction.LEFT: "⬅", Direction.RIGHT: "➡", Direction.UP: "⬆", Direction.DOWN: "⬇"}
ZOOM = "🔍"
ASPECT = "⇔"

PERMISSIONS = discord.Permissions(
    view_channel=True,
    send_messages=True,
    send_messages_in_threads=True,
    embed_links=True,
    attach_files=True,
    read_message_history=True,
).value
SCOPES = "bot%20applications.commands"


def invite_url(application_id: int | str = "YOUR_APPLICATION_ID") -> str:
    return (
        f"https://discord.com/oauth2/authorize?client_id={application_id}"
        f"&scope={SCOPES}&permissions={PERMISSIONS}"
    )


NO_TOKEN = f"""\
outpaint-bot needs a Discord bot token, and none is set (DISCORD_TOKEN).

1. Open https://discord.com/developers/applications and click "New Application".
2. In "Bot", click "Reset Token" and copy the token.
3. Put it in a file named .env next to where you start the bot:
       DISCORD_TOKEN=paste-the-token-here
   (or export DISCORD_TOKEN in the environment). Never commit or share it.
4. Invite the bot to your server (replace YOUR_APPLICATION_ID with the id from "General Information"):
       {invite_url()}
5. Run `outpaint-bot --sync` once so Discord learns the slash commands, then `outpaint-bot`.

docs/discord-setup.md explains every step, the permissions and the optional message-content intent."""


BAD_TOKEN = (
    "Discord refused the token in DISCORD_TOKEN. Copy a fresh one from the developer portal "
    "(Bot → Reset Token) into .env and start again."
)


def discord_unreachable(error: Exception) -> str:
    return f"outpaint-bot: can't reach Discord ({error}). Check the network connection and try again."


MISSING_INTENT = (
    "The message-content intent is turned on (OUTPAINT_MESSAGE_CONTENT=true) but not allowed for this "
    "application. Enable 'Message Content Intent' under Bot in the developer portal, or unset the option."
)


def relative_time(seconds_from_now: float, *, now: float | None = None) -> str:
    """A Discord timestamp that every client renders as "in 2 minutes"."""
    now = time.time() if now is None else now
    return f"<t:{int(now + seconds_from_now)}:R>"


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB"


# --- mistakes ----------------------------------------------------------------------------------

NO_IMAGE_IN_MESSAGE = "That message has no image I can use. Pick a message with a PNG, JPEG, WebP or GIF."
DOWNLOAD_FAILED = "I couldn't download that attachment from Discord. Please try again."
BAD_DIRECTION = "Direction must be left, right, up, down, all (zoom out) or a ratio like 16:9."
CANCEL_NOT_YOURS = "Only the person who started this job (or a moderator of this server) can cancel it."
DELETE_NOT_YOURS = "Only the person who asked for this image (or a moderator of this server) can delete it."
RESULT_DELETED = "That result was deleted, so it can't be extended any more. Start again with /outpaint."
DELETED = "🗑 Deleted."
PROMPT_NOT_ALLOWED = (
    "That prompt contains a word or phrase that isn't allowed here. Please rephrase it and try again."
)
ALREADY_FINISHED = "That job has already finished."
NOT_FINISHED = "That job has not finished yet; wait for its result, then extend it."
RESULT_GONE = "That result is no longer stored, so I can't continue it. Start again with /outpaint."
JOB_GONE = "I can't find that job any more."
QUEUE_DOWN = "The job queue is not reachable right now. Please try again in a minute."
INTERNAL = "Something went wrong on my side. It has been logged; please try again."
MISSING_PERMISSIONS = (
    "I'm not allowed to post in this channel. A server admin can fix that by giving me View Channel, "
    "Send Messages, Attach Files and Read Message History here."
)
RESTARTING = "I'm restarting right now, so I couldn't take that request. Please try again in a minute."
FORM_EXPIRED = (
    "That form has expired (I may have restarted since it opened). "
    "Please pick Apps → Outpaint on the message again."
)
BUTTON_OUTDATED = (
    "That button is from an older version of me and no longer works. "
    "Please use the buttons under a newer result, or /outpaint."
)
REPLY_UNREADABLE = (
    "I couldn't read your reply. Keep the @mention on when replying (e.g. `left 2`), "
    "or use the buttons under the result."
)


def missing_permissions(names: list[str]) -> str:
    """Which of the bot's permissions the channel lacks (``names`` as Discord's settings show them)."""
    listed = ", ".join(f"**{name}**" for name in names)
    return (
        f"I can't post results in this channel: I'm missing {listed} here. "
        "A server admin can give me that in the channel's settings."
    )


def not_an_image(filename: str) -> str:
    return f"`{filename}` isn't an image I can read. Please attach a PNG, JPEG, WebP or GIF."


def attachment_too_big(size: int, limit: int) -> str:
    return f"That file is {_mib(size)}; the limit is {_mib(limit)}. Please attach a smaller image."


def bad_times(maximum: int) -> str:
    return f"times must be a whole number from 1 to {maximum}."


def prompt_too_long(name: str, limit: int) -> str:
    return f"The {name} is too long: keep it under {limit} characters."


def canvas_too_large(width: int, height: int, max_side: int, max_pixels: int) -> str:
    return (
        f"That would make a {width}×{height} image, larger than I can make (at most {max_side} px on a side "
        f"and {max_pixels:,} pixels in all). Ask for fewer expansions or a smaller expand."
    )


def user_cap(limit: int) -> str:
    jobs = "job" if limit == 1 else "jobs"
    return (
        f"You already have {limit} {jobs} waiting or running. "
        "Wait for one to finish (see /queue), or cancel one with ✖."
    )


def guild_cap(limit: int) -> str:
    return f"This server already has {limit} jobs waiting or running. Please try again when one finishes."


def cooldown(seconds_left: float) -> str:
    return f"Please wait a moment before your next job: you can start one {relative_time(seconds_left)}."


def guild_daily_cap(limit: int, left: int, resets_in_s: float) -> str:
    when = relative_time(resets_in_s)
    if left:
        return (
            f"This server has {left} of its {limit} expansions for today left. "
            f"Ask for fewer, or wait until the count resets {when}."
        )
    return f"This server has used all {limit} of its expansions for today. The count resets {when}."


GUILD_NOT_ALLOWED = "I'm not enabled on this server. Ask the bot's operator to add it to the allowlist."

# --- zoom, aspect ratios, candidates --------------------------------------------------------------

NO_GROWTH = "Pick a direction (left, right, up, down, or all to zoom out) or an aspect ratio."
ZOOM_OR_ASPECT = "Choose a zoom (direction: all) or an aspect ratio, not both."
ZOOM_NEEDS_ALL = "A zoom grows every side: leave out the direction, or pick direction: all."
ASPECT_WITHOUT_DIRECTION = "An aspect ratio chooses the sides to grow by itself: leave out the direction."
PAN_ONLY = "`times` and `expand` go with one direction; a zoom or an aspect ratio plans its own expansions."
PICK_NOT_YOURS = "Only the person who asked for these candidates can pick one."
PICK_FIRST = (
    "Pick one of the candidates first (the numbered buttons under them); then extend the one you picked."
)
NO_SUCH_CANDIDATE = "I can't find that candidate any more."


def too_many_candidates(limit: int) -> str:
    return f"candidates must be from 1 to {limit}."


def withheld(count: int) -> str:
    """Candidates the content check held back (policy ``block``)."""
    were = "candidate was" if count == 1 else "candidates were"
    return f"{count} more {were} held back by the automatic content check."


def notes(*parts: str | None) -> str | None:
    """Notes of a message joined in one line, or None."""
    return " ".join(p for p in parts if p) or None


def candidates_grid(user_id: int, summary: str, count: int, width: int, height: int, note: str | None) -> str:
    lines = [
        f"<@{user_id}> here are {count} candidates ({summary}, {width}×{height} each).",
        "Pick one with its number: it becomes your result, to extend further. Only you can pick.",
    ]
    if note:
        lines.append(f"ℹ {note}")
    return "\n".join(lines)


def picked_grid(number: int, jump_url: str) -> str:
    return f"✅ Candidate {number} was picked: {jump_url}"


def picked(number: int, jump_url: str) -> str:
    return f"Candidate {number} is now your result: {jump_url}"


def already_picked(number: int, jump_url: str | None) -> str:
    where = f": {jump_url}" if jump_url else "."
    return f"Candidate {number} was already picked{where}"


# --- status message -----------------------------------------------------------------------------


def describe_job(direction: Direction, times: int) -> str:
    return f"{ARROWS[direction]} {direction} ×{times}"


def describe_spec(spec: JobSpec) -> str:
    """A job in a few words: ``➡ right ×2``, ``🔍 zoom 1.5×``, ``⇔ 16:9``, ``…, 4 candidates``."""
    if spec.mode is Mode.ZOOM:
        text = f"{ZOOM} zoom {spec.zoom:g}×"
    elif spec.mode is Mode.ASPECT:
        text = f"{ASPECT} {spec.aspect}"
    else:
        text = describe_job(spec.direction, spec.times)
    return f"{text}, {spec.candidates} candidates" if spec.candidates > 1 else text


def plan_line(plan: str | None) -> str:
    """The plan of a zoom or an aspect job, under its status until it runs."""
    return f"\n📐 Plan: {plan}." if plan else ""


WARMING_UP = "warming up the GPU (compiling kernels: a few minutes on a first start)"
LOADING_MODELS = "the GPU worker is loading its models"


def queued(summary: str, position: int | None, eta_s: float | None, *, warm_up: str | None = None) -> str:
    """A waiting job's status; ``warm_up`` ("warming" or "loading") when no worker is ready yet
    and one is starting: then that is what the job waits for, and no ETA is given."""
    where = f"position {position} in the queue" if position else "waiting in the queue"
    if warm_up is not None:
        return f"⏳ {summary}: {where}, {WARMING_UP if warm_up == 'warming' else LOADING_MODELS}…"
    eta = f", ready {relative_time(eta_s)}" if eta_s is not None else ""
    return f"⏳ {summary}: {where}{eta}."


def _expansion(step: int, total_steps: int, times: int) -> int | None:
    """The expansion number (1 to ``times``) of plan step ``step``; None for the square-up step the
    plan puts first when the picture is narrower than a window along its growing side."""
    number = step - (total_steps - times) + 1
    return number if number >= 1 else None


def _step_name(step: int, total_steps: int, times: int, sides: list[str] | None) -> str:
    """What step ``step`` is: ``expansion 2/3``, or (a zoom or an aspect job, whose every step
    counts, with the side each grows) ``expansion 3/6: left``."""
    if sides:
        side = f": {sides[step]}" if step < len(sides) else ""
        return f"expansion {step + 1}/{total_steps}{side}"
    number = _expansion(step, total_steps, times)
    return f"expansion {number}/{times}" if number else "squaring the picture up first"


def running(
    summary: str,
    step: int,
    total_steps: int,
    times: int,
    denoise: int,
    denoise_total: int,
    eta_s: float | None,
    *,
    sides: list[str] | None = None,
) -> str:
    bar_len = 10
    filled = round(bar_len * denoise / denoise_total) if denoise_total else 0
    bar = "▰" * filled + "▱" * (bar_len - filled)
    eta = f", done {relative_time(eta_s)}" if eta_s is not None else ""
    return f"🎨 {summary}: {_step_name(step, total_steps, times, sides)} {bar}{eta}"


def expanded(
    summary: str,
    step: int,
    total_steps: int,
    times: int,
    width: int,
    height: int,
    *,
    sides: list[str] | None = None,
) -> str:
    if sides:
        return f"🎨 {summary}: {_step_name(step, total_steps, times, sides)} done ({width}×{height})."
    number = _expansion(step, total_steps, times)
    if number is None:
        coming = "the expansion comes" if times == 1 else "the expansions come"
        return f"🎨 {summary}: squared up to {width}×{height}; {coming} next."
    return f"🎨 {summary}: expansion {number}/{times} done ({width}×{height})."


def working(
    summary: str, steps_done: int, total_steps: int, times: int, *, sides: list[str] | None = None
) -> str:
    """A running job whose progress events are yet to come (after a reconnect)."""
    return f"🎨 {summary}: {_step_name(steps_done, total_steps, times, sides)}…"


def reconnecting(summary: str) -> str:
    return f"🔌 {summary}: the job queue is not reachable right now; reconnecting… (your job is kept)"


def started(summary: str) -> str:
    return f"🎨 {summary}: starting…"


def finished_status(jump_url: str | None) -> str:
    return f"✅ Done: {jump_url}" if jump_url else "✅ Done."


def failed(summary: str, reason: str) -> str:
    return f"❌ {summary}: {reason or 'the job failed, and the worker gave no reason.'}"


def cancelled(summary: str) -> str:
    return f"✖ {summary}: cancelled."


PROMPT_SHOWN_CHARS = 200
"""The longest prompt a status or result shows (a caption is at most 200 characters)."""
QUEUE_PROMPT_CHARS = 80
"""The same in a /queue listing."""


def shown_prompt(text: str, limit: int = PROMPT_SHOWN_CHARS) -> str:
    """A prompt as the bot shows it: one line of at most ``limit`` characters, its markdown and
    mentions escaped (a prompt, or a model's caption, is text, never formatting or a ping)."""
    line = " ".join(text.split())
    if len(line) > limit:
        line = line[: limit - 1].rstrip() + "…"
    return discord.utils.escape_mentions(discord.utils.escape_markdown(line))


def prompt_line(job: Job, limit: int = PROMPT_SHOWN_CHARS) -> str | None:
    """The prompt a job runs with: ``Prompt: …`` (the user's), ``Prompt (auto): …`` (the worker's
    captioner wrote it), ``No auto prompt: <why>``, or None (no prompt and no captioner)."""
    if job.spec.prompt:
        return f"Prompt: {shown_prompt(job.spec.prompt, limit)}"
    auto = job.auto_prompt
    if auto is None:
        return None
    if auto.text:
        return f"Prompt (auto): {shown_prompt(auto.text, limit)}"
    return f"No auto prompt: {shown_prompt(auto.reason or 'the captioner wrote nothing', limit)}."


def with_prompt(content: str, job: Job | None) -> str:
    """``content`` with the job's prompt line under it, when it has one."""
    line = prompt_line(job) if job is not None else None
    return f"{content}\n{line}" if line else content


PROMPT_FORM_TITLE = "Edit the prompt"
PROMPT_FORM_LABEL = "Prompt"
PROMPT_FORM_HINT = "What the new area should show. Empty: none (or an auto prompt, if enabled)."
PROMPT_FORM_THEN = "Then"
PROMPT_FORM_REDO = "Redo the last expansion with it"
PROMPT_FORM_CONTINUE = "Extend the result once more with it"

RESULT_DELETED_STATUS = "🗑 The result of this job was deleted."
SPOILER_NOTE = "Hidden as a spoiler: the automatic content check flagged this picture."


CANCELLING = "✖ Cancelling…"


def result(
    user_id: int, summary: str, width: int, height: int, note: str | None, prompt: str | None = None
) -> str:
    """The result message; ``prompt``: the job's :func:`prompt_line`."""
    lines = [
        f"<@{user_id}> here is your image ({summary}, {width}×{height}).",
        *([prompt] if prompt else []),
        "Use the buttons to extend it (🔍 zooms out), 🔄 to redo the last expansion, 🖋 to redo it with "
        "another prompt, 🗑 to delete it, or reply with e.g. `left 2`, `zoom 2` or `make it 16:9`.",
    ]
    if note:
        lines.append(f"ℹ {note}")
    return "\n".join(lines)


def upload_note(note: str | None) -> str:
    return f"\nℹ {note}" if note else ""


# --- /queue and /outpaint-help -------------------------------------------------------------------

NOTHING_QUEUED = "You have no jobs waiting or running."
NOTHING_QUEUED_IN_GUILD = "No jobs are waiting or running in this server."
QUEUE_TEXT_LIMIT = 2000
"""Discord's longest message."""


def queue_line(job_id: str, summary: str, state: str, position: int | None, eta_s: float | None) -> str:
    where = f"position {position}" if position else state
    eta = f", ready {relative_time(eta_s)}" if eta_s is not None else ""
    return f"`{job_id}` {summary}: {where}{eta}"


def queue_entry(line: str, job: Job) -> str:
    """A /queue line with the prompt its job runs with under it, when it has one."""
    prompt = prompt_line(job, QUEUE_PROMPT_CHARS)
    return f"{line}\n    {prompt}" if prompt else line


def guild_queue_line(line: str, user_id: int, status_url: str | None) -> str:
    """A line of a moderator's /queue: whose job, and a link to its status (with its ✖)."""
    link = f" — {status_url}" if status_url else ""
    return f"{line}, for <@{user_id}>{link}"


def listing(lines: list[str], empty: str) -> str:
    """Lines under Discord's message limit; the ones that don't fit are counted at the end."""
    text = ""
    for index, line in enumerate(lines):
        more = f"\n… and {len(lines) - index} more."
        if len(text) + len(line) + 1 + len(more) > QUEUE_TEXT_LIMIT:
            return text + more
        text = f"{text}\n{line}" if text else line
    return text or empty


def help_text(
    *,
    max_times: int,
    max_prompt_chars: int,
    max_user_jobs: int,
    cooldown_s: float,
    max_attachment_mb: float,
    max_canvas_side: int,
    default_expand: int,
    max_expand: int,
    max_guild_expansions_per_day: int = 0,
    max_candidates: int = 1,
) -> str:
    per_day = max_guild_expansions_per_day
    daily = f" {per_day} expansions per server per day (UTC)," if per_day else ""
    low, high = ZOOM_RANGE
    candidates = (
        f"`candidates` (2–{max_candidates}): that many versions of the last expansion in a numbered grid; "
        "pick one with its button. "
        if max_candidates > 1
        else ""
    )
    return f"""\
**Outpaint** extends a picture beyond its borders.

`/outpaint image direction times`: attach an image, pick a side and how many expansions \
(1–{max_times}). Optional: `prompt`, `negative_prompt`, `expand` (px per step, default \
{default_expand}, at most {max_expand}), `seed` (repeat a result). A portrait grown sideways is \
first squared up (one extra step).
`direction: all` zooms out every side `zoom` times (1.5 by default, {low:g}–{high:g}). `aspect` \
(16:9, 1:1, 4:5… or any W:H up to {ASPECT_LIMIT:g}:1) grows two opposite sides evenly to that shape. \
{candidates}Each expansion and candidate counts towards the server's daily limit.
**Prompts**: left empty, a model may write one (if the operator enabled auto prompts); the \
status and the result show the prompt used.
**Right-click a message → Apps → Outpaint** works on any message with an image.
**Buttons** under a result: ⬅ ➡ ⬆ ⬇ extend it, 🔍 zooms out 1.5×, 🔄 redoes the last expansion \
with a new seed, 🖋 redoes it (or extends) with an edited prompt, 🗑 deletes it. ✖ on the progress \
message cancels. Only the job's owner or a server moderator may cancel or delete.
**Reply** to a result with e.g. `left 2`, `right 3 a misty forest`, `zoom 2` or `make it 16:9` \
(keep the @mention on). `/queue` shows your jobs (a moderator's: the server's).

Limits: {max_user_jobs} jobs at a time per person, {cooldown_s:g} s between jobs,{daily} files up to \
{max_attachment_mb:g} MiB, results up to {max_canvas_side} px on a side, prompts up to \
{max_prompt_chars} characters."""
