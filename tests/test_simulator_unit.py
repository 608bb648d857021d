"""The Twilio emulator against a tiny in-test fake server (raw asyncio HTTP + websockets).

Every test runs its own event loop with ``asyncio.run`` so it does not depend on pytest-asyncio
settings. Timing-sensitive tests use speed 10 (2 ms per 20 ms slot); the rest run at speed 0.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Response
from websockets.datastructures import Headers

from app.audio.mulaw import decode as ulaw_decode
from app.audio.mulaw import encode as ulaw_encode
from app.simulator import (
    FilesNotReady,
    HandshakeError,
    SimConfig,
    SimResult,
    SimulatorError,
    add_arguments,
    load_wav_8k,
    main_from_args,
    parse_twiml,
    run_call,
    wait_for_call_files,
    wait_verdict,
)
from app.twilio.signature import validate

TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_WSS = "wss://public.example.com/media-stream"

Handler = Callable[["FakeServer", ServerConnection, dict[str, Any]], Awaitable[None]]


def tone(seconds: float, freq: float = 440.0, amp: float = 8000.0) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def ulaw_tone(seconds: float, freq: float = 1000.0) -> bytes:
    return ulaw_encode(tone(seconds, freq, 12000))


class FakeServer:
    """/voice + /status over raw asyncio HTTP, and a websockets server for the stream."""

    def __init__(self, twiml: str | Callable[["FakeServer"], str] | None = None, handler: Handler | None = None, reject_ws: int | None = None) -> None:
        self._twiml = twiml
        self.handler = handler
        self.reject_ws = reject_ws
        self.http_requests: list[dict[str, Any]] = []
        self.ws_headers: Headers | None = None
        self.ws_path: str | None = None
        self.received: list[str] = []  # raw text frames from the simulator, in order
        self.parsed: list[dict[str, Any]] = []
        self.ws_closed_code: int | None = None
        self.last_inbound_ts = -1
        self.state: dict[str, Any] = {}

    # -- lifecycle

    async def __aenter__(self) -> "FakeServer":
        self._http = await asyncio.start_server(self._http_conn, "127.0.0.1", 0)
        self.http_port = self._http.sockets[0].getsockname()[1]
        self._ws = await serve(self._ws_conn, "127.0.0.1", 0, process_request=self._process_request, compression=None)
        self.ws_port = self._ws.sockets[0].getsockname()[1] if hasattr(self._ws, "sockets") else list(self._ws.server.sockets)[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._ws.close()
        await self._ws.wait_closed()
        self._http.close()
        await self._http.wait_closed()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/media-stream"

    def twiml(self) -> str:
        if self._twiml is None:
            return connect_twiml(self.ws_url)
        return self._twiml(self) if callable(self._twiml) else self._twiml

    # -- HTTP

    async def _http_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await reader.readline()).decode()
            method, path, _ = line.split(" ", 2)
            headers: dict[str, str] = {}
            while True:
                h = (await reader.readline()).decode()
                if h in ("\r\n", "\n", ""):
                    break
                k, _, v = h.partition(":")
                headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            text = body.decode()
            self.http_requests.append(
                {"method": method, "path": path, "headers": headers, "body": text, "params": dict(parse_qsl(text, keep_blank_values=True)), "pairs": parse_qsl(text, keep_blank_values=True)}
            )
            if path == "/voice":
                status, ctype, out = 200, "text/xml", self.twiml().encode()
            elif path == "/status":
                status, ctype, out = 204, "text/plain", b""
            elif path.startswith("/calls/") and method == "GET":
                # GET /calls/{sid} as app/web/calls_api.py answers it; state from self.call_states
                sid = path.rsplit("/", 1)[1]
                states = self.state.setdefault("call_states", ["finalized"])
                state = states.pop(0) if len(states) > 1 else states[0]
                names = {"conversation": f"call_{sid}_conversation.mp3", "transcript": f"call_{sid}.txt",
                         "summary": f"call_{sid}_summary.txt", "json": f"call_{sid}.json"}
                result = {"files": names, "audio": {"path": f"/srv/responses/{names['conversation']}"}}
                body = {"call_sid": sid, "state": state, "files": {n: f"/calls/{sid}/files/{n}" for n in names.values()},
                        "result": result if state == "finalized" else {}}
                status, ctype, out = 200, "application/json", json.dumps(body).encode()
            else:
                status, ctype, out = 404, "text/plain", b"not found"
            reason = {200: "OK", 204: "No Content", 404: "Not Found"}[status]
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(out)}\r\nConnection: close\r\n\r\n".encode() + out)
            await writer.drain()
        finally:
            writer.close()

    def requests(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.http_requests if r["path"] == path]

    # -- WebSocket

    def _process_request(self, conn: ServerConnection, request: Any) -> Response | None:
        if self.reject_ws:
            return conn.respond(self.reject_ws, "Forbidden\n")
        return None

    async def _ws_conn(self, ws: ServerConnection) -> None:
        self.ws_headers = ws.request.headers
        self.ws_path = ws.request.path
        try:
            async for raw in ws:
                self.received.append(raw)
                msg = json.loads(raw)
                self.parsed.append(msg)
                if msg["event"] == "media" and msg["media"]["track"] == "inbound":
                    self.last_inbound_ts = int(msg["media"]["timestamp"])
                if msg["event"] == "mark":
                    self.state.setdefault("echo_after_ts", {})[msg["mark"]["name"]] = self.last_inbound_ts
                if self.handler is not None:
                    await self.handler(self, ws, msg)
        except Exception:
            pass
        self.ws_closed_code = ws.close_code

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.parsed if m["event"] == name]


def connect_twiml(url: str, params: dict[str, str] | None = None) -> str:
    inner = "".join(f'<Parameter name="{k}" value="{v}" />' for k, v in (params or {}).items())
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{url}">{inner}</Stream></Connect></Response>'


def listen_twiml(url: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Start>'
        f'<Stream name="callscribe" track="both_tracks" url="{url}" /></Start><Dial>+15005550001</Dial></Response>'
    )


def run(server: FakeServer, **kw: Any) -> SimResult:
    async def go() -> SimResult:
        async with server:
            return await run_call(SimConfig(base_url=server.base_url, caller_audio=kw.pop("caller_audio", None), **kw))

    return asyncio.run(go())


async def send(ws: ServerConnection, server: FakeServer, event: str, **fields: Any) -> None:
    msg: dict[str, Any] = {"event": event, "streamSid": server.state["sid"]}
    msg.update(fields)
    await ws.send(json.dumps(msg))


def sid_of(server: FakeServer, msg: dict[str, Any]) -> None:
    if msg["event"] == "start":
        server.state["sid"] = msg["streamSid"]


# --------------------------------------------------------------------------- wire format


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


def test_tail_is_silence_and_default_duration() -> None:
    server = FakeServer()
    res = run(server, caller_audio=tone(0.5), tail_s=0.3, speed=0, first_timestamp_ms=100)
    media = server.events("media")
    assert len(media) == 40 == res.frames_sent
    assert media[0]["media"]["timestamp"] == "100" and media[-1]["media"]["timestamp"] == str(100 + 39 * 20)
    assert all(base64.b64decode(m["media"]["payload"]) == b"\xff" * 160 for m in media[25:])
    assert res.stream_duration_ms == 100 + 40 * 20 and len(res.heard) == (100 + 800) * 8


def test_webhooks_headers_and_signatures() -> None:
    server = FakeServer(twiml=connect_twiml(PUBLIC_WSS))

    async def go() -> SimResult:
        async with server:
            cfg = SimConfig(
                base_url=server.base_url + "/",
                caller_audio=tone(0.2),
                speed=0,
                tail_s=0,
                auth_token=TOKEN,
                stream_url=server.ws_url,
                extra_params={"StirVerstat": "TN-Validation-Passed-A"},
                headers={"X-API-Key": "k1"},
            )
            return await run_call(cfg)

    res = asyncio.run(go())
    voice, = server.requests("/voice")
    assert voice["method"] == "POST"
    h = voice["headers"]
    assert h["content-type"].startswith("application/x-www-form-urlencoded")
    assert h["user-agent"] == "TwilioProxy/1.1" and h["i-twilio-idempotency-token"] and h["x-api-key"] == "k1"
    p = voice["params"]
    assert p["CallSid"] == res.call_sid and p["AccountSid"] == res.account_sid
    assert p["CallStatus"] == "ringing" and p["ApiVersion"] == "2010-04-01" and p["Direction"] == "inbound"
    assert p["From"] == p["Caller"] == "+15005550006" and p["To"] == p["Called"] == "+15005550001"
    assert p["CalledCity"] == "" and p["StirVerstat"] == "TN-Validation-Passed-A"
    voice_url = server.base_url + "/voice"
    assert validate(voice_url, voice["pairs"], h["x-twilio-signature"], TOKEN)
    assert not validate(voice_url, voice["pairs"], h["x-twilio-signature"], "other")

    # WS upgrade: lower-case header, signed over the TwiML wss URL (not the dialled ws URL)
    assert server.ws_path == "/media-stream"
    assert "x-twilio-signature" in [k for k in server.ws_headers.keys()]
    assert validate(PUBLIC_WSS, None, server.ws_headers["x-twilio-signature"], TOKEN)
    assert server.ws_headers["X-API-Key"] == "k1"
    assert res.twiml_stream_url == PUBLIC_WSS and res.connected_url == server.ws_url

    status, = server.requests("/status")
    sp = status["params"]
    assert sp["CallStatus"] == "completed" and sp["CallSid"] == res.call_sid
    assert sp["CallbackSource"] == "call-progress-events" and sp["SequenceNumber"] == "0"
    assert sp["CallDuration"].isdigit() and sp["Timestamp"].endswith("+0000")
    assert validate(server.base_url + "/status", status["pairs"], status["headers"]["x-twilio-signature"], TOKEN)
    assert res.status_callback_status == 204


def test_unsigned_without_token() -> None:
    server = FakeServer()
    run(server, caller_audio=None, duration_s=0.1, speed=0, status_callback=False)
    assert "x-twilio-signature" not in server.requests("/voice")[0]["headers"]
    assert "x-twilio-signature" not in server.ws_headers
    assert server.requests("/status") == []


def test_wss_downgraded_to_ws_for_same_host() -> None:
    server = FakeServer(twiml=lambda s: connect_twiml(f"wss://127.0.0.1:{s.http_port}/media-stream"))

    async def go() -> None:
        async with server:
            res = await run_call(SimConfig(base_url=server.base_url, caller_audio=None, duration_s=0.1, speed=0))
            raise AssertionError(res)

    # The fake's HTTP port does not speak WebSocket; what matters is the dialled URL.
    with pytest.raises(HandshakeError, match=r"ws://127\.0\.0\.1"):
        asyncio.run(go())


# --------------------------------------------------------------------------- playback, marks, clear


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


# --------------------------------------------------------------------------- endings and errors


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


def test_twiml_errors_and_webhook_failure() -> None:
    with pytest.raises(SimulatorError, match="neither"):
        parse_twiml("<Response><Say>hi</Say><Hangup/></Response>", "http://h/voice")
    with pytest.raises(SimulatorError, match="not XML"):
        parse_twiml("hello", "http://h/voice")
    s = parse_twiml('<Response><Start><Stream url="/media" /></Start><Pause length="40"/></Response>', "https://h.example/voice")
    assert (s.mode, s.url, s.track) == ("listen", "https://h.example/media", "inbound_track")

    server = FakeServer(twiml="<Response><Say>Sorry</Say></Response>")
    with pytest.raises(SimulatorError, match="neither"):
        run(server, caller_audio=None, speed=0)

    async def go() -> None:
        async with FakeServer() as srv:
            await run_call(SimConfig(base_url=srv.base_url + "/nope", caller_audio=None, speed=0))

    with pytest.raises(SimulatorError, match="404"):
        asyncio.run(go())


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


# --------------------------------------------------------------------------- files and CLI


def test_load_wav_8k_any_rate_and_channels(tmp_path) -> None:
    t = np.arange(16000) / 16000
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)], axis=1)
    path = tmp_path / "in.wav"
    sf.write(path, stereo, 16000, subtype="FLOAT")
    out = load_wav_8k(path)
    assert out.dtype == np.int16 and out.ndim == 1 and abs(len(out) - 8000) <= 1
    assert 14000 < np.abs(out).max() < 17500

    path2 = tmp_path / "ulaw.wav"
    sf.write(path2, tone(0.5), 8000, subtype="ULAW")
    assert len(load_wav_8k(path2)) == 4000


def test_cli(tmp_path, capsys) -> None:
    loop = asyncio.new_event_loop()
    server = FakeServer()
    ready = threading.Event()

    def serve_forever() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.__aenter__())
        ready.set()
        loop.run_forever()

    th = threading.Thread(target=serve_forever, daemon=True)
    th.start()
    assert ready.wait(5)
    try:
        wav = tmp_path / "caller.wav"
        sf.write(wav, tone(0.4), 8000, subtype="PCM_16")
        out = tmp_path / "heard.wav"
        parser = argparse.ArgumentParser()
        add_arguments(parser)
        args = parser.parse_args(
            ["--url", server.base_url, "--wav", str(wav), "--speed", "0", "--speak-at", "0", "--tail", "0.2", "--out", str(out),
             "--dtmf", "0.1:5", "--auth-token", TOKEN, "--call-sid", "CA" + "a" * 32]
        )
        assert args.dtmf == [(0.1, "5")]
        assert main_from_args(args) == 0
        text = capsys.readouterr().out
        assert "CA" + "a" * 32 in text and "connect" in text and "frames sent:   30" in text and str(out) in text
        data, rate = sf.read(out)
        assert rate == 8000 and len(data) == (120 + 600) * 8
        with pytest.raises(SystemExit):
            parser.parse_args(["--dtmf", "1.0:x"])
    finally:
        asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        th.join(5)
        loop.close()


# --------------------------------------------------------------------------- waiting for the assistant


def verdict(now_ms: float, now_wall: float, *, last_ms: float = 0.0, last_wall: float = 0.0, playing: bool = False,
            quiet_s: float = 1.5, max_wait_s: float = 30.0) -> str:
    return wait_verdict(now_ms, now_wall, start_ms=0.0, start_wall=0.0, last_ms=last_ms, last_wall=last_wall,
                        playing=playing, quiet_s=quiet_s, max_wait_s=max_wait_s)


def test_wait_verdict_rules() -> None:
    # quiet on both clocks, nothing to play → finished
    assert verdict(1500, 1.5) == "quiet"
    assert verdict(1499, 5.0) == "waiting"
    # the stream is quiet but little wall time went by (a fast replay): the server may still be
    # transcribing or synthesising → real-time idling, not a hang-up
    assert verdict(1500, 0.2) == "idle"
    # something still to play: never finished, however long the silence on the wire
    assert verdict(9000, 9.0, playing=True) == "waiting"
    # quiet counts from the last sign of the assistant, on each clock
    assert verdict(3000, 3.0, last_ms=2000, last_wall=2.0) == "waiting"
    assert verdict(3500, 3.5, last_ms=2000, last_wall=2.0) == "quiet"
    assert verdict(3500, 3.0, last_ms=2000, last_wall=2.0) == "idle"
    # activity before the wait began does not shorten it
    assert wait_verdict(1000, 1.0, start_ms=0, start_wall=0, last_ms=-5000, last_wall=-5.0, playing=False,
                        quiet_s=1.5, max_wait_s=30) == "waiting"
    # the cap is stream time since the wait began; a quiet line wins over the cap
    assert verdict(30000, 30.0, playing=True) == "max-wait"
    assert verdict(30000, 30.0, last_ms=29000, last_wall=29.0) == "max-wait"
    assert verdict(30000, 30.0) == "quiet"
    assert verdict(29980, 30.0, playing=True) == "waiting"


def reply_after_caller(delay_s: float, seconds: float = 1.0, freq: float = 1000.0) -> Handler:
    """A server that answers the caller: `seconds` of tone + a mark, `delay_s` (wall) after the
    first silent inbound frame that follows the caller's tone (its end of turn)."""

    async def handler(server: FakeServer, ws: ServerConnection, msg: dict[str, Any]) -> None:
        sid_of(server, msg)
        if msg["event"] != "media" or server.state.get("answered"):
            return
        loud = base64.b64decode(msg["media"]["payload"]) != b"\xff" * 160
        if loud:
            server.state["heard_caller"] = True
        elif server.state.get("heard_caller"):
            server.state["answered"] = True

            async def answer() -> None:
                await asyncio.sleep(delay_s)
                await send(ws, server, "media", media={"payload": base64.b64encode(ulaw_tone(seconds, freq)).decode()})
                await send(ws, server, "mark", mark={"name": "reply"})

            server.state["task"] = asyncio.create_task(answer())

    return handler


