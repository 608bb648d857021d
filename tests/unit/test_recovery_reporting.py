"""A recovery that fails is reported: logged when it runs at start, a non-zero exit from `callscribe recover`."""

from __future__ import annotations

import asyncio
import logging

import numpy as np

from app.cli import main
from app.main import _log_recovery_failure
from app.recording.journal import Journal
from app.storage.store import CallStore
from app.recording.track import MasterTrack

GOOD, BROKEN, LIVE = ("CA" + c * 32 for c in "123")


def _unfinished_call(store: CallStore, sid: str, *records: dict) -> None:
    d = store.files(sid, create=True).folder
    for name in ("inbound", "outbound"):
        track = MasterTrack(d / f"{name}.wav")
        track.write(0, np.zeros(800, "<i2").tobytes())
        track.close()
    journal = Journal(d / "journal.jsonl")
    journal.append("start", call_sid=sid, mode="assistant")
    for r in records:
        journal.append(r["t"], **{k: v for k, v in r.items() if k != "t"})
    journal.close()


def test_callscribe_recover_exits_non_zero_naming_the_calls_it_could_not_finalise(tmp_path, monkeypatch, capsys):
    store = CallStore(tmp_path / "responses")
    _unfinished_call(store, GOOD)
    _unfinished_call(store, BROKEN, {"t": "stop", "reason": "a stop record without its length"})
    _unfinished_call(store, LIVE)
    held = store.coordinator.acquire(LIVE)  # a server is recording this one: neither recovered nor a failure
    monkeypatch.setenv("RECORDINGS_DIRECTORY", str(store.root))
    monkeypatch.setenv("DEFAULT_AUDIO_FORMAT", "wav")
    try:
        assert main(["recover"]) == 1
    finally:
        held.release()
    out, err = capsys.readouterr()
    assert out == f"recovered 1 call(s): {GOOD}\n"
    assert "1 call(s) could not be finalised" in err and BROKEN in err and LIVE not in err
    assert store.is_finalized(GOOD) and not store.is_finalized(BROKEN) and not store.is_finalized(LIVE)


def test_callscribe_recover_exits_zero_when_every_call_was_finalised(tmp_path, monkeypatch, capsys):
    store = CallStore(tmp_path / "responses")
    _unfinished_call(store, GOOD)
    monkeypatch.setenv("RECORDINGS_DIRECTORY", str(store.root))
    monkeypatch.setenv("DEFAULT_AUDIO_FORMAT", "wav")
    assert main(["recover"]) == 0
    assert capsys.readouterr().err == ""


def test_a_recovery_at_start_that_fails_is_logged_with_its_exception(caplog):
    loop = asyncio.new_event_loop()
    try:
        failed, ok, cancelled = loop.create_future(), loop.create_future(), loop.create_future()
        failed.set_exception(PermissionError("recordings folder not readable"))
        ok.set_result(["CA" + "1" * 32])
        cancelled.cancel()
        with caplog.at_level(logging.INFO, logger="callscribe"):
            for f in (failed, ok, cancelled):
                _log_recovery_failure(f)
    finally:
        loop.close()
    assert [(r.levelname, r.getMessage().split(";")[0]) for r in caplog.records] == [
        ("ERROR", "recovery at start-up failed (PermissionError)")]
    assert caplog.records[0].exc_info[1] is failed.exception()
