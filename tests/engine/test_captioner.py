"""The captioner: its question and answer cleaning, the local backend on a tiny random VLM loaded
through transformers, and the engine's use of it (the prompt of a job without one, never a failure).

The OpenAI-compatible backend is in test_captioner_openai.py.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from outpaint_engine.captioner import MAX_CHARS, Caption, clean_caption
from outpaint_engine.captioner.local import LocalCaptioner
from outpaint_engine.captioner.prompt import MAX_IMAGE_SIDE, bounded_image, instruction
from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.models import ModelLoadError, load_captioner
from outpaint_engine.runner import Outpainter
from outpaint_engine.settings import EngineSettings
from tests.conftest import TINY_STEPS, TINY_WINDOW

SPEC = JobSpec(direction=Direction.RIGHT, times=1, expand_px=16, steps=TINY_STEPS, window=TINY_WINDOW, seed=4)


class ScriptedCaptioner:
    """A backend that answers ``text`` (or raises ``error``) and remembers what it was asked."""

    def __init__(self, text: str = "", error: Exception | None = None) -> None:
        self.text = text
        self.error = error
        self.asked: list[tuple[tuple[int, int], str]] = []

    def describe(self, picture: Image.Image, question: str) -> str:
        self.asked.append((picture.size, question))
        if self.error:
            raise self.error
        return self.text


def _photo(width: int = 80, height: int = 64) -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)


# --- the question and the answer ------------------------------------------------------------------


def test_the_question_names_the_side_that_grows() -> None:
    assert "beyond its right edge" in instruction("right")
    assert "beyond its top edge" in instruction(Direction.UP)
    assert "beyond its bottom edge" in instruction("down")
    assert "on all sides" in instruction(None)  # a zoom-out
    assert "plain" in instruction("left")
    with pytest.raises(ValueError, match="unknown direction"):
        instruction("sideways")


@pytest.mark.parametrize(
    ("answer", "kept"),
    [
        ('  "The image shows a man by a lake."\nMore text', "a man by a lake."),
        ("\n\nred\x07 eggs   in a\tnest", "red eggs in a nest"),
        ("Sure! Here is a caption:\n\n**A red barn** in a _snowy_ field", "A red barn in a snowy field"),
        ("Caption: “a narrow street at dusk”", "a narrow street at dusk"),
        ("- a pier over calm water\n- boats", "a pier over calm water"),
        ("<think>the user wants...</think>a forest path in fog<|im_end|>", "a forest path in fog"),
    ],
)
def test_an_answer_is_cut_to_one_plain_line(answer: str, kept: str) -> None:
    assert clean_caption(answer) == kept


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   \n ",
        "I'm sorry, but I can't help with that.",
        "As an AI, I cannot see images.",
        "!!!! ???? 1234 ####",
        "🙂🙂🙂",
        "<think>still thinking when the tokens ran out",
        None,
        42,
        ["a", "list"],
    ],
)
def test_garbage_is_no_prompt(answer: object) -> None:
    assert clean_caption(answer) == ""


def test_a_long_answer_is_cut_at_a_word() -> None:
    answer = "a tall tree, " * 40
    long = clean_caption(answer)
    assert MAX_CHARS - 15 < len(long) <= MAX_CHARS
    assert answer.startswith(long)
    assert answer[len(long)] in " ,"  # a whole word, no dangling comma
    assert not long.endswith(",")


def test_the_picture_sent_is_bounded_and_keeps_its_shape() -> None:
    big = bounded_image(_photo(3000, 1500))
    assert big.size == (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE // 2)
    assert bounded_image(_photo(80, 64)).size == (80, 64)  # small pictures go as they are


# --- the engine: the caption is the prompt of a job without one; failures are reasons --------------


def prompts_seen(engine: Outpainter, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The prompts ``engine`` encodes from now on."""
    prompts: list[str] = []
    original = engine.models.encode_text

    def spy(prompt: str, negative: str, *, guidance: bool):
        prompts.append(prompt)
        return original(prompt, negative, guidance=guidance)

    monkeypatch.setattr(engine.models, "encode_text", spy)
    return prompts


