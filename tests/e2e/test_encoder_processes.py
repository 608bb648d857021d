"""End to end: the live calls' encoding in encoder processes (ENCODER_PROCESSES), with a real server.

The files are the ones the in-process path writes, a killed encoder process loses nothing, a
format chosen mid-call still applies, and no encoder process outlives its server."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from app.simulator import SimConfig, run_call
from tests.support.signals import find_markers, marker_signal

pytestmark = pytest.mark.e2e
FIRST_TS = 120  # ms: where the simulator's first frame sits on the stream clock
TEMPLATE = marker_signal(0.02, [0.0])


def encoder_pids(server_pid: int) -> list[int]:
    """The encoder processes whose parent is the server."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
            ppid = int((d / "stat").read_text().rsplit(") ", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if b"app.recording.encoder_worker" in cmd and ppid == server_pid:
            pids.append(int(d.name))
    return pids


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if alive(p)]


def decode(path) -> np.ndarray:
    x, _ = sf.read(str(path), dtype="int16", always_2d=True)
    return x


async def test_encoder_processes_write_the_same_file_as_the_in_process_export(make_server, tmp_path):
    at = [1.0, 17.5, 38.0]
    env = dict(DEFAULT_AUDIO_FORMAT="flac", RECORDING_CHANNELS="2", EXPORT_INTERVAL_S="0.5")
    pooled = make_server(ENCODER_PROCESSES="2", **env)
    threads = make_server(ENCODER_PROCESSES="0", **env)
    outs = []
    for server, sid in ((pooled, "CA" + "1a" * 16), (threads, "CA" + "2b" * 16)):
        await run_call(SimConfig(server.base, marker_signal(40.0, at), call_sid=sid, speed=8, tail_s=0.5))
        out = server.result(sid)
        assert out["audio"]["format"] == "flac" and not out["warnings"], out["warnings"]
        x = decode(server.responses / out["files"]["conversation"])
        # Caller left, other side right: each the call's master, sample for sample.
        masters = [sf.read(m, dtype="int16")[0] for m in out["masters"]]
        assert len(x) == round(out["duration_s"] * 8000)
        for ch, m in enumerate(masters):
            assert np.array_equal(x[: len(m), ch], m[: len(x)]) and not x[len(m):, ch].any()
        outs.append((out, x))
    (a, x), (b, y) = outs
    assert a["duration_s"] == b["duration_s"]
    assert np.array_equal(x[:, 0], y[:, 0])  # the caller's audio: the same file either way
    assert a["stats"]["talk_seconds"] == b["stats"]["talk_seconds"] and a["stats"]["talk_seconds"]["inbound"] > 0
    assert find_markers(x[:, 0], TEMPLATE) == [FIRST_TS * 8 + int(t * 8000) for t in at]
    assert encoder_pids(pooled.pid) and not encoder_pids(threads.pid)


async def test_a_killed_encoder_process_loses_nothing_and_a_format_change_still_applies(make_server):
    server = make_server(DEFAULT_AUDIO_FORMAT="mp3", EXPORT_INTERVAL_S="0.5", ENCODER_PROCESSES="2")
    sid = "CA" + "3c" * 16
    at = [1.0, 20.0, 45.0, 58.0]

    async def meddle() -> list[int]:
        await asyncio.sleep(1.0)
        async with httpx.AsyncClient() as c:  # mid-call: the new format's exporter catches up in a worker
            r = await c.post(f"{server.base}/audio/set-format/{sid}?format=flac")
        assert r.status_code == 200 and r.json()["state"] == "live", r.text
        await asyncio.sleep(2.5)
        victims = encoder_pids(server.pid)
        assert len(victims) == 2
        for p in victims:  # every encoder process dies mid-call
            os.kill(p, signal.SIGKILL)
        return victims

    task = asyncio.create_task(meddle())
    await run_call(SimConfig(server.base, marker_signal(60.0, at), call_sid=sid, speed=10, tail_s=0.5))
    victims = await task
    out = server.result(sid)
    assert out["audio"]["format"] == "flac" and not out["audio"].get("error"), out["audio"]
    x = decode(server.responses / out["files"]["conversation"])
    assert len(x) == round(out["duration_s"] * 8000) == (FIRST_TS + 60_500) * 8
    assert find_markers(x[:, 0], TEMPLATE) == [FIRST_TS * 8 + int(t * 8000) for t in at]
    assert not list(server.responses.glob("*.partial"))
    assert "encoder process" in server.log.read_text()
    assert not wait_gone(victims, 2)
    # Graceful stop: the replacement workers are reaped too.
    fresh = encoder_pids(server.pid)
    assert fresh and not set(fresh) & set(victims)
    server.stop()
    assert not wait_gone(fresh, 5)


async def test_no_encoder_process_outlives_a_killed_server(make_server):
    server = make_server(DEFAULT_AUDIO_FORMAT="mp3", EXPORT_INTERVAL_S="0.5", ENCODER_PROCESSES="2")
    sid = "CA" + "4d" * 16
    call = asyncio.create_task(run_call(SimConfig(server.base, marker_signal(30.0, [1.0]), call_sid=sid, speed=1.0)))
    await asyncio.sleep(2.5)
    pids = encoder_pids(server.pid)
    assert len(pids) == 2
    server.kill9()  # no shutdown at all: the workers see their pipes close
    try:
        await asyncio.wait_for(call, 10)
    except Exception:
        pass
    assert not wait_gone(pids, 10)
    again = make_server(DEFAULT_AUDIO_FORMAT="mp3", ENCODER_PROCESSES="2")  # the crash is recovered as ever
    out = again.result(sid)
    assert out["recovered"] is True and out["audio"]["format"] == "mp3"