@pytest.mark.parametrize("speed", [10, 0])
def test_default_tail_waits_for_the_reply_to_play_out(speed: float) -> None:
    """The caller stays on the line (silence) until the late reply has been played to its end."""
    server = FakeServer(handler=reply_after_caller(delay_s=0.3))
    t0 = time.monotonic()
    res = run(server, caller_audio=tone(0.5), tail_s=None, quiet_s=0.6, speed=speed)
    wall = time.monotonic() - t0
    assert res.marks_echoed == ["reply"] and res.marks_cleared == [] and res.stop_sent
    (what, waited, how), = res.waits
    assert (what, how) == ("tail", "quiet")
    start = res.media_log[0][1]  # stream ms the reply started playing
    reply = ulaw_decode(ulaw_tone(1.0))
    pos = int(start * 8)
    assert np.array_equal(res.heard[pos:pos + 8000], reply)  # all of it
    # hung up after quiet_s of quiet following the reply (stream clock), not long after
    assert res.stream_duration_ms - (start + 1000) >= 600
    assert res.stream_duration_ms - (start + 1000) <= 600 + 1200
    assert res.speech_end_ms == 120 + 500 and res.speech_start_ms == 120
    # the tail is silence on the caller's track
    media = server.events("media")
    assert all(base64.b64decode(m["media"]["payload"]) == b"\xff" * 160 for m in media[25:])
    assert wall < 4


