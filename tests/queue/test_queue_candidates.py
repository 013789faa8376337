"""Candidates through the queue, on both backends with the real tiny engine: every candidate of a
job's last step is stored under (job, step, k) and counted in its events, kept as long as the job's
other images, and a job stopped around them neither loses nor duplicates one."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from queue_helpers import SOURCE, SOURCE_PNG, Harness, collect, make_job

from outpaint_engine.imageio import decode_png
from outpaint_engine.job import Done, Event, Expanded, Job, JobState, Progress
from outpaint_engine.queue.redis import INTERMEDIATE_TTL_S
from outpaint_engine.runner import Outpainter
from outpaint_engine.worker import WorkerSide

CANDIDATES = 3


def candidate_job(seed: int) -> Job:
    """A job of two steps (a square-up, then one expansion) whose last step has three candidates."""
    job = make_job(seed, times=1)
    job.spec = dataclasses.replace(job.spec, candidates=CANDIDATES)
    return job


def counted(events: list[tuple[int, Event]]) -> list[tuple[str, int, int]]:
    """(kind, step, candidates) of the Expanded and Done events."""
    return [(e.kind, e.step, e.candidates) for _, e in events if isinstance(e, Expanded | Done)]


def worker_side(harness: Harness) -> WorkerSide:
    side = harness._side if harness.kind == "redis" else harness.queue._side  # type: ignore[attr-defined]
    assert side is not None
    return side


def fail_once(monkeypatch: pytest.MonkeyPatch, side: WorkerSide, name: str, *, after: bool) -> list[int]:
    """The side's ``name`` raises once, as a worker dying there would (``after``: once the write is
    done); returns the calls' count. The worker retries the job from its last checkpoint."""
    real: Callable[..., None] = getattr(side, name)
    calls: list[int] = []

    def flaky(*args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 1 and not after:
            raise RuntimeError(f"died before {name}")
        real(*args, **kwargs)
        if len(calls) == 1:
            raise RuntimeError(f"died after {name}")

    monkeypatch.setattr(side, name, flaky)
    return calls


async def assert_candidates(harness: Harness, engine: Outpainter, job: Job) -> None:
    """The stored candidates are those of one direct run, and there are no more."""
    expected = list(engine.run(SOURCE, job.spec))[-1].candidates
    assert len(expected) == CANDIDATES
    for k, canvas in enumerate(expected):
        png = await harness.queue.get_candidate(job.id, 1, k)
        assert png is not None and np.array_equal(decode_png(png), canvas), f"candidate {k} differs"
    assert await harness.queue.get_candidate(job.id, 1, CANDIDATES) is None
    assert await harness.queue.get_candidate(job.id, 1, 0) == await harness.queue.get_canvas(job.id, 1)


async def test_every_candidate_is_stored_counted_and_kept_with_the_job(
    harness: Harness, engine: Outpainter
) -> None:
    job = candidate_job(110)
    await harness.queue.submit(job, SOURCE_PNG)
    events = await collect(harness.queue, job.id)

    assert counted(events) == [("expanded", 0, 1), ("expanded", 1, CANDIDATES), ("done", 1, CANDIDATES)]
    assert [e.step for _, e in events if isinstance(e, Progress)] == [0, 0, 1, 1]  # one batch
    await assert_candidates(harness, engine, job)
    if harness.kind == "redis":  # unpicked candidates live as long as the result
        ttls = [await harness.queue.r.ttl(f"outpaint:img:{job.id}:1:{k}") for k in (1, 2)]
        assert all(ttl > INTERMEDIATE_TTL_S for ttl in ttls)
    assert await harness.queue.purge(older_than_s=0) == 1
    assert await harness.queue.get_candidate(job.id, 1, 2) is None
    if harness.kind == "redis":
        assert await harness.queue.r.keys(f"outpaint:img:{job.id}:*") == []


async def test_a_job_stopped_while_storing_its_candidates_generates_them_again(
    harness: Harness, engine: Outpainter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Candidate 1 is stored, then the worker dies before candidate 2 and the checkpoint: the
    retry generates the last step again, identically, and stores each candidate once more under
    its key (nothing lost, nothing doubled)."""
    calls = fail_once(monkeypatch, worker_side(harness), "store_candidate", after=True)
    job = candidate_job(111)
    await harness.queue.submit(job, SOURCE_PNG)
    events = await collect(harness.queue, job.id)

    assert counted(events) == [("expanded", 0, 1), ("expanded", 1, CANDIDATES), ("done", 1, CANDIDATES)]
    assert harness.engine.runs == [(111, 0), (111, 1)]  # the retry resumed after step 0
    assert harness.engine.computed == [(111, 0), (111, 1), (111, 1)]
    assert len(calls) == 1 + (CANDIDATES - 1)
    await assert_candidates(harness, engine, job)


async def test_a_job_stopped_after_its_last_checkpoint_finishes_with_its_candidates(
    harness: Harness, engine: Outpainter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker dies after the last step's checkpoint, before ``Done``: the retry computes
    nothing and counts the candidates stored."""
    fail_once(monkeypatch, worker_side(harness), "done", after=False)
    job = candidate_job(112)
    await harness.queue.submit(job, SOURCE_PNG)
    events = await collect(harness.queue, job.id)

    assert counted(events) == [("expanded", 0, 1), ("expanded", 1, CANDIDATES), ("done", 1, CANDIDATES)]
    assert harness.engine.runs == [(112, 0)]  # the second delivery had nothing to run
    assert harness.engine.computed == [(112, 0), (112, 1)]
    final = await harness.queue.get(job.id)
    assert final is not None and (final.state, final.attempts) == (JobState.DONE, 2)
    await assert_candidates(harness, engine, job)
