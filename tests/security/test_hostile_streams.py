"""Hostile or broken Media Streams input, each WHILE a good call runs on the same server.

For every case: the good call's inbound master is bit-exact with what it sent (GoodCall checks
it sample for sample), the server answers /healthz, and the misbehaving socket gets what
Twilio's own server would justify — a bad message in a good stream is skipped with one log line
per kind and the stream goes on (Twilio's warnings 31950/31951); a stream that cannot go on is
closed with a code and a reason, and whatever it recorded before is finalised.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time

import httpx
import numpy as np
import pytest

from tests.security.helpers import (
    GoodCall, Model, RawStream, assert_healthy, call_dirs, first_mismatch, frame_bytes, outputs_of, raw_ws_open,
    read_master, result_of, server_log_lines, stream_token,
)
from tests.support.frames import media_msg, new_sid, ws_frame

pytestmark = [pytest.mark.security, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def server(module_server_factory):
    return module_server_factory(DEFAULT_AUDIO_FORMAT="wav")


async def _finish(stream: RawStream, server, model: Model | None, end_reason: str | None = None) -> dict:
    """Hang up politely (if still open), then check the hostile stream's own recording against the model."""
    if stream.still_open():
        await stream.stop()
        await stream.close()  # as Twilio does: stop, then a normal close
    out = await result_of(server, stream.call_sid)
    if end_reason:
        assert out["end_reason"].startswith(end_reason), out["end_reason"]
    if model is not None:
        assert_matches(read_master(server.responses, stream.call_sid), model)
    return out


def assert_matches(got: np.ndarray, model: Model) -> None:
    """Exactly the model; the call may run on after the last caller frame (the greeting chime
    plays for 0.6 s from the first frame), and that tail is silence on the caller's track."""
    n = len(model.x)
    assert len(got) >= n and np.array_equal(got[:n], model.x), first_mismatch(got, model.x)
    assert not got[n:].any()


async def _good_frames(stream: RawStream, model: Model, rng, first_ts: int, n: int) -> int:
    ts = first_ts
    for _ in range(n):
        p = frame_bytes(rng)
        assert await stream.media(ts, p)
        model.put(ts, p)
        ts += 20
    return ts


async def _begin(server, rng, first_ts: int, n: int) -> tuple[RawStream, Model, int]:
    """A misbehaving stream's honest beginning: opened, started, `n` good frames from `first_ts`
    (in the model); returns the stream, the model and the next timestamp."""
    s = await RawStream(server).open()
    await s.start()
    model = Model()
    return s, model, await _good_frames(s, model, rng, first_ts, n)


async def _goes_on(s: RawStream, good: GoodCall, server, model: Model, rng, ts: int, n: int) -> None:
    """After the misbehaviour: `n` more good frames are taken, the stream and the good call are
    still up, and the stream hangs up normally with exactly the model recorded."""
    await _good_frames(s, model, rng, ts, n)
    assert s.still_open()
    assert good.running()
    await _finish(s, server, model, "caller hung up")


def _warned(server, sid: str, kind_text: str) -> int:
    return len([l for l in server_log_lines(server, f"stream {sid}: skipped a bad message") if kind_text in l])


def _journal(server, sid: str) -> list[dict]:
    path = server.responses / ".calls" / sid / "journal.jsonl"
    return [json.loads(l) for l in path.read_text().splitlines()]


# ----------------------------------------------------------------------------------- skipped, stream goes on


async def test_non_json_text_is_skipped_and_logged_once_and_the_stream_goes_on(server):
    rng = np.random.default_rng(1)
    async with GoodCall(server) as good:
        s = await RawStream(server).open()
        assert await s.send("hello, not JSON")  # before start: skipped too (Twilio: warning 31951)
        await s.start()
        model = Model()
        ts = await _good_frames(s, model, rng, 120, 10)
        for junk in ("{", "not json at all", "[1,2,3]", '"a string"', "null", "\x00\x01", "{\"event\":\"media\"" * 50):
            assert await s.send(junk)
        await _goes_on(s, good, server, model, rng, ts, 10)
    assert _warned(server, s.call_sid, "not JSON") + _warned(server, s.call_sid, "not a JSON object") <= 2
    assert any(r["t"] == "warning" and r["what"] == "json" for r in _journal(server, s.call_sid))
    assert_healthy(server)


