"""Content safety: the optional image check of the workers, its policies, and the operator's word list.

This module imports without torch (the bot reads the word list and the flag); the classifier's
libraries are imported when a worker loads it.

**The image check** is off unless ``OUTPAINT_SAFETY_MODEL`` names a model: a hub id or a local
folder that transformers' ``image-classification`` pipeline loads (an NSFW detector, say). After
every expansion the worker classifies the whole canvas, in square tiles along its long side (a
panorama is not squashed into the model's square input). A canvas is *flagged* when the summed
score of the unsafe labels (``OUTPAINT_SAFETY_LABELS``) in one tile reaches
``OUTPAINT_SAFETY_THRESHOLD``. What follows depends on where the job is shown
(:class:`~outpaint_engine.job.Audience`, set by the bot) and the policy for that
(``OUTPAINT_SAFETY_POLICY`` for ordinary server channels, ``OUTPAINT_SAFETY_AGE_RESTRICTED_POLICY``
for age-restricted channels and direct messages):

- ``block``: the job fails with :data:`BLOCKED`; the flagged canvas is never stored;
- ``spoiler``: the job goes on; its canvases are stored *marked* (a PNG text chunk, see
  :func:`mark_flagged`) and the bot posts marked canvases as spoilers;
- ``allow``: nothing is checked.

A flag is sticky: every later canvas of the job is marked without another check, and the job sends
no more previews. The mark travels inside the canvas PNG, so a job resumed from its checkpoint, and
a job that continues a flagged result, stay flagged.

**The word list** (``OUTPAINT_BLOCKED_WORDS``, ``OUTPAINT_BLOCKED_WORDS_FILE``): the bot refuses a
prompt that contains one of the words before queueing it; a worker checks a prompt written by a
model with the same :meth:`WordList.find`.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import unicodedata
import zlib
from collections.abc import Iterable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field, FilePath, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from outpaint_engine.job import Audience, Job

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger("outpaint.safety")

BLOCKED = (
    "the automatic content check flagged this picture as not suitable for this channel, "
    "so I stopped and nothing more of it will be posted."
)
"""The reason a blocked job fails with (shown to its requester): plain and non-graphic."""

MAX_TILES = 16
"""Most tiles one canvas is classified in (a longer canvas gets wider tiles)."""


class Policy(StrEnum):
    ALLOW = "allow"  # not checked
    SPOILER = "spoiler"  # posted behind Discord's spoiler blur
    BLOCK = "block"  # the job stops; nothing flagged is posted


class SafetySettings(BaseSettings):
    """The image check (workers) and the word list (bot and workers)."""

    model_config = SettingsConfigDict(
        env_prefix="OUTPAINT_", env_file=".env", extra="ignore", env_ignore_empty=True
    )

    safety_model: str = Field(
        "", description="Image classifier (hub id or local folder) for the content check; empty = off."
    )
    safety_labels: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["nsfw", "porn", "hentai"],
        description="Comma-separated labels of that model that count as unsafe (case-insensitive).",
    )
    safety_threshold: float = Field(
        0.5, gt=0, le=1, description="A canvas is flagged when its unsafe labels' summed score reaches this."
    )
    safety_policy: Policy = Field(
        Policy.BLOCK,
        description="A flagged canvas in a channel that is not age-restricted: block or spoiler.",
    )
    safety_age_restricted_policy: Policy = Field(
        Policy.ALLOW,
        description="A flagged canvas in an age-restricted channel or a DM: allow, spoiler or block.",
    )
    blocked_words: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Comma-separated words and phrases not allowed in prompts."
    )
    blocked_words_file: FilePath | None = Field(
        None, description="A file of words not allowed in prompts, one per line ('#' starts a comment)."
    )

    @field_validator("safety_labels", "blocked_words", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    def policy_for(self, audience: Audience) -> Policy:
        if audience is Audience.GENERAL:
            return self.safety_policy
        return self.safety_age_restricted_policy


# --- the flag, inside the canvas PNG ----------------------------------------------------------------

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_AFTER_HEADER = 8 + 4 + 4 + 13 + 4  # the signature, then IHDR: length, type, 13 bytes, CRC
_MARK = b"outpaint-safety\x00flagged"  # a tEXt chunk's keyword, NUL, text


def mark_flagged(png: bytes) -> bytes:
    """``png`` with the flag: a ``tEXt`` chunk right after the header (no re-encoding)."""
    if is_flagged(png):
        return png
    chunk = b"tEXt" + _MARK
    marked = len(_MARK).to_bytes(4, "big") + chunk + zlib.crc32(chunk).to_bytes(4, "big")
    return png[:_AFTER_HEADER] + marked + png[_AFTER_HEADER:]


def is_flagged(png: bytes | None) -> bool:
    """Whether a canvas PNG carries the flag (looked for among the chunks before the pixels)."""
    if not png or not png.startswith(_PNG_SIGNATURE):
        return False
    offset = len(_PNG_SIGNATURE)
    while offset + 8 <= len(png):
        length = int.from_bytes(png[offset : offset + 4], "big")
        kind = png[offset + 4 : offset + 8]
        if kind in (b"IDAT", b"IEND"):
            return False
        if kind == b"tEXt" and png[offset + 8 : offset + 8 + length] == _MARK:
            return True
        offset += 12 + length
    return False


def is_block_reason(reason: str) -> bool:
    """Whether a job failed because the content check blocked it."""
    return reason == BLOCKED


# --- the classifier (workers) -------------------------------------------------------------------------


class ContentBlocked(Exception):
    """A canvas was flagged where the policy is ``block``: the job fails with :data:`BLOCKED`."""

    def __init__(self) -> None:
        super().__init__(BLOCKED)


class SafetyModelError(Exception):
    """The classifier could not be loaded; the message is one line for the operator."""


def tiles(canvas: np.ndarray) -> list[np.ndarray]:
    """Square tiles (the short side squared) covering the canvas along its long side, evenly spread
    and overlapping; at most :data:`MAX_TILES` (wider tiles for a longer canvas)."""
    height, width = canvas.shape[:2]
    short, long = min(height, width), max(height, width)
    size = max(short, math.ceil(long / MAX_TILES))
    count = math.ceil(long / size)
    starts = [0] if count == 1 else [round(i * (long - size) / (count - 1)) for i in range(count)]
    if width >= height:
        return [canvas[:, s : s + size] for s in starts]
    return [canvas[s : s + size] for s in starts]


class ImageClassifier:
    """A transformers image-classification pipeline scoring how unsafe a canvas is."""

    def __init__(self, pipe: Any, labels: Iterable[str]) -> None:
        self._pipe = pipe
        self._labels = {label.casefold() for label in labels}
        self._num_labels = len(pipe.model.config.id2label)
        self._lock = threading.Lock()  # several serving threads, one model

    @classmethod
    def load(cls, source: str, device: str, labels: Sequence[str]) -> ImageClassifier:
        """Load ``source`` (a hub id or a local folder) on ``device``; raises :class:`SafetyModelError`
        with a one-line reason, also when the model has none of ``labels``."""
        from transformers import pipeline

        try:
            pipe = pipeline("image-classification", model=source, device=device)
        except Exception as error:
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise SafetyModelError(f"could not load the safety classifier {source!r}: {reason}") from error
        known = {str(label).casefold() for label in pipe.model.config.id2label.values()}
        unsafe = known & {label.casefold() for label in labels}
        if not unsafe:
            raise SafetyModelError(
                f"the safety classifier {source!r} has none of the labels {', '.join(labels)} "
                f"(OUTPAINT_SAFETY_LABELS); its labels are: {', '.join(sorted(known))}"
            )
        log.info(
            "content check: %s on %s, unsafe labels %s",
            source,
            device,
            ", ".join(sorted(unsafe)),
        )
        return cls(pipe, labels)

    def score(self, canvas: np.ndarray) -> float:
        """The highest summed score of the unsafe labels over the canvas's tiles (0 to 1)."""
        from PIL import Image

        images = [Image.fromarray(tile) for tile in tiles(canvas)]
        with self._lock:
            results = self._pipe(images, top_k=self._num_labels, batch_size=len(images))
        return max(
            min(1.0, sum(r["score"] for r in result if str(r["label"]).casefold() in self._labels))
            for result in results
        )


