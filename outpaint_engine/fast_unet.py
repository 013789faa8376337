"""How the UNet runs on CUDA: eagerly, compiled, with FP8 linear layers, replayed from CUDA graphs.

``OUTPAINT_COMPILE`` picks the mode (:func:`resolve_compile`):

- ``off``: eager kernels, launched one by one (the CPU, MPS and low-VRAM modes always run so).
- ``graphs``: eager kernels captured once per input shape in a CUDA graph and replayed
  (:class:`GraphedUNet`): no launch overhead, no compiler, ready in seconds.
- ``regional``: every repeated block (the transformer blocks and ResNet blocks) compiled by
  ``torch.compile`` once per shape and reused by all its copies (regional compilation: a fraction of
  a whole-model compile), the whole UNet call then replayed from a CUDA graph as in ``graphs``.
- ``default`` / ``reduce-overhead``: the whole UNet compiled by ``torch.compile`` (with CUDA graphs
  for ``reduce-overhead``); the slowest to compile.
- ``auto`` (the default): ``regional`` on CUDA, ``off`` elsewhere.

The compiler keeps its artifacts in ``TORCHINDUCTOR_CACHE_DIR`` (see
:func:`use_compile_cache`), so a restart reuses them instead of compiling again.

``OUTPAINT_FP8`` (Hopper and newer, with ``torchao``): the large linear layers of the transformer
blocks run in float8 (dynamic per-row activation and weight scales); it only pays compiled.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

COMPILED_REGIONS = ("BasicTransformerBlock", "ResnetBlock2D")
"""Class names of the repeated blocks that ``regional`` compiles (each once per input shape)."""
RECOMPILE_LIMIT = 64
"""Shapes a compiled region may be specialised for (block widths × batch sizes) before dynamo
gives up and runs it eagerly; the default (8) is too few for a UNet of several widths."""
FP8_MIN_FEATURES = 512
"""Linear layers narrower than this stay in bf16: their quantisation costs more than it saves."""
FP8_SKIPPED = ("attn2.to_k", "attn2.to_v")
"""Cross-attention key/value projections read the 77 text tokens: too few rows to pay for FP8."""


class AccelerationError(RuntimeError):
    """A requested speed-up cannot be used here; the message says why, in one line."""


def resolve_compile(mode: str, device: torch.device, low_vram: bool) -> str:
    """The compile mode that applies: ``auto`` becomes ``regional`` on CUDA; anything but ``off``
    falls back to ``off`` (with a warning) off CUDA or with offloading."""
    if mode == "off":
        return "off"
    if device.type != "cuda" or low_vram:
        if mode != "auto":
            log.warning(
                "OUTPAINT_COMPILE=%s only applies to CUDA without low-VRAM mode; running eagerly", mode
            )
        return "off"
    return "regional" if mode == "auto" else mode


def use_compile_cache(directory: Path | None) -> None:
    """Point torch's compiler caches at ``directory`` unless the environment already chose one."""
    if directory is None or os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        return
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(directory)
    log.info("compiled kernels are cached in %s", directory)


def fp8_supported(device: torch.device) -> str | None:
    """None when FP8 linear layers can run on ``device``, else the reason they cannot."""
    if device.type != "cuda":
        return "FP8 needs a CUDA GPU"
    if torch.cuda.get_device_capability(device) < (8, 9):
        return "FP8 needs an NVIDIA GPU of compute capability 8.9 or newer (Ada, Hopper)"
    try:
        import torchao  # noqa: F401
    except ImportError:
        return "FP8 needs the torchao package (pip install 'outpaint-bot[fp8]')"
    return None


def quantize_fp8(unet: torch.nn.Module) -> int:
    """Float8 weights and dynamic float8 activations (per-row scales) for the transformer blocks'
    large linear layers; returns how many layers were converted."""
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    chosen: list[str] = []

    def large_block_linear(module: torch.nn.Module, name: str) -> bool:
        wanted = (
            isinstance(module, torch.nn.Linear)
            and ".transformer_blocks." in f".{name}"
            and ".processor." not in name  # IP-Adapter projections: their input is fixed per window
            and not name.endswith(FP8_SKIPPED)
            and min(module.in_features, module.out_features) >= FP8_MIN_FEATURES
            and module.in_features % 16 == 0
            and module.out_features % 16 == 0
        )
        if wanted:
            chosen.append(name)
        return wanted

    quantize_(
        unet,
        # set_inductor_config would switch on coordinate-descent autotuning for every later compile
        # in the process (FP8 or not): each kernel then tunes at its first run, which made a
        # regional compile of the H200 take many minutes instead of about forty seconds.
        Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False),
        filter_fn=large_block_linear,
    )
    return len(chosen)


