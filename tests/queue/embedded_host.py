"""A bot-like process for the embedded crash tests: ``python embedded_host.py DATA_DIR ENGINE [GO]``.

It loads ``ENGINE`` (``module:callable``, configured by the environment, as ``outpaint-worker
--engine``: :func:`real_engine.from_env` or :func:`engine_double.from_env`), waits until the file
``GO`` exists when given (so tests can start hosts ahead and let them in one by one), then opens
the embedded queue on ``DATA_DIR`` with that engine as its worker's and runs until killed.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
from pathlib import Path

from outpaint_engine.api import Engine
from outpaint_engine.queue.embedded import EmbeddedQueue
from outpaint_engine.settings import QueueSettings


def load_then_wait(engine_spec: str, go: Path | None) -> Engine:
    module, _, name = engine_spec.partition(":")
    engine = getattr(importlib.import_module(module), name)()
    print("engine loaded", flush=True)
    pause = threading.Event()
    while go is not None and not go.exists():
        pause.wait(0.01)
    return engine


async def serve(data_dir: Path, engine: Engine) -> None:
    settings = QueueSettings(_env_file=None, queue="embedded", data_dir=data_dir)
    async with EmbeddedQueue(settings, engine_factory=lambda: engine, poll_s=0.05):
        print("queue open", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    go = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    asyncio.run(serve(Path(sys.argv[1]), load_then_wait(sys.argv[2], go)))
