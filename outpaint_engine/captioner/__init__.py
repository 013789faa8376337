"""The optional captioner: a vision-language model writes the prompt of a job that has none.

Two backends behind one setting (``OUTPAINT_CAPTIONER``, see docs/captioner.md):

- :class:`~outpaint_engine.captioner.local.LocalCaptioner`: a transformers image-text-to-text
  model in the worker's process, loaded on first use (``OUTPAINT_CAPTIONER=<hub id or folder>``);
- :class:`~outpaint_engine.captioner.remote.OpenAICaptioner`: any OpenAI-compatible
  chat-completions server with image input — vLLM, Ollama, LM Studio, llama.cpp's server, hosted
  APIs (``OUTPAINT_CAPTIONER=openai``).

A backend only answers a question about a picture (:class:`Captioner`); :func:`write_caption`
asks the direction-aware question (:mod:`.prompt`), keeps one plain line of the answer and never
raises: a failing, slow or babbling captioner gives a :class:`Caption` with no text and the reason,
logged as one line. This module and :mod:`.prompt` import without torch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from outpaint_engine.captioner.prompt import MAX_CHARS, bounded_image, clean_caption, instruction

__all__ = ["MAX_CHARS", "Caption", "CaptionError", "Captioner", "clean_caption", "write_caption"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Caption:
    """What the captioner wrote for a job: ``text`` (one plain line), or "" and the ``reason``.

    ``reason`` reads after "no auto prompt: ", e.g. "the captioner timed out".
    """

    text: str = ""
    reason: str | None = None


class CaptionError(Exception):
    """An expected failure of a captioner.

    ``str(error)`` is the short reason fit for a user ("the captioner timed out"); ``detail``
    (for the operator's log line) may say more, but never holds a secret.
    """

    def __init__(self, reason: str, detail: str | None = None) -> None:
        super().__init__(reason)
        self.detail = detail


class Captioner(Protocol):
    def describe(self, picture: Image.Image, question: str) -> str:
        """The model's raw answer to ``question`` about ``picture``; raises :class:`CaptionError`."""
        ...


UNUSABLE = "the captioner's answer was not a usable description"


def write_caption(captioner: Captioner, image: np.ndarray, direction: str | None) -> Caption:
    """Ask ``captioner`` what continues beyond ``direction`` (None: all sides) of an H×W×3 RGB image.

    Never raises for the captioner's sake (a bad ``direction`` is a ``ValueError``): on any failure
    the caption is empty and says why, in one log line without a traceback.
    """
    question = instruction(direction)
    started = time.monotonic()
    detail = None
    try:
        answer = captioner.describe(bounded_image(image), question)
    except CaptionError as exc:
        reason, detail = str(exc), exc.detail
    except Exception as exc:  # a bug or an out-of-memory in a backend: the job goes on regardless
        reason = f"the captioner failed ({type(exc).__name__})"
        detail = (str(exc).strip().splitlines() or [""])[0][:200]
        log.debug("captioner failure", exc_info=True)
    else:
        text = clean_caption(answer)
        if text:
            log.info("auto prompt (%.1f s): %s", time.monotonic() - started, text)
            return Caption(text)
        reason, detail = UNUSABLE, f"it answered {str(answer)[:80]!r}"
    log.warning("no auto prompt: %s%s", reason, f" ({detail})" if detail else "")
    return Caption("", reason)