async def test_binary_frames_are_skipped_and_the_stream_goes_on(server):
    rng = np.random.default_rng(2)
    async with GoodCall(server) as good:
        s, model, ts = await _begin(server, rng, 120, 5)
        for _ in range(20):  # raw μ-law in binary frames, as a confused client might send
            assert await s.send(frame_bytes(rng))
        await _goes_on(s, good, server, model, rng, ts, 5)
    assert _warned(server, s.call_sid, "binary frame") == 1  # once per kind, not 20 lines
    assert_healthy(server)


async def test_unknown_events_are_skipped(server):
    rng = np.random.default_rng(3)
    async with GoodCall(server) as good:
        s, model, ts = await _begin(server, rng, 120, 5)
        for ev in ("clear", "Media", "", "x" * 5000, None, 7, [], {}, ["media"]):
            assert await s.send(json.dumps({"event": ev, "streamSid": s.stream_sid}))
        assert await s.send(json.dumps({"streamSid": s.stream_sid, "media": {}}))  # no event at all
        assert await s.send('{"event":"connected","protocol":"Call","version":"1.0.0"}')  # out of order: skipped
        await _goes_on(s, good, server, model, rng, ts, 5)
    lines = server_log_lines(server, f"stream {s.call_sid}: skipped")
    assert all(len(l) < 400 for l in lines)  # a 5000-character event name is not echoed into the log
    assert_healthy(server)


async def test_missing_or_wrongly_typed_media_fields_are_skipped(server):
    rng = np.random.default_rng(4)
    good_b64 = base64.b64encode(frame_bytes(rng)).decode()
    async with GoodCall(server) as good:
        s, model, ts = await _begin(server, rng, 120, 5)
        sid = s.stream_sid

        def media(**fields):  # a media message with Twilio's fields, some replaced or removed (None)
            body = {"track": "inbound", "chunk": "1", "timestamp": "500", "payload": good_b64} | fields
            return {"event": "media", "sequenceNumber": "9", "streamSid": sid,
                    "media": {k: v for k, v in body.items() if v is not None}}

        bad = [
            {"event": "media", "sequenceNumber": "9", "streamSid": sid},  # no media object
            {"event": "media", "sequenceNumber": "9", "streamSid": sid, "media": "x"},
            {"event": "media", "sequenceNumber": "9", "streamSid": sid, "media": None},
            media(timestamp=None), media(timestamp="abc"), media(timestamp="-20"), media(timestamp=1.5),
            media(timestamp="\u00b2"), media(timestamp=[]), media(timestamp=str(10**20)),
            media(track="sideways"), media(track={}), media(payload=12345), media(payload=None),
            {k: v for k, v in media().items() if k != "sequenceNumber"},
            {"event": "dtmf", "sequenceNumber": "9", "streamSid": sid, "dtmf": {"digit": "12"}},
            {"event": "dtmf", "sequenceNumber": "9", "streamSid": sid, "dtmf": {"digit": None}},
            {"event": "mark", "sequenceNumber": "9", "streamSid": sid, "mark": {}},
            {"event": "mark", "sequenceNumber": "9", "streamSid": sid},
        ]
        for m in bad:
            assert await s.send(json.dumps(m))
        await _goes_on(s, good, server, model, rng, ts, 5)
    assert_healthy(server)


async def test_payload_not_base64_is_skipped(server):
    rng = np.random.default_rng(5)
    async with GoodCall(server) as good:
        s, model, ts = await _begin(server, rng, 120, 5)
        for junk in ("not base64!", "@@@@", "AAA", "=" * 8, "A" * 213 + "!!!", "\u00ff" * 216, "", "//// "):
            assert await s.media(ts, junk)
        ts += 20  # that slot never got valid audio: it stays a silent hole
        await _goes_on(s, good, server, model, rng, ts, 5)
    assert _warned(server, s.call_sid, "base64") == 1
    assert_healthy(server)


