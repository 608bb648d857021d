"""pytest fixtures over tests.support.server; tests/conftest.py imports them for every folder."""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.server import Server

# A module-scoped server starts before the autouse `clean_environ` fixture runs: pin what it would clear.
_NEUTRAL = {"PUBLIC_BASE_URL": "", "CALL_MODE": "assistant", "FORWARD_TO": "", "RECORDING_CHANNELS": "1",
            "OUTPUT_SAMPLE_RATE": "", "MP3_BITRATE": "128k", "RECORD_CONVERSATIONS": "true",
            "DEFAULT_AUDIO_FORMAT": "mp3"}


def _factory(workdir: Callable[[], Path], pinned: dict[str, str] | None = None) -> Iterator[Callable[..., Server]]:
    """Yield `make(workers=1, **env)` → a started server; every server it made is stopped (killed) afterwards."""
    servers: list[Server] = []

    def make(*, workers: int = 1, **env) -> Server:
        s = Server(workdir(), (pinned or {}) | {k: str(v) for k, v in env.items()}, workers=workers)
        servers.append(s)
        return s.start()

    yield make
    for s in servers:
        s.stop(signal.SIGKILL if s.proc and s.proc.poll() is None else signal.SIGTERM, timeout=5)


@pytest.fixture
def make_server(tmp_path):
    """`make_server(**env)` → a started server in this test's directory (a second call with the
    same directory is a restart: it recovers what the first left)."""
    yield from _factory(lambda: tmp_path)


@pytest.fixture(scope="module")
def module_server_factory(tmp_path_factory):
    """Like make_server, but one server for a whole module (each test uses its own CallSids)."""
    yield from _factory(lambda: tmp_path_factory.mktemp("srv"), _NEUTRAL)
