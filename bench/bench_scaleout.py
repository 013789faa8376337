"""Scale-out benchmark: one Redis, N ``outpaint-worker`` processes, a fixed mix of jobs from several users.

For each worker count of ``--workers`` (e.g. ``1 2 4``) it starts a private ``redis-server``
(append-only, fsync always, as docs/queue.md advises; a free loopback port, a fresh folder) and N
workers (worker *i* on ``--devices[i]``, cycled: ``--devices cuda:0`` with two workers puts both on
one GPU), waits until every worker has loaded its engine, runs one uncounted warm-up job per
worker, then submits the mix through the queue API (:func:`outpaint_engine.queue.open_queue`) and
follows every job's events. It reports:

- **throughput**: jobs and expansions per minute, from the first submit to the last job's end, and
  the ratio (expansions per minute) against the 1-worker run of the same invocation;
- **latency**: per job, submit → done, and the wait submit → first claim, p50 and p95;
- **fairness**: every user submits the same jobs at the same time. Whenever a job of user *u*
  starts, no other user who still has a job waiting may have started two or more jobs fewer than
  *u* (``max_lag_jobs`` ≤ 1: nobody waits more than one job longer than another user with the
  same load);
- **integrity** (``--kill``): after the first expansion of a job with steps left, the worker
  running it is SIGKILLed; every job must still end ``Done`` exactly once and every (job, step)
  must have exactly one ``Expanded`` event (no finished expansion lost or repeated).

Engines: the workers read the usual ``OUTPAINT_*`` settings. ``--tiny DIR`` writes (once) and
selects the tiny random models of ``tests/tiny_models.py`` on the CPU (the test does that);
``--sdxl-random DIR`` writes random weights of the real SDXL + IP-Adapter shapes on a GPU (as
``bench_engine.py`` does), so nothing is downloaded. Commands: bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import redis

from outpaint_engine.imageio import encode_png
from outpaint_engine.job import Direction, Done, Event, Expanded, Job, JobSpec, Started
from outpaint_engine.queue import open_queue
from outpaint_engine.settings import EngineSettings, QueueSettings

REPO = Path(__file__).resolve().parent.parent
TINY_WINDOW, TINY_STEPS = 64, 2
MIX: tuple[tuple[str, Direction, int], ...] = (
    ("landscape", Direction.RIGHT, 3),  # 3 expansions
    ("portrait", Direction.RIGHT, 1),  # a square-up step + 1
    ("square", Direction.DOWN, 2),  # 2 expansions
)
"""Each user's k-th job is ``MIX[k % 3]``: (source shape, direction, times). Every job has at least
two expansion steps, so a worker killed after a job's first expansion is killed mid-job."""
SHAPES = {"landscape": (1.5, 1.0), "portrait": (0.75, 1.0), "square": (1.0, 1.0)}
"""Source width and height, in windows."""


class BenchError(RuntimeError):
    """The harness could not run (a process did not start, a job did not end); the message says why."""


# --- the job mix ---------------------------------------------------------------------------------


def source_image(shape: str, window: int) -> np.ndarray:
    """A smooth synthetic picture (waves of colour) of ``shape``: nothing to download."""
    width, height = (round(window * side) for side in SHAPES[shape])
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32) / window
    channels = [127 + 100 * np.sin((3 + c) * xs + (2 + c) * ys + 2 * c) for c in range(3)]
    return np.clip(np.dstack(channels), 0, 255).astype(np.uint8)


def bench_job(
    job_id: str, user: int, kind: tuple[str, Direction, int], engine: EngineSettings
) -> tuple[Job, bytes]:
    """A job of ``kind`` (source shape, direction, times) at the engine's window and steps."""
    shape, direction, times = kind
    window = engine.window
    png = encode_png(source_image(shape, window))
    spec = JobSpec(
        direction, times=times, expand_px=max(8, window // 32 * 8), seed=zlib.crc32(job_id.encode()),
        steps=engine.steps, guidance=engine.guidance, window=window, ip_adapter_scale=engine.ip_scale,
    )  # fmt: skip
    meta = {"kind": f"{shape} {direction} x{times}"}
    return Job(job_id, user, 1, 1, spec, hashlib.sha256(png).hexdigest(), meta=meta), png


def job_mix(users: int, jobs_per_user: int, engine: EngineSettings) -> list[tuple[Job, bytes]]:
    """The fixed mix: every user submits the same jobs (the fair queue has to interleave them)."""
    return [
        bench_job(f"bench-u{user}-j{k}", user, MIX[k % len(MIX)], engine)
        for user in range(1, users + 1)
        for k in range(jobs_per_user)
    ]


def warmup_jobs(count: int, engine: EngineSettings) -> list[tuple[Job, bytes]]:
    return [bench_job(f"warmup-{i}", 0, MIX[1], engine) for i in range(count)]


# --- processes -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float) -> None:
    """Poll ``condition()`` until true; :class:`BenchError` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


class RedisServer:
    """A private ``redis-server``: loopback, a free port, append-only persistence in ``directory``."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise BenchError("redis-server is not installed (Debian: apt-get install redis-server)")
        directory.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        log = directory / "redis.log"
        self.process = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", str(log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=port, socket_connect_timeout=1)

        def up() -> bool:
            if self.process.poll() is not None:
                raise BenchError(f"redis-server exited: {log.read_text()[-500:]}")
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        try:
            wait_for(up, "redis-server", 30)
        except BaseException:
            self.stop()
            raise
        finally:
            client.close()

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)


