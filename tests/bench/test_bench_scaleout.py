"""bench/bench_scaleout.py on the CPU: a real redis-server, two real ``outpaint-worker`` processes on
the tiny engine, one of them SIGKILLed mid-job; the harness's own checks and its JSON."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from bench import bench_scaleout
from outpaint_engine.settings import EngineSettings

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed"),
]


def test_two_workers_one_killed_lose_nothing_repeat_nothing_and_stay_fair(
    tiny_models_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "scaleout.json"
    argv = [
        "--tiny", str(tiny_models_root), "--workers", "2", "--users", "3", "--jobs-per-user", "2",
        "--kill", "--no-warmup", "--heartbeat", "0.2", "--reclaim-after", "1", "--start-timeout", "120",
        "--run-timeout", "120", "--workdir", str(tmp_path / "work"), "--json", str(out),
    ]  # fmt: skip
    assert bench_scaleout.main(argv) == 0, capsys.readouterr().err

    results = json.loads(out.read_text())
    assert results["engine"]["window"] == 64 and results["devices"] == {"cpu": results["devices"]["cpu"]}
    (run,) = results["runs"]
    assert run["workers"] == 2 and run["devices"] == ["cpu", "cpu"]
    assert run["jobs"] == 6 and run["expansions"] == 3 * (3 + 2)  # each user: a 3-step and a 2-step job
    assert run["jobs_per_min"] > 0 and run["expansions_per_min"] > 0 and run["ratio_vs_1"] is None
    assert 0 < run["latency_s"]["p50"] <= run["latency_s"]["p95"]
    assert 0 <= run["wait_s"]["p50"] <= run["wait_s"]["p95"]

    integrity = run["integrity"]
    assert integrity["ok"] and integrity["jobs_done_once"] == 6
    assert (
        integrity["jobs_not_done"]
        == integrity["repeated_expansions"]
        == integrity["missing_expansions"]
        == []
    )
    killed = run["killed"]
    assert killed["worker"] in ("bench-w0", "bench-w1") and killed["after_step"] == 0
    assert killed["job"] in integrity["redelivered_jobs"]  # the kill landed mid-job and was recovered

    fairness = run["fairness"]
    assert fairness["ok"] and fairness["max_lag_jobs"] <= 1
    assert set(fairness["mean_wait_s_by_user"]) == {"1", "2", "3"}
    assert "ok (killed" in capsys.readouterr().out  # the table


def test_fairness_counts_how_far_a_user_gets_ahead_of_another_who_waits() -> None:
    engine = EngineSettings(_env_file=None, window=64, steps=2)

    def seen(user: int, k: int, submitted: float, started: float) -> bench_scaleout.Followed:
        job, _ = bench_scaleout.bench_job(f"u{user}-{k}", user, bench_scaleout.MIX[k], engine)
        return bench_scaleout.Followed(job, submitted, record=replace(job, started_at=started))

    fair = [seen(1, 0, 0, 1), seen(2, 0, 0, 2), seen(1, 1, 0, 3), seen(2, 1, 0, 4)]
    assert bench_scaleout.fairness(fair)["max_lag_jobs"] == 1
    unfair = [seen(1, 0, 0, 1), seen(1, 1, 0, 2), seen(2, 0, 0, 3), seen(2, 1, 0, 4)]
    assert bench_scaleout.fairness(unfair) == {
        "max_lag_jobs": 2,
        "ok": False,
        "mean_wait_s_by_user": {"1": 1.5, "2": 3.5},
        "mean_wait_spread_s": 2.0,
    }
    late = [seen(1, 0, 0, 1), seen(1, 1, 0, 2), seen(2, 0, 2.5, 3), seen(2, 1, 2.5, 4)]
    assert bench_scaleout.fairness(late)["ok"]  # user 2 was not waiting yet: nobody was passed over
