"""The recorder places audio by Twilio's clock: holes, bursts, reordering, jumps, clear."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from app.audio import mulaw
from app.recording.recorder import CallRecorder
from app.recording.track import HEADER_BYTES, track_samples

SID = "CA" + "a" * 32


def frame(value: int, n: int = 160) -> bytes:
    """A frame of PCM16 at a constant value as a phone line carries it (μ-law and back): easy to find again."""
    return mulaw.decode_bytes(mulaw.encode(np.full(n, value, np.int16)))


def level(value: int) -> int:
    return int(np.frombuffer(frame(value, 1), "<i2")[0])


def read(rec: CallRecorder, track: str) -> np.ndarray:
    """The live master as a reader finds it: the header's length (the file may reach further)."""
    path = rec.call_dir / f"{track}.wav"
    raw = path.read_bytes()[HEADER_BYTES: HEADER_BYTES + 2 * track_samples(path)]
    return np.frombuffer(raw, "<i2")


@pytest.fixture
def rec(tmp_path):
    r = CallRecorder(tmp_path / SID, SID, reorder_window_ms=1000, max_clock_jump_s=60)
    yield r
    r.close("test")


def test_frames_land_at_their_timestamps_with_holes_as_silence(rec):
    rec.on_audio("inbound", 100, frame(1000))
    rec.on_audio("inbound", 120, frame(2000))
    rec.on_audio("inbound", 200, frame(3000))  # 60 ms hole
    x = read(rec, "inbound")
    assert len(x) == 220 * 8
    assert (x[:800] == 0).all()  # before the first frame: silence
    assert (x[800:960] == level(1000)).all() and (x[960:1120] == level(2000)).all()
    assert (x[1120:1600] == 0).all()  # the hole
    assert (x[1600:1760] == level(3000)).all()


