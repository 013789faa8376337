"""Engine benchmark on one CUDA GPU: the engine's paths against the seed-equivalent eager path.

Random weights of the real SDXL + IP-Adapter Plus ViT-H shapes (nothing to download), written in
the real on-disk layouts and loaded through the engine's real loaders. Every path runs the same job
(same plan, windows, 25 DPM++ 2M Karras steps with CFG and six IP-Adapter crops):

- ``seed-eager fp16`` (the baseline of every ratio): what the seed does per generation — fp16
  weights with the VAE upcast to fp32, the change map blurred over the whole window with a 2-D
  501-px Gaussian and the Telea pre-fill over the whole window, the unconditional image embedding
  recomputed, the merge on the CPU;
- ``eager``: the engine with ``OUTPAINT_COMPILE=off`` and the full-resolution Telea (bf16, the exact
  separable map and the merge on the GPU, the cropped Telea), then each lever on its own:
  ``graphs`` (CUDA graphs), ``regional`` (regional compilation + CUDA graphs), ``default``
  (``regional`` with ``OUTPAINT_FILL=telea-fast``: what the defaults give on CUDA), ``default fp8``
  (``OUTPAINT_FP8``), ``default vae`` (``OUTPAINT_COMPILE_VAE``), ``default fp8 vae``, ``full
  graphs`` (``OUTPAINT_COMPILE=reduce-overhead``).

Paths are warmed up (compile and graph-capture time reported apart), then run interleaved for
``--repeats`` rounds so clocks and heat treat them alike. A separate profiled run per path gives the
per-stage table (each stage synchronised) and the GPU's idle time per expansion (CUDA kernel
intervals from the profiler). Also: the bf16 matmul rate and the UNet's FLOPs (so its TFLOP/s),
peak memory, the latent/pixel difference of every lossy lever against ``eager`` on the same noise,
and every canvas is checked (planned sizes, real pixels, the source bit-exact outside the seam).

Run from the repository root on a CUDA machine (see bench/README.md):
``python -m bench.bench_engine --paths "seed-eager fp16" regional default --json results.json``.
``--tiny --device cpu`` runs the same code on the tiny test models (a check of the script).
``--candidates 4`` also times one expansion as 4 candidates against one, on every path but the
seed's (issue 11's target: under 2.5×).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import signal
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from diffusers import StableDiffusionXLImg2ImgPipeline

from outpaint_engine import canvas, device_canvas, models, runner
from outpaint_engine.differential import latent_change_map
from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.models import Models
from outpaint_engine.plan import Window, scaled
from outpaint_engine.runner import Outpainter
from tests.tiny_models import SDXL, TINY, save_ip_adapter, save_sdxl


def build_models(root: Path, device: torch.device, tiny: bool) -> tuple[Path, Path]:
    """Write random-weight SDXL and IP-Adapter Plus folders (fp16 at the real shapes), once."""
    sizes, dtype = (TINY, None) if tiny else (SDXL, torch.float16)
    sdxl, ip = root / "sdxl", root / "ip-adapter"
    if not (sdxl / "model_index.json").exists():
        with device:  # random init on the GPU: seconds, not minutes
            save_sdxl(sdxl, sizes=sizes, dtype=dtype)
    if not (ip / "models" / "image_encoder" / "config.json").exists():
        with device:
            save_ip_adapter(ip, sdxl, sizes=sizes, dtype=dtype)
    return sdxl, ip


def seed_window_inputs(
    grown: np.ndarray, known: np.ndarray, window: Window, spec: JobSpec, direction: Direction
) -> canvas.WindowInputs:
    """The seed's per-generation CPU work: a 2-D blur and Telea over the whole window (in BGR)."""
    ys, xs = canvas.window_slices(window, grown.shape)
    window_known = known[ys, xs]
    offset = scaled(canvas.MASK_OFFSET, spec.window)
    ksize = scaled(canvas.BLUR_KERNEL, spec.window, odd=True)
    kernel = np.ones((2 * offset + 1, 2 * offset + 1), np.uint8)
    gray = cv2.dilate((~window_known).view(np.uint8), kernel).astype(bool)
    mask = np.where(gray, canvas.GRAY, 255).astype(np.uint8)
    cmap = cv2.GaussianBlur(mask, (ksize, ksize), 0).astype(np.float32) / np.float32(255)
    hole = (~window_known).view(np.uint8) * np.uint8(255)
    bgr = cv2.cvtColor(grown[ys, xs], cv2.COLOR_RGB2BGR)
    filled = cv2.cvtColor(cv2.inpaint(bgr, hole, canvas.TELEA_RADIUS, cv2.INPAINT_TELEA), cv2.COLOR_BGR2RGB)
    crops = canvas.ip_crops(canvas.newest_known(grown, known, window, direction))
    return canvas.WindowInputs(filled, cmap, canvas.keep_weight(cmap, window_known), crops)