def test_the_caption_is_the_prompt_only_when_the_job_has_none(
    tiny_engine: Outpainter, monkeypatch: pytest.MonkeyPatch
) -> None:
    captioner = ScriptedCaptioner('"A man by a lake."')
    engine = Outpainter(tiny_engine.models, tiny_engine.settings, captioner)
    prompts = prompts_seen(tiny_engine, monkeypatch)
    captioned = list(engine.run(_photo(), SPEC))
    list(engine.run(_photo(), replace(SPEC, prompt="a nest")))
    list(engine.run(_photo(), SPEC, auto_prompt=False))  # a caller that captioned the job itself
    assert prompts == ["A man by a lake.", "a nest", ""]
    assert [size for size, _ in captioner.asked] == [(80, 64)]  # the source, once per job
    assert "right edge" in captioner.asked[0][1]
    plain = list(tiny_engine.run(_photo(), replace(SPEC, prompt="A man by a lake.")))
    np.testing.assert_array_equal(captioned[-1].canvas, plain[-1].canvas)


def test_caption_asks_about_the_jobs_direction(tiny_engine: Outpainter) -> None:
    captioner = ScriptedCaptioner("a wide field")
    engine = Outpainter(tiny_engine.models, tiny_engine.settings, captioner)
    assert engine.caption(_photo(), Direction.UP) == Caption("a wide field")
    assert engine.caption(_photo(), None) == Caption("a wide field")
    assert ["top edge" in q for _, q in captioner.asked] == [True, False]
    assert "all sides" in captioner.asked[1][1]
    assert tiny_engine.caption(_photo(), "right") == Caption("", "no captioner is configured")


def test_a_failing_captioner_gives_a_reason_and_one_log_line(
    tiny_engine: Outpainter, caplog: pytest.LogCaptureFixture
) -> None:
    engine = Outpainter(
        tiny_engine.models, tiny_engine.settings, ScriptedCaptioner(error=RuntimeError("OOM"))
    )
    with caplog.at_level(logging.INFO):
        caption = engine.caption(_photo(), "right")
        results = list(engine.run(_photo(), SPEC))
    assert caption == Caption("", "the captioner failed (RuntimeError)")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "no auto prompt: the captioner failed (RuntimeError) (OOM)"
    ] * 2
    assert all(r.exc_info is None for r in caplog.records if r.levelno >= logging.INFO)
    uncaptioned = list(tiny_engine.run(_photo(), SPEC))
    np.testing.assert_array_equal(results[-1].canvas, uncaptioned[-1].canvas)


def test_a_useless_answer_is_no_prompt(tiny_engine: Outpainter) -> None:
    engine = Outpainter(tiny_engine.models, tiny_engine.settings, ScriptedCaptioner("I'm sorry, I can't."))
    assert engine.caption(_photo(), "left") == Caption(
        "", "the captioner's answer was not a usable description"
    )


def test_concurrent_jobs_take_turns_at_the_captioner(tiny_engine: Outpainter) -> None:
    inside, release = threading.Event(), threading.Event()
    active, most = [0], [0]

    class Slow:
        def describe(self, picture: Image.Image, question: str) -> str:
            active[0] += 1
            most[0] = max(most[0], active[0])
            inside.set()
            release.wait(timeout=30)
            active[0] -= 1
            return "a harbour"

    engine = Outpainter(tiny_engine.models, tiny_engine.settings, Slow())
    captions: list[Caption] = []
    first = threading.Thread(target=lambda: captions.append(engine.caption(_photo(), "right")))
    second = threading.Thread(target=lambda: captions.append(engine.caption(_photo(), "left")))
    first.start()
    assert inside.wait(timeout=30)
    second.start()
    second.join(timeout=0.2)
    assert second.is_alive()  # waiting for the first caption, not running beside it
    release.set()
    first.join(timeout=30)
    second.join(timeout=30)
    assert captions == [Caption("a harbour")] * 2
    assert most[0] == 1


# --- the local backend: a tiny random LLaVA through the real loaders --------------------------------


