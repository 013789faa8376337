"""The operator command (``outpaint queue ...``) and ``outpaint-worker``'s own errors."""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from engine_double import Pause
from queue_helpers import SOURCE_PNG, WAIT_S, Harness, collect, free_port, make_job, queue_settings

from outpaint_engine import cli
from outpaint_engine.job import Cancelled, JobState
from outpaint_engine.queue import QueueError, open_queue
from outpaint_engine.queue.admin import main, parse_age
from outpaint_engine.queue.redis import describe_url
from outpaint_engine.settings import QueueSettings
from outpaint_engine.worker import cli as worker_cli


@pytest.fixture(params=["embedded", "redis"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> QueueSettings:
    if request.param == "embedded":
        return queue_settings("embedded", tmp_path)
    server = request.getfixturevalue("shared_redis")
    with redis.Redis.from_url(server.url) as client:
        client.flushall()
    return queue_settings(server.url, tmp_path)


def admin(settings: QueueSettings, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*args, "--queue", settings.queue, "--data-dir", str(settings.data_dir)])
    out, err = capsys.readouterr()
    return code, out, err


def queue_jobs(settings: QueueSettings, *jobs) -> None:
    async def submit() -> None:
        async with open_queue(settings) as queue:  # no engine: nothing runs them
            for job in jobs:
                await queue.submit(job, SOURCE_PNG)

    asyncio.run(submit())


def test_list_cancel_retry_and_purge(settings: QueueSettings, capsys: pytest.CaptureFixture[str]) -> None:
    queue_jobs(settings, make_job(1, user=1), make_job(2, user=2))

    code, out, _ = admin(settings, capsys, "list")
    assert code == 0
    assert out.splitlines()[0].split() == ["ID", "STATE", "USER", "GUILD", "STEPS", "TRIES", "AGE", "ERROR"]
    assert [line.split()[:2] for line in out.splitlines()[1:]] == [
        ["job0002", "queued"],
        ["job0001", "queued"],
    ]
    assert admin(settings, capsys, "list", "--user", "2")[1].count("job0") == 1

    assert admin(settings, capsys, "cancel", "job0001")[:2] == (0, "Job job0001: cancelled.\n")
    code, out, _ = admin(settings, capsys, "list", "--state", "cancelled")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["job0001"]
    assert admin(settings, capsys, "retry", "job0001")[:2] == (0, "Job job0001: queued again (position 2).\n")

    admin(settings, capsys, "cancel", "job0001")
    assert admin(settings, capsys, "purge", "--older-than", "0s")[:2] == (
        0,
        "Purged 1 finished job older than 0s.\n",
    )
    assert [line.split()[0] for line in admin(settings, capsys, "list")[1].splitlines()[1:]] == ["job0002"]


def test_operator_mistakes_get_one_line_answers(
    settings: QueueSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    queue_jobs(settings, make_job(1))
    assert admin(settings, capsys, "cancel", "nosuchjob") == (
        1,
        "",
        "outpaint queue: There is no job nosuchjob.\n",
    )
    code, _, err = admin(settings, capsys, "retry", "job0001")
    assert code == 1 and err == (
        "outpaint queue: Job job0001 is queued; only failed or cancelled jobs can be retried.\n"
    )
    assert admin(settings, capsys, "retry", "../x")[2] == "outpaint queue: '../x' is not a job id.\n"
    code, out, err = admin(settings, capsys, "list", "--dead")
    if settings.queue == "embedded":
        assert code == 1 and "no dead-letter stream" in err
    else:
        assert (code, out) == (0, "No dead letters.\n")


async def test_operator_cancels_a_running_job(harness: Harness) -> None:
    pause = Pause(seed=5, step=1)
    harness.engine.hook = pause
    job = make_job(5)
    await harness.queue.submit(job, SOURCE_PNG)
    assert await asyncio.to_thread(pause.reached.wait, WAIT_S)
    args = ["cancel", job.id, "--queue", harness.settings.queue, "--data-dir", str(harness.settings.data_dir)]

    assert await asyncio.to_thread(main, args) == 0  # another connection, as from another process
    pause.go.set()

    events = await collect(harness.queue, job.id)
    assert isinstance(events[-1][1], Cancelled)
    final = await harness.queue.get(job.id)
    assert final is not None and final.state is JobState.CANCELLED


def test_missing_journal_and_unreachable_redis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--queue", "embedded", "--data-dir", str(tmp_path / "none")]) == 1
    assert "No embedded queue in" in capsys.readouterr().err
    assert main(["list", "--queue", f"redis://127.0.0.1:{free_port()}/0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("outpaint queue: The job queue at redis://127.0.0.1:") and "unreachable" in err
    assert len(err.splitlines()) == 1


def test_a_broken_journal_gets_one_line_and_the_command_exits(tmp_path: Path) -> None:
    (tmp_path / "queue.sqlite3").write_text("not a database")
    # A process of its own: a SQLite thread left open would keep it alive after its answer.
    command = "import sys; from outpaint_engine.queue.admin import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", command, "list", "--queue", "embedded", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=WAIT_S,
    )
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"outpaint queue: Cannot open the job journal {tmp_path / 'queue.sqlite3'}: file is not a database.\n"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("1.5h", 5400), ("7d", 604800), ("2w", 1209600)],
)
def test_ages(text: str, seconds: float) -> None:
    assert parse_age(text) == seconds


def test_a_bad_age_is_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not an age"):
        parse_age("soon")


@pytest.mark.parametrize("limit", ["0", "-5", "ten"])
def test_a_bad_limit_is_refused(limit: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["list", "--limit", limit])
    assert exit_.value.code == 2
    assert f"argument --limit: {limit!r} is not a whole number of 1 or more" in capsys.readouterr().err


def test_open_queue_refuses_an_unknown_backend(tmp_path: Path) -> None:
    with pytest.raises(QueueError, match="use 'embedded' or a redis:// URL"):
        open_queue(queue_settings("postgres://db", tmp_path))


def test_urls_are_shown_without_their_password() -> None:
    assert describe_url("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert describe_url("redis://bot:s3cret@redis/1") == "redis://bot:***@redis/1"
    assert describe_url("redis://redis:6379/0") == "redis://redis:6379/0"


def test_the_console_scripts_run_the_commands() -> None:
    scripts = importlib.metadata.entry_points(group="console_scripts")
    assert scripts["outpaint-worker"].load() is worker_cli.main
    assert scripts["outpaint"].load() is cli.main


def test_the_worker_needs_redis_and_sane_timeouts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert worker_cli.main(["--queue", "embedded"]) == 2
    assert "outpaint-worker needs a Redis queue" in capsys.readouterr().err
    monkeypatch.setenv("OUTPAINT_HEARTBEAT_S", "5")
    monkeypatch.setenv("OUTPAINT_RECLAIM_AFTER_S", "6")
    assert worker_cli.main(["--queue", "redis://127.0.0.1:1/0"]) == 2
    assert "OUTPAINT_RECLAIM_AFTER_S must be at least twice OUTPAINT_HEARTBEAT_S" in capsys.readouterr().err
    monkeypatch.setenv("OUTPAINT_HEARTBEAT_S", "often")
    assert worker_cli.main([]) == 2
    assert main(["list"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in err] == ["outpaint-worker", "outpaint queue"]
    assert all("bad setting OUTPAINT_HEARTBEAT_S: " in line for line in err)
    monkeypatch.undo()
    monkeypatch.setenv("OUTPAINT_COMPILE", "sometimes")  # an engine setting: checked before it loads
    assert worker_cli.main(["--queue", "redis://127.0.0.1:1/0"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("outpaint-worker: bad setting OUTPAINT_COMPILE: Input should be")
        and err.count("\n") == 1
    )
    monkeypatch.undo()
    assert worker_cli.main(["--queue", f"redis://:pw@127.0.0.1:{free_port()}/0"]) == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("outpaint-worker: cannot reach Redis at redis://:***@127.0.0.1:") and "pw" not in err
    )


def test_the_worker_says_why_its_engine_did_not_load(
    shared_redis, capsys: pytest.CaptureFixture[str]
) -> None:
    assert worker_cli.main(["--queue", shared_redis.url, "--engine", "engine_double:broken"]) == 1
    err = capsys.readouterr().err  # its log ("loading the engine"), then the reason in one line
    assert err.splitlines()[-1] == "outpaint-worker: cannot load the engine: no CUDA device here"
    assert "Traceback" not in err


def test_the_worker_checks_its_content_check_settings_and_model(
    shared_redis, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OUTPAINT_SAFETY_POLICY", "hide")
    assert worker_cli.main(["--queue", shared_redis.url, "--engine", "engine_double:from_env"]) == 2
    assert capsys.readouterr().err.startswith("outpaint-worker: bad setting OUTPAINT_SAFETY_POLICY: ")
    monkeypatch.delenv("OUTPAINT_SAFETY_POLICY")
    monkeypatch.setenv("OUTPAINT_SAFETY_MODEL", str(tmp_path / "no-such-classifier"))
    assert worker_cli.main(["--queue", shared_redis.url, "--engine", "engine_double:from_env"]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith(
        "outpaint-worker: cannot load the engine: could not load the safety classifier "
    )
    assert "Traceback" not in err
