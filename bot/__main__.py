"""``outpaint-bot [--sync]``: start the Discord bot.

The job queue is the embedded one by default (the engine loads lazily in the bot's worker thread),
or Redis when ``OUTPAINT_QUEUE=redis://…`` (then the GPU work runs in ``outpaint-worker``
processes and this process loads no model).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

import aiohttp
import discord
from pydantic import ValidationError

from bot import messages
from bot.app import OutpaintBot
from bot.lifecycle import serve
from bot.settings import BotSettings
from outpaint_engine.api import Engine
from outpaint_engine.queue import open_queue
from outpaint_engine.queue.base import QueueError
from outpaint_engine.safety import SafetyCheck, SafetySettings, WordList
from outpaint_engine.settings import EngineSettings, QueueSettings, describe_setting_error


def load_engine(settings: EngineSettings) -> Engine:
    """The real engine; only the embedded queue's worker thread calls this, on the first job."""
    from outpaint_engine.runner import Outpainter

    return Outpainter.load(settings)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="outpaint-bot", description="The outpaint Discord bot.")
    parser.add_argument(
        "--sync",
        action="store_true",
        help="register the slash commands with Discord before starting (globally, or only in "
        "OUTPAINT_DEV_GUILD when set); needed once, and again whenever the commands change",
    )
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings, queue_settings, engine_settings = BotSettings(), QueueSettings(), EngineSettings()
        safety = SafetySettings()
    except ValidationError as error:
        print(f"outpaint-bot: {describe_setting_error(error)}", file=sys.stderr)
        return 2
    token = settings.discord_token.get_secret_value().strip() if settings.discord_token else ""
    if not token:
        print(messages.NO_TOKEN, file=sys.stderr)
        return 2
    discord.utils.setup_logging(
        level=logging.getLevelNamesMapping().get(args.log_level.upper(), logging.INFO)
    )
    try:
        bot = OutpaintBot(
            settings,
            open_queue(
                queue_settings,
                engine_factory=lambda: load_engine(engine_settings),
                safety=SafetyCheck(safety),  # the embedded worker's content check
            ),
            engine=engine_settings,
            data_dir=queue_settings.data_dir,
            sync_commands=args.sync,
            words=WordList.from_settings(safety),
        )
        asyncio.run(serve(bot, token))  # SIGTERM (docker/systemctl stop) stops it as cleanly as Ctrl-C
    except discord.LoginFailure:
        print(messages.BAD_TOKEN, file=sys.stderr)
        return 1
    except discord.PrivilegedIntentsRequired:
        print(messages.MISSING_INTENT, file=sys.stderr)
        return 1
    except QueueError as error:  # an unknown OUTPAINT_QUEUE, or Redis unreachable at start
        print(f"outpaint-bot: {error}", file=sys.stderr)
        return 1
    except aiohttp.ClientConnectionError as error:
        print(messages.discord_unreachable(error), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
