"""Static cross-attention keys and values (window_context.py): the same pixels as the stock UNet,
one compiled block for every layer, and a stock UNet left alone where it does not apply."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor

from outpaint_engine import fast_unet, window_context
from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.runner import Outpainter
from tests.conftest import TINY_STEPS, TINY_WINDOW

SPEC = JobSpec(Direction.RIGHT, times=2, expand_px=16, steps=TINY_STEPS, window=TINY_WINDOW, seed=4)


def _photo() -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (64, 80, 3), dtype=np.uint8)


@pytest.mark.parametrize("ip_adapter", [True, False], ids=["ip-adapter", "text-only"])
def test_the_same_pixels_as_the_stock_unet(tiny_engine_settings: dict[str, Any], ip_adapter: bool) -> None:
    settings = {**tiny_engine_settings, **({} if ip_adapter else {"ip_adapter": ""})}
    packed = Outpainter.load(**settings)
    stock = Outpainter.load(**settings, static_context=False)
    assert packed.models.context is not None and stock.models.context is None
    assert (packed.models.context.image_projection is not None) == ip_adapter
    spec = replace(SPEC, ip_adapter_scale=0.7)
    want = [r.canvas for r in stock.run(_photo(), spec)]
    got = [r.canvas for r in packed.run(_photo(), spec)]
    for a, b in zip(want, got, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_image_tokens_still_count(tiny_engine: Outpainter) -> None:
    # The IP-Adapter's keys and values come from the packed image tokens: its scale moves pixels.
    models = tiny_engine.models
    assert models.context is not None
    with torch.inference_mode():
        embeds = models.encode_crops([np.zeros((30, 30, 3), np.uint8)] * 6, guidance=True)
        cond = models.conditioning(models.encode_text("", "", guidance=True), embeds, TINY_WINDOW)
    (tokens,) = cond.image_embeds
    assert tokens.shape[:2] == (2, 6 * 16) and tokens.shape[2] == cond.prompt_embeds.shape[2]
    weak, strong = (
        [r.canvas for r in tiny_engine.run(_photo(), replace(SPEC, ip_adapter_scale=scale))][-1].astype(float)
        for scale in (0.0, 1.0)
    )
    assert np.abs(weak - strong).mean() > 0.5


def test_one_compiled_block_serves_every_layer(tiny_engine_settings: dict[str, Any]) -> None:
    """The columns each layer selects are a buffer, not a constant: a compiled block is shared by
    every layer of its shape instead of being compiled once per layer."""
    from torch._dynamo.utils import counters

    engine = Outpainter.load(**tiny_engine_settings)
    unet = engine.models.unet
    blocks = [m for m in unet.modules() if type(m).__name__ == "BasicTransformerBlock"]
    widths = {b.attn2.to_out[0].out_features for b in blocks}
    assert len(blocks) > len(widths)
    torch._dynamo.reset()
    for block in blocks:
        block.compile(backend="eager", **fast_unet.compile_options())
    before = counters["stats"]["unique_graphs"]
    with torch.inference_mode():
        list(engine.run(_photo(), replace(SPEC, times=1)))
    assert counters["stats"]["unique_graphs"] - before == len(widths)


def test_a_unet_it_does_not_know_is_left_alone(tiny_engine_settings: dict[str, Any]) -> None:
    engine = Outpainter.load(**tiny_engine_settings, static_context=False)
    unet = engine.models.unet
    unet.set_attn_processor(AttnProcessor())  # the pre-2.0 processor, whose inputs it does not pack
    layers = {name for name, m in unet.named_modules() if isinstance(m, torch.nn.Linear)}
    assert window_context.install(unet) is None
    assert {name for name, m in unet.named_modules() if isinstance(m, torch.nn.Linear)} == layers
