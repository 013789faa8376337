"""Engine benchmark on one CUDA GPU: our path against the seed-equivalent eager path, same run.

Random weights of the real SDXL + IP-Adapter Plus ViT-H shapes (nothing to download), written in
the real on-disk layouts and loaded through the engine's real loaders. Both paths run the same job
(same plan, same windows, same 25 DPM++ 2M Karras steps with CFG and six IP-Adapter crops):

- **seed-equivalent eager**: what the seed does per generation — fp16 weights with the VAE upcast
  to fp32 (``force_upcast``), the change map blurred over the whole window with a 2-D 501-px
  Gaussian and the Telea pre-fill run over the whole window, the unconditional image embedding
  recomputed per generation;
- **ours**: bf16 everywhere (the VAE too), the exact separable map and the cropped Telea of
  :mod:`outpaint_engine.canvas`, the unconditional image embedding cached.

It also checks, at real shapes on CUDA, that every canvas has the planned size, holds no NaN
garbage, and keeps the source pixels bit-exact outside the seam band.

Run from the repository root on a CUDA machine (see bench/README.md):
``python -m bench.bench_engine --expansions 3 --repeats 2 --json results.json``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from outpaint_engine import canvas, differential, runner
from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.plan import scaled
from outpaint_engine.runner import Outpainter
from tests.tiny_models import SDXL, save_ip_adapter, save_sdxl


def _on_gpu() -> torch.device:
    return torch.device("cuda")


def build_models(root: Path) -> tuple[Path, Path]:
    """Write random-weight SDXL and IP-Adapter Plus folders of the real shapes (fp16), once."""
    sdxl, ip = root / "sdxl", root / "ip-adapter"
    if not (sdxl / "model_index.json").exists():
        with _on_gpu():  # random init on the GPU: seconds, not minutes
            save_sdxl(sdxl, sizes=SDXL, dtype=torch.float16)
    if not (ip / "models" / "image_encoder" / "config.json").exists():
        with _on_gpu():
            save_ip_adapter(ip, sdxl, sizes=SDXL, dtype=torch.float16)
    return sdxl, ip


_window_inputs = canvas.window_inputs  # ours, kept before the timers wrap the module attribute


def seed_window_inputs(
    grown: np.ndarray, known: np.ndarray, window: Any, spec: JobSpec
) -> canvas.WindowInputs:
    """The seed's per-generation CPU work: a 2-D blur and Telea over the whole window."""
    ys = slice(window.y, window.y + window.size)
    xs = slice(window.x, window.x + window.size)
    window_known = known[ys, xs]
    offset = scaled(canvas.MASK_OFFSET, spec.window)
    ksize = scaled(canvas.BLUR_KERNEL, spec.window, odd=True)
    kernel = np.ones((2 * offset + 1, 2 * offset + 1), np.uint8)
    gray = cv2.dilate((~window_known).view(np.uint8), kernel).astype(bool)
    mask = np.where(gray, canvas.GRAY, 255).astype(np.uint8)
    cmap = cv2.GaussianBlur(mask, (ksize, ksize), 0).astype(np.float32) / np.float32(255)
    hole = (~window_known).view(np.uint8) * np.uint8(255)
    bgr = cv2.cvtColor(grown[ys, xs], cv2.COLOR_RGB2BGR)  # the seed works in BGR
    filled = cv2.cvtColor(cv2.inpaint(bgr, hole, canvas.TELEA_RADIUS, cv2.INPAINT_TELEA), cv2.COLOR_BGR2RGB)
    crops = canvas.ip_crops(canvas.newest_known(grown, known, window, spec.direction))
    return canvas.WindowInputs(filled, cmap, canvas.keep_weight(cmap, window_known), crops)


