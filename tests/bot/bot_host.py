"""An ``outpaint-bot`` process for the stop tests: ``python bot_host.py FAKE_URL [outpaint-bot args]``.

It runs the real entry point (:func:`bot.__main__.main`: settings from the environment, signals,
shutdown) with discord.py pointed at the fake Discord listening at FAKE_URL, and, on the embedded
queue, the engine double as its worker's engine (hooked from the environment, see
:func:`engine_double.env_hook`) instead of loading SDXL.
"""

from __future__ import annotations

import sys

from engine_double import from_env

import bot.__main__ as outpaint_bot
from tests.fakediscord import point_discord_at

if __name__ == "__main__":
    outpaint_bot.load_engine = lambda settings: from_env()
    with point_discord_at(sys.argv[1]):
        sys.exit(outpaint_bot.main(sys.argv[2:]))
