"""Fair dispatch order and ETAs, the same for both backends.

**Round-robin between users by virtual rounds.** Every queued job carries a key ``(round, seq)``
and workers always take the smallest key. ``seq`` is the submission order. A new job of user *u*
gets round ``max(current, last(u) + 1)``, where ``current`` is the round of the last dispatched job
and ``last(u)`` the highest round among *u*'s queued jobs and the job of *u* dispatched last.

So a user's jobs land in consecutive rounds, one per round, and a newcomer joins the current round:
ten jobs of one user take rounds r..r+9 and another user's job, submitted later, still runs in
round r, after the first of the ten. Within a round jobs go in submission order. The key is stored
with the job, so the order survives restarts, is the same for every worker on every host (the Redis
backend pops the smallest key atomically), and ``position()`` is the number of queued keys below a
job's. A job handed back to the queue (a retry, a stopping worker) keeps its key and so goes first.
"""

from __future__ import annotations

from collections.abc import Iterable
from statistics import fmean

from outpaint_engine.job import Job, JobState

RECENT_STEPS = 20
"""How many recent expansion-step timings the ETA's moving average covers."""


def next_round(current: int, user_last: int | None) -> int:
    """The round of a user's new job (``user_last``: see the module docstring; None if none)."""
    return current if user_last is None else max(current, user_last + 1)


def remaining_steps(job: Job) -> int:
    """Expansion steps a job still has to run (before planning: ``times`` plus a possible square-up)."""
    total = job.total_steps or job.spec.times + 1
    return max(0, total - job.steps_done)


def eta_s(
    step_s: float | None,
    job: Job,
    *,
    ahead: Iterable[Job] = (),
    running: Iterable[Job] = (),
    workers: int = 1,
) -> float | None:
    """Seconds until ``job`` finishes, from the moving average ``step_s`` of seconds per step.

    A queued job waits for the running jobs and the queued jobs ``ahead`` of it, shared among
    ``workers``, then runs its own steps. None when no step was timed yet or the job is finished.
    """
    if step_s is None or job.state.terminal:
        return None
    own = remaining_steps(job)
    if job.state is JobState.RUNNING:
        return own * step_s
    waiting = sum(remaining_steps(j) for j in ahead) + sum(remaining_steps(j) for j in running)
    return (own + waiting / max(1, workers)) * step_s


def moving_average(timings: Iterable[float]) -> float | None:
    values = list(timings)
    return fmean(values) if values else None
