"""Load: 50 simulated calls at once for 20 s of real time against one server.

Listen mode (<Start><Stream track="both_tracks">): each call sends both voices, 100 frames a second,
so the server takes 5,000 media messages a second. Every call must come out complete and exact —
frames sent == frames recorded on both tracks, sample for sample, the duration exact, the markers
where they were sent — and the server must keep answering /healthz quickly throughout.
Runs in `make test` (about 25-30 s on a 2-core machine).
"""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import pytest
import soundfile as sf

from app.simulator import SimConfig, run_call
from tests.security.helpers import expected_master, first_mismatch, read_master, result_of
from tests.support.frames import new_sid
from tests.support.signals import find_markers, marker_signal

pytestmark = [pytest.mark.security, pytest.mark.load, pytest.mark.timeout(90)]

CALLS = 50
SECONDS = 20.0
TEMPLATE = marker_signal(0.02, [0.0])


async def test_fifty_concurrent_calls_for_twenty_seconds_are_all_recorded_exactly(make_server):
    srv = make_server(CALL_MODE="listen", FORWARD_TO="+15005550006", RECORDING_CHANNELS=2, DEFAULT_AUDIO_FORMAT="wav")
    calls = []
    for i in range(CALLS):
        caller_at = [1.0 + (i % 7) * 0.1, 9.0, 17.0 + (i % 5) * 0.1]
        other_at = [5.0 + (i % 3) * 0.1, 13.0, 19.0]
        calls.append((new_sid(), marker_signal(SECONDS, caller_at), marker_signal(SECONDS, other_at), caller_at, other_at))

    latencies: list[float] = []
    stop = threading.Event()

    def probe() -> None:  # a thread: the test's own busy event loop must not count against the server
        with httpx.Client() as c:
            while not stop.is_set():
                t = time.monotonic()
                r = c.get(srv.base + "/healthz", timeout=10)
                assert r.status_code == 200
                latencies.append(time.monotonic() - t)
                stop.wait(0.2)

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    t0 = time.monotonic()
    results = await asyncio.gather(*(
        run_call(SimConfig(srv.base, caller, outbound_audio=other, call_sid=sid, speed=1.0, tail_s=0))
        for sid, caller, other, _, _ in calls))
    wall = time.monotonic() - t0
    stop.set()
    prober.join(15)

    assert wall < SECONDS + 8, f"the calls took {wall:.1f} s of wall time for {SECONDS} s of audio"
    n_frames = int(SECONDS * 50)
    for (sid, caller, other, caller_at, other_at), res in zip(calls, results):
        assert res.mode == "listen" and not res.closed_by_server, (sid, res.close_code, res.close_reason)
        assert res.frames_sent == 2 * n_frames
        out = await result_of(srv, sid, timeout=60)
        assert out["end_reason"] == "caller hung up (stop)"
        assert out["duration_s"] == round((120 + n_frames * 20) / 1000, 3)
        assert out["stats"]["dropped_frames"] == 0 and out["stats"]["clock_discontinuities"] == 0
        for track, audio in (("inbound", caller), ("outbound", other)):
            got, want = read_master(srv.responses, sid, track), expected_master(audio)
            assert np.array_equal(got, want), (sid, track, first_mismatch(got, want))
        x, rate = sf.read(str(srv.responses / out["files"]["conversation"]), dtype="int16", always_2d=True)
        assert rate == 8000 and x.shape == (len(expected_master(caller)), 2)
        assert find_markers(x[:, 0], TEMPLATE) == [960 + round(a * 8000) for a in caller_at]
        assert find_markers(x[:, 1], TEMPLATE) == [960 + round(a * 8000) for a in other_at]
    print(f"load: {CALLS} calls, wall {wall:.1f} s, /healthz max {max(latencies) * 1000:.0f} ms over {len(latencies)} probes")
    # Responsive all along: every probe answered, none slow.
    assert len(latencies) >= SECONDS / 0.5, len(latencies)
    assert max(latencies) < 1.0, sorted(latencies)[-5:]
    assert httpx.get(srv.base + "/healthz").json()["live_calls"] == 0