async def test_payload_lengths_other_than_160_are_placed_by_timestamp_and_oversized_ones_refused(server):
    """μ-law is one byte per sample, so 1, 7, 161 or 7999 bytes are all valid audio: each lands at
    its timestamp (where two overlap, the first written wins). More than 1 s (8000 bytes) in one
    message is refused as hostile and skipped."""
    rng = np.random.default_rng(6)
    async with GoodCall(server) as good:
        s, model, ts = await _begin(server, rng, 120, 5)
        for n in (1, 7, 161, 159, 333, 7999):
            p = frame_bytes(rng, n)
            assert await s.media(ts, p)
            model.put(ts, p)
            ts += max(20, n // 160 * 20)  # 161, 333 and 7999 overlap the next frame: first written wins
        assert await s.media(ts, frame_bytes(rng, 8001))  # refused: not placed
        assert await s.media(ts, frame_bytes(rng, 20000))
        await _goes_on(s, good, server, model, rng, ts, 5)
    assert_healthy(server)


async def test_timestamps_jumping_hours_ahead_are_not_trusted_and_allocate_nothing(server):
    """One frame 3 hours ahead is a stray: dropped. A clock that really jumped (several frames in
    a row that agree) is rebased so the audio continues where the call was: the file never grows
    by hours, and every frame that was placed is exact."""
    rng = np.random.default_rng(7)
    async with GoodCall(server) as good:
        s, model, ts = await _begin(server, rng, 120, 10)
        assert await s.media(ts + 3 * 3600 * 1000, frame_bytes(rng))  # the stray
        ts += 20  # its slot stays silent
        ts = await _good_frames(s, model, rng, ts, 10)
        # Now the clock jumps 5 hours ahead and stays there: continue where the call was.
        jumped = ts + 5 * 3600 * 1000
        for i in range(20):
            p = frame_bytes(rng)
            assert await s.media(jumped + 20 * i, p)
            model.put(ts + 20 * i, p)
        ts += 20 * 20
        assert s.still_open()
        assert good.running()
        out = await _finish(s, server, model, "caller hung up")
    assert out["duration_s"] == ts / 1000  # seconds, not hours
    assert out["stats"]["clock_discontinuities"] == 1
    master = server.responses / ".calls" / s.call_sid / "inbound.wav"
    assert master.stat().st_size == 44 + 2 * ts * 8
    assert_healthy(server)


async def test_timestamps_going_backwards_never_overwrite_and_a_reset_clock_continues(server):
    rng = np.random.default_rng(8)
    async with GoodCall(server) as good:
        s, model, ts = await _begin(server, rng, 60_000, 20)  # a call already a minute in
        # Re-sent slots with other content (a replay): the first audio stays.
        for back in (20, 60, 200):
            assert await s.media(ts - back, frame_bytes(rng))
        # One frame from far in the past: a stray, dropped.
        assert await s.media(100, frame_bytes(rng))
        ts = await _good_frames(s, model, rng, ts, 5)
        # The clock resets to 0 and runs on from there: continue where the call was.
        for i in range(10):
            p = frame_bytes(rng)
            assert await s.media(20 * i, p)
            model.put(ts + 20 * i, p)
        ts += 200
        assert s.still_open()
        assert good.running()
        out = await _finish(s, server, model, "caller hung up")
    assert out["duration_s"] == ts / 1000
    assert out["stats"]["clock_discontinuities"] == 1
    assert_healthy(server)


# ----------------------------------------------------------------------------------- floods


async def test_a_flood_of_thousands_of_frames_is_recorded_exactly_and_the_server_stays_responsive(server):
    rng = np.random.default_rng(9)
    frames = [frame_bytes(rng) for _ in range(6000)]  # 2 minutes of audio, sent as fast as possible
    async with GoodCall(server, seconds=4.0, speed=1.0) as good:
        s = await RawStream(server).open()
        await s.start()
        model = Model()
        latencies = []
        flooding = True

        def probe():  # in a thread, so the test's own busy event loop does not count
            with httpx.Client() as c:
                while flooding:
                    t = time.monotonic()
                    r = c.get(server.base + "/healthz", timeout=5)
                    assert r.status_code == 200
                    latencies.append(time.monotonic() - t)
                    time.sleep(0.02)

        prober = asyncio.create_task(asyncio.to_thread(probe))
        while not latencies:
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        msgs = [media_msg(s.stream_sid, i + 2, 120 + 20 * i, p) for i, p in enumerate(frames)]
        s.seq = len(frames) + 1
        for m in msgs:
            assert await s.send(m)
        for i, p in enumerate(frames):
            model.put(120 + 20 * i, p)
        await s.stop()
        await s.close()
        flood_s = time.monotonic() - t0
        flooding = False
        await prober
        assert good.running()
        await _finish(s, server, model, "caller hung up")
    assert len(latencies) >= 3 and max(latencies) < 1.0, (flood_s, latencies)
    assert_healthy(server)


async def test_a_flood_of_invalid_messages_closes_that_stream_with_1008_and_keeps_its_audio(server):
    rng = np.random.default_rng(10)
    async with GoodCall(server) as good:
        s, model, _ = await _begin(server, rng, 120, 10)
        # 400, not thousands: a client that keeps writing after the close fills the TCP window, and
        # the close handshake then waits for its timeout (10 s) — harmless, but slow for a test.
        for i in range(400):
            if not s.still_open() or not await s.send("garbage %d" % i):
                break
            if i % 50 == 0:
                await asyncio.sleep(0)  # let the reader see the server's close
        closed = await s.closed()
        assert closed.code == 1008 and "invalid messages" in closed.reason, closed
        assert good.running()
        await _finish(s, server, model, "too many invalid messages")
    assert len(server_log_lines(server, f"stream {s.call_sid}: skipped")) == 1
    assert_healthy(server)


# ----------------------------------------------------------------------------------- fatal: closed with a reason


async def test_media_before_start_closes_1002_and_records_nothing(server):
    async with GoodCall(server) as good:
        before = call_dirs(server)
        s = await RawStream(server).open()
        await s.connected()
        await s.media(120, b"\xff" * 160)
        closed = await s.closed()
        assert closed.code == 1002 and "expected start" in closed.reason, closed
        assert call_dirs(server) - before <= {good.sid}
        assert outputs_of(server, s.call_sid) == []
        assert good.running()
    assert_healthy(server)


async def test_a_second_start_closes_1002_and_keeps_the_first_calls_audio(server):
    rng = np.random.default_rng(11)
    async with GoodCall(server) as good:
        s, model, _ = await _begin(server, rng, 120, 10)
        other = new_sid()
        token = await asyncio.to_thread(stream_token, server, other)
        await s.send(s.start_msg(token, callSid=other))  # a second call on the same socket
        closed = await s.closed()
        assert closed.code == 1002 and "got start" in closed.reason, closed
        assert good.running()
        await _finish(s, server, model, "protocol error")
    assert not (server.responses / ".calls" / other).exists()
    assert_healthy(server)


@pytest.mark.parametrize("start_over, code, words", [
    ({"callSid": None}, 1002, "callSid"),
    ({"callSid": "CA123"}, 1008, "callSid"),
    ({"callSid": "../../etc/passwd"}, 1008, "callSid"),
    ({"mediaFormat": {"encoding": "audio/l16", "sampleRate": 16000, "channels": 1}}, 1003, "mediaFormat"),
    ({"tracks": "inbound"}, 1002, "tracks"),
    ({"customParameters": ["token"]}, 1002, "customParameters"),
    ({"streamSid": "x" * 100}, 1008, "streamSid"),
], ids=["no-callSid", "short-callSid", "path-callSid", "l16", "tracks-string", "params-list", "long-streamSid"])
async def test_a_start_with_missing_or_wrong_fields_closes_with_a_reason_and_records_nothing(server, start_over, code, words):
    async with GoodCall(server) as good:
        before = call_dirs(server)
        s = await RawStream(server).open()
        await s.connected()
        token = await asyncio.to_thread(stream_token, server, s.call_sid)
        await s.send(s.start_msg(token, **start_over))
        closed = await s.closed()
        assert closed.code == code and words in closed.reason, closed
        assert call_dirs(server) - before <= {good.sid}
        assert good.running()
    assert_healthy(server)


async def test_a_message_for_another_stream_sid_closes_1008_and_keeps_the_audio(server):
    rng = np.random.default_rng(12)
    async with GoodCall(server) as good:
        s, model, ts = await _begin(server, rng, 120, 10)
        await s.send(media_msg(new_sid("MZ"), 50, ts, frame_bytes(rng)))
        closed = await s.closed()
        assert closed.code == 1008 and "streamSid" in closed.reason, closed
        assert good.running()
        await _finish(s, server, model, "protocol error")
    assert_healthy(server)


@pytest.mark.parametrize("cut, how", [("mid-payload", "fin"), ("mid-header", "fin"), ("mid-payload", "rst")])
async def test_a_socket_cut_mid_message_still_finalises_what_arrived(server, cut, how):
    """Raw TCP: complete frames, then half of a WebSocket frame, then the connection ends — with a
    FIN (everything before the cut is recorded exactly) or a reset (the kernel may discard what
    was still unread: a prefix of what was sent is recorded, exactly, and the call is finalised)."""
    rng = np.random.default_rng(13)
    async with GoodCall(server) as good:
        s = RawStream(server)  # used only to build messages
        token = await asyncio.to_thread(stream_token, server, s.call_sid)
        reader, writer = await raw_ws_open(server.port)
        writer.write(ws_frame(b'{"event":"connected","protocol":"Call","version":"1.0.0"}'))
        writer.write(ws_frame(s.start_msg(token).encode()))
        model = Model()
        for i in range(25):
            p = frame_bytes(rng)
            writer.write(ws_frame(media_msg(s.stream_sid, i + 2, 120 + 20 * i, p).encode()))
            model.put(120 + 20 * i, p)
        last = ws_frame(media_msg(s.stream_sid, 99, 120 + 20 * 25, frame_bytes(rng)).encode())
        writer.write(last[: len(last) // 2] if cut == "mid-payload" else last[:1])
        await writer.drain()
        if how == "fin":
            writer.write_eof()
        else:
            writer.transport.abort()
        assert good.running()
        out = await result_of(server, s.call_sid)
        writer.close()
        assert out["end_reason"] == "caller disconnected without stop"
        got = read_master(server.responses, s.call_sid)
        if how == "fin":
            assert_matches(got, model)
        else:  # exact up to some frame, silence after it (what the reset discarded)
            n = min(len(model.x), len(got))  # the recording may end early: the reset took the rest
            diff = np.flatnonzero(got[:n] != model.x[:n])
            k = int(diff[0]) if len(diff) else n
            assert k >= 120 * 8 + 160 and not got[k:].any(), first_mismatch(got, model.x)
    assert_healthy(server)


def test_a_parser_bug_costs_that_stream_only_closed_1011_with_a_reason(tmp_path, monkeypatch):
    """In-process (the bug has to be injected): an unexpected exception while parsing closes that
    socket with 1011 and a reason instead of tearing the handler down with a traceback."""
    from fastapi.testclient import TestClient

    from app.config import Settings
    from app.main import create_app
    from app.twilio.protocol import StreamProtocol

    def boom(self, text):
        raise TypeError("injected parser bug")

    app = create_app(Settings.load(recordings_directory=tmp_path / "responses", greeting="tone"))
    monkeypatch.setattr(StreamProtocol, "receive", boom)
    with TestClient(app) as client:
        with client.websocket_connect("/media-stream") as ws:
            ws.send_text('{"event":"connected","protocol":"Call","version":"1.0.0"}')
            msg = ws.receive()
            assert msg["type"] == "websocket.close" and msg["code"] == 1011, msg
            assert "internal error" in msg["reason"]
        assert client.get("/healthz").status_code == 200
