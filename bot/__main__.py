"""``outpaint-bot [--sync]``: start the Discord bot.

The job queue is the embedded one by default (the engine starts loading in the bot's worker thread
as the bot starts, never on the event loop; jobs that come meanwhile wait and say so), or Redis when
``OUTPAINT_QUEUE=redis://…`` (then the GPU work runs in ``outpaint-worker`` processes and this
process loads no model).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import aiohttp
import discord
from pydantic import ValidationError

from bot import messages
from bot.app import OutpaintBot
from bot.lifecycle import serve
from bot.settings import BotSettings
from outpaint_engine.api import Engine
from outpaint_engine.observability.logs import route_library_logs, setup_logging
from outpaint_engine.observability.server import OpsServerError
from outpaint_engine.queue import open_queue
from outpaint_engine.queue.base import QueueError
from outpaint_engine.safety import SafetyCheck, SafetySettings, WordList
from outpaint_engine.settings import EngineSettings, OpsSettings, QueueSettings, describe_setting_error


def load_engine(settings: EngineSettings) -> Engine:
    """The real engine; only the embedded queue's worker thread calls this, as the bot starts."""
    route_library_logs()  # before the engine's libraries log anything
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
        ops = OpsSettings()
    except ValidationError as error:
        print(f"outpaint-bot: {describe_setting_error(error)}", file=sys.stderr)
        return 2
    token = settings.discord_token.get_secret_value().strip() if settings.discord_token else ""
    if not token:
        print(messages.NO_TOKEN, file=sys.stderr)
        return 2
    setup_logging(args.log_level, log_format=ops.log_format, secrets=[token])
    try:
        queue = open_queue(
            queue_settings,
            engine_factory=lambda: load_engine(engine_settings),
            safety=SafetyCheck(safety),  # the embedded worker's content check
            load_engine_at_start=True,
        )
        bot = OutpaintBot(
            settings,
            queue,
            engine=engine_settings,
            data_dir=queue_settings.data_dir,
            sync_commands=args.sync,
            ops=ops,
            words=WordList.from_settings(safety),
        )
        asyncio.run(serve(bot, token))  # SIGTERM (docker/systemctl stop) stops it as cleanly as Ctrl-C
    except discord.LoginFailure:
        print(messages.BAD_TOKEN, file=sys.stderr)
        return 1
    except discord.PrivilegedIntentsRequired:
        print(messages.MISSING_INTENT, file=sys.stderr)
        return 1
    except (QueueError, OpsServerError) as error:  # a bad OUTPAINT_QUEUE, Redis unreachable, port taken
        print(f"outpaint-bot: {error}", file=sys.stderr)
        return 1
    except aiohttp.ClientConnectionError as error:
        print(messages.discord_unreachable(error), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
