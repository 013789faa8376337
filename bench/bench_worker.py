"""Worker-level numbers on one CUDA GPU: batched throughput, first progress, low-VRAM peak, start-up.

- ``throughput``: N jobs at once on one engine (one thread each, their UNet calls batched by the
  engine's :class:`~outpaint_engine.batching.UNetBatcher`) against one job alone, interleaved:
  expansions per minute, and each concurrent canvas against the same job run alone.
- ``first-progress``: seconds from ``run`` to the first progress report on a warm engine.
- ``low-vram``: peak GPU memory of one expansion with ``OUTPAINT_LOW_VRAM``.
- ``embedded``: a warm ``times:3`` job (``--expansions``) submitted to the real embedded queue (the
  bot's default: SQLite journal, images on disk, its worker thread), seconds from ``submit`` to
  its ``Done`` event and to its first ``Progress`` event.
- ``startup``: a fresh process loads the engine (``OUTPAINT_COMPILE`` as given) with the compiler
  cache in ``--cache``: weights, warm-up (compile + graph capture) and first job, in seconds. Run it
  twice with the same cache for the cold and the warm start.

``python -m bench.bench_worker throughput --jobs 4 --json out.json`` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.bench_engine import build_models, photo
from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.runner import Outpainter

_loaded: dict[tuple, tuple[Outpainter, float]] = {}


def load(args: argparse.Namespace, **overrides: Any) -> tuple[Outpainter, float]:
    """The engine for these overrides and its load time, loaded once per process (so several
    measures in one run share one compile and warm-up; ``startup`` always loads its own)."""
    key = tuple(sorted(overrides.items()))
    if key not in _loaded:
        _loaded[key] = _load(args, **overrides)
    return _loaded[key]


def _load(args: argparse.Namespace, **overrides: Any) -> tuple[Outpainter, float]:
    sdxl, ip = build_models(args.models, torch.device(args.device), args.tiny)
    settings = {"model": str(sdxl), "ip_adapter": str(ip), "device": args.device, "compile": args.compile}
    if args.tiny:
        settings |= {"window": 64, "dtype": "fp32"}
    if args.cache:
        settings["compile_cache_dir"] = args.cache
    t0 = time.perf_counter()
    engine = Outpainter.load(**(settings | overrides))
    return engine, time.perf_counter() - t0


def job(args: argparse.Namespace, seed: int) -> tuple[np.ndarray, JobSpec]:
    window = 64 if args.tiny else 1024
    spec = JobSpec(Direction.RIGHT, args.expansions, window // 4, steps=args.steps, window=window, seed=seed)
    return photo(window * 3 // 2, window, seed=seed), spec


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    engine, load_s = load(args)
    jobs = [job(args, seed) for seed in range(1, args.jobs + 1)]
    for source, spec in jobs[:1] * 2:
        list(engine.run(source, spec))  # warm-up: compile, graphs
    alone_canvas = [list(engine.run(source, spec))[-1].canvas for source, spec in jobs]
    together_canvas: list[np.ndarray | None] = [None] * len(jobs)
    rates: dict[str, list[float]] = {"alone": [], "together": []}
    for _ in range(args.repeats):
        sync(args.device)
        t0 = time.perf_counter()
        list(engine.run(*jobs[0]))
        sync(args.device)
        rates["alone"].append(args.expansions * 60 / (time.perf_counter() - t0))
        start = threading.Barrier(len(jobs))

        def run(i: int, start: threading.Barrier = start) -> None:
            start.wait()
            together_canvas[i] = list(engine.run(*jobs[i]))[-1].canvas

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
        sync(args.device)
        t0 = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        sync(args.device)
        rates["together"].append(len(jobs) * args.expansions * 60 / (time.perf_counter() - t0))
        print(
            f"expansions/min alone {rates['alone'][-1]:.1f}, {len(jobs)} at once {rates['together'][-1]:.1f}"
        )
    first: list[float] = []
    t0 = time.perf_counter()

    def report(_p: Any) -> None:
        if not first:
            first.append(time.perf_counter() - t0)

    list(engine.run(*jobs[0], progress=report))
    diffs = [
        float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())
        for a, b in zip(alone_canvas, together_canvas, strict=True)
        if b is not None
    ]
    alone, together = statistics.median(rates["alone"]), statistics.median(rates["together"])
    return {
        "load_s": load_s,
        "jobs": len(jobs),
        "expansions_per_min": rates,
        "ratio": together / alone,
        "largest_batch": engine.models.batcher.largest_batch,
        "first_progress_s": first[0] if first else None,
        "canvas_mean_abs_diff_vs_alone": diffs,
    }


def first_progress(args: argparse.Namespace) -> dict[str, Any]:
    engine, load_s = load(args)
    source, spec = job(args, 1)
    list(engine.run(source, spec))  # warm
    seconds = []
    for _ in range(args.repeats):
        first: list[float] = []
        t0 = time.perf_counter()

        def report(_p: Any, t0: float = t0, first: list[float] = first) -> None:
            if not first:
                first.append(time.perf_counter() - t0)

        list(engine.run(source, spec, progress=report))
        seconds += first
    return {"load_s": load_s, "first_progress_s": seconds}


def low_vram(args: argparse.Namespace) -> dict[str, Any]:
    engine, load_s = load(args, low_vram=True)
    source, spec = job(args, 1)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    list(engine.run(source, spec))
    return {
        "load_s": load_s,
        "job_s": time.perf_counter() - t0,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
    }


def startup(args: argparse.Namespace) -> dict[str, Any]:
    """Weights load, warm-up and first job of a fresh process (the warm-up runs inside ``load``)."""
    from outpaint_engine import models as models_module

    timings: dict[str, float] = {}
    original = models_module.load_models

    def timed_load(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            timings["weights_s"] = time.perf_counter() - t0

    import outpaint_engine.runner as runner_module

    runner_module.load_models = timed_load
    cache = args.cache or Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR", "/nonexistent"))
    timings["cache_files_before"] = sum(1 for p in cache.rglob("*") if p.is_file()) if cache.is_dir() else 0
    engine, load_s = _load(args)
    timings["warm_up_s"] = load_s - timings["weights_s"]
    source, spec = job(args, 1)
    t0 = time.perf_counter()
    list(engine.run(source, spec))
    timings["first_job_s"] = time.perf_counter() - t0
    timings["ready_after_weights_s"] = timings["warm_up_s"]
    return timings


def embedded(args: argparse.Namespace) -> dict[str, Any]:
    import asyncio
    import tempfile

    from outpaint_engine.imageio import encode_png
    from outpaint_engine.job import Done, Failed, Job, Progress
    from outpaint_engine.queue.embedded import EmbeddedQueue
    from outpaint_engine.settings import QueueSettings

    engine, load_s = load(args)
    source, spec = job(args, 1)
    list(engine.run(source, spec))  # warm
    png = encode_png(source)

    async def one(queue: EmbeddedQueue, n: int) -> dict[str, float]:
        t0 = time.perf_counter()
        marks: dict[str, float] = {}
        submitted = await queue.submit(Job(id=f"bench{n}", user_id=1, guild_id=None, channel_id=None,
                                           spec=spec, source_sha256="bench"), png)  # fmt: skip
        async for _, event in queue.events(submitted.id):
            if isinstance(event, Progress):
                marks.setdefault("first_progress_s", time.perf_counter() - t0)
            if isinstance(event, Failed):
                raise RuntimeError(event.reason)
            if isinstance(event, Done):
                marks["done_s"] = time.perf_counter() - t0
                return marks
        raise RuntimeError("the event stream ended before Done")

    async def measure() -> list[dict[str, float]]:
        with tempfile.TemporaryDirectory() as data_dir:
            settings = QueueSettings(_env_file=None, queue="embedded", data_dir=Path(data_dir))
            async with EmbeddedQueue(settings, engine_factory=lambda: engine) as queue:
                return [await one(queue, n) for n in range(args.repeats + 1)]  # the first is uncounted

    runs = asyncio.run(measure())[1:]
    return {"load_s": load_s, "expansions": spec.times, "runs": runs,
            "median_done_s": statistics.median(r["done_s"] for r in runs)}  # fmt: skip


MEASURES = {
    "embedded": embedded,
    "throughput": throughput,
    "first-progress": first_progress,
    "low-vram": low_vram,
    "startup": startup,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("measures", nargs="+", choices=list(MEASURES))
    parser.add_argument("--models", type=Path, default=Path("/tmp/outpaint-bench-models"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny test models (a check of this script)")
    parser.add_argument("--compile", default="auto", help="OUTPAINT_COMPILE for the engine")
    parser.add_argument("--cache", type=Path, help="compiler cache folder (OUTPAINT_COMPILE_CACHE_DIR)")
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--expansions", type=int, default=3)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(name)s: %(message)s")
    results: dict[str, Any] = {"torch": torch.__version__}
    if args.device.startswith("cuda"):
        results["device"] = torch.cuda.get_device_name()
    for name in args.measures:
        results[name] = MEASURES[name](args)
        print(name, json.dumps(results[name], default=float), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