class SeedOutpainter(Outpainter):
    """The seed's per-window work around the same models and loop: CPU map, fill and merge, the
    "no image" branch re-encoded each time, the plain UNet (no batcher, no graphs)."""

    def _window(self, canvases, known, window, direction, spec, text, seeds, on_step):  # type: ignore[override]
        (grown,), (seed,) = canvases, seeds  # one candidate: the seed makes one at a time
        m = self.models
        inputs = seed_window_inputs(grown, known, window, spec, direction)
        m._uncond_image = None
        image_embeds = m.encode_crops(inputs.crops, guidance=spec.guidance > 1)
        x0 = m.encode_image(inputs.image)
        change = torch.from_numpy(inputs.change_map)[None, None].to(m.device)
        latents = runner.denoise(
            m.unet,
            m.new_scheduler(),
            x0,
            latent_change_map(change, tuple(x0.shape[-2:])),
            m.conditioning(text, image_embeds, spec.window),
            steps=spec.steps,
            guidance=spec.guidance,
            generator=torch.Generator("cpu").manual_seed(seed),
            on_step=on_step,
        )
        canvas.merge(grown, known, window, m.decode_latents(latents), inputs)
        return [grown]


def derive(base: Outpainter, **changes: Any) -> Outpainter:
    """An engine sharing ``base``'s loaded weights, with its own UNet (and VAE when compiled)
    prepared as ``changes`` say (compile mode, fp8, compile_vae)."""
    settings = base.settings.model_copy(update=changes)
    pipe = base.models.pipe
    components = dict(pipe.components, unet=copy.deepcopy(pipe.unet))
    if settings.compile_vae:
        components["vae"] = copy.deepcopy(pipe.vae)
    new_pipe = StableDiffusionXLImg2ImgPipeline(**components)
    new_pipe.set_progress_bar_config(disable=True)
    mode, unet_call = models._accelerate(new_pipe, settings, base.models.device)
    derived = Models(
        new_pipe, base.models.ip_adapter, base.models.device, mode, unet_call, context=base.models.context
    )
    derived.set_ip_adapter_scale(settings.ip_scale)
    return Outpainter(derived, settings)


def with_fill(engine: Outpainter, fill: str) -> Outpainter:
    """The same models, another ``OUTPAINT_FILL``."""
    return Outpainter(engine.models, engine.settings.model_copy(update={"fill": fill}))


class Timers:
    """Wall time per stage (device synchronised before and after), accumulated over a run."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.sync()
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.sync()
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


@contextlib.contextmanager
def stage_timers(engine: Outpainter, timers: Timers) -> Iterator[None]:
    m = engine.models
    targets = [
        (canvas, "prefill", "cpu: telea fill"),
        (device_canvas, "window_maps", "map + merge weight"),
        (device_canvas, "merge", "merge"),
        (canvas, "merge", "merge"),
        (runner, "denoise", "unet loop"),
        (m, "encode_image", "vae encode"),
        (m, "decode_pixels", "vae decode"),
        (m, "encode_crops", "ip-adapter encode"),
    ]
    with contextlib.ExitStack() as stack:
        for obj, name, label in targets:
            if hasattr(obj, name):
                stack.enter_context(patched(obj, name, timers.wrap(label, getattr(obj, name))))
        stack.enter_context(patched(sys.modules[__name__], "seed_window_inputs", timers.wrap(
            "cpu: seed map + telea", seed_window_inputs)))  # fmt: skip
        yield


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the main thread after ``seconds`` (0: no limit)."""
    if seconds <= 0:
        yield
        return

    def expire(*_: Any) -> None:
        raise TimeoutError(f"still compiling after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def photo(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A smooth synthetic photo with texture (not zeros: they hide bugs and time differently)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [128 + 100 * np.sin(xx / 97), 128 + 90 * np.cos(yy / 71), 128 + 60 * np.sin((xx + yy) / 53)], -1
    )
    return np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)


