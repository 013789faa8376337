"""The IP-Adapter crops' device preprocessing against transformers' own processor (on the CPU; the
same check on CUDA is in test_gpu.py)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from transformers import CLIPImageProcessorPil as CLIPImageProcessor  # the twin reproduces the PIL backend

from outpaint_engine.crop_pixels import CropPixels, resize_coefficients
from outpaint_engine.runner import Outpainter

CPU = torch.device("cpu")


def crops_of(side: int, seed: int = 0) -> list[np.ndarray]:
    """Six crops: noise, plus flat white and hard stripes (their overshoot exercises the clipping)."""
    rng = np.random.default_rng(seed)
    crops = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(6)]
    crops[0][:] = 255
    crops[1][::2] = 0
    crops[2][:, 1::3] = 255
    return crops


@pytest.mark.parametrize("side", [7, 21, 223, 224, 225, 341, 1000])
def test_equals_the_processor_bit_for_bit(side: int) -> None:
    processor = CLIPImageProcessor(size=224, crop_size=224)  # what diffusers gives an IP-Adapter
    device_twin = CropPixels.matching(processor)
    assert device_twin is not None
    crops = crops_of(side, seed=side)
    want = processor(images=crops, return_tensors="pt").pixel_values
    got = device_twin(crops, CPU)
    assert got.dtype == want.dtype and got.shape == want.shape == (6, 3, 224, 224)
    assert torch.equal(got, want)


def test_follows_the_processor_s_own_normalisation() -> None:
    processor = CLIPImageProcessor(
        size=32, crop_size=32, image_mean=[0.1, 0.5, 0.9], image_std=[0.2, 0.3, 0.4]
    )
    crops = crops_of(50)
    want = processor(images=crops, return_tensors="pt").pixel_values
    assert torch.equal(CropPixels.matching(processor)(crops, CPU), want)


@pytest.mark.parametrize(
    "settings",
    [
        {"resample": 2},  # bilinear
        {"size": 224, "crop_size": 200},
        {"size": {"height": 224, "width": 256}, "do_center_crop": False},
        {"do_resize": False},
    ],
)
def test_other_settings_stay_with_the_processor(settings: dict[str, Any]) -> None:
    assert CropPixels.matching(CLIPImageProcessor(**settings)) is None
    assert CropPixels.matching(object()) is None


def test_crops_of_other_shapes_are_refused() -> None:
    twin = CropPixels.matching(CLIPImageProcessor(size=224, crop_size=224))
    with pytest.raises(ValueError, match="square"):
        twin([np.zeros((30, 40, 3), np.uint8)], CPU)
    with pytest.raises(ValueError, match="one size"):
        twin([np.zeros((30, 30, 3), np.uint8), np.zeros((31, 31, 3), np.uint8)], CPU)


def test_coefficients_sum_to_one_in_fixed_point() -> None:
    for in_size, out_size in [(341, 224), (21, 224), (1000, 224)]:
        sums = resize_coefficients(in_size, out_size).sum(axis=1)
        assert np.all(np.abs(sums - (1 << 22)) <= 8)


def test_the_engine_keeps_the_processor_on_the_cpu(tiny_engine: Outpainter) -> None:
    # Pillow is faster than float64 matrix products on a CPU; the device twin is for CUDA only.
    assert tiny_engine.models.ip_adapter and tiny_engine.models._crop_pixels is None
