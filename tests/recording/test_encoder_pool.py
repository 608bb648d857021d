"""The encoder processes (app.recording.encoder_pool): real worker processes encoding real masters.

What a user relies on: a call encoded in a worker is the same file the in-process exporter writes
(sample for sample for WAV and FLAC), a worker killed mid-call still leaves the whole call in its
file, and no worker outlives the pool or the server that started it."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import soundfile as sf

from app.audio.formats import FORMATS
from app.recording.encoder_pool import SLICE_S, EncoderPool, WorkerLost, may_leave_idle
from app.recording.export import ConversationExporter
from app.recording.track import MasterTrack


def masters(folder, seconds=45, rate=8000):
    folder.mkdir(parents=True, exist_ok=True)
    a, b = MasterTrack(folder / "inbound.wav", rate), MasterTrack(folder / "outbound.wav", rate)
    rng = np.random.default_rng(1)
    n = seconds * rate
    talk = (np.arange(n) // (rate // 2)) % 3 == 0  # half-second bursts of "speech", silence between
    a.write(0, (rng.standard_normal(n) * 3000 * talk).astype("<i2").tobytes())
    b.write(0, (rng.standard_normal(n) * 3000 * ~talk).astype("<i2").tobytes())
    b.write(n // 3, bytes(2 * rate))  # a hole inside, as a lost stretch leaves
    a.close()
    b.close()
    return (folder / "inbound.wav", folder / "outbound.wav"), n


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.fixture
def pool():
    p = EncoderPool(2, nice=0)
    yield p
    p.close()


@pytest.mark.parametrize("fmt,channels,rate,tracks", [("wav", 1, None, False), ("flac", 2, None, True),
                                                       ("wav", 1, 16000, True)])
def test_a_call_encoded_in_a_worker_equals_the_in_process_export(tmp_path, pool, fmt, channels, rate, tracks):
    m, n = masters(tmp_path / "m")
    f = FORMATS[fmt]
    kw = dict(channels=channels, sample_rate=rate)

    def outs(d):
        d.mkdir()
        ext = f.extension
        return d / f"conv.{ext}", ((d / f"caller.{ext}", d / f"other.{ext}") if tracks else None)

    local_out, local_tracks = outs(tmp_path / "local")
    local = ConversationExporter(m, local_out, f, track_paths=local_tracks, **kw)
    pooled_out, pooled_tracks = outs(tmp_path / "pooled")
    pooled = pool.exporter("CA1", m, pooled_out, f, track_paths=pooled_tracks, **kw)
    # Advances of odd sizes, one longer than a worker's slice, as a call's schedule sends them.
    for upto in (12345, 12345 + (SLICE_S + 3) * 8000, n - 8000 + 7):
        local.advance(upto)
        pooled.advance(upto)
        assert pooled.done == local.done
    assert pooled.finish(n) == pooled_out and local.finish(n) == local_out
    for a, b in [(local_out, pooled_out)] + (list(zip(local_tracks, pooled_tracks)) if tracks else []):
        x, rx = sf.read(str(a), dtype="int16")
        y, ry = sf.read(str(b), dtype="int16")
        assert rx == ry == (rate or 8000)
        assert len(y) == n * (rate or 8000) // 8000
        assert np.array_equal(x, y)
    assert pooled.talk.seconds() == local.talk.seconds() and pooled.talk.seconds()["inbound"] > 0
    assert pooled.settings_note == local.settings_note and pooled.done == n
    assert not list((tmp_path / "pooled").glob("*.partial"))


def test_mp3_from_a_worker_decodes_to_the_calls_length(tmp_path, pool):
    m, n = masters(tmp_path, 30)
    ex = pool.exporter("CA2", m, tmp_path / "c.mp3", FORMATS["mp3"], mp3_kbps=32)
    ex.advance(n // 2)
    out = ex.finish(n)
    x, rate = sf.read(str(out))
    assert rate == 8000 and abs(len(x) - n) < 2000  # MP3 frames pad the end, as in-process
    assert "32" in (ex.settings_note or "")


def test_a_killed_worker_still_leaves_the_whole_call_in_its_file(tmp_path, pool):
    m, n = masters(tmp_path, 60)
    ex = pool.exporter("CA3", m, tmp_path / "c.wav", FORMATS["wav"])
    ex.advance(20 * 8000)
    assert ex.done == 20 * 8000
    victim = ex.worker_pid
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(WorkerLost):  # the schedule's next advance fails; hang-up still exports
        for _ in range(50):
            ex.advance(30 * 8000)
            time.sleep(0.05)
    out = ex.finish(n)  # exported again from the masters, on a fresh worker
    x, _ = sf.read(str(out), dtype="int16")
    ref = ConversationExporter(m, tmp_path / "ref.wav", FORMATS["wav"])
    y, _ = sf.read(str(ref.finish(n)), dtype="int16")
    assert len(x) == n and np.array_equal(x, y)
    assert ex.worker_pid != victim and victim not in pool.pids()
    assert not alive(victim)
    assert not (tmp_path / "c.wav.partial").exists()


needs_idle = pytest.mark.skipif(not may_leave_idle(0), reason="needs root, CAP_SYS_NICE or RLIMIT_NICE to leave SCHED_IDLE")


@needs_idle
def test_live_encoding_runs_at_idle_priority_and_a_hang_ups_finish_does_not(tmp_path, pool):
    """A live call's encoding never preempts the serving loop (SCHED_IDLE runs only on a core nothing
    else wants); the hang-up's finish, which a caller's files wait for, runs at the worker's nice."""
    m, n = masters(tmp_path, 60)
    ex = pool.exporter("CA7", m, tmp_path / "c.mp3", FORMATS["mp3"])
    ex.advance(n // 6)
    assert os.sched_getscheduler(ex.worker_pid) == os.SCHED_IDLE
    fut = ex._worker.request("CA7", "finish", ex.key, (n,))  # as PooledExporter.finish sends it
    during = os.sched_getscheduler(ex.worker_pid)
    fut.result(60)
    ex.closed = True
    pool.release("CA7", ex._worker)
    assert during == os.SCHED_OTHER  # lifted as it was sent, before the worker could read it
    assert os.sched_getscheduler(ex.worker_pid) == os.SCHED_IDLE  # and idle again after
    assert len(sf.read(str(tmp_path / "c.mp3"), dtype="int16")[0]) >= n
    plain = EncoderPool(1, nice=0, idle=False)
    try:
        ex2 = plain.exporter("CA8", m, tmp_path / "d.wav", FORMATS["wav"])
        ex2.advance(n // 2)
        assert os.sched_getscheduler(ex2.worker_pid) == os.SCHED_OTHER
        ex2.finish(n)
    finally:
        plain.close()


@needs_idle
def test_a_hang_up_lifts_the_worker_without_its_help(tmp_path, pool):
    """The lift for a finish must not need the worker to run: on a machine with no free core an
    idle encoding thread preempted while it holds the worker's GIL gets almost no CPU, and any
    thread of the worker waits behind it (seen: a hang-up's files not ready after 30 s beside
    three busy processes on two cores, the worker's reader stuck on its GIL). A stopped worker is
    that, for certain: it is lifted all the same, and finishes once it runs."""
    m, n = masters(tmp_path, 20)
    ex = pool.exporter("CA9", m, tmp_path / "c.wav", FORMATS["wav"])
    ex.advance(n // 2)
    pid = ex.worker_pid
    assert os.sched_getscheduler(pid) == os.SCHED_IDLE
    os.kill(pid, signal.SIGSTOP)
    try:
        with concurrent.futures.ThreadPoolExecutor(1) as tp:
            done = tp.submit(ex.finish, n)
            deadline = time.monotonic() + 10
            while os.sched_getscheduler(pid) != os.SCHED_OTHER and time.monotonic() < deadline:
                time.sleep(0.01)
            lifted = os.sched_getscheduler(pid)
            os.kill(pid, signal.SIGCONT)
            out = done.result(60)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert lifted == os.SCHED_OTHER
    assert len(sf.read(str(out), dtype="int16")[0]) == n


def test_a_bad_open_fails_the_call_not_the_worker(tmp_path, pool):
    m, n = masters(tmp_path, 3)
    bad = pool.exporter("CA4", (tmp_path / "missing.wav", m[1]), tmp_path / "c.wav", FORMATS["wav"])
    with pytest.raises(Exception):
        bad.advance(8000)
    bad.abort()
    good = pool.exporter("CA4", m, tmp_path / "c.wav", FORMATS["wav"])
    assert good.finish(n).exists()


def test_abort_removes_the_partial_files(tmp_path, pool):
    m, n = masters(tmp_path, 3)
    ex = pool.exporter("CA5", m, tmp_path / "c.flac", FORMATS["flac"],
                       track_paths=(tmp_path / "a.flac", tmp_path / "b.flac"))
    ex.advance(n // 2)
    assert (tmp_path / "c.flac.partial").exists()
    ex.abort()
    assert not list(tmp_path.glob("*.partial")) and not (tmp_path / "c.flac").exists()


def test_close_reaps_every_worker(tmp_path):
    pool = EncoderPool(2, nice=0)
    m, n = masters(tmp_path, 2)
    pool.exporter("CA6", m, tmp_path / "c.wav", FORMATS["wav"]).finish(n)
    pids = pool.pids()
    assert len(pids) == 2
    pool.close()
    assert not any(alive(p) for p in pids)


def test_workers_exit_when_the_server_process_is_killed(tmp_path):
    # The server dies without closing its pool (kill -9): its workers see their pipe close and exit.
    m, _ = masters(tmp_path, 2)
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from app.audio.formats import FORMATS
        from app.recording.encoder_pool import EncoderPool
        pool = EncoderPool(2, nice=0)
        ex = pool.exporter("CA7", (Path({str(m[0])!r}), Path({str(m[1])!r})), Path({str(tmp_path / 'c.wav')!r}),
                           FORMATS["wav"])
        ex.advance(8000)
        print(" ".join(map(str, pool.pids())), flush=True)
        time.sleep(60)
    """)
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in server.stdout.readline().split()]
        assert len(pids) == 2 and all(alive(p) for p in pids)
    finally:
        server.kill()
        server.wait()
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)


def test_a_hang_up_lifts_the_worker_before_the_advance_in_flight_ends(tmp_path, pool):
    """At hang-up the export schedule awaits the advance in flight before it sends the finish. Beside two
    CPU burners (no free core) that advance, at idle priority, could wait as long as the burners ran:
    `hurry()` lifts the worker at once, and it stays lifted until the call is let go."""
    m, n = masters(tmp_path, 60)
    ex = pool.exporter("CA9", m, tmp_path / "c.mp3", FORMATS["mp3"])
    ex.advance(n // 6)
    assert os.sched_getscheduler(ex.worker_pid) == os.SCHED_IDLE
    ex.hurry()
    assert os.sched_getscheduler(ex.worker_pid) == os.SCHED_OTHER
    ex.advance(n // 3)  # answered, and still lifted: the finish is not sent yet
    assert os.sched_getscheduler(ex.worker_pid) == os.SCHED_OTHER
    assert ex.finish(n) == tmp_path / "c.mp3"
    assert os.sched_getscheduler(ex.worker_pid) == os.SCHED_IDLE  # let go: idle again
