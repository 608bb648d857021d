"""Twilio's playback buffer and the caller's ear, as plain calls: no socket, no clock."""

from __future__ import annotations

import numpy as np

from app.audio.mulaw import decode as ulaw_decode
from app.simulator.playback import HeardAudio, PlaybackBuffer
from tests.simulator.fake_server import ulaw_tone


def buffer_of(*items: int | str | tuple[str, int]) -> PlaybackBuffer:
    """A buffer fed in order: an int is that many bytes of audio, a str a mark, (name, ms) a mark arriving then."""
    buf = PlaybackBuffer()
    for item in items:
        if isinstance(item, int):
            buf.add_audio(b"\x00" * item)
        else:
            name, now_ms = (item, 0) if isinstance(item, str) else item
            buf.add_mark(name, now_ms)
    return buf


def play_all(buf: PlaybackBuffer) -> tuple[list[bytes], list[list[str]]]:
    """Slots until the buffer is empty: the audio and the marks reached in each."""
    slots, marks = [], []
    while buf.pending:
        audio, reached = buf.play()
        slots.append(audio)
        marks.append(reached)
    return slots, marks


def test_empty_buffer_plays_nothing() -> None:
    buf = PlaybackBuffer()
    assert buf.play() == (b"", []) and not buf.pending and buf.queued_bytes == 0


def test_audio_in_uneven_pieces_plays_160_bytes_a_slot() -> None:
    audio = ulaw_tone(0.1)  # 800 bytes
    buf = PlaybackBuffer()
    for a, b in ((0, 1), (1, 333), (333, 500), (500, 800)):
        buf.add_audio(audio[a:b])
    assert buf.queued_bytes == 800 and buf.pending
    slots, marks = play_all(buf)
    assert [len(s) for s in slots] == [160] * 5 and b"".join(slots) == audio
    assert marks == [[]] * 5 and buf.queued_bytes == 0


def test_add_audio_says_when_it_starts_to_play() -> None:
    buf = PlaybackBuffer()
    assert buf.add_audio(b"\x00" * 800) == 0.0  # nothing ahead: at once
    assert buf.add_audio(b"\x00" * 100) == 100.0  # 800 bytes ahead = 100 ms
    buf.play()
    assert buf.add_audio(b"\x00" * 8) == (800 + 100 - 160) / 8


def test_audio_past_the_cap_is_refused_whole() -> None:
    buf = PlaybackBuffer(max_bytes=1000)
    assert buf.add_audio(b"\x01" * 1000) == 0.0  # up to the cap is fine
    assert buf.add_audio(b"\x02") is None  # one byte more is Twilio's 31931
    assert buf.queued_bytes == 1000
    slots, _ = play_all(buf)
    assert b"".join(slots) == b"\x01" * 1000


def test_mark_with_nothing_buffered_is_echoed_at_once() -> None:
    buf = PlaybackBuffer()
    assert buf.add_mark("m", now_ms=240) is False
    assert not buf.pending  # not queued: the caller echoes it now
    assert buf.arrival("m", now_ms=260) == 240


def test_mark_is_reached_in_the_slot_that_plays_the_audio_before_it() -> None:
    buf = buffer_of(100)
    assert buf.add_mark("a", now_ms=100) is True  # queued behind audio
    buf = buffer_of(100, "a", 300, "b", "c")  # two marks back to back are reached together
    slots, marks = play_all(buf)
    assert [len(s) for s in slots] == [160, 160, 80]
    assert marks == [["a"], [], ["b", "c"]]


def test_mark_right_after_a_slot_boundary_is_reached_in_that_slot() -> None:
    buf = buffer_of(320, "end")
    assert buf.play() == (b"\x00" * 160, [])
    assert buf.play() == (b"\x00" * 160, ["end"])  # not a slot later
    assert not buf.pending


def test_pending_marks_keep_their_arrival_per_name() -> None:
    buf = buffer_of(160, ("x", 100), 160, ("x", 140))
    _, marks = play_all(buf)
    assert marks == [["x"], ["x"]]
    assert [buf.arrival("x", 999), buf.arrival("x", 999), buf.arrival("x", 999)] == [100, 140, 999]


def test_clear_drops_the_audio_and_returns_pending_marks_in_order() -> None:
    buf = buffer_of(1000, "a", 1000, "b")
    buf.play()
    assert buf.clear() == ["a", "b"]
    assert not buf.pending and buf.queued_bytes == 0 and buf.play() == (b"", [])
    assert buf.add_mark("c", now_ms=0) is False  # empty after a clear: echoed at once
    assert buf.clear() == []


def test_heard_audio_places_by_stream_ms_and_pads_with_silence() -> None:
    heard = HeardAudio()
    assert len(heard.until(0)) == 0
    heard.reserve(320)
    tone = ulaw_tone(0.02)  # 160 bytes
    heard.write(160, tone)
    out = heard.until(480)
    assert out.dtype == np.int16 and len(out) == 480
    assert np.all(out[:160] == 0) and np.array_equal(out[160:320], ulaw_decode(tone)) and np.all(out[320:] == 0)
    assert len(heard.until(200)) == 200  # cut where the call ended


def test_heard_audio_grows_by_doubling_and_writes_only_into_reserved_room() -> None:
    heard = HeardAudio()
    heard.reserve(160)
    heard.write(100, ulaw_tone(0.02))  # 160 bytes, only 60 fit
    out = heard.until(260)
    assert np.array_equal(out[100:160], ulaw_decode(ulaw_tone(0.02))[:60]) and np.all(out[160:] == 0)
    heard.reserve(200)  # doubles to 320, keeping what was written
    heard.write(200, ulaw_tone(0.02))
    out = heard.until(400)
    assert np.array_equal(out[100:160], ulaw_decode(ulaw_tone(0.02))[:60])
    assert np.array_equal(out[200:320], ulaw_decode(ulaw_tone(0.02))[:120]) and np.all(out[320:] == 0)