def test_the_local_model_loads_on_first_use_and_answers_deterministically(
    tiny_captioner_dir: Path, tiny_engine_settings: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Outpainter.load(**{**tiny_engine_settings, "captioner": str(tiny_captioner_dir)})
    captioner = engine.captioner
    assert isinstance(captioner, LocalCaptioner)
    assert captioner.model is None  # nothing loaded with SDXL
    picture = bounded_image(_photo())
    first = captioner.describe(picture, instruction("down"))
    assert captioner.model is not None
    assert isinstance(first, str) and first
    prompts: list[str] = []
    generate = captioner.model.generate

    def spy(**inputs: Any):
        prompts.append(captioner.processor.decode(inputs["input_ids"][0]))
        return generate(**inputs)

    monkeypatch.setattr(captioner.model, "generate", spy)
    assert first == captioner.describe(picture, instruction("down"))  # greedy decoding
    assert "beyond its bottom edge" in prompts[0]  # the question reached the model
    captioner.timeout_s = 1e-9  # generation stops after its first token once the time is up
    assert len(captioner.describe(picture, instruction("down"))) < len(first)
    caption = engine.caption(_photo(), "down")  # random weights: a line of words or a reason, never both
    assert bool(caption.text) != bool(caption.reason)
    assert caption.text == clean_caption(first)
    assert [r.canvas.shape for r in engine.run(_photo(), SPEC)] == [(64, 96, 3)]


def test_a_local_model_that_cannot_load_is_a_reason_once_per_job(
    tiny_engine: Outpainter, tiny_engine_settings: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    settings = EngineSettings(**{**tiny_engine_settings, "captioner": "nobody/no-such-vlm"})
    captioner = load_captioner(settings)  # a hub id: checked when it is first needed
    assert isinstance(captioner, LocalCaptioner)
    engine = Outpainter(tiny_engine.models, settings, captioner)
    with caplog.at_level(logging.WARNING):
        first = engine.caption(_photo(), "right")
        second = engine.caption(_photo(), "right")
    assert first == second == Caption("", "the captioner model could not be loaded")
    # Warnings only: the INFO line of load_captioner is captured too when an earlier test (the
    # queue's, run first) left the package's loggers at INFO.
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 2
    assert "not in the local Hugging Face cache" in warnings[0].getMessage()
    assert warnings[0].exc_info is None


def test_captioner_settings(tiny_engine_settings: dict[str, Any], tmp_path: Path) -> None:
    assert load_captioner(EngineSettings(**tiny_engine_settings)) is None  # off by default
    with pytest.raises(ModelLoadError, match="captioner not found"):
        load_captioner(EngineSettings(**{**tiny_engine_settings, "captioner": str(tmp_path / "missing")}))
    openai = {**tiny_engine_settings, "captioner": "openai"}
    with pytest.raises(ModelLoadError, match="OUTPAINT_CAPTIONER_URL"):
        load_captioner(EngineSettings(**openai))
    with pytest.raises(ModelLoadError, match="OUTPAINT_CAPTIONER_URL"):
        load_captioner(EngineSettings(**openai, captioner_url="localhost:8000/v1"))  # no scheme
    with pytest.raises(ModelLoadError, match="OUTPAINT_CAPTIONER_MODEL"):
        load_captioner(EngineSettings(**openai, captioner_url="http://127.0.0.1:9/v1"))


def test_a_smolvlm_shaped_model_loads_and_sees_its_image_tiles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Idefics3 (SmolVLM) builder that bench/bench_captioner.py uses at SmolVLM-256M's shapes."""
    from tests.tiny_models import TINY_VLM, save_smolvlm

    path = save_smolvlm(tmp_path / "smolvlm")
    captioner = load_captioner(
        EngineSettings(captioner=str(path), device="cpu", dtype="fp32", captioner_max_tokens=8)
    )
    assert isinstance(captioner, LocalCaptioner)
    captioner.ensure_loaded()
    assert type(captioner.model).__name__ == "Idefics3ForConditionalGeneration"
    seen: list[Any] = []
    generate = captioner.model.generate
    monkeypatch.setattr(
        captioner.model, "generate", lambda **kw: seen.append(kw["input_ids"][0]) or generate(**kw)
    )
    answer = captioner.describe(bounded_image(_photo(500, 300)), instruction("right"))
    assert isinstance(answer, str)
    tiles = 2 * 2 + 1  # 500×300 → 64×38 px: 2×2 tiles of 32 px, and the global one
    image_token = captioner.model.config.image_token_id
    assert int((seen[0] == image_token).sum()) == tiles * TINY_VLM.tokens_per_tile
