"""Fixtures of the queue tests: private ``redis-server`` processes and both backends behind one
harness (see :mod:`queue_helpers`)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

sys.path.insert(0, str(Path(__file__).parent))  # engine_double, queue_helpers: whatever the import mode

from queue_helpers import REDIS_SERVER, Harness, RedisServer, queue_settings


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


@pytest.fixture(params=["embedded", "redis"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("shared_redis")
        with redis.Redis.from_url(server.url) as client:
            client.flushall()
        settings = queue_settings(server.url, tmp_path)
    else:
        settings = queue_settings("embedded", tmp_path)
    h = Harness(request.param, settings)
    await h.start()
    yield h
    await h.close()
