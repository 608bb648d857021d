"""``run_call`` end to end against the fake server: the whole wire of a call, how it ends, failed set-ups."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection

from app.audio.mulaw import encode as ulaw_encode
from app.simulator import HandshakeError, SimulatorError
from tests.simulator.fake_server import FakeServer, connect_twiml, listen_twiml, run, tone


def test_message_shapes_sequence_and_timestamps() -> None:
    server = FakeServer(twiml=lambda s: connect_twiml(s.ws_url, {"token": "abc", "who": "x y"}))
    audio = tone(2.0)
    res = run(server, caller_audio=audio, tail_s=0.0, speed=0, call_sid="CA" + "1" * 32)

    assert res.mode == "connect"
    assert res.frames_sent == 100 and res.call_sid == "CA" + "1" * 32
    assert res.custom_parameters == {"token": "abc", "who": "x y"}
    raw = server.received
    assert raw[0] == '{"event":"connected","protocol":"Call","version":"1.0.0"}'
    assert all(" " not in r or '"who":"x y"' in r for r in raw)  # compact JSON

    start = json.loads(raw[1])
    assert list(start) == ["event", "sequenceNumber", "start", "streamSid"]
    assert list(start["start"]) == ["accountSid", "streamSid", "callSid", "tracks", "mediaFormat", "customParameters"]
    assert start["sequenceNumber"] == "1"
    assert start["start"]["tracks"] == ["inbound"]
    assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
    assert list(start["start"]["mediaFormat"]) == ["encoding", "sampleRate", "channels"]
    assert start["start"]["customParameters"] == {"token": "abc", "who": "x y"}
    sid = start["streamSid"]
    assert sid.startswith("MZ") and len(sid) == 34 and start["start"]["streamSid"] == sid
    assert start["start"]["accountSid"].startswith("AC") and len(start["start"]["accountSid"]) == 34

    media = [json.loads(r) for r in raw[2:-1]]
    assert len(media) == 100
    payload = bytearray()
    for i, m in enumerate(media):
        assert list(m) == ["event", "sequenceNumber", "media", "streamSid"]
        assert list(m["media"]) == ["track", "chunk", "timestamp", "payload"]
        assert m["sequenceNumber"] == str(i + 2)
        assert m["media"] == {**m["media"], "track": "inbound", "chunk": str(i + 1), "timestamp": str(120 + 20 * i)}
        assert len(m["media"]["payload"]) == 216 and m["streamSid"] == sid
        payload += base64.b64decode(m["media"]["payload"])
    assert bytes(payload) == ulaw_encode(audio)

    stop = json.loads(raw[-1])
    assert list(stop) == ["event", "sequenceNumber", "streamSid", "stop"]
    assert stop["sequenceNumber"] == "102" and stop["streamSid"] == sid
    assert stop["stop"] == {"accountSid": start["start"]["accountSid"], "callSid": res.call_sid}
    assert res.stop_sent and not res.closed_by_server and res.close_code == 1000
    assert res.last_sequence_number == 102 and res.messages_sent == 103


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (4000, "goodbye")])
def test_server_closes_first_no_stop(code: int, reason: str) -> None:
    async def handler(server: FakeServer, ws: ServerConnection, msg: dict[str, Any]) -> None:
        if msg["event"] == "media" and msg["media"]["chunk"] == "10":
            await ws.close(code, reason)

    server = FakeServer(handler=handler)
    res = run(server, caller_audio=tone(2.0), tail_s=0, speed=10)
    assert res.closed_by_server and res.close_code == code and (res.close_reason or "") == reason
    assert server.events("stop") == [] and not res.stop_sent
    assert 10 <= res.frames_sent < 100  # stopped early (exactly when depends on loopback latency)
    assert res.stream_duration_ms < 120 + 2000 and len(res.heard) == res.stream_duration_ms * 8
    assert len(server.requests("/status")) == 1


def test_no_stop_drops_socket() -> None:
    server = FakeServer()
    res = run(server, caller_audio=tone(0.2), tail_s=0, speed=0, send_stop=False)
    assert server.events("stop") == [] and not res.closed_by_server
    assert server.ws_closed_code == 1006


def test_handshake_rejected() -> None:
    server = FakeServer(reject_ws=403)
    with pytest.raises(HandshakeError) as info:
        run(server, caller_audio=None, speed=0)
    assert info.value.status == 403
    assert server.requests("/status")[0]["params"]["CallDuration"] == "0"


def test_mode_mismatch() -> None:
    server = FakeServer(twiml=lambda s: listen_twiml(s.ws_url))
    with pytest.raises(SimulatorError, match="expected connect"):
        run(server, caller_audio=None, speed=0, mode="connect")
