"""The engine on CUDA (tiny models): dtypes, the fp16 VAE upcast, low-VRAM offload.

Skipped unless OUTPAINT_TEST_GPU=1; run on a CUDA machine with
``OUTPAINT_TEST_GPU=1 python -m pytest -q tests/engine/test_gpu.py``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.runner import Outpainter
from tests.conftest import TINY_STEPS, TINY_WINDOW

pytestmark = pytest.mark.gpu

SPEC = JobSpec(direction=Direction.RIGHT, times=2, expand_px=16, steps=TINY_STEPS, window=TINY_WINDOW, seed=9)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _photo() -> np.ndarray:
    rng = np.random.default_rng(2)
    return rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)


def _load(settings: dict[str, Any], **changes: Any) -> Outpainter:
    return Outpainter.load(**{**settings, "device": "cuda", **changes})


@pytest.mark.parametrize(
    ("dtype", "low_vram"), [("bf16", False), ("fp16", False), ("fp32", False), ("bf16", True)]
)
def test_runs_on_cuda(tiny_engine_settings: dict[str, Any], dtype: str, low_vram: bool) -> None:
    engine = _load(tiny_engine_settings, dtype=dtype, low_vram=low_vram)
    pipe = engine.models.pipe
    assert engine.models.device.type == "cuda"
    assert pipe.unet.dtype == DTYPES[dtype]
    assert pipe.vae.dtype == (torch.float32 if dtype == "fp16" else DTYPES[dtype])
    results = list(engine.run(_photo(), SPEC))
    assert [r.canvas.shape for r in results] == [(64, 96, 3), (64, 112, 3)]
    strip = results[-1].canvas[:, -16:].astype(np.float32)
    assert strip.std() > 1.0  # real pixels, not NaNs decoded to black
    if low_vram:
        assert next(pipe.unet.parameters()).device.type == "cpu"  # offloaded between uses


def test_auto_dtype_on_cuda_is_bf16(tiny_engine_settings: dict[str, Any]) -> None:
    engine = _load(tiny_engine_settings, dtype="auto")
    assert engine.models.pipe.unet.dtype == torch.bfloat16


def test_cuda_fp32_follows_the_cpu_result(
    tiny_engine: Outpainter, tiny_engine_settings: dict[str, Any]
) -> None:
    spec = replace(SPEC, times=1)
    on_cpu = list(tiny_engine.run(_photo(), spec))[-1].canvas.astype(np.float32)
    on_gpu = list(_load(tiny_engine_settings, dtype="fp32").run(_photo(), spec))[-1].canvas.astype(np.float32)
    # Same noise (drawn on the CPU) and weights: only floating-point rounding differs.
    assert np.abs(on_cpu - on_gpu).mean() < 2.0


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_unet_follows_the_eager_result(tiny_engine_settings: dict[str, Any], mode: str) -> None:
    spec = replace(SPEC, times=1)
    eager = _load(tiny_engine_settings, dtype="fp32")
    compiled = _load(tiny_engine_settings, dtype="fp32", compile=mode)
    assert compiled.models.unet._compiled_call_impl is not None
    assert compiled.models.compiled  # so load warmed it up
    want = list(eager.run(_photo(), spec))[-1].canvas.astype(np.float32)
    for _ in range(2):  # the second run replays what the first compiled (and, with graphs, recorded)
        got = list(compiled.run(_photo(), spec))[-1].canvas.astype(np.float32)
        assert np.abs(want - got).mean() < 2.0