def worker_command() -> list[str]:
    """The ``outpaint-worker`` console script as pyproject.toml declares it, run by this Python
    (the lent GPU machines run the repository from a folder, without installing it)."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts["outpaint-worker"].partition(":")
    return [sys.executable, "-c", f"import sys; from {module} import {function}; sys.exit({function}())"]


class Workers:
    """``outpaint-worker`` processes on one queue, each logging to ``<directory>/<name>.log``."""

    def __init__(self, devices: Sequence[str], directory: Path) -> None:
        self.directory = directory
        self.devices = dict(zip((f"bench-w{i}" for i in range(len(devices))), devices, strict=True))
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def log(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def start(self, url: str, env: dict[str, str]) -> None:
        for name, device in self.devices.items():
            with self.log(name).open("wb") as out:
                self.processes[name] = subprocess.Popen(
                    [*worker_command(), "--queue", url, "--device", device, "--name", name],
                    env=env, cwd=self.directory, stdout=out, stderr=subprocess.STDOUT,
                )  # fmt: skip

    def wait_ready(self, timeout_s: float) -> float:
        """Until every worker has loaded its engine and serves the queue; returns the seconds taken."""
        began = time.monotonic()

        def ready() -> bool:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    tail = self.log(name).read_text(errors="replace")[-2000:]
                    raise BenchError(f"worker {name} exited ({process.returncode}):\n{tail}")
            return all(f"worker {name} serving" in self.log(name).read_text() for name in self.processes)

        wait_for(ready, f"{len(self.processes)} workers to load their engines", timeout_s)
        return time.monotonic() - began

    def running(self, job_id: str) -> str:
        """The worker whose log shows it took ``job_id`` (the worker logs every delivery)."""
        mark = f"job {job_id}: delivery"
        for name in self.processes:
            if mark in self.log(name).read_text(errors="replace"):
                return name
        raise BenchError(f"no worker log names job {job_id} ({mark!r})")

    def kill(self, name: str) -> None:
        """SIGKILL: no hand-back, no last words; the queue has to recover the job."""
        self.processes[name].send_signal(signal.SIGKILL)
        self.processes[name].wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()  # a worker hands its job back and exits
        for process in self.processes.values():
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# --- one mix -------------------------------------------------------------------------------------


@dataclass
class Followed:
    """What the harness saw of one job."""

    job: Job
    submitted: float  # wall clock, when submit returned
    events: list[Event] = field(default_factory=list)
    record: Job | None = None  # the queue's record at the end (started_at, finished_at, attempts)

    @property
    def started(self) -> float:
        """When a worker first claimed the job (the queue's clock, this host)."""
        assert self.record is not None and self.record.started_at is not None
        return self.record.started_at


@dataclass
class Kill:
    worker: str
    job: str
    after_step: int


async def run_mix(
    url: str, jobs: list[tuple[Job, bytes]], workers: Workers, *, kill: bool, timeout_s: float
) -> tuple[list[Followed], float, Kill | None]:
    """Submit every job (users at once, each user's jobs in order) and follow them all to the end.

    Returns what was seen of each job, the wall clock of the first submit, and the kill if any.
    """
    followed: dict[str, Followed] = {}
    followers: list[asyncio.Task[None]] = []
    killed: Kill | None = None

    async with open_queue(QueueSettings(_env_file=None, queue=url)) as queue:

        async def follow(f: Followed) -> None:
            nonlocal killed
            async for _, event in queue.events(f.job.id):
                f.events.append(event)
                mid_job = isinstance(event, Expanded) and event.step < event.total_steps - 1
                if kill and killed is None and mid_job:
                    killed = Kill(workers.running(f.job.id), f.job.id, event.step)
                    workers.kill(killed.worker)

        async def submit(user_jobs: list[tuple[Job, bytes]]) -> None:
            for job, png in user_jobs:
                await queue.submit(job, png)
                followed[job.id] = Followed(job, time.time())
                followers.append(asyncio.create_task(follow(followed[job.id])))

        by_user: dict[int, list[tuple[Job, bytes]]] = defaultdict(list)
        for job, png in jobs:
            by_user[job.user_id].append((job, png))
        began = time.time()
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(submit(user_jobs) for user_jobs in by_user.values()))
                await asyncio.gather(*followers)
        except TimeoutError:
            unfinished = [f.job.id for f in followed.values() if not (f.events and f.events[-1].terminal)]
            raise BenchError(f"jobs not finished after {timeout_s:.0f} s: {', '.join(unfinished)}") from None
        finally:
            for task in followers:
                task.cancel()
        for f in followed.values():
            f.record = await queue.get(f.job.id)
    return [followed[job.id] for job, _ in jobs], began, killed