def run_job(engine: Outpainter, source: np.ndarray, spec: JobSpec) -> tuple[list[float], list[np.ndarray]]:
    """Seconds per expansion step and the canvases."""
    sync = Timers(engine.models.device).sync
    times, canvases = [], []
    sync()
    start = time.perf_counter()
    for result in engine.run(source, spec):
        now = time.perf_counter()
        times.append(now - start)
        canvases.append(result.canvas)
        start = now
    return times, canvases


def time_candidates(
    engine: Outpainter, source: np.ndarray, spec: JobSpec, count: int, repeats: int
) -> dict[str, float]:
    """Median seconds of one expansion generated once and as ``count`` candidates (interleaved)."""
    jobs = {1: replace(spec, times=1, candidates=1), count: replace(spec, times=1, candidates=count)}
    run_job(engine, source, jobs[count])  # a compiled UNet meets the larger batch here first
    seconds: dict[int, list[float]] = {n: [] for n in jobs}
    for _ in range(repeats):
        for n, job in jobs.items():
            seconds[n] += run_job(engine, source, job)[0]
    one, many = (statistics.median(seconds[n]) for n in jobs)
    return {"one_s": one, f"{count}_s": many, "ratio": many / one}


def gpu_idle_per_expansion(engine: Outpainter, source: np.ndarray, spec: JobSpec) -> dict[str, float] | None:
    """Wall time minus the union of CUDA kernel intervals, per expansion, from the profiler."""
    from torch.profiler import ProfilerActivity, profile

    if engine.models.device.type != "cuda":
        return None
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in engine.run(source, spec):
            pass
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    kernels = sorted(
        (e.time_range.start, e.time_range.end, e.name)
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start
    )
    if not kernels:
        return {"wall_s": wall / spec.times, "kernels_seen": 0}
    busy, gaps = 0.0, []  # gaps: (µs, the kernel before, the kernel after)
    cur_start, cur_end, before = kernels[0]
    for s, e, name in kernels[1:]:
        if s > cur_end:
            busy += cur_end - cur_start
            gaps.append((s - cur_end, before, name))
            cur_start, cur_end = s, e
        elif e > cur_end:
            cur_end = e
        if e >= cur_end:
            before = name
    busy += cur_end - cur_start
    span = (kernels[-1][1] - kernels[0][0]) / 1e6
    large = sorted(gaps, reverse=True)[:12]
    return {
        "wall_s": wall / spec.times,
        "busy_s": busy / 1e6 / spec.times,
        "idle_in_span_s": (span - busy / 1e6) / spec.times,
        "kernels_seen": len(kernels),
        "gaps_over_1ms": sum(1 for g in gaps if g[0] > 1000),
        "idle_in_gaps_over_1ms_s": sum(g[0] for g in gaps if g[0] > 1000) / 1e6 / spec.times,
        "largest_gaps": [[round(g / 1000, 2), b[:60], a[:60]] for g, b, a in large],
    }


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


def matmul_tflops(device: torch.device) -> float | None:
    """The bf16 matmul rate measured here (8192³, random data, mean of 10 after 3 warm-ups)."""
    if device.type != "cuda":
        return None
    a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        a @ b
    end.record()
    torch.cuda.synchronize()
    return 10 * 2 * 8192**3 / (start.elapsed_time(end) / 1000) / 1e12