class SafetyCheck:
    """The worker's content check (nothing is checked without settings or without a model): the
    classifier, loaded once per worker on the engine's device, and the word list."""

    def __init__(self, settings: SafetySettings | None = None) -> None:
        self.settings = settings
        self.words = WordList.from_settings(settings) if settings else WordList()
        self._classifier: ImageClassifier | None = None

    @property
    def enabled(self) -> bool:
        return self.settings is not None and bool(self.settings.safety_model.strip())

    def load(self, device: str) -> None:
        """Load the classifier once (the caller serialises calls); a no-op when off or loaded."""
        if self.enabled and self._classifier is None:
            assert self.settings is not None
            s = self.settings
            self._classifier = ImageClassifier.load(s.safety_model.strip(), device, s.safety_labels)

    def review(self, job: Job, *pngs: bytes | None) -> JobReview:
        """The check of one run of ``job``; flagged from the start when one of ``pngs`` (its source,
        its checkpoint) carries the flag."""
        policy = self.settings.policy_for(job.audience) if self.settings else Policy.ALLOW
        flagged = policy is not Policy.ALLOW and any(is_flagged(png) for png in pngs)
        return JobReview(self, job.id, policy, flagged)

    def flags(self, canvas: np.ndarray) -> float | None:
        """The canvas's unsafe score when it reaches the threshold, else None."""
        assert self.settings is not None and self._classifier is not None, "load() first"
        score = self._classifier.score(canvas)
        return score if score >= self.settings.safety_threshold else None


