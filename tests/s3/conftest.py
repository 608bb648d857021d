"""One real S3 server (SeaweedFS `weed mini`, moto if weed cannot run) for the whole folder; each
test works under a prefix of its own. Stores and registries over it, and calls recorded on them."""

from __future__ import annotations

import os
import secrets

import pytest

from app.call.registry import CallRegistry
from app.call.session import CallLimits, CallSession
from app.call.transport import CallInfo
from app.recording.finalize import ExportOptions
from app.recording.segments import segment_uploads
from app.storage.store import CallStore
from tests.call.fakes import FakeTransport, Wall
from tests.support.frames import new_sid
from tests.support.s3_server import S3Server


@pytest.fixture(autouse=True)
def no_s3_environ(monkeypatch):
    """obstore reads AWS_* from the environment: the tests' settings alone decide."""
    for key in list(os.environ):
        if key.upper().startswith(("AWS_", "S3_")) or key.upper() in ("SEGMENT_SECONDS", "REDIS_URL", "HOST_ID"):
            monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("s3")).start()
    yield server
    server.stop()


@pytest.fixture
def prefix() -> str:
    return f"t{secrets.token_hex(4)}/"


@pytest.fixture
def s3_cfg(s3_server, prefix):
    """This test's bucket settings: short timeouts, so a paused server is noticed in seconds."""
    return s3_server.config(prefix, request_timeout_s=2.0, connect_timeout_s=1.0)


@pytest.fixture
async def make_registry(tmp_path, s3_cfg):
    """`make_registry(name, segment_seconds=1.0)` → a CallRegistry over a store with its own spool
    (tmp_path/name) on this test's bucket; drained at the end like a server shutting down."""
    made: list[CallRegistry] = []

    def make(name: str = "a", *, segment_seconds: float = 1.0, fmt: str = "wav") -> CallRegistry:
        store = CallStore(tmp_path / name / "responses", s3=s3_cfg, host_id=f"host-{name}")
        reg = CallRegistry(store, ExportOptions(default_format=fmt), max_concurrent=5,
                           uploads=segment_uploads(store.artefacts, segment_seconds))
        made.append(reg)
        return reg

    yield make
    for reg in made:
        await reg.drain(timeout=10)


def open_call(registry: CallRegistry, mode: str = "listen", *, rate: int = 8000, sid: str | None = None,
              reorder_window_ms: int = 2000) -> CallSession:
    """A started CallSession admitted by the registry (listen mode: both tracks placed by timestamp)."""
    sid = sid or new_sid()
    tracks = ("inbound", "outbound") if mode == "listen" else ("inbound",)
    call = CallSession(CallInfo(sid, mode, rate, tracks=tracks), FakeTransport(rate), store=registry.store,
                       lock=registry.admit(sid), opts=registry.opts, executor=registry.executor,
                       limits=CallLimits(reorder_window_ms=reorder_window_ms, export_interval_s=0.5),
                       wall_clock=Wall())
    registry.add(call)
    return call
