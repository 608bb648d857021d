"""The stream loop over a real socket: the call clock, playback of the server's audio and marks, listen mode."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
from websockets.asyncio.server import ServerConnection

from app.audio.mulaw import decode as ulaw_decode
from app.audio.mulaw import encode as ulaw_encode
from tests.simulator.fake_server import FakeServer, listen_twiml, run, send, sid_of, tone, ulaw_tone


def test_tail_is_silence_and_default_duration() -> None:
    server = FakeServer()
    res = run(server, caller_audio=tone(0.5), tail_s=0.3, speed=0, first_timestamp_ms=100)
    media = server.events("media")
    assert len(media) == 40 == res.frames_sent
    assert media[0]["media"]["timestamp"] == "100" and media[-1]["media"]["timestamp"] == str(100 + 39 * 20)
    assert all(base64.b64decode(m["media"]["payload"]) == b"\xff" * 160 for m in media[25:])
    assert res.stream_duration_ms == 100 + 40 * 20 and len(res.heard) == (100 + 800) * 8


# How late (in stream ms) a reply from the in-process fake may land on a loaded machine. At
# speed 10 one slot is 2 ms of wall time; exact checks below use the simulator's own record of
# when each message arrived on the stream clock, so only these sanity bounds depend on load.
SLACK_MS = 400


def test_mark_on_empty_fifo_echoes_immediately() -> None:
    async def handler(server: FakeServer, ws: ServerConnection, msg: dict[str, Any]) -> None:
        sid_of(server, msg)
        if msg["event"] == "media" and msg["media"]["chunk"] == "5":
            await send(ws, server, "mark", mark={"name": "m0"})

    server = FakeServer(handler=handler)
    res = run(server, caller_audio=tone(1.0), tail_s=0, speed=10)
    assert res.marks_echoed == ["m0"] and res.marks_cleared == []
    name, arrived, echoed, cleared = res.mark_log[0]
    assert arrived == echoed and not cleared  # nothing buffered → echoed at once
    assert 0 <= arrived - (200 + 20) <= SLACK_MS  # triggered by the frame at ts 200
    echo, = server.events("mark")
    assert list(echo) == ["event", "sequenceNumber", "streamSid", "mark"]
    assert echo["mark"] == {"name": "m0"}
    assert echoed - server.state["echo_after_ts"]["m0"] in (20, 40)
    # marks take sequence numbers too: all numbers stay contiguous
    seqs = [int(m["sequenceNumber"]) for m in server.parsed[1:]]
    assert seqs == list(range(1, len(seqs) + 1))


def test_mark_after_one_second_of_audio_and_heard_placement() -> None:
    trigger_ts = 400

    async def handler(server: FakeServer, ws: ServerConnection, msg: dict[str, Any]) -> None:
        sid_of(server, msg)
        if msg["event"] == "media" and msg["media"]["timestamp"] == str(trigger_ts):
            audio = ulaw_tone(1.0)
            # in uneven pieces, as a TTS would: any size is allowed
            for a, b in ((0, 1000), (1000, 1001), (1001, 5555), (5555, 8000)):
                await send(ws, server, "media", media={"payload": base64.b64encode(audio[a:b]).decode()})
            await send(ws, server, "mark", mark={"name": "end-of-reply"})

    server = FakeServer(handler=handler)
    res = run(server, caller_audio=tone(2.5, 300), tail_s=0, speed=10)

    assert res.media_received_bytes == 8000
    assert res.marks_echoed == ["end-of-reply"]
    assert [w for w in res.warnings if "31922" not in w] == []  # only "ws:// is not wss://"
    arrival_ms, play_ms, nbytes = res.media_log[0]
    assert play_ms == arrival_ms and nbytes == 1000  # FIFO was empty: plays at once
    # the reply is answered to the frame at trigger_ts, delivered at stream ms trigger_ts + 20
    assert 0 <= arrival_ms - (trigger_ts + 20) <= SLACK_MS
    name, arrived, echoed, cleared = res.mark_log[0]
    assert abs(echoed - (arrival_ms + 1000)) <= 20 and not cleared  # 1 s of audio, then the echo
    # the server sees the echo 1 s of stream time after the audio started
    assert echoed - server.state["echo_after_ts"]["end-of-reply"] in (20, 40)

    # heard: a sample-exact copy of what was sent, at stream ms * 8
    pos = arrival_ms * 8
    assert np.array_equal(res.heard[pos : pos + 8000], ulaw_decode(ulaw_tone(1.0)))
    assert np.all(res.heard[:pos] == 0) and np.all(res.heard[pos + 8000 :] == 0)


def test_clear_echoes_pending_marks_and_stops_playback() -> None:
    async def handler(server: FakeServer, ws: ServerConnection, msg: dict[str, Any]) -> None:
        sid_of(server, msg)
        if msg["event"] != "media":
            return
        ts = int(msg["media"]["timestamp"])
        if ts == 200:
            await send(ws, server, "media", media={"payload": base64.b64encode(ulaw_tone(2.0)).decode()})
            await send(ws, server, "mark", mark={"name": "a"})
            await send(ws, server, "media", media={"payload": base64.b64encode(ulaw_tone(1.0)).decode()})
            await send(ws, server, "mark", mark={"name": "b"})
        elif ts == 700:
            await send(ws, server, "clear")
        elif ts == 900:
            await send(ws, server, "mark", mark={"name": "c"})  # FIFO empty after clear → at once

    server = FakeServer(handler=handler)
    res = run(server, caller_audio=tone(2.5, 300), tail_s=0, speed=10)

    assert res.clears == 1
    assert res.marks_echoed == ["a", "b", "c"] and res.marks_cleared == ["a", "b"]
    assert [m["mark"]["name"] for m in server.events("mark")] == ["a", "b", "c"]
    start_ms = res.media_log[0][0]
    clear_ms, = res.clear_log
    assert 0 <= start_ms - 220 <= SLACK_MS and 0 <= clear_ms - 720 <= SLACK_MS and clear_ms > start_ms
    for name, arrived, echoed, cleared in res.mark_log[:2]:
        assert cleared and echoed == clear_ms  # flushed by the clear, not played
    name, arrived, echoed, cleared = res.mark_log[2]
    assert name == "c" and arrived == echoed and not cleared
    # heard: the reply from its start up to the clear, then silence
    a, c = start_ms * 8, clear_ms * 8
    assert np.all(res.heard[:a] == 0)
    assert np.array_equal(res.heard[a:c], ulaw_decode(ulaw_tone(2.0))[: c - a])
    assert np.all(res.heard[c:] == 0)


def test_listen_mode_both_tracks() -> None:
    server = FakeServer(twiml=lambda s: listen_twiml(s.ws_url))
    caller, other = tone(1.0, 300), tone(0.6, 900)
    res = run(server, caller_audio=caller, outbound_audio=other, tail_s=0, speed=0, dtmf=[(0.1, "1")])

    assert res.mode == "listen" and res.tracks == ["inbound", "outbound"]
    start, = server.events("start")
    assert start["start"]["tracks"] == ["inbound", "outbound"] and start["start"]["customParameters"] == {}
    media = server.events("media")
    assert len(media) == 100 == res.frames_sent
    assert [m["media"]["track"] for m in media[:4]] == ["inbound", "outbound", "inbound", "outbound"]
    for i in range(50):
        a, b = media[2 * i], media[2 * i + 1]
        assert a["media"]["timestamp"] == b["media"]["timestamp"] == str(120 + 20 * i)
        assert a["media"]["chunk"] == b["media"]["chunk"] == str(i + 1)
        assert int(a["sequenceNumber"]) == 2 + 2 * i and int(b["sequenceNumber"]) == 3 + 2 * i
    out = b"".join(base64.b64decode(m["media"]["payload"]) for m in media if m["media"]["track"] == "outbound")
    assert out[: len(other)] == ulaw_encode(other) and set(out[len(other) :]) == {0xFF}
    assert server.events("dtmf") == [] and any("dtmf" in w for w in res.warnings)
    # heard = the other party, on the stream clock
    assert np.array_equal(res.heard[120 * 8 : 120 * 8 + len(other)], ulaw_decode(ulaw_encode(other)))


def test_real_time_pacing_uses_absolute_deadlines() -> None:
    import time

    server = FakeServer()
    t0 = time.monotonic()
    res = run(server, caller_audio=tone(1.0), tail_s=0, speed=5)  # 50 slots × 4 ms
    elapsed = time.monotonic() - t0
    assert res.frames_sent == 50
    assert 0.19 <= elapsed < 1.5


def test_dtmf_and_gaps() -> None:
    server = FakeServer()
    res = run(server, caller_audio=tone(1.0), tail_s=0, speed=0, dtmf=[(0.5, "1"), (0.7, "#")], gaps=[(0.2, 0.1)])
    dtmf = server.events("dtmf")
    assert [d["dtmf"] for d in dtmf] == [{"track": "inbound_track", "digit": "1"}, {"track": "inbound_track", "digit": "#"}]
    assert list(dtmf[0]) == ["event", "streamSid", "sequenceNumber", "dtmf"]
    ts = [int(m["media"]["timestamp"]) for m in server.events("media")]
    assert len(ts) == 45 == res.frames_sent
    assert 120 + 200 - 20 in ts and 120 + 200 not in ts and 120 + 280 not in ts and 120 + 300 in ts
    assert [int(m["media"]["chunk"]) for m in server.events("media")] == list(range(1, 46))
    seqs = [int(m["sequenceNumber"]) for m in server.parsed[1:]]
    assert seqs == list(range(1, len(seqs) + 1))
    assert res.dtmf_sent == ["1", "#"]


def test_malformed_server_messages_are_warnings() -> None:
    async def handler(server: FakeServer, ws: ServerConnection, msg: dict[str, Any]) -> None:
        sid_of(server, msg)
        if msg["event"] == "media" and msg["media"]["chunk"] == "2":
            await ws.send(b"\x00\x01")
            await ws.send("not json")
            await send(ws, server, "hello")
            await ws.send(json.dumps({"event": "media", "streamSid": "MZwrong", "media": {"payload": ""}}))
            await send(ws, server, "mark", mark={})
            await send(ws, server, "media", media={"payload": base64.b64encode(b"RIFF" + b"\xff" * 156).decode()})
            await send(ws, server, "mark", mark={"name": "ok"})

    server = FakeServer(handler=handler)
    res = run(server, caller_audio=tone(0.5), tail_s=0, speed=10)
    assert res.warning_counts["31950"] == 1
    assert res.warning_counts["31951"] == 4
    assert res.warning_counts["header"] == 1
    assert res.marks_echoed == ["ok"] and res.stop_sent and res.frames_sent == 25
