"""What the captioner is asked and what is kept of its answer.

The question names the side the picture grows towards (or all sides for a zoom-out) and asks for
one plain line: the method's guide found plain descriptions work better than flowery ones. The
answer is cut down to one short line of words; anything else (empty, a refusal, symbols, an
unfinished "thinking" block) is no prompt at all. The image goes out bounded in size.
"""

from __future__ import annotations

import base64
import io
import re

import numpy as np
from PIL import Image

MAX_CHARS = 200
"""Longest caption kept: about what fits the SDXL text encoders' 77 tokens."""
MAX_IMAGE_SIDE = 768
"""The image sent to the captioner is scaled down to this long side (VLMs see far less anyway)."""
JPEG_QUALITY = 85

EDGES = {"left": "left edge", "right": "right edge", "up": "top edge", "down": "bottom edge"}

_THINKING = re.compile(r"<think>.*?(</think>|$)", re.IGNORECASE | re.DOTALL)
_SPECIAL_TOKEN = re.compile(r"<\|[^|>]*\|>|</?s>")
_PREAMBLE = re.compile(r"^(sure|certainly|of course|okay|here is|here's)\b", re.IGNORECASE)
_BULLET = re.compile(r"^([-*•]|\d+[.)])\s+")
_LABEL = re.compile(r"^(caption|prompt|description)\s*:\s*", re.IGNORECASE)
_MARKUP = re.compile(r"[*`#~|]+|(?<!\w)_+|_+(?!\w)")
_FILLER = re.compile(
    r"^(the|this) (image|photo|picture|scene) (shows|depicts|captures|features)\s+", re.IGNORECASE
)
_REFUSAL = re.compile(
    r"^(i'?m sorry|i am sorry|sorry|i can'?t|i cannot|i am unable|i'?m unable|i'?m not able|as an ai"
    r"|unfortunately)\b",
    re.IGNORECASE,
)
_QUOTES = "\"'“”‘’«»"
_MIN_LETTERS = 3
_MIN_LETTER_SHARE = 0.6  # of the non-space characters


def instruction(direction: str | None) -> str:
    """The question for a picture growing towards ``direction`` (left/right/up/down; None: all sides)."""
    if direction is None:
        where = "on all sides (the view widens)"
    elif str(direction) in EDGES:
        where = f"beyond its {EDGES[str(direction)]}"
    else:
        raise ValueError(f"unknown direction {direction!r} (use left, right, up, down or None)")
    return (
        f"This picture will be extended {where}. Write a plain caption of the extended picture in "
        "one short line: what continues there, then the rest of the scene. Simple words; no "
        "opinions, no praise, no lists, no quotes."
    )


def clean_caption(text: object) -> str:
    """One plain line of words from a model's answer, at most :data:`MAX_CHARS`; "" if unusable."""
    if not isinstance(text, str):
        return ""
    text = _SPECIAL_TOKEN.sub("", _THINKING.sub("", text))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    while len(lines) > 1 and (lines[0].endswith(":") or _PREAMBLE.match(lines[0])):
        lines.pop(0)  # "Sure! Here is a caption:" before the caption itself
    if not lines:
        return ""
    line = _MARKUP.sub("", _BULLET.sub("", lines[0]))
    line = " ".join("".join(ch for ch in word if ch.isprintable()) for word in line.split())
    line = _FILLER.sub("", _LABEL.sub("", line.strip(_QUOTES + " "))).strip(_QUOTES + " ")
    if _REFUSAL.match(line) or not _mostly_words(line):
        return ""
    if len(line) > MAX_CHARS:
        line = line[: MAX_CHARS + 1].rsplit(" ", 1)[0].rstrip(",;:-– ")
    return line


def _mostly_words(line: str) -> bool:
    letters = sum(ch.isalpha() for ch in line)
    visible = sum(not ch.isspace() for ch in line)
    return letters >= _MIN_LETTERS and letters >= _MIN_LETTER_SHARE * visible


def bounded_image(image: np.ndarray, max_side: int = MAX_IMAGE_SIDE) -> Image.Image:
    """An H×W×3 uint8 RGB array as a PIL image whose long side is at most ``max_side``."""
    picture = Image.fromarray(np.ascontiguousarray(image[..., :3])).convert("RGB")
    scale = max_side / max(picture.size)
    if scale < 1:
        size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    return picture


def jpeg_data_url(picture: Image.Image) -> str:
    """``data:image/jpeg;base64,...``: how chat-completions servers take an inline image."""
    buffer = io.BytesIO()
    picture.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