# --- the numbers ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in [0, 100]) of a non-empty sequence."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def fairness(followed: Sequence[Followed]) -> dict[str, Any]:
    """``max_lag_jobs``: the most jobs by which a user whose job starts is ahead of another user with
    the same load (the same job kinds) who has a job waiting at that moment."""
    by_user: dict[int, list[Followed]] = defaultdict(list)
    for f in followed:
        by_user[f.job.user_id].append(f)
    load = {user: sorted(f.job.meta["kind"] for f in jobs) for user, jobs in by_user.items()}
    started: Counter[int] = Counter()
    max_lag = 0
    for f in sorted(followed, key=lambda f: f.started):
        user, at = f.job.user_id, f.started
        started[user] += 1
        for other, jobs in by_user.items():
            waiting = any(g.submitted <= at < g.started for g in jobs)
            if other != user and load[other] == load[user] and waiting:
                max_lag = max(max_lag, started[user] - started[other])
    mean_wait = {
        user: sum(f.started - f.submitted for f in jobs) / len(jobs) for user, jobs in sorted(by_user.items())
    }
    return {
        "max_lag_jobs": max_lag,
        "ok": max_lag <= 1,
        "mean_wait_s_by_user": {str(user): round(wait, 3) for user, wait in mean_wait.items()},
        "mean_wait_spread_s": round(max(mean_wait.values()) - min(mean_wait.values()), 3),
    }


def integrity(followed: Sequence[Followed]) -> dict[str, Any]:
    """Every job ``Done`` exactly once; every (job, step) ``Expanded`` exactly once."""
    not_done, repeated, missing = [], [], []
    for f in followed:
        if [type(e) for e in f.events if e.terminal] != [Done]:
            not_done.append(f.job.id)
        expanded = Counter(e.step for e in f.events if isinstance(e, Expanded))
        total = max((e.total_steps for e in f.events if isinstance(e, Started | Expanded)), default=0)
        repeated += [f"{f.job.id}/{step}" for step, n in sorted(expanded.items()) if n > 1]
        missing += [f"{f.job.id}/{step}" for step in range(total) if step not in expanded]
    return {
        "jobs_done_once": len(followed) - len(not_done),
        "jobs_not_done": not_done,
        "repeated_expansions": repeated,
        "missing_expansions": missing,
        "redelivered_jobs": sorted(f.job.id for f in followed if f.record and f.record.attempts > 1),
        "ok": not (not_done or repeated or missing),
    }


def summarise(followed: Sequence[Followed], began: float) -> dict[str, Any]:
    """Throughput, latency, fairness and integrity of one mix (every job must have ended)."""
    records = [f.record for f in followed if f.record is not None]
    if len(records) != len(followed) or any(r.started_at is None or r.finished_at is None for r in records):
        raise BenchError("a job's record is missing or has no start or end time")
    ended = max(r.finished_at or began for r in records)
    minutes = max(ended - began, 1e-9) / 60
    expansions = sum(isinstance(e, Expanded) for f in followed for e in f.events)
    latency = [(f.record.finished_at or 0) - f.submitted for f in followed if f.record]
    wait = [f.started - f.submitted for f in followed]

    def spread(values: list[float]) -> dict[str, float]:
        return {"p50": round(percentile(values, 50), 3), "p95": round(percentile(values, 95), 3)}

    return {
        "jobs": len(followed),
        "expansions": expansions,
        "elapsed_s": round(ended - began, 3),
        "jobs_per_min": round(len(followed) / minutes, 3),
        "expansions_per_min": round(expansions / minutes, 3),
        "latency_s": spread(latency),
        "wait_s": spread(wait),
        "fairness": fairness(followed),
        "integrity": integrity(followed),
    }


