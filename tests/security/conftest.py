"""Fixtures for the security and reliability suite: real `callscribe serve` processes on free ports."""

from __future__ import annotations

import signal

import pytest

from tests.e2e.conftest import Server


def pytest_configure(config):
    config.addinivalue_line("markers", "security: security and reliability promises (tests/security, SECURITY.md)")
    config.addinivalue_line("markers", "load: many concurrent calls against one server (runs in `make test`, ~30 s)")
    config.addinivalue_line("markers", "faults: kill -9, full disk, failing encoders")


def _stop(servers: list[Server]) -> None:
    for s in servers:
        s.stop(signal.SIGKILL if s.proc and s.proc.poll() is None else signal.SIGTERM, timeout=5)


@pytest.fixture
def make_server(tmp_path):
    """`make_server(**env)` → a started server in this test's directory (a second call with the
    same directory is a restart: it recovers what the first left)."""
    servers: list[Server] = []

    def _make(**env) -> Server:
        s = Server(tmp_path, {k: str(v) for k, v in env.items()})
        servers.append(s)
        return s.start()

    yield _make
    _stop(servers)


# A module-scoped server starts before the autouse `clean_environ` fixture runs: pin what it would clear.
_NEUTRAL = {"PUBLIC_BASE_URL": "", "CALL_MODE": "assistant", "FORWARD_TO": "", "RECORDING_CHANNELS": "1",
            "OUTPUT_SAMPLE_RATE": "8000", "MP3_BITRATE": "128k", "RECORD_CONVERSATIONS": "true",
            "DEFAULT_AUDIO_FORMAT": "mp3"}


@pytest.fixture(scope="module")
def module_server_factory(tmp_path_factory):
    """Like make_server, but one server for a whole module (each test uses its own CallSids)."""
    servers: list[Server] = []

    def _make(**env) -> Server:
        s = Server(tmp_path_factory.mktemp("srv"), _NEUTRAL | {k: str(v) for k, v in env.items()})
        servers.append(s)
        return s.start()

    yield _make
    _stop(servers)
