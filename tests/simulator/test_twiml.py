"""Reading TwiML and choosing the stream URL: pure calls, and the webhook's answer on a call."""

from __future__ import annotations

import asyncio

import pytest

from app.simulator import HandshakeError, SimConfig, SimulatorError, parse_twiml, run_call
from app.simulator.twiml import stream_target
from tests.simulator.fake_server import FakeServer, connect_twiml, run


def test_wss_downgraded_to_ws_for_same_host() -> None:
    server = FakeServer(twiml=lambda s: connect_twiml(f"wss://127.0.0.1:{s.http_port}/media-stream"))

    async def go() -> None:
        async with server:
            res = await run_call(SimConfig(base_url=server.base_url, caller_audio=None, duration_s=0.1, speed=0))
            raise AssertionError(res)

    # The fake's HTTP port does not speak WebSocket; what matters is the dialled URL.
    with pytest.raises(HandshakeError, match=r"ws://127\.0\.0\.1"):
        asyncio.run(go())


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


def target(twiml_url: str, base_url: str = "http://127.0.0.1:8000", override: str | None = None) -> tuple[str, list[str]]:
    warned: list[str] = []
    return stream_target(twiml_url, base_url, override, lambda kind, _text: warned.append(kind)), warned


def test_stream_target_as_twilio_would_dial_it() -> None:
    assert target("wss://public.example.com/media") == ("wss://public.example.com/media", [])
    # same host and port as a plain-http base URL: the socket is ws:// (a TLS-terminating proxy)
    assert target("wss://127.0.0.1:8000/media") == ("ws://127.0.0.1:8000/media", [])
    assert target("wss://127.0.0.1:8001/media") == ("wss://127.0.0.1:8001/media", [])
    assert target("wss://127.0.0.1:8000/media", base_url="https://127.0.0.1:8000") == ("wss://127.0.0.1:8000/media", [])
    # a relative URL resolved against an http(s) webhook
    assert target("https://h.example/media") == ("wss://h.example/media", [])
    assert target("ws://h.example/media") == ("ws://h.example/media", ["scheme"])
    assert target("wss://h.example/media?a=1#f") == ("wss://h.example/media", ["query"])
    assert target("wss://h.example/media?a=1", override="ws://local/x") == ("ws://local/x", ["query"])
    with pytest.raises(SimulatorError, match="31922"):
        target("ftp://h.example/media")


def test_twiml_stream_tracks_and_signed_url() -> None:
    connect = parse_twiml('<Response><Connect><Stream url="wss://h/m?x=1#f"><Parameter name="a" value="b"/>'
                          '</Stream></Connect></Response>', "https://h/voice")
    assert (connect.mode, connect.tracks, connect.parameters) == ("connect", ["inbound"], {"a": "b"})
    assert connect.signed_url == "wss://h/m"
    listen = parse_twiml('<Response><Start><Stream url="wss://h/m" track="both_tracks"/></Start></Response>', "https://h/v")
    assert (listen.mode, listen.tracks) == ("listen", ["inbound", "outbound"])
    with pytest.raises(SimulatorError, match="inbound_track, outbound_track, both_tracks"):
        parse_twiml('<Response><Start><Stream url="wss://h/m" track="nope"/></Start></Response>', "https://h/v")