# --- the benchmark -------------------------------------------------------------------------------


@dataclass
class Setup:
    """What every run of one invocation shares."""

    env: dict[str, str]  # the workers' environment
    engine: EngineSettings  # what the workers will load (window, steps) for the jobs' specs
    devices: list[str]
    users: int
    jobs_per_user: int
    workdir: Path
    kill: bool
    warmup: bool
    start_timeout_s: float
    run_timeout_s: float


def run_once(setup: Setup, n_workers: int) -> dict[str, Any]:
    """One run with ``n_workers`` workers on a fresh Redis."""
    directory = setup.workdir / f"{n_workers}-workers"
    devices = [setup.devices[i % len(setup.devices)] for i in range(n_workers)]
    server = RedisServer(directory / "redis")
    workers = Workers(devices, directory)

    async def warm_up_then_measure() -> tuple[list[Followed], float, Kill | None]:
        if setup.warmup:  # one job per worker, not counted: first-call costs (kernels, allocator)
            warmup = warmup_jobs(n_workers, setup.engine)
            await run_mix(server.url, warmup, workers, kill=False, timeout_s=setup.run_timeout_s)
        jobs = job_mix(setup.users, setup.jobs_per_user, setup.engine)
        kill = setup.kill and n_workers > 1
        return await run_mix(server.url, jobs, workers, kill=kill, timeout_s=setup.run_timeout_s)

    try:
        workers.start(server.url, setup.env)
        ready_s = workers.wait_ready(setup.start_timeout_s)
        followed, began, killed = asyncio.run(warm_up_then_measure())
    finally:
        workers.stop()
        server.stop()
    return {
        "workers": n_workers,
        "devices": devices,
        "ready_s": round(ready_s, 1),
        **summarise(followed, began),
        "killed": None if killed is None else asdict(killed),
    }


def tiny_engine_env(root: Path) -> dict[str, str]:
    """Write the tiny random models under ``root`` unless they are there; their settings (CPU)."""
    sdxl, ip = root / "sdxl", root / "ip-adapter"
    if not (ip / "models" / "image_encoder" / "config.json").exists():
        from tests.tiny_models import save_ip_adapter, save_sdxl

        save_ip_adapter(ip, save_sdxl(sdxl))
    return {
        "OUTPAINT_MODEL": str(sdxl),
        "OUTPAINT_IP_ADAPTER": str(ip),
        "OUTPAINT_WINDOW": str(TINY_WINDOW),
        "OUTPAINT_STEPS": str(TINY_STEPS),
        "OUTPAINT_DTYPE": "fp32",
        "OUTPAINT_CAPTIONER": "",
    }


def sdxl_random_env(root: Path) -> dict[str, str]:
    """Random weights of the real SDXL + IP-Adapter Plus shapes, written once by bench_engine's
    builder on the GPU (in a child process, so this one holds no GPU memory)."""
    build = "import sys, pathlib, bench.bench_engine as b; b.build_models(pathlib.Path(sys.argv[1]))"
    subprocess.run([sys.executable, "-c", build, str(root)], cwd=REPO, check=True)
    return {"OUTPAINT_MODEL": str(root / "sdxl"), "OUTPAINT_IP_ADAPTER": str(root / "ip-adapter")}


def default_devices() -> list[str]:
    """Every CUDA device, one worker each; the CPU where there is none."""
    import torch

    return [f"cuda:{i}" for i in range(torch.cuda.device_count())] or ["cpu"]


def device_names(devices: Sequence[str]) -> dict[str, str]:
    """What each device is, for the results (the card's name)."""
    import torch

    return {
        d: torch.cuda.get_device_name(d) if d.startswith("cuda") else f"cpu ({os.cpu_count()} cores)"
        for d in sorted(set(devices))
    }


def worker_env(
    engine_env: dict[str, str], args: argparse.Namespace, devices: Sequence[str]
) -> dict[str, str]:
    """This environment with the engine's settings, short recovery timeouts and the repository on
    the path; CPU workers split the cores between them rather than fight over them."""
    env = {**os.environ, **engine_env}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env["OUTPAINT_HEARTBEAT_S"] = str(args.heartbeat)
    env["OUTPAINT_RECLAIM_AFTER_S"] = str(args.reclaim_after)
    if all(d == "cpu" for d in devices):
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(args.workers)))
    return env


def engine_settings(engine_env: dict[str, str]) -> EngineSettings:
    """The engine settings the workers will read: the environment, then ``engine_env`` on top."""
    return EngineSettings(**{k.removeprefix("OUTPAINT_").lower(): v for k, v in engine_env.items()})


