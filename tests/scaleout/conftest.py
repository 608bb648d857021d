"""Fixtures for the scale-out tests: a real redis-server, coordinators as hosts, `callscribe serve` hosts.

Every Redis and every server is started by the test on 127.0.0.1 and stopped by its pid at the end.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from app.cancellation import cancel_and_wait
from app.storage.paths import StoreLayout
from app.storage.redis_coordination import RedisCoordinator, Timing
from tests.support.redis_server import RedisServer
from tests.support.server import Server

# Fast enough for unit tests: a dead host's calls are claimed about 1 to 1.5 s after its last beat.
FAST = Timing(heartbeat_ttl_s=1.0, beat_s=0.25, sweep_s=0.25, sweep_jitter_s=0.05, probe_s=0.2,
              orphan_backoff_s=2.0)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, in `tmp_path/redis`."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
async def make_coordinator(redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    """`await make(host_id, folder="shared", on_orphan=None, timing=FAST, start=True)` → a RedisCoordinator,
    a "host" of its own; hosts given the same `folder` share a recordings folder. All are closed at the end."""
    made: list[RedisCoordinator] = []

    async def make(host_id: str, *, folder: str = "shared", on_orphan=None, timing: Timing = FAST,
                   start: bool = True) -> RedisCoordinator:
        c = RedisCoordinator(redis_server.url, StoreLayout(tmp_path / folder), host_id, timing=timing)
        made.append(c)
        if start:
            await c.start(on_orphan=on_orphan)
        return c

    yield make
    if redis_server.paused:
        redis_server.resume()
    for c in made:
        await c.aclose()


async def die(c: RedisCoordinator) -> None:
    """As `kill -9` leaves it: the loops stop, the heartbeat is not withdrawn (it expires by itself)."""
    await cancel_and_wait(c._tasks)
    c._tasks = []


@pytest.fixture
def make_host(tmp_path: Path, redis_server: RedisServer) -> Iterator[Callable[..., Server]]:
    """`make(name, shared=False, **env)` → a started `callscribe serve` with HOST_ID=name and the test's
    REDIS_URL, in `tmp_path/name` (its own recordings), or with `shared` in `tmp_path/shared` (one
    recordings folder for every such host). The assistant is off (a chime greets) and WAV is the format."""
    servers: list[Server] = []

    def make(name: str, *, shared: bool = False, **env: str) -> Server:
        workdir = tmp_path / ("shared" if shared else name)
        workdir.mkdir(exist_ok=True)
        settings = {"REDIS_URL": redis_server.url, "HOST_ID": name, "GREETING": "tone", "TRANSCRIBE": "false",
                    "DEFAULT_AUDIO_FORMAT": "wav"} | env
        server = Server(workdir, settings, name=name)
        servers.append(server)
        return server.start()

    yield make
    if redis_server.paused:
        redis_server.resume()
    for s in servers:
        s.stop(signal.SIGTERM, timeout=10)