def compile_options() -> dict[str, Any]:
    """Keyword arguments for ``torch.compile`` that lift the recompile limit to
    :data:`RECOMPILE_LIMIT` in every thread.

    Setting ``torch._dynamo.config.recompile_limit`` only holds in the thread that set it (torch
    keeps user overrides per thread since 2.13), while jobs run, and may meet a new batch size, on
    the worker's job threads: past the default limit a block would silently run eagerly. Where
    ``torch.compile`` takes the limit itself it goes there; older versions keep one global config.
    """
    if "recompile_limit" in inspect.signature(torch.compile).parameters:
        return {"dynamic": False, "recompile_limit": RECOMPILE_LIMIT}
    from torch._dynamo import config

    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)
    return {"dynamic": False}


def compile_regions(model: torch.nn.Module, names: Sequence[str] = COMPILED_REGIONS) -> int:
    """Compile every submodule whose class is named in ``names`` in place; returns how many.

    All copies of one block class share one compiled code per input shape, so compiling a UNet
    this way costs a few block compilations instead of one huge graph.
    """
    options = compile_options()
    count = 0
    for module in model.modules():
        if type(module).__name__ in names:
            module.compile(**options)
            count += 1
    return count


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]
    output: torch.Tensor


class GraphedUNet:
    """Calls the UNet through a CUDA graph captured for each distinct set of input shapes.

    The first call with new shapes runs the UNet a few times on a side stream (compiling what is
    compiled), then captures one call; every call copies its inputs into the graph's static
    tensors, replays it and returns a copy of the output. Python-level values the UNet reads (the
    IP-Adapter scale) are baked into a graph: :meth:`reset` drops the graphs after changing them.
    Calls must not overlap (the batcher runs one at a time).
    """

    def __init__(self, unet: torch.nn.Module, *, warmup: int = 2) -> None:
        self.unet = unet
        self.warmup = warmup
        self._graphs: dict[tuple, _Captured] = {}
        self._pool: Any = None
        self._lock = threading.Lock()

    @property
    def config(self) -> Any:
        return self.unet.config

    def reset(self) -> None:
        with self._lock:
            self._graphs.clear()

    def __call__(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        *,
        encoder_hidden_states: torch.Tensor,
        added_cond_kwargs: dict[str, Any],
        return_dict: bool = False,
    ) -> tuple[torch.Tensor]:
        flat, rebuild = _flatten(sample, timestep, encoder_hidden_states, added_cond_kwargs)
        key = tuple((tuple(t.shape), t.dtype, t.device) for t in flat)
        with self._lock:
            captured = self._graphs.get(key)
            if captured is None:
                captured = self._graphs[key] = self._capture(flat, rebuild)
            for static, value in zip(captured.inputs, flat, strict=True):
                static.copy_(value)
            captured.graph.replay()
            return (captured.output.clone(),)

    def _forward(self, flat: list[torch.Tensor], rebuild: Callable) -> torch.Tensor:
        sample, timestep, states, added = rebuild(flat)
        return self.unet(
            sample, timestep, encoder_hidden_states=states, added_cond_kwargs=added, return_dict=False
        )[0]

    def _capture(self, flat: list[torch.Tensor], rebuild: Callable) -> _Captured:
        log.info("capturing a CUDA graph of the UNet for inputs %s", [tuple(t.shape) for t in flat[:1]])
        static = [t.clone() for t in flat]
        side = torch.cuda.Stream(device=static[0].device)
        side.wait_stream(torch.cuda.current_stream(static[0].device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):  # compiles (regional mode) and settles lazy initialisation
                self._forward(static, rebuild)
        torch.cuda.current_stream(static[0].device).wait_stream(side)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool, capture_error_mode="thread_local"):
            output = self._forward(static, rebuild)
        return _Captured(graph, static, output)


def _flatten(
    sample: torch.Tensor, timestep: torch.Tensor, states: torch.Tensor, added: dict[str, Any]
) -> tuple[list[torch.Tensor], Callable[[list[torch.Tensor]], tuple]]:
    """The UNet's tensor inputs as one list, and how to put such a list back into arguments."""
    image = added.get("image_embeds")
    flat = [sample, timestep, states, added["text_embeds"], added["time_ids"], *(image or [])]

    def rebuild(tensors: list[torch.Tensor]) -> tuple:
        rebuilt = {"text_embeds": tensors[3], "time_ids": tensors[4]}
        if image is not None:
            rebuilt["image_embeds"] = list(tensors[5:])
        return tensors[0], tensors[1], tensors[2], rebuilt

    return flat, rebuild


def accelerate_unet(
    unet: torch.nn.Module, mode: str, *, fp8: bool
) -> Callable[..., tuple[torch.Tensor, ...]]:
    """Prepare ``unet`` (already on its CUDA device) for ``mode`` (resolved, not ``auto``); return
    what the denoising loop should call."""
    if fp8:
        log.info("FP8: %d linear layers of the UNet converted to float8", quantize_fp8(unet))
    if mode == "off":
        return unet
    if mode in ("default", "reduce-overhead"):
        unet.compile(mode=mode, **compile_options())
        return unet
    if mode == "regional":
        log.info("compiling %d UNet blocks (regional compilation)", compile_regions(unet))
    elif mode != "graphs":
        raise AccelerationError(f"unknown compile mode {mode!r}")
    return GraphedUNet(unet)
