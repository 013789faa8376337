"""The job queue between the bot and the GPU workers; :func:`open_queue` picks the backend.

The bot::

    queue = open_queue(QueueSettings(), engine_factory=lambda: Outpainter.load(EngineSettings()))
    async with queue:
        job = await queue.submit(job, source_png)
        # replays, then follows; ends after Done, Failed or Cancelled
        async for seq, event in queue.events(job.id):
            ...

``engine_factory`` is used by the embedded backend only (its worker thread calls it once: on the
first job, or at start with ``load_engine_at_start``); with Redis the GPU work runs in
``outpaint-worker`` processes. Without it, the embedded queue runs no worker (the operator command
opens it that way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from outpaint_engine.queue.base import JobQueue, QueueDepth, QueueError, QueueUnavailable
from outpaint_engine.settings import QueueSettings

if TYPE_CHECKING:
    from outpaint_engine.safety import SafetyCheck
    from outpaint_engine.worker import EngineFactory

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def open_queue(
    settings: QueueSettings | None = None,
    *,
    engine_factory: EngineFactory | None = None,
    safety: SafetyCheck | None = None,
    load_engine_at_start: bool = False,
) -> JobQueue:
    """The queue named by ``settings.queue`` (``embedded`` or a Redis URL), not started yet;
    ``safety`` is the embedded worker's content check."""
    settings = settings or QueueSettings()
    if settings.queue == "embedded":
        from outpaint_engine.queue.embedded import EmbeddedQueue

        return EmbeddedQueue(
            settings, engine_factory=engine_factory, safety=safety, load_engine_at_start=load_engine_at_start
        )
    if settings.queue.startswith(REDIS_SCHEMES):
        from outpaint_engine.queue.redis import RedisQueue

        return RedisQueue(settings)
    raise QueueError(f"Unknown queue {settings.queue!r}: use 'embedded' or a redis:// URL.")


__all__ = ["JobQueue", "QueueDepth", "QueueError", "QueueUnavailable", "open_queue"]
