"""``outpaint queue list|cancel ID|retry ID|purge --older-than 7d``: see and fix the queue.

Works against both backends: the queue named by ``--queue`` (default ``$OUTPAINT_QUEUE``). For the
embedded queue it opens the bot's journal next to the running bot (no worker of its own): a cancel
reaches the bot's worker at its next denoising step, a retry is picked up within a second.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from outpaint_engine.job import Job, JobState
from outpaint_engine.queue import open_queue
from outpaint_engine.queue.base import JobQueue, QueueError
from outpaint_engine.settings import QueueSettings, describe_setting_error

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """Seconds in ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` (a bare number is seconds)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age like 90s, 30m, 12h, 7d or 2w")
    return float(match[1]) * _UNITS[match[2] or "s"]


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def format_age(seconds: float) -> str:
    for unit in ("w", "d", "h", "m"):
        if seconds >= _UNITS[unit]:
            return f"{int(seconds // _UNITS[unit])}{unit}"
    return f"{int(seconds)}s"


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--queue", help="'embedded' or redis://HOST:6379/0 (default: $OUTPAINT_QUEUE)")
    common.add_argument(
        "--data-dir", type=Path, help="the embedded queue's data directory (default: $OUTPAINT_DATA_DIR)"
    )
    parser = argparse.ArgumentParser(prog="outpaint queue", description="See and fix the job queue.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    listing = sub.add_parser("list", parents=[common], help="jobs, newest first")
    listing.add_argument("--state", action="append", choices=[str(s) for s in JobState], help="repeatable")
    listing.add_argument("--user", type=int, help="only this Discord user's jobs")
    listing.add_argument("--guild", type=int, help="only this guild's jobs")
    listing.add_argument("--limit", type=positive_int, default=50, help="at most this many (default 50)")
    listing.add_argument("--dead", action="store_true", help="the dead-letter stream instead (Redis)")
    cancel = sub.add_parser("cancel", parents=[common], help="cancel a queued or running job")
    cancel.add_argument("job_id")
    retry = sub.add_parser("retry", parents=[common], help="requeue a failed or cancelled job")
    retry.add_argument("job_id")
    purge = sub.add_parser("purge", parents=[common], help="forget finished jobs and their images")
    purge.add_argument("--older-than", type=parse_age, required=True, metavar="AGE", help="e.g. 7d, 12h")
    return parser


def _table(jobs: list[Job]) -> str:
    now = time.time()
    rows = [("ID", "STATE", "USER", "GUILD", "STEPS", "TRIES", "AGE", "ERROR")]
    for job in jobs:
        steps = f"{job.steps_done}/{job.total_steps or '?'}"
        rows.append(
            (
                job.id,
                str(job.state),
                str(job.user_id),
                "-" if job.guild_id is None else str(job.guild_id),
                steps,
                str(job.attempts),
                format_age(now - job.created_at),
                job.error or "",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in rows
    )


async def _command(args: argparse.Namespace, queue: JobQueue) -> str:
    if args.command == "list" and args.dead:
        dead_letters = getattr(queue, "dead_letters", None)
        if dead_letters is None:
            raise QueueError("The embedded queue has no dead-letter stream: try `list --state failed`.")
        entries = await dead_letters(args.limit)
        return (
            "\n".join(f"{e['job']}  attempts={e['attempts']}  {e['reason']}" for e in entries)
            or "No dead letters."
        )
    if args.command == "list":
        jobs = await queue.list_jobs(
            user_id=args.user, guild_id=args.guild, states=args.state, limit=args.limit
        )
        return _table(jobs) if jobs else "No jobs."
    if args.command == "cancel":
        job = await queue.cancel(args.job_id)
        if job is None:
            raise QueueError(f"There is no job {args.job_id}.")
        if job.state is JobState.RUNNING:
            return f"Job {job.id}: cancel requested; it stops at its next denoising step."
        if job.state is JobState.CANCELLED:
            return f"Job {job.id}: cancelled."
        return f"Job {job.id} is already {job.state}; nothing to cancel."
    if args.command == "retry":
        job = await queue.retry(args.job_id)
        where = await queue.position(job.id)
        after = f", continuing after step {job.steps_done}" if job.steps_done else ""
        return f"Job {job.id}: queued again (position {where or '?'}){after}."
    count = await queue.purge(older_than_s=args.older_than)
    return f"Purged {count} finished job{'s' if count != 1 else ''} older than {format_age(args.older_than)}."


async def _run(args: argparse.Namespace, settings: QueueSettings) -> str:
    if settings.queue == "embedded" and not (settings.data_dir / "queue.sqlite3").exists():
        raise QueueError(
            f"No embedded queue in {settings.data_dir} (set OUTPAINT_DATA_DIR or pass --data-dir)."
        )
    async with open_queue(settings) as queue:
        return await _command(args, queue)


def main(argv: list[str]) -> int:
    """Run ``outpaint queue ARGV``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        settings = QueueSettings()
    except ValidationError as error:
        print(f"outpaint queue: {describe_setting_error(error)}", file=sys.stderr)
        return 2
    overrides = {k: v for k, v in (("queue", args.queue), ("data_dir", args.data_dir)) if v is not None}
    settings = settings.model_copy(update=overrides)
    try:
        print(asyncio.run(_run(args, settings)))
    except QueueError as error:
        print(f"outpaint queue: {error}", file=sys.stderr)
        return 1
    return 0