def test_reordered_arrival_fills_the_hole_and_duplicates_are_dropped(rec):
    for ts in (0, 40, 20, 60):  # frame 20 arrives late
        rec.on_audio("inbound", ts, frame(100 * (ts // 20 + 1)))
    rec.on_audio("inbound", 40, frame(9999))  # a duplicate of an already-filled slot
    x = read(rec, "inbound")
    for i in range(4):
        assert (x[i * 160:(i + 1) * 160] == level(100 * (i + 1))).all(), i
    assert rec.stats["inbound"].dropped_duplicate == 1


def test_burst_after_stall_keeps_the_timeline(rec):
    # 1 s of nothing arriving, then 50 frames in a burst: placement is by timestamp, not arrival.
    for i in range(50):
        rec.on_audio("inbound", 1000 + 20 * i, frame(500))
    x = read(rec, "inbound")
    assert len(x) == 2000 * 8 and (x[:8000] == 0).all() and (x[8000:] == level(500)).all()


def test_a_stray_timestamp_far_ahead_is_dropped_not_allocated(rec):
    rec.on_audio("inbound", 0, frame(100))
    rec.on_audio("inbound", 3 * 3600 * 1000, frame(200))  # hours ahead: implausible
    rec.on_audio("inbound", 20, frame(300))
    x = read(rec, "inbound")
    assert len(x) == 320
    assert (rec.call_dir / "inbound.wav").stat().st_size < 10_000
    assert rec.clock.dropped == 1


def test_a_confirmed_clock_jump_is_rebased_and_reported(rec):
    for i in range(10):
        rec.on_audio("inbound", 20 * i, frame(100))
    base = 2 * 3600 * 1000
    for i in range(10):
        rec.on_audio("inbound", base + 20 * i, frame(200))
    x = read(rec, "inbound")
    assert rec.clock.discontinuities == 1
    assert len(x) == 20 * 160  # continued where the call was, nothing lost, nothing allocated
    assert (x[1600:] == level(200)).all()


def test_clock_reset_backwards_is_rebased(rec):
    for i in range(100):
        rec.on_audio("inbound", 5000 + 20 * i, frame(100))
    for i in range(10):
        rec.on_audio("inbound", 20 * i, frame(200))  # the clock went back to 0
    x = read(rec, "inbound")
    assert rec.clock.discontinuities == 1
    assert (x[(5000 + 2000) * 8:] == level(200)).all() and len(x) == (7000 + 200) * 8


def test_a_big_hole_within_the_limit_is_sparse_on_disk(rec):
    rec.on_audio("inbound", 0, frame(100))
    rec.on_audio("inbound", 50_000, frame(100))  # 50 s hole: kept as silence
    st = (rec.call_dir / "inbound.wav").stat()
    assert st.st_size == HEADER_BYTES + 2 * (50_020 * 8)
    assert st.st_blocks * 512 < 64 * 1024  # sparse: not 800 kB of zeros


def test_assistant_audio_is_placed_at_playback_time_and_clear_cuts_the_unheard_part(rec):
    for i in range(10):
        rec.on_audio("inbound", 20 * i, frame(0))  # stream time = 200 ms
    s1 = rec.play(frame(1000, 8000))  # 1 s reply, starts now
    assert s1 == (1600, 9600)
    s2 = rec.play(frame(2000, 8000), now=1600 + 800)  # queued behind the first
    assert s2 == (9600, 17600)
    cut = rec.clear(now=4000)  # caller barged in at 500 ms
    assert cut == 17600 - 4000
    assert rec.queue_end == 4000  # nothing left to play after the cut
    rec.close("test")
    x = read(rec, "outbound")
    assert (x[1600:4000] == level(1000)).all()
    assert (x[4000:] == 0).all()


def test_listen_mode_places_both_tracks_on_one_clock(rec):
    for i in range(20):
        rec.on_audio("inbound", 100 + 20 * i, frame(100))
        rec.on_audio("outbound", 100 + 20 * i, frame(-100))
    a, b = read(rec, "inbound"), read(rec, "outbound")
    assert len(a) == len(b) == 500 * 8
    assert (a[800:] == level(100)).all() and (b[800:] == level(-100)).all()


def test_close_writes_a_valid_header_both_tracks_same_length(rec):
    rec.on_audio("inbound", 0, frame(100))
    rec.play(frame(300, 800))
    n = rec.close("test")
    for t in ("inbound", "outbound"):
        info = sf.info(str(rec.call_dir / f"{t}.wav"))
        assert info.frames == n and info.samplerate == 8000
    import wave

    with wave.open(str(rec.call_dir / "inbound.wav")) as w:  # the stdlib reads it too
        assert w.getnframes() == n


def test_disk_errors_are_counted_and_the_call_goes_on(rec, monkeypatch, caplog):
    def boom(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rec.tracks["inbound"], "write", boom)
    for i in range(5):
        rec.on_audio("inbound", 20 * i, frame(100))
    assert rec.stats["inbound"].write_errors == 5
    assert sum("No space left" in r.message for r in caplog.records) == 1  # logged once


def test_hang_up_cuts_queued_assistant_audio_and_the_call_lasts_as_long_as_its_stream(rec):
    for i in range(10):
        rec.on_audio("inbound", 20 * i, frame(0))  # the stream ends at 200 ms (1600 samples)
    rec.play(frame(1000, 8000))  # a 1 s reply queued at Twilio when the caller hung up
    cut = rec.cut_at_hangup(rec.stream_samples)
    assert cut == 8000  # the whole reply: it would have started playing at the stream's last moment
    assert rec.clears == 0  # not a barge-in
    n = rec.close("caller hung up (stop)")
    assert n == 1600
    assert len(read(rec, "outbound")) == len(read(rec, "inbound")) == 1600
    kinds = [line for line in (rec.call_dir / "journal.jsonl").read_text().splitlines() if '"hangup_cut"' in line]
    assert len(kinds) == 1 and '"cut_samples":8000' in kinds[0]