def test_default_tail_without_an_answer_is_quiet_s_and_real_time_when_fast() -> None:
    server = FakeServer()
    t0 = time.monotonic()
    res = run(server, caller_audio=tone(0.2), tail_s=None, quiet_s=0.4, speed=0)
    wall = time.monotonic() - t0
    (what, waited, how), = res.waits
    assert (what, how) == ("tail", "quiet")
    # 0.4 s of stream goes by at once, then the line idles at real time until 0.4 s of wall time passed
    assert 400 <= waited <= 400 + 400 + 200
    assert 0.4 <= wall < 2.5


def test_greeting_wait_then_speak() -> None:
    async def handler(server: FakeServer, ws: ServerConnection, msg: dict[str, Any]) -> None:
        sid_of(server, msg)
        if msg["event"] == "start":  # a greeting of 1 s in two sentences, each with its mark
            for name in ("g1", "g2"):
                await send(ws, server, "media", media={"payload": base64.b64encode(ulaw_tone(0.5)).decode()})
                await send(ws, server, "mark", mark={"name": name})

    server = FakeServer(handler=handler)
    res = run(server, caller_audio=tone(0.4, 300), speak_at_s=None, tail_s=0, quiet_s=0.3, speed=10)
    assert res.waits[0][0] == "greeting" and res.waits[0][2] == "quiet"
    assert res.marks_echoed == ["g1", "g2"] and res.marks_cleared == []
    greeting_end = res.mark_log[-1][2]
    # the caller began after the greeting played out and quiet_s of quiet, not over it: 0.3 s of
    # stream at speed 10, then real-time idling until 0.3 s of wall time passed too (≤ 0.3 s more)
    assert 300 <= res.speech_start_ms - greeting_end <= 300 + 300 + 200
    media = server.events("media")
    first_loud = next(m for m in media if base64.b64decode(m["media"]["payload"]) != b"\xff" * 160)
    assert int(first_loud["media"]["timestamp"]) == res.speech_start_ms
    assert res.speech_end_ms == res.speech_start_ms + 400
    assert res.stream_duration_ms == res.speech_end_ms  # --tail 0
    heard = res.heard[120 * 8:]
    assert np.abs(heard[: 8000].astype(int)).max() > 1000  # the whole greeting was heard


