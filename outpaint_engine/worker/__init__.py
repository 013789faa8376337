"""The GPU worker: the loop that runs jobs (:mod:`.loop`), what it needs from a queue backend
(:mod:`.side`), and the ``outpaint-worker`` command (:mod:`.cli`, not imported here).

Imports run one way: bot → queue → worker loop → engine API. The queue backends import this
package; only the command imports the queue.
"""

from outpaint_engine.worker.loop import FAILED_POLITELY, EngineFactory, Worker
from outpaint_engine.worker.side import Claim, LostClaim, WorkerSide, retry_while_unavailable
from outpaint_engine.worker.status import WorkerState, WorkerStatus, warming_up

__all__ = [
    "FAILED_POLITELY",
    "Claim",
    "EngineFactory",
    "LostClaim",
    "Worker",
    "WorkerSide",
    "WorkerState",
    "WorkerStatus",
    "retry_while_unavailable",
    "warming_up",
]
