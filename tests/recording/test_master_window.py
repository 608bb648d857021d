"""Masters written through a mapped window: the same bytes as a pwrite per frame, an exact length while
live and after a crash, sparse jumps, and a full disk that falls back instead of faulting."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.recording import track as track_mod
from app.recording.track import (HEADER_BYTES, MAPPED_FILE_SYSTEMS, WINDOW_BYTES, MasterTrack, file_system_of,
                                  repair_header, track_samples)

ROOT = Path(__file__).resolve().parents[2]
FRAME = 160  # samples: 20 ms at 8 kHz


def frame(k: int, n: int = FRAME) -> bytes:
    """Frame k: a ramp that differs from its neighbours, never all zeros."""
    return ((np.arange(n, dtype=np.int32) + 7 * k) % 3000 + 1).astype("<i2").tobytes()


def frames_of(seconds: float) -> int:
    return int(seconds * 8000) // FRAME


def live_samples(path) -> np.ndarray:
    """A live master as a reader sees it: the header's length, whatever the file's size."""
    raw = path.read_bytes()[HEADER_BYTES: HEADER_BYTES + 2 * track_samples(path)]
    return np.frombuffer(raw, "<i2")


def write_call(path, writes: str, plan) -> MasterTrack:
    t = MasterTrack(path, writes=writes)
    for sample, pcm in plan:
        t.write(sample, pcm)
    return t


def a_call_with_late_frames_and_a_jump() -> list[tuple[int, bytes]]:
    """30 s in order, with a frame every 2 s delivered 10 frames late, then a 40 s jump and 12 s more."""
    plan, late = [], []
    for k in range(frames_of(30)):
        if k % 100 == 50:
            late.append(k)
            continue
        plan.append((k * FRAME, frame(k)))
        if late and k - late[0] == 10:
            j = late.pop(0)
            plan.append((j * FRAME, frame(j)))
    base = frames_of(70)
    plan += [((base + k) * FRAME, frame(base + k)) for k in range(frames_of(12))]
    return plan


def test_the_mapped_master_holds_exactly_what_pwrite_writes(tmp_path):
    plan = a_call_with_late_frames_and_a_jump()
    mapped = write_call(tmp_path / "mapped.wav", "mapped", plan)
    plain = write_call(tmp_path / "plain.wav", "pwrite", plan)
    assert mapped.mapped and not plain.mapped
    # Live: the file reaches ahead of the track, the header says where the track ends.
    assert (tmp_path / "mapped.wav").stat().st_size > HEADER_BYTES + 2 * mapped.end
    assert track_samples(tmp_path / "mapped.wav") == mapped.end == plain.end == frames_of(82) * FRAME
    assert np.array_equal(live_samples(tmp_path / "mapped.wav"), live_samples(tmp_path / "plain.wav"))
    mapped.close()
    plain.close()
    assert (tmp_path / "mapped.wav").read_bytes() == (tmp_path / "plain.wav").read_bytes()
    data, rate = sf.read(tmp_path / "mapped.wav", dtype="int16")
    assert rate == 8000 and len(data) == frames_of(82) * FRAME
    assert not data[frames_of(30) * FRAME: frames_of(70) * FRAME].any()  # the jump: silence


def test_a_jump_stays_sparse_and_the_window_only_follows_a_flowing_track(tmp_path):
    path = tmp_path / "t.wav"
    t = MasterTrack(path, writes="mapped")
    t.write(0, frame(0))
    t.write(50 * 8000, frame(1))  # 50 s ahead, alone
    assert path.stat().st_blocks * 512 < 64 * 1024  # neither the hole nor a window was reserved
    for k in range(1, frames_of(3)):  # the track flows from there: now it is mapped
        t.write(50 * 8000 + k * FRAME, frame(k + 1))
    assert t._win is not None
    assert path.stat().st_blocks * 512 < 64 * 1024 + 2 * WINDOW_BYTES
    t.close()
    assert path.stat().st_size == HEADER_BYTES + 2 * (50 * 8000 + frames_of(3) * FRAME)


def test_a_cut_at_the_end_of_a_mapped_track_shortens_it_and_what_follows_continues(tmp_path):
    path = tmp_path / "out.wav"
    t = MasterTrack(path, writes="mapped")
    for k in range(frames_of(2)):
        t.write(k * FRAME, frame(k))
    t.silence(8000, 16000)  # the last second was never heard (a clear)
    assert t.end == track_samples(path) == 8000
    t.write(12000, frame(99))  # the next reply starts later: the cut part reads as silence
    t.close()
    data, _ = sf.read(path, dtype="int16")
    assert len(data) == 12000 + FRAME
    assert not data[8000:12000].any() and np.array_equal(data[12000:], np.frombuffer(frame(99), "<i2"))


def test_a_crash_leaves_a_master_whose_length_and_audio_are_exact(tmp_path):
    """A process killed mid-call (SIGKILL, no close): what it copied into the window is on disk, and
    the recovery's header repair finds the track's exact length although the file reaches further."""
    path = tmp_path / "inbound.wav"
    n = frames_of(20) + 3
    code = (
        "import os, signal, sys\n"
        "sys.path.insert(0, %r)\n"
        "from tests.recording.test_master_window import frame, FRAME\n"
        "from app.recording.track import MasterTrack\n"
        "t = MasterTrack(%r, writes=\"mapped\")\n"
        "for k in range(%d):\n"
        "    t.write(k * FRAME, frame(k))\n"
        "assert t._win is not None\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    ) % (str(ROOT), str(path), n)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True)
    assert r.returncode == -9, r.stderr.decode()
    assert path.stat().st_size > HEADER_BYTES + 2 * n * FRAME  # the window reached ahead
    assert repair_header(path) == n * FRAME  # the header, not the file's size: the window's rest is not audio
    data, rate = sf.read(path, dtype="int16")
    assert len(data) == n * FRAME
    assert np.array_equal(data[-FRAME:], np.frombuffer(frame(n - 1), "<i2"))


def test_a_restarted_call_continues_after_the_mapped_track(tmp_path):
    path = tmp_path / "t.wav"
    t = MasterTrack(path, writes="mapped")
    for k in range(frames_of(1)):
        t.write(k * FRAME, frame(k))
    del t  # a crash of the process: never closed (its maps and descriptor go with the object)
    again = MasterTrack(path, writes="mapped")
    assert again.end == frames_of(1) * FRAME
    again.write(again.end, frame(500))
    again.close()
    assert track_samples(path) == frames_of(1) * FRAME + FRAME


def test_no_room_for_a_window_falls_back_to_plain_writes_and_keeps_every_frame(tmp_path, monkeypatch):
    path = tmp_path / "t.wav"
    t = MasterTrack(path, writes="mapped")
    for k in range(frames_of(1)):
        t.write(k * FRAME, frame(k))

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(track_mod.os, "posix_fallocate", full)
    for k in range(frames_of(1), frames_of(12)):
        t.write(k * FRAME, frame(k))
    assert not t.mapped  # plain from now on: the file is the track, its data size 0 until close
    assert path.stat().st_size == HEADER_BYTES + 2 * t.end
    assert track_samples(path) == frames_of(12) * FRAME
    t.close()
    data, _ = sf.read(path, dtype="int16")
    expected = np.concatenate([np.frombuffer(frame(k), "<i2") for k in range(frames_of(12))])
    assert np.array_equal(data, expected)


@pytest.mark.parametrize("writes", ["mapped", "pwrite"])
def test_extend_to_pads_the_track_with_silence(tmp_path, writes):
    path = tmp_path / "t.wav"
    t = MasterTrack(path, writes=writes)
    for k in range(frames_of(1)):
        t.write(k * FRAME, frame(k))
    t.extend_to(3 * 8000)
    assert track_samples(path) == 3 * 8000
    t.close()
    data, _ = sf.read(path, dtype="int16")
    assert len(data) == 3 * 8000 and not data[8000:].any()


def test_the_file_time_follows_the_audio_a_crash_recovery_reads_it(tmp_path):
    """Copies into a mapped page leave the mtime alone; the master sets it once per second of audio."""
    import time

    path = tmp_path / "t.wav"
    t = MasterTrack(path, writes="mapped")
    for k in range(frames_of(1)):
        t.write(k * FRAME, frame(k))
    assert t._win is not None
    before = time.time()
    time.sleep(1.1)
    for k in range(frames_of(1), frames_of(3)):
        t.write(k * FRAME, frame(k))
    assert path.stat().st_mtime >= before + 1.0
    t.close()


def test_a_mapped_track_cut_to_nothing_is_empty_live_and_after_a_crash(tmp_path):
    path = tmp_path / "out.wav"
    t = MasterTrack(path, writes="mapped")
    for k in range(frames_of(2)):
        t.write(k * FRAME, frame(k))
    t.silence(0, t.end)  # everything queued was cut (a clear before the caller heard anything)
    assert t.end == 0 and track_samples(path) == 0
    del t  # crashed before close
    assert MasterTrack(path, writes="mapped").end == 0


def test_auto_maps_only_where_the_file_system_reserves_blocks(tmp_path):
    kind = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", str(tmp_path)], capture_output=True,
                          text=True).stdout.strip()
    if not kind:
        pytest.skip("findmnt is not available")
    assert file_system_of(tmp_path) == kind
    t = MasterTrack(tmp_path / "t.wav")
    assert t.mapped == (kind in MAPPED_FILE_SYSTEMS)
    t.close()
