"""UNet levers at the real shapes: one denoising loop's UNet calls, timed per lever on one GPU.

The SDXL UNet with IP-Adapter Plus (random weights, the real shapes, loaded through the engine's
loaders as in ``bench_engine.py``) is copied once per variant; each copy gets its levers, then
regional compilation and a CUDA graph as the engine's default path (``regional``) does. The
variants are timed interleaved (``--repeats`` rounds of 25 CFG calls at a 1024² window) and
compared with ``regional`` on the same inputs (relative output difference). Each variant's kernels
are profiled once and summed by kind (GEMM, convolution, attention, compiled Triton kernels, other).

A variant is ``regional`` plus ``+``-joined levers:

- ``cl``: the UNet's weights and activations in channels-last memory format;
- ``qkv``: the self-attention's query, key and value projections fused into one GEMM;
- ``cudnn``: the self-attention through cuDNN's fused attention instead of SDPA's default (flash);
- ``fp8row`` / ``fp8tensor``: torchao float8 (per-row / per-tensor scales) for the transformer
  blocks' large linear layers (``fp8ff``: only the feed-forward layers, per-row);
- ``ctx``: static cross-attention keys and values (``OUTPAINT_STATIC_CONTEXT``,
  ``window_context.py``): the context projections computed once, outside the timed calls.

The UNet is loaded stock (``static_context=False``), so every lever but ``ctx`` is measured
without static keys and values.

``python3 -m bench.bench_unet --variants regional regional+cl regional+qkv --json out.json``
(``--tiny --device cpu`` checks the script on the tiny test models, eagerly).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers.models.attention_processor import Attention

from bench.bench_engine import build_models, matmul_tflops, time_limit
from outpaint_engine import fast_unet, window_context
from outpaint_engine.runner import Outpainter

LEVERS = ("cl", "qkv", "cudnn", "fp8row", "fp8tensor", "fp8ff", "ctx")


class SelfAttention:
    """Self-attention (``attn1`` of a transformer block: 3-D input, no mask, no norm) with the
    query, key and value projections fused when ``fused`` and SDPA's backend chosen by
    ``backend`` (``sdpa``: torch's choice; ``cudnn``: cuDNN's fused attention)."""

    def __init__(self, *, fused: bool, backend: str) -> None:
        self.fused = fused
        self.backend = backend

    def __call__(
        self, attn: Attention, hidden_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        batch, tokens, _ = hidden_states.shape
        if self.fused:
            q, k, v = attn.to_qkv(hidden_states).chunk(3, dim=-1)
        else:
            q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        q, k, v = (t.view(batch, tokens, attn.heads, -1).transpose(1, 2) for t in (q, k, v))
        if self.backend == "cudnn":
            out = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, False)[0]
        else:
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        out = out.transpose(1, 2).reshape(batch, tokens, -1).to(q.dtype)
        return attn.to_out[1](attn.to_out[0](out))


def self_attentions(unet: torch.nn.Module) -> list[Attention]:
    return [m for name, m in unet.named_modules() if name.endswith(".attn1") and isinstance(m, Attention)]


def quantize(unet: torch.nn.Module, granularity: str, only_ff: bool) -> int:
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, PerTensor, quantize_

    chosen: list[str] = []

    def wanted(module: torch.nn.Module, name: str) -> bool:
        ok = (
            isinstance(module, torch.nn.Linear)
            and ".transformer_blocks." in f".{name}"
            and ".processor." not in name
            and not name.endswith(fast_unet.FP8_SKIPPED)
            and (not only_ff or ".ff." in name)
            and min(module.in_features, module.out_features) >= fast_unet.FP8_MIN_FEATURES
        )
        if ok:
            chosen.append(name)
        return ok

    scales = PerRow() if granularity == "row" else PerTensor()
    config = Float8DynamicActivationFloat8WeightConfig(granularity=scales, set_inductor_config=False)
    quantize_(unet, config, filter_fn=wanted)
    return len(chosen)


def prepare(
    base: torch.nn.Module, variant: str, device: torch.device, inputs: dict[str, Any]
) -> tuple[Any, dict[str, Any]]:
    """A copy of ``base`` with the variant's levers: what to call (graphed on CUDA) and its inputs."""
    levers = variant.split("+")[1:]
    unknown = set(levers) - set(LEVERS)
    if unknown or not variant.startswith("regional"):
        raise SystemExit(f"unknown variant {variant!r} (regional[+{'|'.join(LEVERS)}...])")
    unet = copy.deepcopy(base)
    if "ctx" in levers:
        context = window_context.install(unet)
        assert context is not None
        cond = inputs["cond"]
        states, image = context.pack(cond.prompt_embeds, cond.image_embeds)
        inputs = {**inputs, "cond": replace(cond, prompt_embeds=states, image_embeds=image)}
    if "qkv" in levers or "cudnn" in levers:
        for attn in self_attentions(unet):
            if "qkv" in levers:
                attn.fuse_projections()
            attn.set_processor(
                SelfAttention(fused="qkv" in levers, backend="cudnn" if "cudnn" in levers else "sdpa")
            )
    if "cl" in levers:
        unet.to(memory_format=torch.channels_last)
    if "fp8row" in levers or "fp8tensor" in levers or "fp8ff" in levers:
        count = quantize(unet, "tensor" if "fp8tensor" in levers else "row", only_ff="fp8ff" in levers)
        print(f"{variant}: {count} linear layers in float8", flush=True)
    if device.type != "cuda":
        return unet, inputs
    fast_unet.compile_regions(unet)
    return fast_unet.GraphedUNet(unet), inputs


