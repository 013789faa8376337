"""The engine as the workers see it: a small protocol, free of torch.

The real engine (:class:`outpaint_engine.runner.Outpainter`) and the test doubles implement it.
A job's result depends only on (source, spec): step ``i`` draws its noise from a generator seeded
by :func:`step_seed`, so a job resumed from a checkpoint gives the same pixels as an uninterrupted
run. A job with ``candidates`` > 1 generates its last step that many times in one batch:
candidate ``k`` is that step as the job with seed :func:`candidate_seed` ``(seed, k)`` generates
it from the same canvas (candidate 0 is the job's own seed; a larger batch may round the last
float bits differently).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

import numpy as np

from outpaint_engine.job import CancelToken, JobSpec
from outpaint_engine.plan import Plan

if TYPE_CHECKING:
    from outpaint_engine.captioner import Caption


@dataclass(frozen=True)
class StepProgress:
    """Reported after every denoising step."""

    step: int  # expansion step being generated, 0-based
    total_steps: int
    denoise: int  # denoising steps done in this expansion (over all its windows), 1-based
    denoise_total: int
    render_preview: Callable[[], np.ndarray] | None = field(default=None, repr=False, compare=False)

    @cached_property
    def preview(self) -> np.ndarray | None:
        """A small RGB uint8 approximation of the current window, made when first read: on a GPU it
        waits for the step to finish, so a consumer that shows one a second pays for one."""
        return None if self.render_preview is None else self.render_preview()


@dataclass(frozen=True)
class StepResult:
    """A finished expansion step.

    ``candidates`` holds every canvas the step was generated as, ``canvas`` first: one for most
    steps, ``spec.candidates`` for a job's last step. Each is a whole canvas of the same size; any
    of them can be continued as a new job's source (``continue_canvas``).
    """

    step: int  # 0-based index of the finished expansion step
    total_steps: int
    canvas: np.ndarray  # H×W×3 RGB uint8, the whole canvas after this step (candidate 0)
    candidates: tuple[np.ndarray, ...] = ()  # left empty: just ``(canvas,)``

    def __post_init__(self) -> None:
        if not self.candidates:
            object.__setattr__(self, "candidates", (self.canvas,))
        elif self.candidates[0] is not self.canvas:
            raise ValueError("candidates[0] must be the canvas")


@dataclass(frozen=True)
class Checkpoint:
    """Where to resume: ``steps_done`` finished steps, ``canvas`` the canvas after the last one."""

    steps_done: int
    canvas: np.ndarray


ProgressCallback = Callable[[StepProgress], None]


class Engine(Protocol):
    """What a worker needs. An engine may also have ``concurrency`` (an int, default 1): how many
    jobs it runs well at once from as many threads (the real engine batches their UNet calls).

    An engine may also write prompts: a ``captioner`` (None when it has none) and
    ``caption(source, direction) -> Caption`` (``direction`` None for all sides), which never
    raises for the captioner's sake. Such an engine's ``run`` also takes ``auto_prompt=False``: the
    worker captions a job itself, once, and stores the prompt with it (see :func:`auto_prompter`).
    """

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


CaptionFn = Callable[[np.ndarray, "str | None"], "Caption"]


def auto_prompter(engine: object) -> CaptionFn | None:
    """``engine.caption`` when the engine writes prompts (it has a captioner), else None."""
    caption = getattr(engine, "caption", None)
    if getattr(engine, "captioner", None) is None or not callable(caption):
        return None
    return caption


def _derived(text: str) -> int:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def step_seed(seed: int, step: int, window: int = 0) -> int:
    """The noise seed of one window of one step: stable across processes and resumes."""
    return _derived(f"{seed}:{step}:{window}")


def candidate_seed(seed: int, candidate: int) -> int:
    """The job seed whose steps candidate ``candidate`` of a job with ``seed`` is generated with.

    Candidate 0 is the job itself; window ``w`` of step ``i`` of candidate ``k`` draws its noise from
    ``step_seed(candidate_seed(seed, k), i, w)``.
    """
    return seed if candidate == 0 else _derived(f"{seed}:candidate:{candidate}")
