"""The metrics and health server, and the container healthcheck that asks it."""

from __future__ import annotations

import pytest
from prometheus_client.core import GaugeMetricFamily

from outpaint_engine.observability import probe
from outpaint_engine.observability.server import Health, OpsServer, OpsServerError
from tests.ops.scrape import get, health, scrape, value


class Answer:
    def collect(self):
        yield GaugeMetricFamily("outpaint_test_answer", "A collector of this server's own.", 42)


def test_metrics_health_and_readiness() -> None:
    checks = Health()
    ready: list[str | None] = ["warming"]
    checks.readiness["engine"] = lambda: ready[0]
    checks.info["state"] = lambda: "a detail"
    server = OpsServer("127.0.0.1", 0, checks, [Answer()]).start()
    try:
        samples = scrape(server.url)
        assert value(samples, "outpaint_test_answer") == 42
        assert any(name.startswith("python_") for name, _ in samples)  # the process-wide registry too
        assert health(server.url, "/healthz") == (
            200,
            {"status": "ok", "checks": {}, "info": {"state": "a detail"}},
        )
        status, report = health(server.url, "/readyz")
        assert (status, report["checks"]) == (503, {"engine": "warming"})
        ready[0] = None
        assert health(server.url, "/readyz")[0] == 200
        assert get(server.url + "/other")[0] == 404
    finally:
        server.close()


def test_a_taken_port_is_one_clear_error() -> None:
    server = OpsServer("127.0.0.1", 0, Health()).start()
    try:
        with pytest.raises(OpsServerError, match=f"cannot serve metrics on 127.0.0.1:{server.port}"):
            OpsServer("127.0.0.1", server.port, Health())
    finally:
        server.close()


def test_the_healthcheck_probe(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    checks = Health()
    checks.readiness["engine"] = lambda: "loading"
    server = OpsServer("127.0.0.1", 0, checks).start()
    try:
        monkeypatch.setenv("OUTPAINT_METRICS_PORT", str(server.port))
        monkeypatch.setenv("OUTPAINT_METRICS_HOST", "0.0.0.0")  # listening everywhere: asks loopback
        assert probe.main(["/healthz"]) == 0
        assert probe.main(["/readyz"]) == 1
        assert "loading" in capsys.readouterr().out
    finally:
        server.close()
    assert probe.main([]) == 1  # nothing listens any more
    monkeypatch.delenv("OUTPAINT_METRICS_PORT")
    assert probe.main([]) == 0  # the endpoints are off: nothing to check