def unet_flops(engine: Outpainter, spec: JobSpec) -> float:
    """FLOPs of one UNet call (CFG batch) at the job's window, counted by torch's flop counter."""

    m = engine.models
    latent = spec.window // 8
    with torch.inference_mode():
        return _unet_flops(m, spec, latent)


def _unet_flops(m: Models, spec: JobSpec, latent: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    text = m.encode_text("", "", guidance=True)
    crops = [np.zeros((224, 224, 3), np.uint8)] * 6
    cond = m.conditioning(text, m.encode_crops(crops, guidance=True) if m.ip_adapter else None, spec.window)
    sample = torch.randn(2, 4, latent, latent, device=m.device, dtype=m.unet.dtype)
    with FlopCounterMode(display=False) as counter:
        m.unet(sample, torch.tensor(500, device=m.device), encoder_hidden_states=cond.prompt_embeds,
               added_cond_kwargs=cond.added_cond_kwargs, return_dict=False)  # fmt: skip
    return float(counter.get_total_flops())


def final_latents(engine: Outpainter, source: np.ndarray, spec: JobSpec) -> tuple[torch.Tensor, np.ndarray]:
    """The first window's final latents and decoded pixels (same noise for every engine)."""
    captured: dict[str, torch.Tensor] = {}
    original = runner.denoise

    def keep_latents(*args: Any, **kwargs: Any) -> torch.Tensor:
        latents = original(*args, **kwargs)
        captured.setdefault("latents", latents.float().clone())
        return latents

    with patched(runner, "denoise", keep_latents):
        result = next(iter(engine.run(source, spec)))
    return captured["latents"], result.canvas


def differences(
    reference: Outpainter, other: Outpainter, source: np.ndarray, spec: JobSpec, other_seed: int | None = None
) -> dict[str, float]:
    """Relative latent difference ‖a − b‖/‖a‖ and the mean absolute pixel difference of one step
    (``other`` with another seed when given: what a reroll changes, for scale)."""
    la, pa = final_latents(reference, source, spec)
    lb, pb = final_latents(other, source, spec if other_seed is None else replace(spec, seed=other_seed))
    return {
        "latent_rel": float((la - lb).norm() / la.norm()),
        "pixel_mean_abs": float(np.abs(pa.astype(np.float32) - pb.astype(np.float32)).mean()),
    }


PATHS: dict[str, dict[str, Any]] = {  # name: engine settings on top of the eager bf16 engine
    "seed-eager fp16": {},
    "eager": {"fill": "telea"},
    "graphs": {"compile": "graphs", "fill": "telea"},
    "regional": {"compile": "regional", "fill": "telea"},
    "default": {"compile": "regional", "fill": "telea-fast"},  # what OUTPAINT_* defaults give on CUDA
    "default stock": {"compile": "regional", "fill": "telea-fast", "static_context": False},
    "default fp8": {"compile": "regional", "fill": "telea-fast", "fp8": True},
    "default vae": {"compile": "regional", "fill": "telea-fast", "compile_vae": True},
    "default fp8 vae": {"compile": "regional", "fill": "telea-fast", "fp8": True, "compile_vae": True},
    "full graphs": {"compile": "reduce-overhead", "fill": "telea"},
}
LOSSY = (
    "graphs",
    "regional",
    "default",
    "default stock",
    "default fp8",
    "default vae",
    "default fp8 vae",
    "full graphs",
)
"""Paths compared with ``eager`` on the same noise (float rounding, the fill, FP8)."""
LEVERS = ("default stock", "default fp8", "default vae", "default fp8 vae")
"""Paths compared with ``default`` on the same noise: what each lever alone changes."""


def make_engines(
    names: list[str], sdxl: Path, ip: Path, device: torch.device, tiny: bool
) -> tuple[dict[str, Outpainter], dict[str, float]]:
    """One engine per path (paths that differ only in the fill share one); their load times."""
    common = {"model": str(sdxl), "ip_adapter": str(ip), "device": str(device), "compile": "off"}
    if tiny:
        common |= {"window": 64}
    engines: dict[str, Outpainter] = {}
    load_s: dict[str, float] = {}
    eagers: dict[bool, Outpainter] = {}  # by static_context
    by_models: dict[tuple, Outpainter] = {}
    for name in names:
        t0 = time.perf_counter()
        if name == "seed-eager fp16":  # the seed's UNet projects the context at every step
            engine = SeedOutpainter.load(**common, dtype="fp32" if tiny else "fp16", static_context=False)
        else:
            changes = dict(PATHS[name])
            fill = changes.pop("fill")
            static = changes.pop("static_context", True)
            if static not in eagers:
                eagers[static] = Outpainter.load(
                    **common, dtype="fp32" if tiny else "bf16", static_context=static
                )
            eager = eagers[static]
            key = (static, *sorted(changes.items()))
            if key not in by_models:
                try:
                    by_models[key] = derive(eager, **changes) if changes else eager
                except Exception as error:  # one lever that fails here must not take the others down
                    print(f"{name}: cannot be prepared: {type(error).__name__}: {error}", flush=True)
                    continue
            engine = with_fill(by_models[key], fill)
        engines[name] = engine
        load_s[name] = time.perf_counter() - t0
    return engines, load_s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("/tmp/outpaint-bench-models"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny test models (a check of this script)")
    parser.add_argument("--expansions", type=int, default=3)
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--expand", type=int, default=256)
    parser.add_argument(
        "--paths", nargs="+", choices=list(PATHS), default=["seed-eager fp16", "regional", "default"]
    )
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs of each path")
    parser.add_argument("--no-profile", action="store_true", help="skip the per-stage runs")
    parser.add_argument("--idle", nargs="*", default=None, help="paths whose GPU idle time the profiler "
                        "measures on one expansion (default: the last path)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write all numbers here (rewritten as they come)")
    parser.add_argument("--warmup-limit", type=float, default=0, help="seconds a path's warm-up "
                        "(its compile) may take; past it the path is dropped, the others go on")  # fmt: skip
    parser.add_argument("--candidates", type=int, default=0, help="also time N candidates against one")
    parser.add_argument("--candidate-paths", nargs="*", help="where to time candidates (default: every path "
                        "but the seed's, which makes one at a time)")  # fmt: skip
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_engine needs a CUDA GPU (or --tiny --device cpu)", file=sys.stderr)
        return 2
    window = 64 if args.tiny else 1024
    expand = max(8, args.expand * window // 1024)
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "paths": args.paths,
    }

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=float))

    t0 = time.perf_counter()
    sdxl, ip = build_models(args.models, device, args.tiny)
    results["models_s"] = time.perf_counter() - t0
    results["matmul_tflops"] = matmul_tflops(device)
    print(f"models ready in {results['models_s']:.0f} s; bf16 matmul {results['matmul_tflops']} TFLOP/s")
    source = photo(window * 3 // 2, window)
    spec = JobSpec(Direction.RIGHT, args.expansions, expand, steps=args.steps, window=window, seed=7)
    warm = JobSpec(Direction.RIGHT, 1, expand, steps=3, window=window, seed=1)
    results["spec"] = spec.to_dict()
    engines, load_s = make_engines(args.paths, sdxl, ip, device, args.tiny)
    results["unet_flops_per_call"] = unet_flops(engines.get("eager") or engines[args.paths[0]], spec)
    for name, engine in list(engines.items()):
        t0 = time.perf_counter()
        try:
            with time_limit(args.warmup_limit):
                for _ in range(2):  # the second settles what the first compiled or captured
                    run_job(engine, source, warm)
        except Exception as error:  # as above: record it, go on with the other paths
            results[name] = {"error": f"{type(error).__name__}: {error}"[:2000]}
            print(f"{name}: warm-up failed: {results[name]['error'][:500]}", flush=True)
            del engines[name]
            continue
        results[name] = {"load_s": load_s[name], "warmup_s": time.perf_counter() - t0, "step_s": []}
        print(f"{name}: load {load_s[name]:.1f} s, warm-up {results[name]['warmup_s']:.1f} s", flush=True)
        save()
    for _ in range(args.repeats):  # interleaved, so clocks and heat treat every path alike
        for name, engine in engines.items():
            times, canvases = run_job(engine, source, spec)
            check_canvases(engine, source, spec, canvases)
            results[name]["step_s"] += times
            print(f"{name}: per expansion {[round(t, 3) for t in times]}", flush=True)
        save()
    medians = {name: statistics.median(results[name]["step_s"]) for name in engines}
    baseline = medians[next(iter(engines))]
    for name in engines:
        results[name]["median_s"] = medians[name]
        results[name]["ratio"] = baseline / medians[name]
    save()
    if args.candidates > 1:
        for name, engine in engines.items():
            if name in (args.candidate_paths or [n for n in args.paths if n != "seed-eager fp16"]):
                timing = time_candidates(engine, source, spec, args.candidates, args.repeats)
                results[name]["candidates"] = timing
                print(f"{name}: {args.candidates} candidates cost {timing['ratio']:.2f}× one", flush=True)
                save()
    if not args.no_profile:
        for name, engine in engines.items():
            timers = Timers(device)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            with stage_timers(engine, timers):
                run_job(engine, source, spec)
            results[name]["stages_s"] = {k: v / spec.times for k, v in timers.totals.items()}
            if device.type == "cuda":
                results[name]["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            if name in (args.idle if args.idle is not None else args.paths[-1:]):
                results[name]["gpu"] = gpu_idle_per_expansion(
                    engine, source, spec
                )  # the whole job: its start spread over its expansions
            unet_s = results[name]["stages_s"].get("unet loop")
            if unet_s and results["matmul_tflops"]:
                rate = results["unet_flops_per_call"] * spec.steps / unet_s / 1e12
                results[name]["unet_tflops"] = rate
            save()
    if "eager" in engines:
        for name in LOSSY:
            if name in engines:
                results[name]["vs_eager"] = differences(engines["eager"], engines[name], source, spec)
        save()
    if "default" in engines:  # each lever against the defaults it is added to, on the same noise
        for name in LEVERS:
            if name in engines:
                results[name]["vs_default"] = differences(engines["default"], engines[name], source, spec)
        save()
    if "regional" in engines and "default" in engines:  # the cheaper fill, against a reroll
        regional = engines["regional"]
        results["fill_effect"] = differences(regional, engines["default"], source, spec)
        results["seed_effect"] = differences(regional, regional, source, spec, other_seed=spec.seed + 1)
        save()
    print(f"\n{results['device']}, torch {results['torch']}, window {window}, {args.steps} steps")
    print(f"{'s per expansion':24}" + "".join(f"{n:>20}" for n in engines))
    stages = sorted({s for n in engines for s in results[n].get("stages_s", {})})
    for stage in stages:
        print(
            f"{stage:24}" + "".join(f"{results[n].get('stages_s', {}).get(stage, 0):>20.3f}" for n in engines)
        )
    rows = {
        "median, whole step": lambda n: f"{medians[n]:.3f}",
        "ratio vs seed": lambda n: f"{results[n]['ratio']:.2f}x",
        "warm-up s": lambda n: f"{results[n]['warmup_s']:.1f}",
        "gpu idle s/expansion": lambda n: (
            f"{(results[n].get('gpu') or {}).get('idle_in_span_s', float('nan')):.3f}"
        ),
        "unet TFLOP/s": lambda n: f"{results[n].get('unet_tflops', float('nan')):.0f}",
        "latent diff vs eager": lambda n: (
            f"{results[n].get('vs_eager', {}).get('latent_rel', float('nan')):.4f}"
        ),
        "latent diff vs default": lambda n: (
            f"{results[n].get('vs_default', {}).get('latent_rel', float('nan')):.4f}"
        ),
    }
    for label, cell in rows.items():
        print(f"{label:24}" + "".join(f"{cell(n):>20}" for n in engines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
