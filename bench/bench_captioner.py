"""Captioner benchmark: latency and memory of the local backend at a real small VLM's shapes.

Random weights at the shapes of SmolVLM-256M-Instruct (Idefics3: SigLIP base patch16/512 +
SmolLM2-135M; nothing to download), written by ``tests/tiny_models.save_smolvlm`` and loaded through
the engine's real loader (``models.load_captioner`` → ``AutoModelForImageTextToText``), are asked the
engine's question about a 1536×1024 photo, sent bounded to 768 px as every caption is. The processor
scales the long side to 2048 px and cuts it into 512-px tiles plus a global one (64 tokens each).
Random weights do not stop early, so every caption runs to ``--max-new-tokens``: the worst case.

Each mode (``resident``: weights stay on the GPU; ``low-vram``: on the CPU between captions, as
``OUTPAINT_LOW_VRAM`` does) reports: load time; the processor's CPU time; time to the first token
(the vision tower and the prefill); the median whole caption over ``--repeats`` runs after a warm-up;
decode tokens/s; prompt, image and new token counts; the weights' size and the peak VRAM of a caption
(``max_memory_allocated`` above what was allocated before loading). Printed as JSON.

    python -m bench.bench_captioner --json $OUT/captioner.json          # on the CUDA machine
    python -m bench.bench_captioner --tiny --device cpu                  # a check of this script
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from outpaint_engine import models
from outpaint_engine.captioner.local import LocalCaptioner
from outpaint_engine.captioner.prompt import bounded_image, instruction
from outpaint_engine.settings import EngineSettings
from tests.tiny_models import SMOLVLM_256M, TINY_VLM, save_smolvlm


def build_model(root: Path, device: torch.device, tiny: bool) -> Path:
    """Write the random model once (bf16 at the real shapes, initialised on ``device``)."""
    path = root / ("tiny-smolvlm" if tiny else "smolvlm-256m")
    if not (path / "config.json").exists():
        with device:  # random init on the GPU: seconds, not minutes
            save_smolvlm(
                path, sizes=TINY_VLM if tiny else SMOLVLM_256M, dtype=None if tiny else torch.bfloat16
            )
    return path


def photo(width: int = 1536, height: int = 1024) -> np.ndarray:
    """A smooth gradient with some texture: a stand-in photo."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, np.full_like(x, 128)], axis=-1)
    noise = np.random.default_rng(0).normal(0, 12, base.shape)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


class Clock:
    """Wall time with the device synchronised before and after."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def __call__(self, into: list[float]) -> Iterator[None]:
        self.sync()
        started = time.perf_counter()
        yield
        self.sync()
        into.append(time.perf_counter() - started)


def _gib(n: int) -> float:
    return round(n / 2**30, 3)


def measure(path: Path, device: torch.device, dtype: str, low_vram: bool, args: argparse.Namespace) -> dict:
    cuda = device.type == "cuda"
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device) if cuda else 0
    settings = EngineSettings(
        captioner=str(path), device=str(device), dtype=dtype, low_vram=low_vram,
        captioner_max_tokens=args.max_new_tokens, captioner_timeout_s=600,
    )  # fmt: skip
    captioner = models.load_captioner(settings)
    assert isinstance(captioner, LocalCaptioner)
    clock = Clock(device)
    load: list[float] = []
    with clock(load):
        captioner.ensure_loaded()
    resident = torch.cuda.memory_allocated(device) - before if cuda else 0
    picture, question = bounded_image(photo()), instruction("right")
    counts: dict[str, int] = {}
    generate, image_token = captioner.model.generate, captioner.model.config.image_token_id

    def counting_generate(**inputs: Any) -> torch.Tensor:
        ids = inputs["input_ids"][0]
        output = generate(**inputs)
        counts.update(
            prompt_tokens=ids.numel(),
            image_tokens=int((ids == image_token).sum()),
            new_tokens=output.shape[1] - ids.numel(),
        )
        return output

    captioner.model.generate = counting_generate
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    preprocess: list[float] = []
    for _ in range(args.repeats):
        with clock(preprocess):
            captioner.processor(
                images=picture,
                text=captioner.processor.apply_chat_template(messages, add_generation_prompt=True),
                return_tensors="pt",
            )
    captioner.describe(picture, question)  # warm-up (kernels, allocator)
    first_token: list[float] = []
    captioner.max_new_tokens = 1
    for _ in range(args.repeats):
        with clock(first_token):
            captioner.describe(picture, question)
    captioner.max_new_tokens = args.max_new_tokens
    whole: list[float] = []
    for _ in range(args.repeats):
        with clock(whole):
            captioner.describe(picture, question)
    caption_s, first_s = statistics.median(whole), statistics.median(first_token)
    result = {
        "mode": "low-vram" if low_vram else "resident",
        "load_s": round(load[0], 3),
        "preprocess_s": round(statistics.median(preprocess), 4),
        "first_token_s": round(first_s, 4),
        "caption_s": round(caption_s, 4),
        "caption_runs_s": [round(t, 4) for t in whole],
        "decode_tokens_per_s": (  # None when noise hides the decoding (a busy CPU)
            round((counts["new_tokens"] - 1) / (caption_s - first_s), 1) if caption_s > first_s else None
        ),
        **counts,
        "parameters_m": round(sum(p.numel() for p in captioner.model.parameters()) / 1e6, 3),
        "weights_gib": _gib(sum(p.numel() * p.element_size() for p in captioner.model.parameters())),
    }
    if cuda:
        result |= {
            "resident_vram_gib": _gib(resident),
            "peak_vram_gib": _gib(torch.cuda.max_memory_allocated(device) - before),
        }
    del captioner
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("/tmp/outpaint-bench-captioner"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--tiny", action="store_true", help="the tiny test model (a check of this script)")
    parser.add_argument("--max-new-tokens", type=int, default=60, help="as OUTPAINT_CAPTIONER_MAX_TOKENS")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--modes", nargs="+", choices=["resident", "low-vram"], default=["resident", "low-vram"]
    )
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_captioner needs a CUDA GPU (or --tiny --device cpu)", file=sys.stderr)
        return 2
    dtype = "fp32" if device.type == "cpu" else args.dtype
    path = build_model(args.models, device, args.tiny)
    results: dict[str, Any] = {
        "model": "random Idefics3 at "
        + ("tiny test shapes" if args.tiny else "SmolVLM-256M-Instruct's shapes"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "dtype": dtype,
        "max_new_tokens": args.max_new_tokens,
        "modes": [
            measure(path, device, dtype, mode == "low-vram", args)
            for mode in args.modes
            if mode == "resident" or device.type == "cuda"  # offloading only applies to CUDA
        ],
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
