"""``deploy/`` stops the bot and the workers with a signal they handle, and gives them the time to
finish their denoising step and hand their job back (``docker stop`` and ``systemctl stop`` send
SIGTERM and kill after 10 s / 90 s unless told otherwise); its healthchecks ask the health
endpoints with the Python probe (the image has no curl)."""

from __future__ import annotations

import configparser
import importlib.util
import re
import signal
from pathlib import Path

import pytest

from outpaint_engine.queue.embedded import JOIN_TIMEOUT_S
from outpaint_engine.settings import QueueSettings
from outpaint_engine.worker.cli import STOP_SIGNALS

DEPLOY = Path(__file__).parents[2] / "deploy"
HANDLED = {s.name for s in STOP_SIGNALS}  # the bot closes cleanly on SIGINT as well


def seconds(value: str | int) -> float:
    match = re.fullmatch(r"(\d+)(s|m)?", str(value))
    assert match, value
    return int(match[1]) * (60 if match[2] == "m" else 1)


def unit(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read(DEPLOY / "systemd" / name)
    return parser["Service"]


def test_the_container_image_stops_with_a_handled_signal() -> None:
    (stop,) = re.findall(r"^STOPSIGNAL (\w+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert stop in HANDLED and signal.Signals[stop] is signal.SIGINT  # PID 1 ignores an unhandled SIGTERM


def test_compose_and_systemd_give_a_stopping_process_time_to_hand_its_job_back() -> None:
    yaml = pytest.importorskip("yaml")
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    step_and_hand_back_s = 10 + QueueSettings(_env_file=None).queue_timeout_s  # a slow step, one call
    for name, least in (("bot", JOIN_TIMEOUT_S), ("worker-0", step_and_hand_back_s)):
        assert services[name]["stop_signal"] in HANDLED
        assert seconds(services[name]["stop_grace_period"]) > least
    for name, least in (
        ("outpaint-bot.service", JOIN_TIMEOUT_S),
        ("outpaint-worker@.service", step_and_hand_back_s),
    ):
        assert unit(name)["KillSignal"] in HANDLED
        assert seconds(unit(name)["TimeoutStopSec"]) > least


PROBE = ["python", "-m", "outpaint_engine.observability.probe"]


def test_healthchecks_ask_the_health_endpoints() -> None:
    yaml = pytest.importorskip("yaml")
    assert importlib.util.find_spec(PROBE[2]) is not None
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^\s+OUTPAINT_METRICS_PORT=\d+", dockerfile, re.M)  # the endpoints are on
    (check,) = re.findall(r"^\s+CMD (\[.*\])$", dockerfile.split("HEALTHCHECK", 1)[1], re.M)[:1]
    assert yaml.safe_load(check) == [*PROBE, "/healthz"]
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    for name in ("bot", "worker-0"):
        assert services[name]["healthcheck"]["test"] == ["CMD", *PROBE, "/readyz"]
        assert services[name]["environment"]["OUTPAINT_METRICS_HOST"] == "0.0.0.0"  # Prometheus reaches it
        assert "ports" not in services[name]  # not published on the host
    assert seconds(services["worker-0"]["healthcheck"]["start_period"]) >= 600  # a first compile