class JobReview:
    """The content check of one run of a job: its policy, and whether it is flagged."""

    def __init__(self, check: SafetyCheck, job_id: str, policy: Policy, flagged: bool) -> None:
        self._check = check
        self.job_id = job_id
        self.policy = policy
        self.flagged = flagged

    def check_start(self) -> None:
        """Raise :class:`ContentBlocked` for a job flagged already (from its source or checkpoint)
        where flagged canvases are blocked."""
        if self.flagged and self.policy is Policy.BLOCK:
            raise ContentBlocked

    def check(self, canvas: np.ndarray, step: int) -> None:
        """Check the canvas after ``step``: flag the job, or raise :class:`ContentBlocked`."""
        if self.flagged or self.policy is Policy.ALLOW or not self._check.enabled:
            return
        score = self._check.flags(canvas)
        if score is None:
            return
        log.info(
            "job %s: the canvas of step %d was flagged (score %.2f); policy %s",
            self.job_id,
            step,
            score,
            self.policy,
        )
        if self.policy is Policy.BLOCK:
            raise ContentBlocked
        self.flagged = True

    def check_candidates(self, canvases: Sequence[np.ndarray], step: int) -> list[tuple[np.ndarray, bool]]:
        """Check each candidate canvas of ``step`` on its own; returns the candidates that may be
        shown, in order, each with whether it is flagged (to be stored marked).

        Where the policy blocks, flagged candidates are withheld, and :class:`ContentBlocked` is
        raised only when every one is flagged. Where it spoilers, a flagged candidate flags the
        job (no more previews) but not its unflagged siblings. A job flagged before (its source,
        its checkpoint) has every candidate flagged."""
        if self.flagged or self.policy is Policy.ALLOW or not self._check.enabled:
            return [(canvas, self.flagged) for canvas in canvases]
        shown = []
        for number, canvas in enumerate(canvases, start=1):
            score = self._check.flags(canvas)
            if score is not None:
                log.info(
                    "job %s: candidate %d of step %d was flagged (score %.2f); policy %s",
                    self.job_id,
                    number,
                    step,
                    score,
                    self.policy,
                )
            if score is None or self.policy is not Policy.BLOCK:
                shown.append((canvas, score is not None))
        if not shown:
            raise ContentBlocked
        self.flagged = any(flagged for _, flagged in shown)
        return shown

    def stamp(self, png: bytes) -> bytes:
        """The canvas PNG to store: marked once the job is flagged."""
        return mark_flagged(png) if self.flagged else png


def engine_device(engine: object) -> str:
    """The device an engine computes on (the real engine's models'), else the CPU."""
    device = getattr(getattr(engine, "models", None), "device", None)
    return str(device) if device is not None else "cpu"


# --- the word list (bot and workers) ------------------------------------------------------------------


def _normalise(text: str) -> str:
    """Casefolded NFKC without invisible format characters (zero-width spaces and joiners)."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def _pattern(entry: str) -> str | None:
    """A regex for one entry: whole words, any spacing or punctuation between the words of a
    phrase, a trailing ``*`` for any ending."""
    prefix = entry.endswith("*")
    words = re.findall(r"\w+", _normalise(entry.rstrip("*")))
    if not words:
        return None
    body = r"\W+".join(re.escape(word) for word in words)
    ending = r"\w*" if prefix else ""
    return rf"(?<!\w){body}{ending}(?!\w)"


class WordList:
    """Words and phrases the operator does not allow in prompts.

    Matching ignores case, Unicode width variants and invisible characters, and goes by whole words
    (``ass`` does not match "class"); a phrase matches with any spacing or punctuation between its
    words, and a trailing ``*`` matches any ending (``nud*``: nude, nudity). The file, when given, is
    read again whenever it changes, so edits apply without a restart.
    """

    def __init__(self, words: Iterable[str] = (), file: Path | None = None) -> None:
        self._words = [w for w in words if w.strip()]
        self._file = file
        self._file_state: tuple[int, int] | None = None  # (mtime, size) of the file as last read
        self._unreadable = False
        self._entries: list[tuple[str, re.Pattern[str]]] = []
        self._lock = threading.Lock()
        self._compile(self._words)

    @classmethod
    def from_settings(cls, settings: SafetySettings) -> WordList:
        return cls(settings.blocked_words, settings.blocked_words_file)

    def _compile(self, words: Iterable[str]) -> None:
        entries = []
        for word in words:
            pattern = _pattern(word.strip())
            if pattern is not None:
                entries.append((word.strip(), re.compile(pattern)))
        self._entries = entries

    def _refresh(self) -> None:
        if self._file is None:
            return
        try:
            stat = self._file.stat()
            state = (stat.st_mtime_ns, stat.st_size)
            if state == self._file_state:
                return
            lines = self._file.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            if not self._unreadable:
                log.warning(
                    "could not read the word list %s (%s); keeping the words read before", self._file, error
                )
                self._unreadable = True
            return
        self._compile([*self._words, *(line.split("#", 1)[0] for line in lines)])
        self._file_state, self._unreadable = state, False

    def find(self, text: str) -> str | None:
        """The first listed word or phrase in ``text``, or None."""
        with self._lock:
            self._refresh()
            entries = self._entries
        normal = _normalise(text)
        return next((word for word, pattern in entries if pattern.search(normal)), None)

    def allows(self, text: str) -> bool:
        return self.find(text) is None
