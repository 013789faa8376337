"""The OpenAI-compatible captioner against a fake chat-completions server on loopback.

The server checks each request (route, bearer token, model, max_tokens, one JPEG data-URL image of
bounded size) and answers from a script: captions, 5xx/429, no answer (the client's time budget
runs out), garbage, an over-long caption. Short budgets and back-offs come from the settings.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import SecretStr

from outpaint_engine import cli
from outpaint_engine.captioner import MAX_CHARS, Caption, write_caption
from outpaint_engine.captioner.prompt import MAX_IMAGE_SIDE
from outpaint_engine.captioner.remote import OpenAICaptioner
from outpaint_engine.job import Direction, JobSpec
from outpaint_engine.models import load_captioner
from outpaint_engine.runner import Outpainter
from outpaint_engine.settings import EngineSettings
from tests.conftest import TINY_STEPS, TINY_WINDOW
from tests.engine.test_captioner import prompts_seen
from tests.engine.test_cli import _tiny_args, _write_photo
from tests.fakeopenai import FakeOpenAI, Reply

KEY = "sk-test-0123456789abcdef"
DEFAULT = Reply().content


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(model="qwen2-vl-2b", api_key=KEY) as fake:
        yield fake
    assert fake.problems == []  # every request was well formed


def _captioner(server: FakeOpenAI, **settings: Any) -> OpenAICaptioner:
    values = {
        "captioner": "openai",
        "captioner_url": server.url,
        "captioner_model": server.model,
        "captioner_api_key": KEY,
        "captioner_timeout_s": 10.0,
        "captioner_backoff_s": 0.01,
    }
    captioner = load_captioner(EngineSettings(**(values | settings)))
    assert isinstance(captioner, OpenAICaptioner)
    return captioner


def _photo(width: int = 80, height: int = 64) -> np.ndarray:
    return np.random.default_rng(5).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_a_caption_from_the_server(server: FakeOpenAI) -> None:
    caption = write_caption(_captioner(server, captioner_max_tokens=40), _photo(2000, 1000), "left")
    assert caption == Caption(DEFAULT)
    (request,) = server.received
    assert request.model == "qwen2-vl-2b"
    assert request.max_tokens == 40
    assert request.authorization == f"Bearer {KEY}"
    assert request.image_size == (MAX_IMAGE_SIDE, MAX_IMAGE_SIDE // 2)
    assert "beyond its left edge" in request.question


def test_5xx_and_429_are_retried_with_back_off(server: FakeOpenAI) -> None:
    captioner = _captioner(server, captioner_retries=2)
    server.answer(Reply(status=503), Reply(status=429, headers={"Retry-After": "0"}))
    assert write_caption(captioner, _photo(), "right") == Caption(DEFAULT)
    assert server.calls == 3
    server.answer(*[Reply(status=500)] * 3)
    assert write_caption(captioner, _photo(), "right") == Caption("", "the captioner answered HTTP 500")
    assert server.calls == 3 + 3  # one try and two retries, then it gives up


def test_a_slow_server_times_out_without_failing(
    server: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    server.answer(Reply(hang=True))
    with caplog.at_level(logging.WARNING):
        caption = write_caption(_captioner(server, captioner_timeout_s=0.3), _photo(), "up")
    assert caption == Caption("", "the captioner timed out")
    assert server.calls == 1  # the budget covers all tries: nothing left to retry with
    (line,) = caplog.records
    assert line.getMessage().startswith("no auto prompt: the captioner timed out (")
    assert line.exc_info is None


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply(content=""), "the captioner's answer was not a usable description"),
        (
            Reply(content="I'm sorry, I cannot describe images."),
            "the captioner's answer was not a usable description",
        ),
        (Reply(content="#### ---- ****"), "the captioner's answer was not a usable description"),
        (Reply(content=None), "the captioner's answer was not understood"),
        (Reply(content=42), "the captioner's answer was not understood"),
        (Reply(body="<html>gateway says hi</html>"), "the captioner's answer was not understood"),
        (Reply(body='{"choices": []}'), "the captioner's answer was not understood"),
        (Reply(status=400), "the captioner refused the request (HTTP 400)"),
    ],
)
def test_garbage_is_no_prompt(server: FakeOpenAI, reply: Reply, reason: str) -> None:
    server.answer(reply)
    assert write_caption(_captioner(server), _photo(), "down") == Caption("", reason)
    assert server.calls == 1


def test_an_over_long_or_chatty_caption_is_cut_to_one_line(server: FakeOpenAI) -> None:
    server.answer(
        Reply(content="a long quiet beach " * 60),
        Reply(content=[{"type": "text", "text": "a pier\nand boats"}]),
    )
    first = write_caption(_captioner(server), _photo(), "right").text
    assert first.startswith("a long quiet beach a long") and len(first) <= MAX_CHARS
    assert write_caption(_captioner(server), _photo(), "right") == Caption("a pier")


def test_refusals_of_key_or_model_are_not_retried(server: FakeOpenAI) -> None:
    assert write_caption(_captioner(server, captioner_api_key="sk-wrong"), _photo(), "right") == Caption(
        "", "the captioner refused the API key (HTTP 401)"
    )
    assert write_caption(_captioner(server, captioner_model="no-such-model"), _photo(), "right") == Caption(
        "", "the captioner answered HTTP 404"
    )
    assert server.calls == 2


def test_an_unreachable_server_is_a_reason() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = EngineSettings(
        captioner="openai", captioner_url=f"http://127.0.0.1:{port}/v1", captioner_model="m",
        captioner_retries=1, captioner_backoff_s=0.01,
    )  # fmt: skip
    caption = write_caption(load_captioner(settings), _photo(), "right")
    assert caption == Caption("", "the captioner is unreachable")


def test_the_api_key_is_never_logged(server: FakeOpenAI, caplog: pytest.LogCaptureFixture) -> None:
    settings = EngineSettings(
        captioner="openai", captioner_url=server.url, captioner_model=server.model, captioner_api_key=KEY,
        captioner_backoff_s=0.01,
    )  # fmt: skip
    with caplog.at_level(logging.DEBUG):
        captioner = load_captioner(settings)
        server.answer(Reply(status=502), Reply(status=500), Reply(status=500), Reply(content="a dune"))
        reasons = [write_caption(captioner, _photo(), "right") for _ in range(2)]
        wrong = load_captioner(settings.model_copy(update={"captioner_api_key": SecretStr(KEY[::-1])}))
        reasons.append(write_caption(wrong, _photo(), "right"))
    assert [c.text or c.reason for c in reasons] == [
        "the captioner answered HTTP 500",
        "a dune",
        "the captioner refused the API key (HTTP 401)",
    ]
    assert any("HTTP" in r.getMessage() for r in caplog.records)  # the client's own debug lines were on
    for secret in (KEY, KEY[::-1]):
        assert secret not in caplog.text
        assert secret not in repr(captioner) + repr(wrong) + repr(settings) + str(settings.model_dump())


def test_a_job_without_prompt_uses_the_servers_caption(
    server: FakeOpenAI, tiny_engine: Outpainter, monkeypatch: pytest.MonkeyPatch
) -> None:
    prompts = prompts_seen(tiny_engine, monkeypatch)
    engine = Outpainter(tiny_engine.models, tiny_engine.settings, _captioner(server))
    spec = JobSpec(Direction.DOWN, 1, 16, steps=TINY_STEPS, window=TINY_WINDOW)
    assert len(list(engine.run(_photo(64, 80), spec))) == 1
    assert prompts == [DEFAULT]
    assert "beyond its bottom edge" in server.received[0].question
    list(engine.run(_photo(64, 80), replace(spec, prompt="a lawn")))
    assert len(server.received) == 1  # a job with a prompt is not captioned


def test_cli_prompt_auto_prints_the_prompt_it_used(
    server: FakeOpenAI,
    tmp_path: Path,
    tiny_model_dir: Path,
    tiny_ip_adapter_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    photo = _write_photo(tmp_path / "photo.png", 64, 64)
    tiny = _tiny_args(tiny_model_dir, tiny_ip_adapter_dir)
    for name, value in [("URL", server.url), ("MODEL", server.model), ("API_KEY", KEY)]:
        monkeypatch.setenv(f"OUTPAINT_CAPTIONER_{name}", value)
    out = tmp_path / "o.png"
    args = [str(photo), "-o", str(out), "--seed", "3", "--prompt", "auto", "--direction", "left", *tiny]
    assert cli.main([*args, "--captioner", "openai"]) == 0
    err = capsys.readouterr().err
    assert f"outpaint: prompt (auto): {DEFAULT}\n" in err
    assert out.exists()
    assert "beyond its left edge" in server.received[0].question
    assert len(server.received) == 1  # captioned once, before the run
    assert cli.main(args) == 1  # no captioner configured
    assert capsys.readouterr().err == (
        "outpaint: error: --prompt auto needs a captioner: set OUTPAINT_CAPTIONER or --captioner\n"
    )


def test_credentials_in_the_url_stay_out_of_log_lines() -> None:
    captioner = OpenAICaptioner("https://user:hunter2@llm.example/v1/?key=hunter3", "m")
    assert str(captioner.endpoint) == "https://user:hunter2@llm.example/v1/chat/completions?key=hunter3"
    assert captioner.where == "https://llm.example/v1/chat/completions"
    assert "hunter" not in repr(captioner)