def test_listen_mode_defaults_start_at_once_and_end_after_quiet() -> None:
    server = FakeServer(twiml=lambda s: listen_twiml(s.ws_url))
    res = run(server, caller_audio=tone(0.4, 300), outbound_audio=tone(0.6, 900), speak_at_s=None, tail_s=None,
              quiet_s=0.3, speed=0)
    assert res.mode == "listen" and res.speech_start_ms == 120 and res.speech_end_ms == 120 + 600
    assert [w[0] for w in res.waits] == ["tail"] and res.waits[0][2] == "quiet"
    inbound = [m for m in server.events("media") if m["media"]["track"] == "inbound"]
    assert base64.b64decode(inbound[0]["media"]["payload"]) != b"\xff" * 160  # the caller spoke at once
    assert 300 <= res.stream_duration_ms - res.speech_end_ms <= 300 + 300 + 200


def test_max_wait_caps_the_tail() -> None:
    async def handler(server: FakeServer, ws: ServerConnection, msg: dict[str, Any]) -> None:
        sid_of(server, msg)
        if msg["event"] == "start":  # a monologue far longer than the caller will wait
            await send(ws, server, "media", media={"payload": base64.b64encode(ulaw_tone(20.0)).decode()})

    server = FakeServer(handler=handler)
    res = run(server, caller_audio=tone(0.2), tail_s=None, max_wait_s=1.0, speed=0)
    assert res.waits == [("tail", 1000, "max-wait")]
    assert res.stream_duration_ms == 120 + 200 + 1000 and res.stop_sent
    assert any("--max-wait" in w for w in res.warnings)


