"""Twilio request signatures on a real server: webhooks, the status callback and the Media Streams
WebSocket upgrade (Twilio's "webhooks security" page; reference §4)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import websockets
from websockets.asyncio.client import connect

from app.audio import mulaw
from app.simulator import SimConfig, run_call
from app.twilio.signature import compute_signature
from tests.security.helpers import (
    RawStream, assert_healthy, expected_master, frame_bytes, log_text, noise, read_master, result_of,
    server_log_lines, webhook,
)
from tests.support.frames import new_sid, token_from

pytestmark = [pytest.mark.security, pytest.mark.timeout(120)]

TOKEN = "tw-auth-" + "5ecret" * 5
PUBLIC = "https://calls.example.test"


@pytest.fixture(scope="module")
def signed_server(module_server_factory):
    return module_server_factory(TWILIO_AUTH_TOKEN=TOKEN, DEFAULT_AUDIO_FORMAT="wav")


@pytest.fixture(scope="module")
def proxied_server(module_server_factory):
    """Behind a TLS proxy: the server sees http://127.0.0.1:P, Twilio signs https://calls.example.test/…"""
    return module_server_factory(TWILIO_AUTH_TOKEN=TOKEN, PUBLIC_BASE_URL=PUBLIC, DEFAULT_AUDIO_FORMAT="wav")


def _form(sid: str, **more) -> dict:
    return {"CallSid": sid, "AccountSid": "AC" + "0" * 32, "From": "+15005550006", "To": "+15005550001",
            "CallStatus": "ringing"} | more


def _bad_signatures(url: str, form: dict) -> dict[str, str | None]:
    tampered = dict(form, CallSid=new_sid())
    return {
        "missing": None,
        "empty": "",
        "garbage": "not-a-signature",
        "other token": compute_signature(url, form, "some-other-token"),
        "tampered params": compute_signature(url, tampered, TOKEN),
        "other path": compute_signature(url + "x", form, TOKEN),
        "other scheme": compute_signature(url.replace("http://", "https://"), form, TOKEN),
    }


