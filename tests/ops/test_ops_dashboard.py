"""The Grafana dashboard and docs/operations.md name the metrics the code exports, and no others."""

from __future__ import annotations

import json
import re
from pathlib import Path

REPO = Path(__file__).parents[2]
NAME = re.compile(r"\boutpaint_[a-z_]+")
SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def exported() -> set[str]:
    """Every metric name the code defines (metric objects and collectors alike)."""
    found: set[str] = set()
    for path in [*(REPO / "bot").rglob("*.py"), *(REPO / "outpaint_engine").rglob("*.py")]:
        found.update(re.findall(r'"(outpaint_[a-z_]+)"', path.read_text()))
    return found - {"outpaint_load_listener", "outpaint_measuring"}  # context variables


def base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in exported():
            return name.removesuffix(suffix)
    return name


def test_the_dashboard_reads_exported_metrics() -> None:
    dashboard = json.loads((REPO / "deploy" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {base(name) for expr in exprs for name in NAME.findall(expr)}
    assert used and used <= exported()
    assert {"outpaint_queue_jobs", "outpaint_expansion_seconds", "outpaint_discord_rate_limits"} <= used


def test_the_operations_page_lists_every_metric() -> None:
    rows = [
        line for line in (REPO / "docs" / "operations.md").read_text().splitlines() if line.startswith("| `")
    ]
    listed = {base(NAME.findall(row)[0]) for row in rows if NAME.search(row.split("|")[1])}
    assert listed == exported()
