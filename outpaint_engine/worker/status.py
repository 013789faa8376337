"""A worker's state, as the queue shows it to the bot (``JobQueue.workers()``) and as its metrics
and readiness report it.

``idle``: the engine is not loaded yet (the embedded worker loads it with the first job unless the
bot starts it at once); ``loading``: loading the weights; ``warming``: compiling kernels and
capturing CUDA graphs (minutes from an empty compile cache, seconds with it); ``ready``: serving
jobs; ``stopped``: the worker has stopped.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class WorkerState(StrEnum):
    IDLE = "idle"
    LOADING = "loading"
    WARMING = "warming"
    READY = "ready"
    STOPPED = "stopped"


@dataclass(frozen=True)
class WorkerStatus:
    name: str
    state: WorkerState
    since: float  # UNIX time of the last change of state

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "state": str(self.state), "since": self.since}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerStatus:
        return cls(str(data["name"]), WorkerState(data["state"]), float(data["since"]))


def warming_up(workers: Iterable[WorkerStatus]) -> WorkerState | None:
    """What a waiting job waits on: ``warming`` (or ``loading``) when no worker is ready and one is
    warming up (or loading); None when a worker is ready, or none is starting."""
    states = {w.state for w in workers}
    if WorkerState.READY in states:
        return None
    for state in (WorkerState.WARMING, WorkerState.LOADING):
        if state in states:
            return state
    return None