def test_server_hangs_up_during_the_wait() -> None:
    async def handler(server: FakeServer, ws: ServerConnection, msg: dict[str, Any]) -> None:
        if msg["event"] == "media" and msg["media"]["chunk"] == "30":
            await ws.close(1000, "goodbye")

    server = FakeServer(handler=handler)
    res = run(server, caller_audio=tone(0.2), tail_s=None, speed=10)
    assert res.closed_by_server and not res.stop_sent
    assert res.waits and res.waits[0][0] == "tail" and res.waits[0][2] == "closed"


def test_duration_is_a_fixed_length_even_with_waits() -> None:
    server = FakeServer()
    res = run(server, caller_audio=tone(0.2), tail_s=None, duration_s=0.6, speed=0)
    assert res.stream_duration_ms == 120 + 600 and res.frames_sent == 30


# --------------------------------------------------------------------------- waiting for the call's files


def mock_calls(answers: list[tuple[int, dict[str, Any] | str]], seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status, body = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handle)


SID = "CA" + "b" * 32


def test_wait_for_call_files_polls_until_finalized() -> None:
    seen: list[httpx.Request] = []
    answers = [(404, {"error": "no call"}), (200, {"state": "live"}), (200, {"state": "unfinished"}),
               (200, {"call_sid": SID, "state": "finalized", "result": {"files": {}}})]
    body = wait_for_call_files("http://h:1/", SID, headers={"X-API-Key": "k"}, timeout_s=5, interval_s=0.01,
                               transport=mock_calls(answers, seen))
    assert body["state"] == "finalized" and len(seen) == 4
    assert all(str(r.url) == f"http://h:1/calls/{SID}" and r.headers["x-api-key"] == "k" for r in seen)


