"""Jobs and job events: the data that crosses the queue between the bot and the workers.

This module is deliberately light (standard library only): the bot imports it without torch,
diffusers or OpenCV. Everything here serialises to plain JSON-compatible dicts so both queue
backends (SQLite, Redis) can store it as text.

Vocabulary used across the project:

- an **expansion step** (``step``) is one generated window merged into the canvas; a job of
  ``times=N`` has N steps, plus one when the input must first be squared up;
- a **denoising step** (``denoise``) is one UNet evaluation inside an expansion step.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from typing import Any, ClassVar


class Direction(StrEnum):
    LEFT = "left"
    RIGHT = "right"
    UP = "up"
    DOWN = "down"

    @property
    def horizontal(self) -> bool:
        """True when the canvas grows along its width."""
        return self in (Direction.LEFT, Direction.RIGHT)


class Mode(StrEnum):
    """How a job grows the canvas (:attr:`JobSpec.mode`)."""

    PAN = "pan"  # one side, ``times`` expansions of ``expand_px``
    ZOOM = "zoom"  # every side, around the original (``JobSpec.zoom``)
    ASPECT = "aspect"  # two opposite sides, to an aspect ratio (``JobSpec.aspect``)


class Audience(StrEnum):
    """Who may see a job's images, as far as content safety goes (the bot tells the worker)."""

    GENERAL = "general"  # a server channel that is not age-restricted
    AGE_RESTRICTED = "age_restricted"  # an age-restricted ("NSFW") server channel
    PRIVATE = "private"  # a direct message


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class JobSpec:
    """What to generate: everything the engine needs besides the source image.

    ``continue_canvas`` is False for a fresh upload (resized so the cross axis equals ``window``)
    and True for an earlier result being extended (its pixels are kept as they are).

    The growth has three modes (:class:`Mode`). By default a job pans: ``times`` expansions of
    ``expand_px`` towards ``direction``. ``zoom`` (e.g. 1.5) grows every side so the canvas becomes
    that many times wider and taller around the original; ``aspect`` (``"16:9"``, any ``"W:H"``)
    grows two opposite sides evenly to that ratio. Zoom and aspect jobs plan their own expansions
    (:mod:`outpaint_engine.plan`): ``direction``, ``times`` and ``expand_px`` are not used.
    ``candidates`` (1–4) generates the job's last expansion that many times, with different noise.
    """

    direction: Direction
    times: int = 1
    expand_px: int = 256
    prompt: str = ""
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 25
    guidance: float = 4.0
    window: int = 1024
    ip_adapter_scale: float = 0.1
    continue_canvas: bool = False
    zoom: float | None = None
    aspect: str | None = None
    candidates: int = 1

    @property
    def mode(self) -> Mode:
        if self.zoom is not None:
            return Mode.ZOOM
        if self.aspect is not None:
            return Mode.ASPECT
        return Mode.PAN

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["direction"] = Direction(values["direction"])
        return cls(**values)


@dataclass(frozen=True)
class AutoPrompt:
    """The prompt a worker's captioner wrote for a job that had none: ``text``, or "" and the
    ``reason`` there is none ("the captioner timed out", "the auto prompt was withheld"). Written
    once per job, before its first expansion, and stored with it: a resume or retry reuses it."""

    text: str = ""
    reason: str | None = None


def new_job_id() -> str:
    """A short, URL- and custom_id-safe unique id."""
    return uuid.uuid4().hex[:16]


@dataclass
class Job:
    """A job as the queue stores it.

    ``total_steps`` is known once the engine has planned the job (0 before). ``steps_done`` counts
    stored checkpoints: a resumed job continues at step ``steps_done``. ``meta`` is opaque to the
    queue and the engine; the bot keeps its Discord references there (status message id, parent
    job, interaction token expiry...). The Discord token itself never goes in a job. ``audience``
    is where the images will be shown: the worker's content check picks its policy by it.
    ``auto_prompt`` is what the worker's captioner wrote for a job without a prompt (None: not
    captioned, because the job has a prompt or the worker has no captioner).
    """

    id: str
    user_id: int
    guild_id: int | None
    channel_id: int | None
    spec: JobSpec
    source_sha256: str
    state: JobState = JobState.QUEUED
    steps_done: int = 0
    total_steps: int = 0
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    attempts: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    audience: Audience = Audience.GENERAL
    auto_prompt: AutoPrompt | None = None

    @property
    def prompt_in_use(self) -> str:
        """The prompt the job runs with: the user's, else the auto prompt ("" for none)."""
        return self.spec.prompt or (self.auto_prompt.text if self.auto_prompt else "")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["spec"] = self.spec.to_dict()
        data["state"] = str(self.state)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["spec"] = JobSpec.from_dict(values["spec"])
        values["state"] = JobState(values["state"])
        values["audience"] = Audience(values.get("audience", Audience.GENERAL))
        if isinstance(values.get("auto_prompt"), dict):
            values["auto_prompt"] = AutoPrompt(**values["auto_prompt"])
        return cls(**values)


# --- events -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """Base class of job events. Each event names its job; ``kind`` tags it on the wire."""

    job_id: str
    kind: ClassVar[str] = "event"
    terminal: ClassVar[bool] = False

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Event:
        """Rebuild an event written by :meth:`to_dict`."""
        data = dict(data)
        cls = EVENT_TYPES[data.pop("kind")]
        if isinstance(data.get("preview"), str):
            data["preview"] = bytes.fromhex(data["preview"])
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class Queued(Event):
    position: int = 0  # 1 = next to run
    eta_s: float | None = None  # estimated seconds until the job finishes, when known
    kind: ClassVar[str] = "queued"


@dataclass(frozen=True)
class Started(Event):
    total_steps: int = 0
    kind: ClassVar[str] = "started"


@dataclass(frozen=True)
class Prompted(Event):
    """The worker's captioner wrote the job's prompt (:class:`AutoPrompt`), after ``Started`` and
    before the first expansion; once per job (a resume or retry reuses the stored one)."""

    prompt: str = ""  # "" when there is none; then ``reason`` says why
    reason: str | None = None
    kind: ClassVar[str] = "prompted"


@dataclass(frozen=True)
class Progress(Event):
    """One denoising step finished. ``preview`` is a small JPEG of the current window, if any."""

    step: int = 0  # expansion step being generated, 0-based
    total_steps: int = 0
    denoise: int = 0  # denoising steps done in this expansion, 1-based
    denoise_total: int = 0
    eta_s: float | None = None
    preview: bytes | None = None
    kind: ClassVar[str] = "progress"

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["preview"] = self.preview.hex() if self.preview else None
        return data


@dataclass(frozen=True)
class Expanded(Event):
    """Expansion step ``step`` (0-based) is finished and its canvas is stored at (job, step).

    A step generated as several candidates (a job's last, with ``JobSpec.candidates`` > 1) has
    ``candidates`` of them stored: candidate 0 at (job, step), the others at (job, step, k)
    (``JobQueue.get_candidate``); fewer than asked for when the content check withheld some."""

    step: int = 0
    total_steps: int = 0
    width: int = 0
    height: int = 0
    candidates: int = 1
    kind: ClassVar[str] = "expanded"


@dataclass(frozen=True)
class Done(Event):
    """The job finished; the final canvas is the one stored at (job, step), or one of its
    ``candidates`` (see :class:`Expanded`) when there are several to pick from."""

    step: int = 0
    width: int = 0
    height: int = 0
    candidates: int = 1
    kind: ClassVar[str] = "done"
    terminal: ClassVar[bool] = True


@dataclass(frozen=True)
class Failed(Event):
    reason: str = ""  # a sentence fit to show a user
    kind: ClassVar[str] = "failed"
    terminal: ClassVar[bool] = True


@dataclass(frozen=True)
class Cancelled(Event):
    kind: ClassVar[str] = "cancelled"
    terminal: ClassVar[bool] = True


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls for cls in (Queued, Started, Prompted, Progress, Expanded, Done, Failed, Cancelled)
}


# --- cancellation --------------------------------------------------------------------------------


class JobCancelledError(Exception):
    """Raised inside the engine when a job's cancel token is set (checked between denoising steps)."""


class CancelToken:
    """A thread-safe flag the worker sets and the engine polls between denoising steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise JobCancelledError
