"""The voice webhook, the status callback and the signatures, as the fake server receives them."""

from __future__ import annotations

import asyncio

from app.simulator import SimConfig, SimResult, run_call
from app.twilio.signature import validate
from tests.simulator.fake_server import PUBLIC_WSS, TOKEN, FakeServer, connect_twiml, run, tone


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
