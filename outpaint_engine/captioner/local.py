"""The local backend: a transformers image-text-to-text model in the worker's own process.

Any model that transformers loads with ``AutoModelForImageTextToText`` and a processor with a chat
template will do (SmolVLM, Qwen2-VL / Qwen2.5-VL, LLaVA, Gemma 3...). It is loaded on the first
caption, not with SDXL, so a worker whose jobs all have prompts never pays for it; in low-VRAM mode
its weights stay on the CPU between captions. Decoding is greedy, bounded in tokens and in time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from outpaint_engine.captioner import CaptionError

log = logging.getLogger(__name__)

Loader = Callable[[], tuple[torch.nn.Module, Any]]
"""Returns (model, processor); raises with a one-line message when it cannot."""


def load_vision_language_model(
    source: str, device: torch.device, dtype: torch.dtype, *, offload: bool = False
) -> tuple[torch.nn.Module, Any]:
    """Model and processor from a hub id or a local folder, placed on ``device`` (CPU if offloaded).

    Raises what transformers raises (``OSError``, ``ValueError``...).
    """
    from transformers import AutoModelForImageTextToText, AutoProcessor

    local = Path(source).expanduser().is_dir()
    processor = AutoProcessor.from_pretrained(source, local_files_only=local)
    model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, local_files_only=local)
    return model.to("cpu" if offload else device).eval(), processor


class LocalCaptioner:
    """A transformers VLM, loaded by ``load`` on the first :meth:`describe`.

    A failed load is remembered: later captions fail at once with the same reason rather than
    trying again for every job. Not thread-safe (the engine serialises captions).
    """

    def __init__(
        self,
        load: Loader,
        device: torch.device,
        *,
        name: str = "local model",
        offload: bool = False,
        max_new_tokens: int = 60,
        timeout_s: float | None = None,
    ) -> None:
        self._load = load
        self.device = device
        self.name = name
        self.offload = offload  # keep the weights on the CPU between captions
        self.max_new_tokens = max_new_tokens
        self.timeout_s = timeout_s  # generation stops after this long (the answer may be cut)
        self.model: torch.nn.Module | None = None
        self.processor: Any = None
        self._load_failure: str | None = None

    def __repr__(self) -> str:
        return f"LocalCaptioner({self.name!r}, loaded={self.model is not None})"

    def ensure_loaded(self) -> None:
        """Load the model now (the first caption does otherwise); raises :class:`CaptionError`."""
        if self.model is not None:
            return
        if self._load_failure is not None:
            raise CaptionError("the captioner model could not be loaded", self._load_failure)
        started = time.monotonic()
        try:
            self.model, self.processor = self._load()
        except Exception as exc:
            self._load_failure = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise CaptionError("the captioner model could not be loaded", self._load_failure) from exc
        log.info("captioner %s loaded in %.1f s", self.name, time.monotonic() - started)

    @torch.inference_mode()
    def describe(self, picture: Image.Image, question: str) -> str:
        self.ensure_loaded()
        model, processor = self.model, self.processor
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = processor(images=picture, text=text, return_tensors="pt")
        if self.offload:
            model.to(self.device)
        try:
            dtype = next(model.parameters()).dtype
            inputs = {
                k: v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device)
                for k, v in inputs.items()
            }
            output = model.generate(
                **inputs, max_new_tokens=self.max_new_tokens, max_time=self.timeout_s, do_sample=False
            )
        finally:
            if self.offload:
                model.to("cpu")
        answer = output[0, inputs["input_ids"].shape[1] :]
        return processor.decode(answer, skip_special_tokens=True)