class Timers:
    """Wall time per stage (CUDA synchronised), accumulated over a run."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            torch.cuda.synchronize()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                torch.cuda.synchronize()
                self.totals[name] += time.perf_counter() - start

        return timed


@contextlib.contextmanager
def patched(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth synthetic photo with texture (not zeros: they hide bugs and time differently)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [128 + 100 * np.sin(xx / 97), 128 + 90 * np.cos(yy / 71), 128 + 60 * np.sin((xx + yy) / 53)], -1
    )
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def run_path(
    engine: Outpainter, source: np.ndarray, spec: JobSpec, *, seed_style: bool
) -> tuple[list[float], dict[str, float], list[np.ndarray]]:
    """Run one job; return seconds per expansion step, stage totals and the canvases."""
    timers = Timers()
    models = engine.models
    inputs_fn = seed_window_inputs if seed_style else _window_inputs
    encode_crops = models.encode_crops

    def crops(*args: Any, **kwargs: Any) -> Any:
        if seed_style:
            models._uncond_image = None  # the seed's pipeline re-encodes the "no image" branch
        return encode_crops(*args, **kwargs)

    with contextlib.ExitStack() as stack:
        stack.enter_context(patched(canvas, "window_inputs", timers.wrap("cpu: map+telea+crops", inputs_fn)))
        stack.enter_context(patched(runner, "denoise", timers.wrap("unet loop", differential.denoise)))
        stack.enter_context(patched(models, "encode_image", timers.wrap("vae encode", models.encode_image)))
        stack.enter_context(
            patched(models, "decode_latents", timers.wrap("vae decode", models.decode_latents))
        )
        stack.enter_context(patched(models, "encode_crops", timers.wrap("ip-adapter encode", crops)))
        stack.enter_context(patched(canvas, "merge", timers.wrap("cpu: merge", canvas.merge)))
        times, canvases = [], []
        torch.cuda.synchronize()
        start = time.perf_counter()
        for result in engine.run(source, spec):
            now = time.perf_counter()
            times.append(now - start)
            canvases.append(result.canvas)
            start = now
    return times, dict(timers.totals), canvases


def check_canvases(engine: Outpainter, source: np.ndarray, spec: JobSpec, canvases: list[np.ndarray]) -> None:
    """Sizes follow the plan; new strips are real pixels; the source is kept outside the seam band."""
    plan = engine.plan(source.shape[1], source.shape[0], spec)
    assert [c.shape[1::-1] for c in canvases] == [s.size_after for s in plan.steps], "canvas sizes"
    prepared = canvas.prepare(source, spec)
    band = scaled(canvas.MASK_OFFSET, spec.window) + scaled(canvas.BLUR_KERNEL, spec.window) // 2 + 1
    kept = prepared.shape[1] - band  # direction right: columns left of the band never change
    assert np.array_equal(canvases[-1][:, :kept], prepared[:, :kept]), "source pixels outside the band"
    strip = canvases[-1][:, -spec.expand_px :].astype(np.float32)
    assert strip.std() > 1.0, "the new strip is flat (NaN decoded to black?)"


PATHS = {  # name: (dtype, seed-style CPU work, OUTPAINT_COMPILE)
    "seed-eager fp16": ("fp16", True, "off"),
    "ours fp16": ("fp16", False, "off"),
    "ours bf16": ("bf16", False, "off"),
    "ours bf16 compiled": ("bf16", False, "default"),
    "ours bf16 graphs": ("bf16", False, "reduce-overhead"),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("/tmp/outpaint-bench-models"))
    parser.add_argument("--expansions", type=int, default=3)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--window", type=int, default=1024)
    parser.add_argument("--expand", type=int, default=256)
    parser.add_argument("--width", type=int, default=1536, help="source width (its height is the window)")
    parser.add_argument(
        "--paths",
        nargs="+",
        choices=list(PATHS),
        default=["seed-eager fp16", "ours fp16", "ours bf16"],
        help="what to run; the first is the baseline",
    )
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs of each path")
    parser.add_argument("--json", type=Path, help="write all numbers here")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_engine needs a CUDA GPU", file=sys.stderr)
        return 2

    t0 = time.perf_counter()
    sdxl, ip = build_models(args.models)
    print(f"models ready in {time.perf_counter() - t0:.0f} s", flush=True)
    source = photo(args.width, args.window)
    spec = JobSpec(
        Direction.RIGHT, args.expansions, args.expand, steps=args.steps, window=args.window, seed=7
    )
    warm = JobSpec(Direction.RIGHT, 1, args.expand, steps=3, window=args.window, seed=1)
    paths = {name: PATHS[name] for name in args.paths}  # the first is the baseline of the ratios
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "spec": spec.to_dict(),
        "source": list(source.shape),
        "repeats": args.repeats,
    }
    engines = {}
    for name, (dtype, seed_style, compile_mode) in paths.items():
        t0 = time.perf_counter()
        engines[name] = Outpainter.load(
            model=str(sdxl), ip_adapter=str(ip), device="cuda", dtype=dtype, compile=compile_mode
        )
        results[name] = {"load_s": time.perf_counter() - t0, "step_s": [], "stages_s": defaultdict(float)}
        t0 = time.perf_counter()
        run_path(engines[name], source, warm, seed_style=seed_style)  # warm-up: kernels, compiler
        results[name]["warmup_s"] = time.perf_counter() - t0
        print(f"{name}: load {results[name]['load_s']:.1f} s, warm-up {results[name]['warmup_s']:.1f} s")
    for _ in range(args.repeats):  # interleaved, so clocks and heat treat every path alike
        for name, (_, seed_style, _) in paths.items():
            times, stages, canvases = run_path(engines[name], source, spec, seed_style=seed_style)
            check_canvases(engines[name], source, spec, canvases)
            results[name]["step_s"] += times
            for stage, seconds in stages.items():
                results[name]["stages_s"][stage] += seconds / (args.repeats * args.expansions)
            print(f"{name}: per expansion {[round(t, 3) for t in times]}", flush=True)

    medians = {name: statistics.median(results[name]["step_s"]) for name in paths}
    baseline = next(iter(medians.values()))
    for name in paths:
        results[name]["median_s"] = medians[name]
        results[name]["ratio"] = baseline / medians[name]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    print(f"\n{results['device']}, torch {results['torch']}, window {args.window}, {args.steps} steps")
    print(f"{'s per expansion (mean)':24}" + "".join(f"{n:>20}" for n in paths))
    for stage in sorted({s for n in paths for s in results[n]["stages_s"]}):
        print(f"{stage:24}" + "".join(f"{results[n]['stages_s'].get(stage, 0):>20.3f}" for n in paths))
    print(f"{'median, whole step':24}" + "".join(f"{medians[n]:>20.3f}" for n in paths))
    print(f"{'ratio vs seed-eager':24}" + "".join(f"{results[n]['ratio']:>19.2f}x" for n in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
