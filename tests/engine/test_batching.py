"""The UNet batcher: concurrent jobs' UNet calls become one call, and each job gets its own part."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from outpaint_engine.batching import UNetBatcher
from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.runner import Outpainter
from tests.conftest import TINY_WINDOW

JOIN_S = 60.0


class RecordingUNet:
    """Returns ``sample * 2 + timestep`` (per sample) and records the batch sizes it was called with."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[int] = []
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, sample, timestep, *, encoder_hidden_states, added_cond_kwargs, return_dict=False):
        with self.lock:
            self.batches.append(sample.shape[0])
        if self.fail:
            raise RuntimeError("out of memory")
        assert encoder_hidden_states.shape[0] == sample.shape[0]
        assert added_cond_kwargs["text_embeds"].shape[0] == sample.shape[0]
        t = timestep.reshape(-1, 1, 1, 1).expand(sample.shape[0], 1, 1, 1).to(sample.dtype)
        return (sample * 2 + t,)


def call(batcher: UNetBatcher, value: float, t: int, batch: int = 2, width: int = 4) -> torch.Tensor:
    sample = torch.full((batch, 4, width, width), value)
    added = {"text_embeds": torch.zeros(batch, 8), "time_ids": torch.zeros(batch, 6)}
    states = torch.zeros(batch, 77, 16)
    return batcher(sample, torch.tensor(t), encoder_hidden_states=states, added_cond_kwargs=added)[0]


def run_together(batcher: UNetBatcher, jobs: list[Callable[[], Any]]) -> list[Any]:
    """Run each job in its own joined thread, all starting together; their results (or errors)."""
    results: list[Any] = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def run(i: int) -> None:
        with batcher.joined():
            start.wait(JOIN_S)
            try:
                results[i] = jobs[i]()
            except Exception as error:
                results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_S)
        assert not thread.is_alive(), "a batched call never returned"
    return results


def test_a_lone_call_goes_straight_to_the_unet() -> None:
    unet = RecordingUNet()
    batcher = UNetBatcher(unet)
    out = call(batcher, 1.0, t=10)
    assert unet.batches == [2]
    assert torch.equal(out, torch.full((2, 4, 4, 4), 12.0))


def test_concurrent_calls_become_one_call_and_each_gets_its_own_rows() -> None:
    unet = RecordingUNet()
    batcher = UNetBatcher(unet, max_wait_s=JOIN_S)  # never run short: all three must meet
    outs = run_together(batcher, [lambda v=v: call(batcher, float(v), t=100 * v) for v in (1, 2, 3)])
    assert unet.batches == [6]
    for v, out in zip((1, 2, 3), outs, strict=True):
        assert torch.equal(out, torch.full((2, 4, 4, 4), 2.0 * v + 100 * v))  # its own timestep too
    assert batcher.largest_batch == 3


def test_calls_that_cannot_be_concatenated_run_in_separate_groups() -> None:
    unet = RecordingUNet()
    batcher = UNetBatcher(unet, max_wait_s=JOIN_S)
    outs = run_together(
        batcher, [lambda: call(batcher, 1.0, t=1, width=4), lambda: call(batcher, 2.0, t=2, width=8)]
    )
    assert sorted(unet.batches) == [2, 2]
    assert outs[0].shape[-1] == 4 and outs[1].shape[-1] == 8


def test_an_error_reaches_every_job_of_the_batch() -> None:
    batcher = UNetBatcher(RecordingUNet(fail=True), max_wait_s=JOIN_S)
    outs = run_together(batcher, [lambda: call(batcher, 1.0, t=1), lambda: call(batcher, 2.0, t=2)])
    assert all(isinstance(out, RuntimeError) and "out of memory" in str(out) for out in outs)


def test_a_joined_job_that_does_not_call_holds_nobody_for_long() -> None:
    unet = RecordingUNet()
    batcher = UNetBatcher(unet, max_wait_s=0.01)
    busy, done = threading.Event(), threading.Event()

    def elsewhere() -> None:  # joined, but busy with something else (a preview, its VAE)
        with batcher.joined():
            busy.set()
            done.wait(JOIN_S)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    assert busy.wait(JOIN_S)
    with batcher.joined():
        out = call(batcher, 1.0, t=0)
    done.set()
    thread.join(JOIN_S)
    assert unet.batches == [2] and torch.equal(out, torch.full((2, 4, 4, 4), 2.0))


def test_leaving_the_loop_releases_the_others() -> None:
    unet = RecordingUNet()
    batcher = UNetBatcher(unet, max_wait_s=JOIN_S)
    left = threading.Event()

    def leaves() -> None:
        with batcher.joined():
            pass
        left.set()

    outs = run_together(batcher, [lambda: (leaves(), call(batcher, 1.0, t=0))[1]])
    assert left.is_set() and unet.batches == [2] and outs[0].shape[0] == 2


@pytest.fixture
def photo() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (TINY_WINDOW, TINY_WINDOW + 16, 3), np.uint8)


def test_concurrent_jobs_give_the_pixels_of_running_alone(tiny_engine: Outpainter, photo: np.ndarray) -> None:
    """Three jobs at once share batched UNet calls; each canvas is the one it gets alone.

    Not always bit for bit: a matrix product of more rows may take another kernel (MKL here, cuBLAS
    on a GPU), so a batched call's outputs differ from separate calls' in the last float bits
    (about 1e-6), which now and then moves a pixel that sat on a rounding edge by one level.
    """
    spec = JobSpec(Direction.RIGHT, times=2, expand_px=16, steps=4, window=TINY_WINDOW)
    specs = [
        replace(spec, seed=seed, direction=d)
        for seed, d in ((1, Direction.RIGHT), (2, Direction.LEFT), (3, Direction.RIGHT))
    ]
    alone = [list(tiny_engine.run(photo, s))[-1].canvas for s in specs]
    batcher = tiny_engine.models.batcher
    batcher.largest_batch = 0
    together: list[np.ndarray | None] = [None] * len(specs)
    start = threading.Barrier(len(specs))

    def run(i: int) -> None:
        start.wait(JOIN_S)
        together[i] = list(tiny_engine.run(photo, specs[i]))[-1].canvas

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(specs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_S * 2)
    assert batcher.largest_batch >= 2
    for a, b in zip(alone, together, strict=True):
        assert b is not None and a.shape == b.shape
        moved = np.abs(a.astype(np.int16) - b.astype(np.int16))
        assert moved.max() <= 1 and np.count_nonzero(moved) <= a.size // 1000
