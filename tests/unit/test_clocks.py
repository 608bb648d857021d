"""The two clocks of app.recording.timeline, with plain calls: Twilio's media timestamps, and the
speech-only clock of transports that send audio only while the caller speaks."""

from __future__ import annotations

import random

from app.recording.timeline import SpeechOnlyClock, TwilioClock


def pcm(seconds: float, rate: int) -> bytes:
    return bytes(2 * round(seconds * rate))


# --------------------------------------------------------------------------- Twilio


def test_twilio_clock_places_by_timestamp_at_any_rate_with_holes_and_late_frames() -> None:
    for rate in (8000, 16000):
        c = TwilioClock(window=rate * 2, max_jump=rate * 600, rate=rate)
        frame = pcm(0.02, rate)
        assert c.map("inbound", 100, frame) == [("inbound", rate // 10, frame)]
        assert c.map("inbound", 160, frame)[0][1] == rate * 160 // 1000  # a 40 ms hole stays a hole
        assert c.map("inbound", 120, frame)[0][1] == rate * 120 // 1000  # late: fills its hole
        assert c.frontier == rate * 180 // 1000 and c.now() == c.frontier


def test_twilio_clock_rebases_a_confirmed_jump_and_drops_a_stray() -> None:
    c = TwilioClock(window=16000, max_jump=8000 * 60)
    frame = pcm(0.02, 8000)
    for i in range(50):
        c.map("inbound", 20 * i, frame)
    assert c.map("inbound", 10**9, frame) == []  # one stray frame hours ahead: held, then dropped
    c.map("inbound", 1000, frame)
    assert c.dropped == 1
    placed = [c.map("inbound", 5_000_000 + 20 * i, frame) for i in range(5)]  # the clock really jumped
    assert c.discontinuities == 1 and placed[-1][0][1] == 8160  # continues where the call was


def test_twilio_clock_an_hour_of_frames_does_not_drift() -> None:
    c = TwilioClock(window=16000, max_jump=8000 * 600)
    frame = pcm(0.02, 8000)
    n = 3600 * 50
    for i in range(n):
        c.map("inbound", 120 + 20 * i, frame)
    assert c.frontier == 960 + n * 160 and c.discontinuities == 0 and c.dropped == 0


# --------------------------------------------------------------------------- speech only


class Wall:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_bursts_sit_where_they_were_spoken_contiguous_within_silence_between() -> None:
    wall = Wall()
    c = SpeechOnlyClock(rate=16000, wall=wall)
    chunk = pcm(0.1, 16000)
    starts = []
    for burst_at in (1.0, 4.0):
        c.begin_burst()
        for k in range(10):  # 1 s of speech in 100 ms chunks, each arriving when it has been spoken
            wall.t = burst_at + 0.1 * (k + 1)
            starts.append(c.map("inbound", wall.t, chunk)[0][1])
    assert starts[:10] == [16000 + 1600 * k for k in range(10)]  # anchored at 1.0 s, contiguous
    assert starts[10:] == [64000 + 1600 * k for k in range(10)]  # 2 s of silence, then the next
    assert c.frontier == 80000 and c.discontinuities == 0
    wall.t = 10.0
    assert c.now() == 160000  # the call's clock is its wall clock between bursts


def test_a_burst_that_arrives_all_at_once_stays_contiguous_and_never_overlaps_the_last() -> None:
    wall = Wall()
    c = SpeechOnlyClock(rate=16000, wall=wall)
    c.begin_burst()
    wall.t = 2.0
    first = c.map("inbound", wall.t, pcm(1.0, 16000))[0][1]  # 1 s chunk arriving at 2 s: spoken from 1 s
    assert first == 16000
    c.begin_burst()  # the client's next burst arrives early (its clock runs fast): no overlap
    wall.t = 2.5
    second = c.map("inbound", wall.t, pcm(1.0, 16000))[0][1]
    assert second == 32000  # starts where the first ended, not at 1.5 s
    c.begin_burst()
    wall.t = 3.0  # a network stall released 3 chunks at once: contiguous within the burst
    got = [c.map("inbound", wall.t, pcm(0.1, 16000))[0][1] for _ in range(3)]
    assert got == [48000, 49600, 51200]


def test_a_stall_mid_burst_is_re_anchored_on_the_wall_clock() -> None:
    wall = Wall()
    c = SpeechOnlyClock(rate=8000, wall=wall, max_lag=1.0)
    c.begin_burst()
    wall.t = 1.0
    c.map("inbound", wall.t, pcm(0.1, 8000))
    wall.t = 3.5  # the client stalled 2.4 s mid-burst: its next chunk belongs at 3.4 s, not 1.1 s
    start = c.map("inbound", wall.t, pcm(0.1, 8000))[0][1]
    assert start == 27200 and c.discontinuities == 1


def test_an_hour_of_jittered_bursts_never_drifts_or_overlaps() -> None:
    rng = random.Random(3)
    wall = Wall()
    rate = 16000
    c = SpeechOnlyClock(rate=rate, wall=wall)
    t = 0.0
    worst = 0.0
    last_end = 0
    while t < 3600:
        t += rng.uniform(0.5, 5.0)  # silence
        c.begin_burst()
        spoken = t
        for _ in range(rng.randint(5, 40)):  # 20 ms chunks with network jitter of up to 80 ms
            spoken += 0.02
            wall.t = max(wall.t, spoken + rng.uniform(0.0, 0.08))
            start = c.map("inbound", wall.t, pcm(0.02, rate))[0][1]
            assert start >= last_end
            last_end = start + round(0.02 * rate)
        worst = max(worst, abs(last_end / rate - spoken))
        t = spoken
    assert worst < 0.1, worst  # an hour in, every burst still ends within the jitter of when it was spoken
    assert c.discontinuities == 0
