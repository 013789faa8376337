"""The optional captioner: a tiny random VLM loaded through transformers, and its use as the prompt."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from outpaint_engine.captioner import MAX_CHARS, VisionLanguageCaptioner, clean_caption
from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.models import ModelLoadError, load_captioner
from outpaint_engine.runner import Outpainter
from outpaint_engine.settings import EngineSettings
from tests.conftest import TINY_STEPS, TINY_WINDOW

SPEC = JobSpec(direction=Direction.RIGHT, times=2, expand_px=16, steps=TINY_STEPS, window=TINY_WINDOW, seed=4)


class FixedCaptioner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.images: list[tuple[int, ...]] = []

    def caption(self, image: np.ndarray) -> str:
        self.images.append(image.shape)
        return self.text


def _photo() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (64, 80, 3), dtype=np.uint8)


def test_clean_caption_keeps_one_plain_line() -> None:
    assert clean_caption('  "The image shows a man by a lake."\nMore text') == "a man by a lake."
    assert clean_caption("\n\nred\x07 eggs   in a\tnest") == "red eggs in a nest"
    assert clean_caption("") == ""
    long = clean_caption("word " * 100)
    assert len(long) <= MAX_CHARS
    assert long.endswith("word")


def test_a_tiny_vlm_loads_and_writes_one_deterministic_line(
    tiny_captioner_dir: Path, tiny_engine_settings: dict[str, Any]
) -> None:
    engine = Outpainter.load(**{**tiny_engine_settings, "captioner": str(tiny_captioner_dir)})
    captioner = engine.captioner
    assert isinstance(captioner, VisionLanguageCaptioner)
    first = captioner.caption(_photo())
    assert first == captioner.caption(_photo())  # greedy decoding
    assert "\n" not in first
    assert first.isprintable()
    assert len(first) <= MAX_CHARS
    assert [r.canvas.shape for r in engine.run(_photo(), SPEC)] == [(64, 96, 3), (64, 112, 3)]


def test_no_captioner_by_default(tiny_engine_settings: dict[str, Any], tmp_path: Path) -> None:
    assert load_captioner(EngineSettings(**tiny_engine_settings)) is None
    with pytest.raises(ModelLoadError, match="captioner"):
        load_captioner(EngineSettings(**{**tiny_engine_settings, "captioner": str(tmp_path / "missing")}))


def test_the_caption_is_the_prompt_only_when_the_job_has_none(
    tiny_engine: Outpainter, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts: list[str] = []
    original = tiny_engine.models.encode_text

    def spy(prompt: str, negative: str, *, guidance: bool):
        prompts.append(prompt)
        return original(prompt, negative, guidance=guidance)

    captioner = FixedCaptioner("a man by a lake")
    engine = Outpainter(tiny_engine.models, tiny_engine.settings, captioner)
    monkeypatch.setattr(tiny_engine.models, "encode_text", spy)
    captioned = list(engine.run(_photo(), SPEC))
    list(engine.run(_photo(), replace(SPEC, prompt="a nest")))
    assert prompts == ["a man by a lake", "a nest"]
    assert captioner.images == [(64, 80, 3)]  # the source, once per job
    plain = list(tiny_engine.run(_photo(), replace(SPEC, prompt="a man by a lake")))
    np.testing.assert_array_equal(captioned[-1].canvas, plain[-1].canvas)


def test_a_failing_captioner_does_not_fail_the_job(tiny_engine: Outpainter) -> None:
    class Broken:
        def caption(self, image: np.ndarray) -> str:
            raise RuntimeError("out of memory")

    engine = Outpainter(tiny_engine.models, tiny_engine.settings, Broken())
    results = list(engine.run(_photo(), SPEC))
    uncaptioned = list(tiny_engine.run(_photo(), SPEC))
    np.testing.assert_array_equal(results[-1].canvas, uncaptioned[-1].canvas)
