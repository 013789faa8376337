"""The log setup: one line per record, JSON that parses, job events with their ids, secrets masked."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from outpaint_engine.job import Direction, Job, JobSpec
from outpaint_engine.observability.logs import job_event, setup_logging

SECRET = "MTIzNDU2Nzg5.secret-token.abcdefghijklmnop"
JOB = Job(
    id="job0001", user_id=11, guild_id=22, channel_id=33, spec=JobSpec(Direction.RIGHT), source_sha256="x"
)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_json_lines_parse_and_carry_the_job_ids(restore_logging: None, capsys) -> None:
    setup_logging("INFO", log_format="json", secrets=[SECRET])
    log = logging.getLogger("outpaint.worker")
    job_event(log, JOB, "done", "done in %.1f s", 2.5, run_s=2.51234)
    log.debug("not shown at INFO")
    try:
        raise RuntimeError(f"a failure that quotes the token {SECRET}")
    except RuntimeError:
        log.exception("job %s: delivery failed", JOB.id)
    first, second = (json.loads(line) for line in lines(capsys))
    assert first["message"] == "job job0001: done in 2.5 s"
    assert (first["event"], first["job_id"], first["user_id"], first["guild_id"]) == (
        "done",
        "job0001",
        11,
        22,
    )
    assert first["run_s"] == 2.512 and first["level"] == "INFO" and first["logger"] == "outpaint.worker"
    assert "RuntimeError" in second["exception"] and SECRET not in json.dumps(second)
    assert "***" in second["exception"]


def test_text_lines_end_with_the_fields(restore_logging: None, capsys) -> None:
    setup_logging("INFO")
    job_event(logging.getLogger("bot.jobs"), JOB, "queued", "queued (%s)", "command", origin="command")
    (line,) = lines(capsys)
    assert line.endswith(
        "INFO bot.jobs: job job0001: queued (command) "
        "[event=queued job_id=job0001 user_id=11 guild_id=22 origin=command]"
    )


def test_secrets_and_interaction_tokens_are_masked(restore_logging: None, capsys) -> None:
    setup_logging("DEBUG", secrets=[SECRET])
    setup_logging("DEBUG", secrets=[SECRET])  # a second setup replaces the handler: one line per record
    log = logging.getLogger("discord.http")
    log.debug("Bot %s", SECRET)
    log.debug(
        "PATCH http://127.0.0.1/api/v10/webhooks/123/aW50ZXJhY3Rpb246MTIzNDU2Nzg5OmFiYw/messages/@original"
    )
    log.debug("Dispatching %s", {"type": 2, "token": "aW50ZXJhY3Rpb246MTIz", "version": 1})
    first, second, third = lines(capsys)
    assert first.endswith("Bot ***")
    assert second.endswith("/api/v10/webhooks/123/***/messages/@original")
    assert third.endswith("Dispatching {'type': 2, 'token': '***', 'version': 1}")
