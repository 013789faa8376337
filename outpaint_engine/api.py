"""The engine as the workers see it: a small protocol, free of torch.

The real engine (:class:`outpaint_engine.runner.Outpainter`) and the test doubles implement it.
A job's result depends only on (source, spec): step ``i`` draws its noise from a generator seeded
by :func:`step_seed`, so a job resumed from a checkpoint gives the same pixels as an uninterrupted
run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from outpaint_engine.job import CancelToken, JobSpec
from outpaint_engine.plan import Plan


@dataclass(frozen=True)
class StepProgress:
    """Reported after every denoising step."""

    step: int  # expansion step being generated, 0-based
    total_steps: int
    denoise: int  # denoising steps done in this expansion (over all its windows), 1-based
    denoise_total: int
    preview: np.ndarray | None = None  # small RGB uint8 approximation of the current window


@dataclass(frozen=True)
class StepResult:
    step: int  # 0-based index of the finished expansion step
    total_steps: int
    canvas: np.ndarray  # H×W×3 RGB uint8, the whole canvas after this step


@dataclass(frozen=True)
class Checkpoint:
    """Where to resume: ``steps_done`` finished steps, ``canvas`` the canvas after the last one."""

    steps_done: int
    canvas: np.ndarray


ProgressCallback = Callable[[StepProgress], None]


class Engine(Protocol):
    """What a worker needs. An engine may also have ``concurrency`` (an int, default 1): how many
    jobs it runs well at once from as many threads (the real engine batches their UNet calls)."""

    def plan(self, width: int, height: int, spec: JobSpec) -> Plan: ...

    def run(
        self,
        source: np.ndarray,
        spec: JobSpec,
        *,
        resume: Checkpoint | None = None,
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> Iterator[StepResult]:
        """Yield one result per expansion step, starting after ``resume`` if given.

        Raises :class:`outpaint_engine.job.JobCancelledError` within one denoising step of
        ``cancel`` being set, and :class:`outpaint_engine.plan.PlanError` for a request it cannot do.
        """
        ...


def step_seed(seed: int, step: int, window: int = 0) -> int:
    """The noise seed of one window of one step: stable across processes and resumes."""
    digest = hashlib.blake2b(f"{seed}:{step}:{window}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF
