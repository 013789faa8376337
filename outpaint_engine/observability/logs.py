"""One log setup for ``outpaint-bot``, ``outpaint-worker`` and the ``outpaint`` CLI.

Two formats (``OUTPAINT_LOG_FORMAT``), both one line per record on stderr:

- ``text`` (default): ``2026-12-01 12:00:00,000 INFO outpaint.worker: job 3f…: done in 4.2 s``,
  followed by the record's structured fields in brackets (``[event=done job_id=3f… user_id=…]``);
- ``json``: one object per line, ``{"time", "level", "logger", "message", …fields, "exception"?}``,
  for log shippers.

Job events go through :func:`job_event`: one line per event with the job's id, user and guild
ids, and durations in seconds (fields ending in ``_s``). Secrets never reach the output: the
values given to :func:`setup_logging` (the Discord token), and the interaction tokens in
Discord's webhook URLs and in logged payloads (``"token": …``), are masked in every line,
tracebacks included.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import sys
from collections.abc import Iterable
from typing import Any, Protocol

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MASK = "***"
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_URL_TOKEN = re.compile(r"(/(?:webhooks|interactions)/\d+/)[\w.\-]{20,}")
"""An interaction token inside a Discord webhook or callback URL (discord.py logs URLs at DEBUG)."""
_FIELD_TOKEN = re.compile(r"""(['"]token['"]\s*:\s*['"])[^'"]+""")
"""A ``token`` field in a logged payload (discord.py logs gateway events, interactions', at DEBUG)."""


class _Redactor:
    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = [s for s in secrets if s]

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        text = _URL_TOKEN.sub(rf"\g<1>{MASK}", text)
        return _FIELD_TOKEN.sub(rf"\g<1>{MASK}", text)


def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields of a record: what its ``extra=`` added."""
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    """The readable line, then the record's fields as ``[key=value …]``."""

    def __init__(self, redact: _Redactor) -> None:
        super().__init__(TEXT_FORMAT)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        if fields := fields_of(record):
            pairs = " ".join(f"{key}={value}" for key, value in fields.items())
            line = f"{line} [{pairs}]" if "\n" not in line else line.replace("\n", f" [{pairs}]\n", 1)
        return self.redact(line)


class JsonFormatter(logging.Formatter):
    """One JSON object per record (and per line)."""

    def __init__(self, redact: _Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        data: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": self.redact(record.getMessage()),
            **fields_of(record),
        }
        if record.exc_info:
            data["exception"] = self.redact(self.formatException(record.exc_info))
        if record.stack_info:
            data["stack"] = self.redact(self.formatStack(record.stack_info))
        return self.redact(json.dumps(data, default=str, ensure_ascii=False))


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (tests replace it)."""

    @property  # type: ignore[override]
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def level_of(name: str | int) -> int:
    """A level from its name ("debug", "INFO"...); INFO for an unknown name."""
    if isinstance(name, int):
        return name
    return logging.getLevelNamesMapping().get(name.upper(), logging.INFO)


def setup_logging(
    level: str | int = "INFO", *, log_format: str = "text", secrets: Iterable[str] = ()
) -> None:
    """Send every log record (the libraries' too) to stderr, one line each, in ``log_format``
    ("text" or "json"), with ``secrets`` masked. Replaces the handler of an earlier call."""
    redact = _Redactor(secrets)
    handler = _StderrHandler()
    handler.setFormatter(JsonFormatter(redact) if log_format == "json" else TextFormatter(redact))
    handler.set_name("outpaint")
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == "outpaint"]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_of(level))
    logging.captureWarnings(True)  # Python warnings become records too (logger "py.warnings")


def route_library_logs() -> None:
    """Send diffusers' and transformers' records through the one handler (each has its own by
    default) and turn their progress bars off, so a service's log stays one record per line in
    its format. Where the engine loads (this imports both: transformers first, as importing
    diffusers makes transformers log)."""
    import transformers

    _route(transformers.utils.logging)
    import diffusers

    _route(diffusers.utils.logging)


def _route(library: Any) -> None:
    library.disable_default_handler()
    library.enable_propagation()
    library.disable_progress_bar()


class _JobLike(Protocol):
    id: str
    user_id: int
    guild_id: int | None


def job_event(
    logger: logging.Logger,
    job: _JobLike,
    event: str,
    message: str = "",
    *args: object,
    level: int = logging.INFO,
    exc_info: bool = False,
    **fields: object,
) -> None:
    """Log one event of ``job``: ``job <id>: <message % args>`` (``message`` defaults to the event)
    with the fields ``event``, ``job_id``, ``user_id``, ``guild_id`` and ``fields`` (durations in
    seconds as ``<name>_s``, rounded to milliseconds)."""
    extra: dict[str, object] = {"event": event, "job_id": job.id, "user_id": job.user_id}
    extra["guild_id"] = job.guild_id
    for key, value in fields.items():
        extra[key] = round(value, 3) if isinstance(value, float) else value
    logger.log(level, f"job %s: {message or event}", job.id, *args, extra=extra, exc_info=exc_info)