def table(runs: Sequence[dict[str, Any]]) -> str:
    lines = [
        "workers | jobs/min | exp/min | ratio | latency p50 / p95 s | wait p50 / p95 s | max lag | integrity",
        "--------|---------:|--------:|------:|--------------------:|-----------------:|--------:|----------",
    ]
    for r in runs:
        ratio = "–" if r["ratio_vs_1"] is None else f"{r['ratio_vs_1']:.2f}×"
        kill = f" (killed {r['killed']['worker']})" if r["killed"] else ""
        lat, wait = r["latency_s"], r["wait_s"]
        lines.append(
            f"{r['workers']:>7} | {r['jobs_per_min']:>8.2f} | {r['expansions_per_min']:>7.2f} | {ratio:>5} | "
            f"{lat['p50']:>9.2f} / {lat['p95']:<7.2f} | {wait['p50']:>7.2f} / {wait['p95']:<6.2f} | "
            f"{r['fairness']['max_lag_jobs']:>7} | {'ok' if r['integrity']['ok'] else 'FAILED'}{kill}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--workers", type=int, nargs="+", default=[1, 2], help="worker counts, one run each (default: 1 2)")
    add("--devices", nargs="+", help="device of worker i, cycled (default: every CUDA device, else cpu)")
    add("--users", type=int, default=4, help="users submitting at once (default: 4)")
    add("--jobs-per-user", type=int, default=3, help="jobs each user submits (default: 3, one of each kind)")
    add("--kill", action="store_true", help="SIGKILL the worker of a running job, in runs of 2+ workers")
    add("--no-warmup", dest="warmup", action="store_false", help="skip the uncounted warm-up job per worker")
    engines = parser.add_mutually_exclusive_group()
    engines.add_argument(
        "--tiny", type=Path, metavar="DIR", help="tiny random models on the CPU (written once)"
    )
    engines.add_argument(
        "--sdxl-random", type=Path, metavar="DIR", help="random weights, real SDXL shapes (GPU)"
    )
    add("--heartbeat", type=float, default=1.0, help="the workers' OUTPAINT_HEARTBEAT_S (default: 1)")
    add("--reclaim-after", type=float, default=5.0, help="the workers' OUTPAINT_RECLAIM_AFTER_S (default: 5)")
    add("--start-timeout", type=float, default=900, help="seconds for workers to load (default: 900)")
    add("--run-timeout", type=float, default=3600, help="seconds for one mix to finish (default: 3600)")
    add("--workdir", type=Path, help="worker logs and Redis files (default: a new temporary folder)")
    add("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    if min(args.workers) < 1 or args.users < 1 or args.jobs_per_user < 1:
        parser.error("--workers, --users and --jobs-per-user must be 1 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.tiny:
        engine_env = tiny_engine_env(args.tiny)
    elif args.sdxl_random:
        engine_env = sdxl_random_env(args.sdxl_random)
    else:
        engine_env = {}
    devices = args.devices or (["cpu"] if args.tiny else default_devices())
    setup = Setup(
        env=worker_env(engine_env, args, devices),
        engine=engine_settings(engine_env),
        devices=devices,
        users=args.users,
        jobs_per_user=args.jobs_per_user,
        workdir=args.workdir or Path(tempfile.mkdtemp(prefix="bench-scaleout-")),
        kill=args.kill,
        warmup=args.warmup,
        start_timeout_s=args.start_timeout,
        run_timeout_s=args.run_timeout,
    )
    try:
        runs = [run_once(setup, n) for n in args.workers]
    except BenchError as error:
        print(f"bench_scaleout: {error}", file=sys.stderr)
        return 1
    one = next((r for r in runs if r["workers"] == 1), None)
    for r in runs:
        r["ratio_vs_1"] = round(r["expansions_per_min"] / one["expansions_per_min"], 3) if one else None
    results = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.bench_scaleout", *(sys.argv[1:] if argv is None else argv)]),
        "devices": device_names(devices),
        "engine": {k: getattr(setup.engine, k) for k in ("window", "steps", "dtype", "compile")},
        "mix": {
            "users": args.users,
            "jobs_per_user": args.jobs_per_user,
            "kinds": [list(map(str, k)) for k in MIX],
        },
        "workdir": str(setup.workdir),
        "runs": runs,
    }
    print(table(runs))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    failed = [r["workers"] for r in runs if not (r["integrity"]["ok"] and r["fairness"]["ok"])]
    if failed:
        print(
            f"bench_scaleout: integrity or fairness failed in the runs of {failed} workers", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
