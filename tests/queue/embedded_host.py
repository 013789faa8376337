"""A bot-like process for the embedded crash test: ``python embedded_host.py DATA_DIR``.

It opens the embedded queue on ``DATA_DIR`` with the real tiny engine (configured by the
environment, see :func:`real_engine.from_env`) as its worker's engine and runs until killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from real_engine import from_env

from outpaint_engine.queue.embedded import EmbeddedQueue
from outpaint_engine.settings import QueueSettings


async def main(data_dir: Path) -> None:
    settings = QueueSettings(_env_file=None, queue="embedded", data_dir=data_dir)
    async with EmbeddedQueue(settings, engine_factory=from_env, poll_s=0.05):
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
