"""What an engine reports while it loads and while it works, for its worker's state and metrics.

- **Load stages.** An engine's loader calls :func:`report_load_stage` (``"loading"`` weights,
  ``"warming"``: compiling kernels and capturing CUDA graphs); the worker that creates the engine
  listens (:func:`listening_to_load_stages`) in the same thread, so any engine factory can report
  its stages without a new signature, and one that reports nothing is simply loading until ready.
- **Stage durations.** :func:`timed` measures one stage of an expansion into
  :data:`EXPANSION_SECONDS`, except within :func:`unmeasured` (an engine's warm-up). Durations
  are host wall-clock, no synchronisation is added: GPU work queued in one stage may finish in the
  next one, which then includes it (the UNet loop ends with the preview of its last step, a
  synchronisation, when the worker asks for progress, so its time is the GPU's).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from prometheus_client import Histogram

LOADING = "loading"
WARMING = "warming"

LoadListener = Callable[[str], None]
_listener: ContextVar[LoadListener | None] = ContextVar("outpaint_load_listener", default=None)
_measuring: ContextVar[bool] = ContextVar("outpaint_measuring", default=True)

EXPANSION_SECONDS = Histogram(
    "outpaint_expansion_seconds",
    "Seconds per expansion, by stage: 'expansion' (one whole expansion step, as its worker sees "
    "it), and per window 'prepare' (change map, IP-Adapter crops, pre-fill, VAE encode), 'unet_loop' "
    "(the denoising loop) and 'decode_merge' (VAE decode and merge).",
    ["stage"],
    buckets=(0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 7.5, 10, 15, 30, 60, 120),
)


def report_load_stage(stage: str) -> None:
    """Called by an engine's loader as it enters ``stage`` (:data:`LOADING`, :data:`WARMING`)."""
    listener = _listener.get()
    if listener is not None:
        listener(stage)


@contextmanager
def listening_to_load_stages(listener: LoadListener) -> Iterator[None]:
    """Within the block, :func:`report_load_stage` calls in this thread go to ``listener``."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


@contextmanager
def timed(stage: str) -> Iterator[None]:
    """Observe the block's duration as ``stage`` of :data:`EXPANSION_SECONDS` (when it completes)."""
    began = time.perf_counter()
    yield
    if _measuring.get():
        EXPANSION_SECONDS.labels(stage).observe(time.perf_counter() - began)


@contextmanager
def unmeasured() -> Iterator[None]:
    """Within the block, in this thread, :func:`timed` observes nothing (a warm-up's compile times
    are not expansions)."""
    token = _measuring.set(False)
    try:
        yield
    finally:
        _measuring.reset(token)
