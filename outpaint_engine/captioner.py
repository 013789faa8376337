"""An optional local vision-language model that writes the prompt when the user gave none.

Off by default (``EngineSettings.captioner`` empty). Any image-text-to-text model that
transformers loads with ``AutoModelForImageTextToText`` and a chat-template processor will do
(LLaVA, Qwen-VL, SmolVLM, Gemma 3...). Plain words work better than flowery ones, so the model
is asked for one plain sentence and its answer is cut down to one short line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

INSTRUCTION = (
    "Describe this photo in one short, plain sentence: what is in it and where. "
    "Use simple words; no opinions, no praise."
)
MAX_CHARS = 200  # about what fits the text encoders' 77 tokens
_FILLER = re.compile(r"^(the|this) (image|photo|picture) (shows|depicts|captures)\s+", re.IGNORECASE)


class Captioner(Protocol):
    def caption(self, image: np.ndarray) -> str:
        """One plain line describing an H×W×3 uint8 RGB image ("" when there is nothing to say)."""
        ...


def clean_caption(text: str) -> str:
    """The first non-empty line, printable characters only, without filler, at most MAX_CHARS."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = " ".join("".join(ch for ch in word if ch.isprintable()) for word in line.split())
    line = " ".join(line.split()).strip(" \"'")
    line = _FILLER.sub("", line)
    if len(line) > MAX_CHARS:
        line = line[:MAX_CHARS].rsplit(" ", 1)[0]
    return line


class VisionLanguageCaptioner:
    """A transformers image-text-to-text model, asked for one plain sentence (greedy decoding)."""

    def __init__(
        self,
        model: torch.nn.Module,
        processor: object,
        device: torch.device,
        *,
        offload: bool = False,
        max_new_tokens: int = 60,
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.device = device
        self.offload = offload  # keep the weights on the CPU between captions
        self.max_new_tokens = max_new_tokens

    @classmethod
    def load(
        cls, source: str, device: torch.device, dtype: torch.dtype, *, offload: bool = False
    ) -> VisionLanguageCaptioner:
        """Load from a hub id or a local folder; raises ``OSError``/``ValueError`` from transformers."""
        from transformers import AutoModelForImageTextToText, AutoProcessor

        local = Path(source).expanduser().is_dir()
        processor = AutoProcessor.from_pretrained(source, local_files_only=local)
        model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, local_files_only=local)
        model.to("cpu" if offload else device)
        return cls(model, processor, device, offload=offload)

    @torch.inference_mode()
    def caption(self, image: np.ndarray) -> str:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": INSTRUCTION}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(images=Image.fromarray(image), text=text, return_tensors="pt")
        if self.offload:
            self.model.to(self.device)
        try:
            dtype = next(self.model.parameters()).dtype
            inputs = {
                k: v.to(self.device, dtype) if v.is_floating_point() else v.to(self.device)
                for k, v in inputs.items()
            }
            output = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        finally:
            if self.offload:
                self.model.to("cpu")
        answer = output[0, inputs["input_ids"].shape[1] :]
        return clean_caption(self.processor.decode(answer, skip_special_tokens=True))
