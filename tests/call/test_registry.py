"""CallRegistry in-process: who may start a call, shutdown draining live calls, recovery of crashed ones."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from app import close_codes
from app.call.end import EndReason
from app.call.registry import CallRefused, CallRegistry
from app.call.session import CallSession
from app.recording.journal import read_journal
from tests.call.fakes import level
from tests.support.frames import new_sid


async def test_admission_refuses_busy_duplicate_finished_and_foreign_calls_with_a_reason(open_call, registry):
    calls = [open_call() for _ in range(3)]  # the registry's limit
    with pytest.raises(CallRefused, match="busy: 3 calls") as busy:
        registry.admit(new_sid())
    assert busy.value.close_code == close_codes.TRY_AGAIN  # Twilio may retry later
    await registry.finish(calls[0], EndReason.CALLER_HUNG_UP)
    with pytest.raises(CallRefused, match="already open") as dup:
        registry.admit(calls[1].sid)
    assert dup.value.close_code == close_codes.POLICY
    with pytest.raises(CallRefused, match="already been recorded"):
        registry.admit(calls[0].sid)
    other = new_sid()
    held = registry.store.coordinator.acquire(other)  # another worker records it
    try:
        with pytest.raises(CallRefused, match="another worker"):
            registry.admit(other)
    finally:
        held.release()
    assert registry.refused_count == 4
    registry.admit(other).release()  # free once the other worker lets go


async def test_drain_closes_every_live_call_and_finalises_it_as_a_shutdown(open_call, registry):
    calls = [open_call(), open_call("listen")]
    for call in calls:
        call.on_audio("inbound", 0, level(1000, 500))
    await registry.drain(timeout=10)
    for call in calls:
        assert call.transport.closed == [(close_codes.GOING_AWAY, "server shutting down")]
        result = registry.store.read_result(call.sid)
        assert result["end_reason"] == "server shutdown" and result["duration_s"] == 0.5
    assert registry.live == {} and registry.finalized_count == 2


async def _crash(registry: CallRegistry, call: CallSession) -> None:
    """The process dies mid-call: no stop record and no export; the masters and journal stay as written."""
    del registry.live[call.sid]
    exporter = await call.export.stop()
    if exporter is not None:
        exporter.abort()
    for track in call.recorder.tracks.values():
        track.close()
    call.recorder.journal.close()
    call.lock.release()


async def test_recovery_finalises_a_crashed_call_and_leaves_one_another_worker_holds(open_call, registry):
    crashed, held = open_call(), open_call()
    for call in (crashed, held):
        call.on_audio("inbound", 0, level(1000, 500))
    await _crash(registry, crashed)
    restarted = CallRegistry(registry.store, registry.opts)  # the next start, while `held` is still live
    try:
        assert restarted.recover_sync() == [crashed.sid]
    finally:
        restarted.executor.shutdown(wait=True)
    result = registry.store.read_result(crashed.sid)
    assert result["recovered"] is True and result["duration_s"] == 0.5
    assert [r for r in read_journal(crashed.recorder.journal.path) if r["t"] == "stop"] == []
    assert restarted.recovered_count == 1 and not registry.store.is_finalized(held.sid)


async def test_a_call_is_in_the_catalog_from_its_start_and_recovery_updates_its_row(open_call, registry):
    call, crashed = open_call("listen"), open_call()
    catalog = registry.store.catalog
    assert [catalog.get(c.sid)["status"] for c in (call, crashed)] == ["live", "live"]
    assert catalog.get(call.sid)["mode"] == "listen" and catalog.get(call.sid)["started_at"] == call.started_at
    call.on_audio("inbound", 0, level(1000, 500))
    await registry.finish(call, EndReason.CALLER_HUNG_UP)
    assert catalog.get(call.sid)["status"] == "finalized" and catalog.get(call.sid)["duration_s"] == 0.5
    await _crash(registry, crashed)
    restarted = CallRegistry(registry.store, registry.opts)
    try:
        restarted.recover_sync()
    finally:
        restarted.executor.shutdown(wait=True)
    assert catalog.get(crashed.sid)["status"] == "recovered"


async def test_a_busy_catalog_does_not_hold_up_a_calls_start(open_call, registry):
    catalog = registry.store.catalog
    catalog.count()  # the file exists
    writer = sqlite3.connect(registry.store.layout.catalog, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process writing, for longer than a call's start may wait
    try:
        t = time.perf_counter()
        call = open_call()
        waited = time.perf_counter() - t
        assert waited < 0.5 and catalog.get(call.sid) is None
    finally:
        writer.execute("COMMIT")
        writer.close()
    for _ in range(500):  # written from a worker thread once the catalog is free
        if catalog.get(call.sid) is not None:
            break
        await asyncio.sleep(0.01)
    assert catalog.get(call.sid)["status"] == "live"
    print(f"call start with the catalog busy: {waited * 1000:.0f} ms")