def test_wait_for_call_files_gives_up_and_says_why() -> None:
    seen: list[httpx.Request] = []
    t0 = time.monotonic()
    with pytest.raises(FilesNotReady, match=r"gave up .* after 0.3 s: the call is still 'unfinished'"):
        wait_for_call_files("http://h:1", SID, timeout_s=0.3, interval_s=0.05,
                            transport=mock_calls([(200, {"state": "unfinished"})], seen))
    assert 0.3 <= time.monotonic() - t0 < 2 and len(seen) >= 3
    with pytest.raises(FilesNotReady, match="--api-key"):
        wait_for_call_files("http://h:1", SID, timeout_s=5, transport=mock_calls([(401, {"error": "key"})], seen))
    with pytest.raises(FilesNotReady, match="404"):
        wait_for_call_files("http://h:1", SID, timeout_s=0.1, interval_s=0.05, transport=mock_calls([(404, "x")], seen))

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(FilesNotReady, match="ConnectError"):
        wait_for_call_files("http://h:1", SID, timeout_s=0.1, interval_s=0.05, transport=httpx.MockTransport(down))


@contextlib.contextmanager
def served_in_thread(server: FakeServer) -> Iterator[FakeServer]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve_forever() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.__aenter__())
        ready.set()
        loop.run_forever()

    th = threading.Thread(target=serve_forever, daemon=True)
    th.start()
    assert ready.wait(5)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        th.join(5)
        loop.close()


