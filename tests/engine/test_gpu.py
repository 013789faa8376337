"""The engine on CUDA (tiny models): dtypes, the fp16 VAE upcast, low-VRAM offload, the compile
modes and CUDA graphs, the device-side map and merge, batched concurrent jobs, FP8.

Skipped unless OUTPAINT_TEST_GPU=1; run on a CUDA machine with
``OUTPAINT_TEST_GPU=1 python -m pytest -q tests/engine/test_gpu.py``.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from outpaint_engine import canvas, device_canvas, fast_unet
from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.plan import plan_job
from outpaint_engine.runner import Outpainter
from tests.conftest import TINY_STEPS, TINY_WINDOW

pytestmark = pytest.mark.gpu

SPEC = JobSpec(direction=Direction.RIGHT, times=2, expand_px=16, steps=TINY_STEPS, window=TINY_WINDOW, seed=9)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _photo() -> np.ndarray:
    rng = np.random.default_rng(2)
    return rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)


def _load(settings: dict[str, Any], **changes: Any) -> Outpainter:
    # One job at a time unless a test says otherwise: a compiled engine warms up every batch size
    # it may serve, and four of them would make each compiled load here take minutes.
    return Outpainter.load(**{**settings, "device": "cuda", "batch_jobs": 1, **changes})


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
        assert engine.models.context is None  # the offloaded UNet keeps its own projections
    else:
        assert engine.models.context is not None  # static cross-attention keys and values


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


@pytest.mark.parametrize("mode", ["graphs", "regional", "default", "reduce-overhead"])
def test_accelerated_unet_follows_the_eager_result(tiny_engine_settings: dict[str, Any], mode: str) -> None:
    spec = replace(SPEC, times=1)
    eager = _load(tiny_engine_settings, dtype="fp32", compile="off")
    fast = _load(tiny_engine_settings, dtype="fp32", compile=mode)
    assert fast.models.compile_mode == mode and fast.models.compiled  # so load warmed it up
    if mode in ("graphs", "regional"):
        assert isinstance(fast.models.unet_call, fast_unet.GraphedUNet)
    want = list(eager.run(_photo(), spec))[-1].canvas.astype(np.float32)
    for _ in range(2):  # the second run replays what the first compiled or captured
        got = list(fast.run(_photo(), spec))[-1].canvas.astype(np.float32)
        assert np.abs(want - got).mean() < 2.0


def test_auto_compile_on_cuda_is_regional(tiny_engine_settings: dict[str, Any]) -> None:
    engine = _load(tiny_engine_settings, compile="auto")
    assert engine.models.compile_mode == "regional"


def test_device_map_weight_and_merge_are_bit_exact_on_cuda() -> None:
    spec = JobSpec(Direction.DOWN, expand_px=16, window=TINY_WINDOW)
    rng = np.random.default_rng(4)
    source = rng.integers(0, 256, (80, 64, 3), dtype=np.uint8)
    step = plan_job(64, 80, spec).steps[0]
    grown, known = canvas.grow(source, step)
    (window,) = step.windows
    inputs = canvas.window_inputs(grown, known, window, spec, step.direction)
    ys, xs = canvas.window_slices(window, grown.shape)
    maps = device_canvas.window_maps(known[ys, xs], spec, torch.device("cuda"))
    np.testing.assert_array_equal(maps.change[0, 0].cpu().numpy(), inputs.change_map)
    np.testing.assert_array_equal(maps.keep.cpu().numpy(), inputs.keep_weight)
    generated = rng.integers(0, 256, (TINY_WINDOW, TINY_WINDOW, 3), dtype=np.uint8)
    on_cpu, known_cpu = grown.copy(), known.copy()
    canvas.merge(on_cpu, known_cpu, window, generated, inputs)
    device_canvas.merge(grown, known, window, torch.from_numpy(generated).cuda(), maps.keep)
    np.testing.assert_array_equal(grown, on_cpu)


def test_concurrent_jobs_share_batched_unet_calls_on_cuda(tiny_engine_settings: dict[str, Any]) -> None:
    engine = _load(tiny_engine_settings, dtype="fp32", compile="graphs", batch_jobs=3)
    specs = [replace(SPEC, seed=seed, steps=4) for seed in (1, 2, 3)]
    alone = [list(engine.run(_photo(), spec))[-1].canvas for spec in specs]
    together: list[np.ndarray | None] = [None] * 3

    def run(i: int) -> None:
        together[i] = list(engine.run(_photo(), specs[i]))[-1].canvas

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert engine.models.batcher.largest_batch >= 2
    for a, b in zip(alone, together, strict=True):
        assert b is not None
        assert np.abs(a.astype(np.float32) - b.astype(np.float32)).mean() < 1.0


def test_fp8_converts_large_block_linears_and_stays_close() -> None:
    pytest.importorskip("torchao")
    if fast_unet.fp8_supported(torch.device("cuda")) is not None:
        pytest.skip(fast_unet.fp8_supported(torch.device("cuda")))

    class Blocks(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer_blocks = torch.nn.ModuleList(
                [torch.nn.Linear(1024, 2048), torch.nn.Linear(64, 64)]
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.transformer_blocks[0](x)

    from torch._inductor import config as inductor

    model = Blocks().cuda().to(torch.bfloat16)
    x = torch.randn(256, 1024, device="cuda", dtype=torch.bfloat16)
    tuning = inductor.coordinate_descent_tuning
    with torch.inference_mode():  # as the engine runs it: float8 matmuls have no backward
        want = model(x).float()
        assert fast_unet.quantize_fp8(model) == 1  # the 64-wide layer stays in bf16
        got = torch.compile(model)(x).float()
    assert float((got - want).norm() / want.norm()) < 0.1
    # torchao leaves the compiler's settings alone (its "recommended" ones autotune every kernel
    # of every later compile, FP8 or not, for minutes)
    assert inductor.coordinate_descent_tuning == tuning


def test_crop_preprocessing_on_cuda_is_bit_exact(tiny_engine_settings: dict[str, Any]) -> None:
    from transformers import CLIPImageProcessorPil

    from outpaint_engine.crop_pixels import CropPixels

    processor = CLIPImageProcessorPil(size=224, crop_size=224)  # what diffusers makes without torchvision
    twin = CropPixels.matching(processor)
    rng = np.random.default_rng(5)
    for side in (21, 224, 341):
        crops = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(6)]
        crops[0][::2] = 255
        want = processor(images=crops, return_tensors="pt").pixel_values
        assert torch.equal(twin(crops, torch.device("cuda")).cpu(), want)
    # The engine resizes its crops on the GPU: with this twin, or with the torchvision processor
    # (where torchvision is installed) given the device.
    models = _load(tiny_engine_settings, dtype="fp32").models
    backend = getattr(models.pipe.feature_extractor, "backend", "pil")
    assert (models._crop_pixels is not None) == (backend == "pil")
    embeds = models.encode_crops([np.full((100, 100, 3), 7, np.uint8)] * 6, guidance=True)
    assert embeds[0].device.type == "cuda"