def unet_inputs(engine: Outpainter, window: int) -> dict[str, Any]:
    """One CFG call's inputs at ``window`` (empty prompt, six IP-Adapter crops)."""
    m = engine.models
    text = m.encode_text("", "", guidance=True)
    crops = [np.full((224, 224, 3), 128, np.uint8)] * 6
    cond = m.conditioning(text, m.encode_crops(crops, guidance=True) if m.ip_adapter else None, window)
    generator = torch.Generator(m.device).manual_seed(0)
    latent = window // 8
    sample = torch.randn(2, 4, latent, latent, device=m.device, dtype=m.unet.dtype, generator=generator)
    return {"sample": sample, "cond": cond}


def run_loop(call: Any, inputs: dict[str, Any], steps: int) -> torch.Tensor:
    """``steps`` UNet calls as the denoising loop makes them (one timestep each)."""
    out = None
    for t in torch.linspace(999, 0, steps, device=inputs["sample"].device).round().long():
        cond = inputs["cond"]
        out = call(inputs["sample"], t, encoder_hidden_states=cond.prompt_embeds,
                   added_cond_kwargs=cond.added_cond_kwargs, return_dict=False)[0]  # fmt: skip
    return out


KINDS = (
    ("attention", ("flash", "fmha", "attention", "sdpa", "cudnn_generated", "cudnn::fusion")),
    ("gemm", ("gemm", "nvjet", "cutlass", "xmma", "cublas", "matmul", "f8f8", "sm90")),
    ("conv", ("conv", "implicit", "winograd", "dgrad", "fprop")),
    ("triton", ("triton",)),
)


def kind_of(kernel: str) -> str:
    name = kernel.lower()
    for kind, marks in KINDS:
        if any(mark in name for mark in marks):
            return kind
    return "other"


def kernel_profile(call: Any, inputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """GPU time of one UNet call by kind of kernel (ms), and its 12 costliest kernels."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CUDA] if device.type == "cuda" else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        run_loop(call, inputs, 1)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    per_kernel: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if device.type == "cuda" and event.device_type == torch.autograd.DeviceType.CUDA:
            per_kernel[event.name] += event.device_time_total / 1000
    by_kind: dict[str, float] = defaultdict(float)
    for name, ms in per_kernel.items():
        by_kind[kind_of(name)] += ms
    top = sorted(per_kernel.items(), key=lambda item: -item[1])[:12]
    return {
        "by_kind_ms": dict(by_kind),
        "total_ms": sum(by_kind.values()),
        "top": [[n[:110], ms] for n, ms in top],
    }


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("/tmp/outpaint-bench-models"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny test models (a check of this script)")
    parser.add_argument("--variants", nargs="+", default=["regional", "regional+cl", "regional+qkv"])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup-limit", type=float, default=0, help="seconds a variant's compile may take")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_unet needs a CUDA GPU (or --tiny --device cpu)", file=sys.stderr)
        return 2
    fast_unet.RECOMPILE_LIMIT = 256  # every variant's blocks compile in this one process
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    results: dict[str, Any] = {"device": name, "torch": torch.__version__, "variants": {}}

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=float))

    sdxl, ip = build_models(args.models, device, args.tiny)
    dtype = "fp32" if args.tiny else "bf16"
    engine = Outpainter.load(
        model=str(sdxl),
        ip_adapter=str(ip),
        device=str(device),
        compile="off",
        dtype=dtype,
        static_context=False,
    )
    window = 64 if args.tiny else 1024
    results["matmul_tflops"] = matmul_tflops(device)
    calls: dict[str, Any] = {}
    outputs: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        inputs = unet_inputs(engine, window)
        base = engine.models.unet
        for variant in args.variants:
            t0 = time.perf_counter()
            try:
                with time_limit(args.warmup_limit):
                    call, own_inputs = prepare(base, variant, device, inputs)
                    outputs[variant] = run_loop(call, own_inputs, 2).clone()
            except Exception as error:  # one lever that fails must not take the others down
                print(f"{variant}: dropped: {type(error).__name__}: {str(error)[:300]}", flush=True)
                results["variants"][variant] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
                continue
            calls[variant] = (call, own_inputs)
            warm = time.perf_counter() - t0
            results["variants"][variant] = {"warmup_s": warm}
            print(f"{variant}: ready in {warm:.1f} s", flush=True)
            save()
        times: dict[str, list[float]] = defaultdict(list)
        for _ in range(args.repeats):
            for variant, (call, own_inputs) in calls.items():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                run_loop(call, own_inputs, args.steps)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times[variant].append(time.perf_counter() - t0)
        reference = outputs.get(args.variants[0])
        for variant, (call, own_inputs) in calls.items():
            entry = results["variants"][variant]
            entry["loop_s"] = times[variant]
            entry["loop_median_s"] = statistics.median(times[variant])
            if reference is not None:
                entry["output_rel_diff"] = relative(outputs[variant], reference)
            entry["profile"] = kernel_profile(call, own_inputs, device)
        first = statistics.median(times[next(iter(calls))]) if calls else None
        for variant in calls:
            entry = results["variants"][variant]
            entry["speedup_vs_first"] = first / entry["loop_median_s"] if first else None
            kinds = ", ".join(f"{k} {v:.1f}" for k, v in sorted(entry["profile"]["by_kind_ms"].items()))
            speed = f"{entry['loop_median_s']:.3f} s ({entry['speedup_vs_first']:.3f}× the first)"
            diff = f"diff {entry.get('output_rel_diff', 0):.4f}"
            print(f"{variant}: loop {speed}, {diff}; one call ms: {kinds}", flush=True)
            for name, ms in entry["profile"]["top"][:6]:
                print(f"    {ms:7.2f} ms  {name}", flush=True)
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
