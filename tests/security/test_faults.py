"""Faults: kill -9 at random moments, a full disk, an encoder that raises.

DESIGN.md "Nothing is lost": after kill -9 a restart finalises every unfinished call, marked
recovered, losing at most the last second; a failed encoder or a full disk leaves a recording
and a clear log line, never a silent gap.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time

import numpy as np
import pytest
import soundfile as sf

from app.audio import mp3, mulaw
from app.recording.finalize import ExportOptions, finalize_call
from app.recording.recorder import CallRecorder
from app.storage.store import CallStore
from app.simulator import SimConfig, SimResult, run_call
from tests.security.helpers import (
    assert_healthy, expected_master, first_mismatch, log_text, noise, read_master, result_of,
)
from tests.support.frames import new_sid

pytestmark = [pytest.mark.security, pytest.mark.faults]


# ----------------------------------------------------------------------------------- kill -9


@pytest.mark.timeout(150)
async def test_kill_9_at_random_moments_every_call_is_recovered_losing_at_most_a_second(make_server):
    seed = int(os.environ.get("CALLSCRIBE_FAULT_SEED", time.time_ns() % 10**6))
    rng = random.Random(seed)
    print(f"CALLSCRIBE_FAULT_SEED={seed}")  # to replay a failure
    srv = make_server(DEFAULT_AUDIO_FORMAT="wav")
    for trial in range(3):
        calls = []
        for i in range(3):
            audio = noise(8.0, seed=seed + 10 * trial + i)
            sid = new_sid()
            calls.append((sid, audio, asyncio.create_task(
                run_call(SimConfig(srv.base, audio, call_sid=sid, speed=1.0, tail_s=0)))))
        journals = [srv.responses / ".calls" / sid / "journal.jsonl" for sid, _, _ in calls]
        t0 = time.monotonic()
        while not all(j.exists() for j in journals):
            assert time.monotonic() - t0 < 10, "calls did not start"
            await asyncio.sleep(0.01)
        kill_at = rng.uniform(1.5, 4.0)
        await asyncio.sleep(max(0.0, t0 + kill_at - time.monotonic()))
        srv.kill9()
        results = await asyncio.gather(*(t for _, _, t in calls), return_exceptions=True)
        for sid, _, _ in calls:
            assert not (srv.responses / f"call_{sid}.json").exists()
        srv = make_server(DEFAULT_AUDIO_FORMAT="wav")  # restart: recovery, then the next trial
        for (sid, audio, _), res in zip(calls, results):
            assert isinstance(res, SimResult), res
            out = await result_of(srv, sid)
            assert out["recovered"] is True and out["end_reason"] == "server stopped (crash)"
            want = expected_master(audio)
            sent = len(expected_master(audio[: 160 * res.frames_sent]))  # samples the simulator sent
            got = read_master(srv.responses, sid)
            recorded = round(out["duration_s"] * 8000)
            assert sent - 8000 <= recorded <= sent, (trial, kill_at, sent / 8000, recorded / 8000)
            assert len(got) == recorded
            assert np.array_equal(got, want[:recorded]), (trial, kill_at, first_mismatch(got, want))
            summary = (srv.responses / f"call_{sid}_summary.txt").read_text()
            assert "Recovered After Crash: yes" in summary
    assert_healthy(srv)


# ----------------------------------------------------------------------------------- full disk


@pytest.fixture
def small_disk(tmp_path):
    """responses/ on a 2 MB tmpfs (the test's servers write there). Skipped where mount is not allowed."""
    d = tmp_path / "responses"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(d)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a 2 MB tmpfs for the full-disk test (needs root): {r.stderr.strip()}")
    yield d
    subprocess.run(["umount", str(d)], capture_output=True)
    if os.path.ismount(d):
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


@pytest.mark.timeout(120)
async def test_a_full_disk_keeps_the_service_up_logs_once_keeps_what_was_written_and_recovers(make_server, small_disk):
    srv = make_server(DEFAULT_AUDIO_FORMAT="wav", GREETING="none")  # the conversation is then the caller alone
    audio = noise(180.0, seed=41)  # 180 s × 16 KB/s of master: far more than 2 MB
    sid = new_sid()
    res = await run_call(SimConfig(srv.base, audio, call_sid=sid, speed=0, tail_s=0))
    assert res.frames_sent == len(audio) // 160 and not res.closed_by_server  # the call itself went on
    assert_healthy(srv)
    # Finalised, or clearly reported as not (nothing can be written on a full disk).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        log = log_text(srv)
        if (small_disk / ".calls" / sid / "finalized").exists() or f"call {sid}: finalisation failed" in log:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the call was neither finalised nor reported")
    lines = [l for l in log.splitlines() if sid in l and ("ERROR" in l or "WARNING" in l)]
    assert len([l for l in lines if "master failed" in l]) == 1, lines  # once per call, not per frame
    assert "No space left on device" in next(l for l in lines if "master failed" in l)
    # A handful of lines in all, each said once: the master, the incremental export (when an advance ran
    # into the full disk before hang-up), the status callback, the export and its WAV fallback, the
    # timeline picture, the finalisation.
    said = [l.split(" ", 2)[2] for l in lines]  # without the timestamp
    assert len(said) == len(set(said)) and len(lines) <= 7, lines
    # The status callback that could not be stored says so (503 JSON), or was stored.
    assert res.status_callback_status in (204, 503)
    # What was written is kept, exactly; after it, silence.
    want = expected_master(audio)
    got = read_master(small_disk, sid)
    diff = np.flatnonzero(got[: len(want)] != want)
    kept = int(diff[0]) if len(diff) else len(want)
    assert kept >= 30 * 8000, kept / 8000  # most of the 2 MB went to the caller's master
    assert not got[kept:].any()
    assert not list(small_disk.glob("*.partial")) and not list(small_disk.glob("*.tmp")), os.listdir(small_disk)
    assert_healthy(srv)
    # Space comes back (the operator grows the volume) and the server restarts: the call is finalised
    # from what was kept, marked recovered.
    srv.stop()
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    again = make_server(DEFAULT_AUDIO_FORMAT="wav", GREETING="none")
    out = await result_of(again, sid)
    if f"call {sid}: finalisation failed" in log:
        assert out["recovered"] is True
    conv, rate = sf.read(str(small_disk / out["files"]["conversation"]), dtype="int16")
    assert rate == 8000 and np.array_equal(conv[:kept], want[:kept])
    again.stop()


# ----------------------------------------------------------------------------------- a failing encoder


def _recorded_call(tmp_path, seconds: float = 2.5):
    store = CallStore(tmp_path / "responses")
    sid = new_sid()
    rec = CallRecorder(store.files(sid, create=True).folder, sid)
    rec.event("start", call_sid=sid, stream_sid=new_sid("MZ"), mode="assistant", tracks=["inbound"])
    audio = noise(seconds, seed=51)
    ulaw = mulaw.encode(audio)
    for i in range(len(ulaw) // 160):
        rec.on_audio("inbound", 120 + 20 * i, mulaw.decode_bytes(ulaw[160 * i: 160 * (i + 1)]))
    rec.close("caller hung up (stop)")
    return store, sid, expected_master(audio)


def _patch_soundfile(monkeypatch, how: str) -> None:
    real = sf.SoundFile

    class MidwayFailure:
        def __init__(self, f):
            self._f, self._writes = f, 0

        def write(self, data):
            self._writes += 1
            if self._writes > 1:
                raise RuntimeError("simulated LAME failure mid-stream")
            return self._f.write(data)

        def __getattr__(self, name):
            return getattr(self._f, name)

    def fake(*args, **kwargs):
        if kwargs.get("format") == "MP3":
            if how == "open":
                raise RuntimeError("simulated LAME failure")
            return MidwayFailure(real(*args, **kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(sf, "SoundFile", fake)

    real_mp3 = mp3.Mp3Writer  # the MP3 encoder (LAME through lameenc) fails the same ways

    def fake_mp3(*args, **kwargs):
        if how == "open":
            raise RuntimeError("simulated LAME failure")
        return MidwayFailure(real_mp3(*args, **kwargs))

    monkeypatch.setattr(mp3, "Mp3Writer", fake_mp3)


@pytest.mark.parametrize("how", ["open", "write"])
def test_a_failing_encoder_keeps_the_masters_writes_wav_and_says_why(tmp_path, monkeypatch, how):
    store, sid, want = _recorded_call(tmp_path)
    _patch_soundfile(monkeypatch, how)
    out = finalize_call(store, sid, ExportOptions(default_format="mp3"))
    audio = out["audio"]
    assert audio["requested_format"] == "mp3" and audio["format"] == "wav"
    assert "the mp3 encoder failed: RuntimeError: simulated LAME failure" in audio["error"]
    conv = store.output(sid, "conversation", "wav")
    assert out["files"]["conversation"] == conv.name
    x, rate = sf.read(str(conv), dtype="int16")
    assert rate == 8000 and np.array_equal(x, want)  # the fallback is the whole call, exact
    summary = store.output(sid, "summary").read_text()
    assert "Requested Format: MP3 — missing: the mp3 encoder failed: RuntimeError: simulated LAME failure" in summary
    assert "Warning: MP3 export failed (RuntimeError); the conversation was written as WAV instead" in summary
    masters = [*store.files(sid).masters]
    assert all(m.exists() for m in masters) and out["masters"] == [str(m) for m in masters]
    assert np.array_equal(np.frombuffer(masters[0].read_bytes()[44:], "<i2"), want)
    leftovers = [p.name for p in store.root.iterdir() if p.suffix in (".mp3", ".partial", ".tmp")]
    assert leftovers == []
    assert store.files(sid).finalized.exists()
