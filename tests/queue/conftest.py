"""Fixtures of the queue tests: private ``redis-server`` processes, the real tiny engine, and both
backends behind one harness (see :mod:`queue_helpers`)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import torch

sys.path.insert(0, str(Path(__file__).parent))  # engine_double, queue_helpers: whatever the import mode

from engine_double import FastEngineDouble, RecordingEngine
from processes import Processes
from queue_helpers import REDIS_SERVER, GatedCheck, Harness, RedisServer, queue_settings
from real_engine import THREADS, HookedEngine

from outpaint_engine.captioner import Caption
from outpaint_engine.runner import Outpainter
from outpaint_engine.safety import SafetyCheck, SafetySettings


def require_redis() -> None:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")


@pytest.fixture(scope="session")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One server for the contract tests (flushed before each); fault tests start their own."""
    require_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A server of this test's own (it may be killed and restarted)."""
    require_redis()
    server = RedisServer(tmp_path / "redis")
    server.directory.mkdir()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def processes(tmp_path: Path, tiny_models_root: Path) -> Iterator[Processes]:
    """Worker and bot subprocesses of this test (killed at its end)."""
    procs = Processes(tmp_path, tiny_models_root)
    yield procs
    procs.stop_all()


@pytest.fixture
def engine(tiny_engine: Outpainter) -> Iterator[Outpainter]:
    """The session's real tiny engine, on :data:`real_engine.THREADS` CPU thread during the test
    (as in worker processes, so their pixels match a direct run here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield tiny_engine
    torch.set_num_threads(before)


async def open_harness(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    engine: RecordingEngine,
    *,
    safety: SafetyCheck | None = None,
    **settings: object,
) -> Harness:
    server: RedisServer | None = None
    if request.param == "redis":
        server = request.getfixturevalue("shared_redis")
        with redis.Redis.from_url(server.url) as client:
            client.flushall()
    url = server.url if server else "embedded"
    h = Harness(request.param, queue_settings(url, tmp_path, **settings), engine, safety)
    h.redis_server = server
    await h.start()
    return h


@pytest.fixture(params=["embedded", "redis"])
async def harness(
    request: pytest.FixtureRequest, tmp_path: Path, engine: Outpainter
) -> AsyncIterator[Harness]:
    """A backend whose worker runs the real tiny engine (a :class:`real_engine.HookedEngine`)."""
    h = await open_harness(request, tmp_path, HookedEngine(engine))
    yield h
    await h.close()


@pytest.fixture(params=["embedded", "redis"])
async def double_harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    """A backend whose worker runs the :class:`engine_double.FastEngineDouble`: only for tests
    about many jobs and their order, where the pixels do not matter."""
    h = await open_harness(request, tmp_path, FastEngineDouble())
    yield h
    await h.close()


@pytest.fixture(params=["embedded", "redis"])
async def impatient_harness(
    request: pytest.FixtureRequest, tmp_path: Path, engine: Outpainter
) -> AsyncIterator[Harness]:
    """:func:`harness` with a short ``queue_timeout_s`` (0.3 s), for backends that stop answering."""
    h = await open_harness(request, tmp_path, HookedEngine(engine), queue_timeout_s=0.3)
    yield h
    await h.close()


AUTO_PROMPT = "a misty pine forest"
"""What the captioner of ``captioning_harness`` writes (until a test changes it)."""
WITHHELD_WORD = "gore"
"""On the word list of ``captioning_harness``'s worker."""


@pytest.fixture(params=["embedded", "redis"])
async def captioning_harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    """A backend whose worker runs the :class:`engine_double.FastEngineDouble` with a captioner
    (it writes :data:`AUTO_PROMPT`) and a word list (:data:`WITHHELD_WORD`): the pixels do not matter."""
    words = SafetyCheck(SafetySettings(_env_file=None, blocked_words=[WITHHELD_WORD]))
    engine = FastEngineDouble(caption=Caption(AUTO_PROMPT))
    h = await open_harness(request, tmp_path, engine, safety=words)
    yield h
    await h.close()


@pytest.fixture(params=["embedded", "redis"])
async def storing_harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    """A backend whose worker runs the :class:`engine_double.FastEngineDouble` and checks each
    finished step with a :class:`GatedCheck` (``harness.safety``)."""
    h = await open_harness(request, tmp_path, FastEngineDouble(), safety=GatedCheck())
    yield h
    await h.close()