@pytest.mark.parametrize("path", ["/voice", "/status"])
def test_unsigned_or_wrongly_signed_webhooks_get_403_json_and_a_log_line_without_secrets(signed_server, path):
    url = signed_server.base + path
    form = _form(new_sid())
    for name, sig in _bad_signatures(url, form).items():
        headers = {} if sig is None else {"X-Twilio-Signature": sig}
        r = httpx.post(url, data=form, headers=headers)
        assert r.status_code == 403, (name, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/json")
        body = r.json()
        assert "signature" in body["error"].lower() and TOKEN not in r.text, (name, body)
    # The right signature over the same request passes (so the refusals above were about the signature).
    ok = httpx.post(url, data=form, headers={"X-Twilio-Signature": compute_signature(url, form, TOKEN)})
    assert ok.status_code in (200, 204), ok.text
    refused = server_log_lines(signed_server, f"refused {path}: missing or wrong X-Twilio-Signature")
    assert len(refused) >= 7
    log = log_text(signed_server)
    assert TOKEN not in log and TOKEN[:12] not in log
    assert_healthy(signed_server)


async def test_a_signed_call_from_the_simulator_is_recorded(signed_server):
    audio = noise(1.0, seed=21)
    res = await run_call(SimConfig(signed_server.base, audio, auth_token=TOKEN, speed=0, tail_s=0))
    assert res.status_callback_status == 204 and not res.closed_by_server
    out = await result_of(signed_server, res.call_sid)
    assert out["end_reason"] == "caller hung up (stop)"
    assert np.array_equal(read_master(signed_server.responses, res.call_sid), expected_master(audio))
    assert TOKEN not in log_text(signed_server)


async def test_the_media_stream_upgrade_must_be_signed_over_its_ws_url(signed_server):
    ws_url = f"ws://127.0.0.1:{signed_server.port}/media-stream"
    attempts = {
        "unsigned": {},
        "garbage": {"x-twilio-signature": "nope"},
        "other token": {"x-twilio-signature": compute_signature(ws_url, None, "other")},
        "https url": {"x-twilio-signature": compute_signature(ws_url.replace("ws://", "https://"), None, TOKEN)},
        "other path": {"x-twilio-signature": compute_signature(ws_url + "2", None, TOKEN)},
    }
    for name, headers in attempts.items():
        with pytest.raises(websockets.InvalidStatus) as info:
            async with connect(ws_url, additional_headers=headers, open_timeout=5):
                pass
        assert info.value.response.status_code == 403, name
    # A query string is refused even with a signature over it (Twilio never sends one).
    with pytest.raises(websockets.InvalidStatus) as info:
        async with connect(ws_url + "?token=x", additional_headers={
                "x-twilio-signature": compute_signature(ws_url + "?token=x", None, TOKEN)}, open_timeout=5):
            pass
    assert info.value.response.status_code == 403
    assert len(server_log_lines(signed_server, "refused a media-stream handshake")) >= 6
    # Signed over the URL the TwiML names: accepted (101), then the per-call token decides.
    async with connect(ws_url, additional_headers={"x-twilio-signature": compute_signature(ws_url, None, TOKEN)},
                       open_timeout=5) as ws:
        await ws.send('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    assert_healthy(signed_server)


async def test_behind_a_proxy_signatures_are_checked_over_public_base_url(proxied_server):
    srv = proxied_server
    sid = new_sid()
    form = _form(sid)
    # Signed for the public URL Twilio used, while the server itself sees http://127.0.0.1:P/voice.
    r = httpx.post(srv.base + "/voice", data=form,
                   headers={"X-Twilio-Signature": compute_signature(PUBLIC + "/voice", form, TOKEN)})
    assert r.status_code == 200, r.text
    assert 'url="wss://calls.example.test/media-stream"' in r.text
    token = token_from(r.text)
    # Signed for the address the server sees: refused (that is not what Twilio signs).
    local = httpx.post(srv.base + "/voice", data=form,
                       headers={"X-Twilio-Signature": compute_signature(srv.base + "/voice", form, TOKEN)})
    assert local.status_code == 403
    # The upgrade: signed over wss://calls.example.test/media-stream → accepted, and the call is recorded.
    wss = "wss://calls.example.test/media-stream"
    for bad in (f"ws://127.0.0.1:{srv.port}/media-stream", "https://calls.example.test/media-stream"):
        with pytest.raises(websockets.InvalidStatus) as info:
            async with connect(f"ws://127.0.0.1:{srv.port}/media-stream",
                               additional_headers={"x-twilio-signature": compute_signature(bad, None, TOKEN)},
                               open_timeout=5):
                pass
        assert info.value.response.status_code == 403, bad
    s = await RawStream(srv, call_sid=sid, headers={"x-twilio-signature": compute_signature(wss, None, TOKEN)}).open()
    await s.start(token=token)
    rng = np.random.default_rng(22)
    frames = [frame_bytes(rng) for _ in range(50)]
    for i, p in enumerate(frames):
        assert await s.media(120 + 20 * i, p)
    await s.stop()
    await s.close()
    out = await result_of(srv, sid)
    assert out["end_reason"] == "caller hung up (stop)"
    got = read_master(srv.responses, sid)
    assert np.array_equal(got[960:960 + 8000], mulaw.decode(b"".join(frames)))
    status = _form(sid, CallStatus="completed", CallDuration="1")
    r = httpx.post(srv.base + "/status", data=status,
                   headers={"X-Twilio-Signature": compute_signature(PUBLIC + "/status", status, TOKEN)})
    assert r.status_code == 204
    assert TOKEN not in log_text(srv)


def test_without_a_token_the_server_warns_loudly_at_start(make_server):
    srv = make_server()
    warning = server_log_lines(srv, "TWILIO_AUTH_TOKEN is not set")
    assert len(warning) == 1 and "WARNING" in warning[0] and "NOT checked" in warning[0]
    # …and, as warned, unsigned webhooks are then accepted.
    assert webhook(srv, new_sid()).status_code == 200
