"""A real CallRegistry over a store in tmp_path, and calls opened on it with a fake transport."""

from __future__ import annotations

import pytest

from app.call.registry import CallRegistry
from app.call.session import CallLimits, CallSession
from app.call.transport import CallInfo
from app.recording.finalize import ExportOptions
from app.storage.store import CallStore
from app.recording.timeline import Clock
from tests.call.fakes import FakeTransport, Wall
from tests.support.frames import new_sid


@pytest.fixture
async def registry(tmp_path):
    """WAV output (exact samples to compare); drained at the end like a server shutting down."""
    reg = CallRegistry(CallStore(tmp_path / "responses"), ExportOptions(default_format="wav"), max_concurrent=3)
    yield reg
    await reg.drain(timeout=10)


@pytest.fixture
def open_call(registry):
    """`open_call(mode, ...)` → a started CallSession admitted by the registry, with a FakeTransport
    (`call.transport`) and a Wall clock the test moves (`call.wall_clock`)."""

    def open_(mode: str = "assistant", *, rate: int = 8000, sid: str | None = None, clock: Clock | None = None,
              wall: Wall | None = None, limits: CallLimits | None = None, events: object = None,
              chunk_bytes: int = 0) -> CallSession:
        sid = sid or new_sid()
        tracks = ("inbound", "outbound") if mode == "listen" else ("inbound",)
        call = CallSession(CallInfo(sid, mode, rate, tracks=tracks), FakeTransport(rate), store=registry.store,
                           lock=registry.admit(sid), opts=registry.opts, executor=registry.executor,
                           limits=limits, clock=clock, wall_clock=wall or Wall(), events=events,
                           chunk_bytes=chunk_bytes)
        registry.add(call)
        return call

    return open_
