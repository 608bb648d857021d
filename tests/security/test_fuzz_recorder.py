"""Property-based fuzzing of the timeline and the recorder (StreamClock, HoleTracker, CallRecorder).

Promises, whatever timestamps and arrival orders a stream throws at it:
* it never raises; its bookkeeping stays bounded (at most 512 holes, fewer than 5 frames held);
* the file is never longer than MAX_CALL_SECONDS, and never longer than the frames could
  plausibly reach (each frame moves the clock by at most MAX_CLOCK_JUMP_S plus its own length);
* holes are sparse: disk actually allocated stays near what was written, whatever the jumps;
* frames that arrive in order (or late within the reorder window) are placed sample-exact.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.audio import mulaw
from app.recording.recorder import CallRecorder
from app.recording.timeline import _CONFIRM, _MAX_HOLES
from app.recording.track import HEADER_BYTES

pytestmark = pytest.mark.security

SID = "CA" + "f" * 32
WINDOW_MS = 400
JUMP_S = 3
MAX_S = 40
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _recorder(tmp_path, i: int) -> CallRecorder:
    return CallRecorder(tmp_path / f"{i}" / SID, SID, reorder_window_ms=WINDOW_MS, max_clock_jump_s=JUMP_S,
                        max_seconds=MAX_S)


def _master(rec: CallRecorder, track: str = "inbound") -> np.ndarray:
    raw = (rec.call_dir / f"{track}.wav").read_bytes()[HEADER_BYTES:]
    return np.frombuffer(raw, "<i2")


_counter = iter(range(10**9))

timestamps = st.one_of(
    st.integers(0, 60_000),  # anywhere in the first minute
    st.integers(0, 10**15),  # anything the parser lets through
    st.sampled_from([0, 20, 40, 3 * 3600 * 1000, 10**15 - 1]),
)
hostile_frames = st.lists(st.tuples(st.sampled_from(["inbound", "outbound"]), timestamps,
                                    st.integers(1, 8000)), max_size=60)


@FUZZ
@given(frames=hostile_frames, seed=st.integers(0, 2**32 - 1))
def test_any_frames_never_raise_and_stay_bounded(tmp_path, frames, seed):
    rng = np.random.default_rng(seed)
    rec = _recorder(tmp_path, next(_counter))
    written = 0
    for track, ts, n in frames:
        rec.on_audio(track, ts, mulaw.decode_bytes(rng.integers(0, 256, n, dtype=np.uint8).tobytes()))
        written += n
        assert len(rec.clock._held) < _CONFIRM
        assert all(len(h.holes) <= _MAX_HOLES for h in rec.holes.values())
    total = rec.close("fuzz")
    reach = sum(JUMP_S * 8000 + n for _, _, n in frames) + 20 * 4 * _CONFIRM * 8
    assert total <= MAX_S * 8000 and total <= reach
    for track in ("inbound", "outbound"):
        path = rec.call_dir / f"{track}.wav"
        st_ = os.stat(path)
        assert st_.st_size == HEADER_BYTES + 2 * total  # both tracks cover the call, no more
        # Sparse: a jump allocates nothing. Each write touches at most two pages beyond its own bytes.
        assert st_.st_blocks * 512 <= 2 * written + len(frames) * 2 * 4096 + 2 * 4096


contiguous = st.lists(st.tuples(st.integers(1, 320), st.integers(0, JUMP_S * 1000 - 300)), min_size=1, max_size=50)


@FUZZ
@given(frames=contiguous, first_ts=st.integers(0, JUMP_S * 1000 - 300), seed=st.integers(0, 2**32 - 1),
       shuffle=st.integers(0, 10), data=st.data())
def test_in_order_or_slightly_late_frames_are_placed_exactly(tmp_path, frames, first_ts, seed, shuffle, data):
    """Frames of any length with holes of up to MAX_CLOCK_JUMP_S between them, delivered in order or with each
    displaced by a few places (late frames fill their holes): the master is exactly the frames at
    their timestamps, silence elsewhere."""
    rng = np.random.default_rng(seed)
    rec = _recorder(tmp_path, next(_counter))
    placed = []  # (sample, pcm)
    sample = first_ts * 8
    for n, gap_ms in frames:
        gap = gap_ms * 8 if placed and data.draw(st.booleans()) else 0
        sample += gap
        sample = (sample + 7) // 8 * 8  # timestamps are whole milliseconds
        payload = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        placed.append((sample, payload))
        sample += n
    order = list(range(len(placed)))
    # Bounded displacement: swap neighbours a few times, only frames less than 160 ms apart, so a
    # frame is within 160 ms of every frame it overtakes: inside the reorder window when late, and
    # (gaps and the first timestamp kept 300 ms under MAX_CLOCK_JUMP_S) never an implausible jump when early.
    for _ in range(shuffle):
        i = data.draw(st.integers(0, max(0, len(order) - 2)))
        if i + 1 < len(order):
            a, b = placed[order[i]], placed[order[i + 1]]
            if abs(b[0] - a[0]) + 320 < WINDOW_MS * 8 // 2:
                order[i], order[i + 1] = order[i + 1], order[i]
    for k in order:
        s, p = placed[k]
        rec.on_audio("inbound", s // 8, mulaw.decode_bytes(p))
    total = rec.close("fuzz")
    want = np.zeros(sample, np.int16)
    for s, p in placed:
        want[s:s + len(p)] = mulaw.decode(p)
    got = _master(rec)
    assert total == sample
    assert np.array_equal(got, want)
    assert rec.clock.discontinuities == 0 and rec.clock.dropped == 0


def test_a_hostile_run_of_jumps_stops_at_max_call_seconds(tmp_path):
    """Each frame jumps just under MAX_CLOCK_JUMP_S: plausible one by one, but the recording still
    ends at MAX_CALL_SECONDS, and the file is sparse."""
    rec = _recorder(tmp_path, 0)
    ts = 0
    for _ in range(100):
        rec.on_audio("inbound", ts, mulaw.decode_bytes(b"\x10" * 160))
        ts += JUMP_S * 1000 - 1
    total = rec.close("fuzz")
    assert total == MAX_S * 8000
    st_ = os.stat(rec.call_dir / "inbound.wav")
    assert st_.st_size == HEADER_BYTES + 2 * total
    assert st_.st_blocks * 512 <= 100 * 2 * 4096