def cli_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_defaults_wait_for_the_assistant_and_the_files(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("API_KEY", "the-key")
    wav = tmp_path / "caller.wav"
    sf.write(wav, tone(0.4), 8000, subtype="PCM_16")
    args = cli_args("--wav", str(wav), "--out", str(tmp_path / "heard.wav"), "--speed", "10", "--quiet", "0.4")
    assert args.tail is None and args.speak_at is None and args.max_wait == 30 and args.files_timeout == 60
    server = FakeServer(handler=reply_after_caller(delay_s=0.2, seconds=0.5))
    server.state["call_states"] = ["live", "unfinished", "finalized"]
    with served_in_thread(server):
        args.url = server.base_url
        assert main_from_args(args) == 0
    out = capsys.readouterr().out
    assert "for the greeting: it had" in out and "for the assistant to finish: it had" in out
    assert "call files:    /srv/responses (on the server)" in out
    for suffix in ("_conversation.mp3", ".txt", "_summary.txt", ".json"):
        assert f"_{suffix}" not in out and suffix in out
    polls = [r for r in server.http_requests if r["path"].startswith("/calls/")]
    assert len(polls) == 3 and all(r["headers"]["x-api-key"] == "the-key" for r in polls)
    assert server.events("mark") and [m["mark"]["name"] for m in server.events("mark")] == ["reply"]


def test_cli_gives_up_on_the_files_with_exit_3(tmp_path, capsys) -> None:
    server = FakeServer()
    server.state["call_states"] = ["live"]
    with served_in_thread(server):
        args = cli_args("--url", server.base_url, "--duration", "0.2", "--speed", "0", "--out", "",
                        "--files-timeout", "0.5", "--no-stop")
        assert main_from_args(args) == 3
    err = capsys.readouterr().err
    assert "gave up waiting for the call's files after 0.5 s: the call is still 'live'" in err
