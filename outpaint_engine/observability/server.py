"""The metrics and health server of a process (``OUTPAINT_METRICS_PORT``, loopback by default).

One small HTTP server in a daemon thread, the same for the bot (and its embedded worker) and for
``outpaint-worker``:

- ``GET /metrics``: Prometheus text format: the process-wide metrics (counters and histograms
  defined at import, process and Python runtime metrics) and this server's own collectors (queue
  depth, worker state, GPU memory) computed at each scrape;
- ``GET /healthz``: liveness, 200 while the process works (its checks pass), else 503;
- ``GET /readyz``: readiness, 200 once the process can do its work (a worker: engine loaded and
  warmed up; the bot: connected to Discord's gateway and its queue answers), else 503.

Health answers are JSON: ``{"status": "ok" | "failing", "checks": {name: "ok" | reason}, "info":
{…}}``. A check is a function that returns None when all is well, else a short reason.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

Check = Callable[[], str | None]


class OpsServerError(Exception):
    """The server cannot listen (the port is taken, the address is wrong); a one-line message."""


class Health:
    """Named liveness and readiness checks, and ``info`` (shown, never failing)."""

    def __init__(self) -> None:
        self.liveness: dict[str, Check] = {}
        self.readiness: dict[str, Check] = {}
        self.info: dict[str, Callable[[], object]] = {}

    def live(self) -> tuple[bool, dict[str, Any]]:
        return self._report(self.liveness)

    def ready(self) -> tuple[bool, dict[str, Any]]:
        return self._report({**self.liveness, **self.readiness})

    def _report(self, checks: dict[str, Check]) -> tuple[bool, dict[str, Any]]:
        results: dict[str, str] = {}
        for name, check in checks.items():
            try:
                results[name] = check() or "ok"
            except Exception as error:
                results[name] = f"error: {error or type(error).__name__}"
        ok = all(result == "ok" for result in results.values())
        info = {}
        for name, value in self.info.items():
            try:
                info[name] = value()
            except Exception as error:
                info[name] = f"error: {error or type(error).__name__}"
        return ok, {"status": "ok" if ok else "failing", "checks": results, "info": info}


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds: no access log
        pass


class OpsServer:
    """Serves ``/metrics``, ``/healthz`` and ``/readyz`` on ``host:port`` (port 0: any free one)."""

    def __init__(self, host: str, port: int, health: Health, collectors: Iterable[Collector] = ()) -> None:
        self.health = health
        self.registry = CollectorRegistry(auto_describe=False)
        for collector in collectors:
            self.registry.register(collector)
        try:
            self._server = make_server(
                host, port, self._app, server_class=_Server, handler_class=_QuietHandler
            )
        except OSError as error:
            raise OpsServerError(
                f"cannot serve metrics on {host}:{port}: {error.strerror or error}"
            ) from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="outpaint-ops", daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = self._server.server_address[0]
        return f"http://{host}:{self.port}"

    def start(self) -> OpsServer:
        self._thread.start()
        log.info("metrics on %s/metrics, health on /healthz and /readyz", self.url)
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            body = generate_latest(REGISTRY) + generate_latest(self.registry)
            start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
            return [body]
        if path in ("/healthz", "/readyz"):
            ok, report = self.health.live() if path == "/healthz" else self.health.ready()
            status = "200 OK" if ok else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [json.dumps(report, default=str).encode()]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]
