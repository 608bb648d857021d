"""Limits, each refused with a code and a reason while the calls around keep their audio:
MAX_WS_MESSAGE_BYTES, MAX_CALL_SECONDS (stream clock and wall clock), the start timeout,
MAX_CONCURRENT_CALLS and MAX_BODY_BYTES."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

from app.simulator import SimConfig, run_call
from app.web.media_stream import START_TIMEOUT_S, wall_limit_s
from tests.security.helpers import (
    GoodCall, Model, RawStream, assert_healthy, call_dirs, expected_master, frame_bytes, noise, read_master,
    result_of, server_log_lines, stream_token, webhook,
)
from tests.support.frames import new_sid
from tests.support.sockets import raw_http

pytestmark = [pytest.mark.security, pytest.mark.timeout(120)]


async def test_a_message_over_max_ws_message_bytes_closes_1009_and_the_call_is_finalised(make_server):
    srv = make_server(MAX_WS_MESSAGE_BYTES=4096, DEFAULT_AUDIO_FORMAT="wav")
    async with GoodCall(srv) as good:  # Twilio's own messages are ~400 bytes: far under the limit
        s = await RawStream(srv).open()
        await s.start()
        rng = np.random.default_rng(31)
        model = Model()
        for i in range(10):
            p = frame_bytes(rng)
            await s.media(120 + 20 * i, p)
            model.put(120 + 20 * i, p)
        await s.send('{"event":"media","padding":"' + "x" * 5000 + '"}')
        closed = await s.closed()
        assert good.running()  # here, before the other call's finalisation is awaited: 3 s of wall time
        assert closed.code == 1009, closed
        out = await result_of(srv, s.call_sid)
        got = read_master(srv.responses, s.call_sid)
        assert np.array_equal(got[:len(model.x)], model.x) and not got[len(model.x):].any()
        # `callscribe serve` passes ws_max_size=MAX_WS_MESSAGE_BYTES to uvicorn, whose WebSocket layer then
        # closes 1009 itself, with an empty reason, and the app only sees an abnormal close (1006). When
        # the app sees the message first (ws_max_size above the setting), the reason names the setting.
        if closed.reason:
            assert "MAX_WS_MESSAGE_BYTES" in closed.reason and out["end_reason"] == "message too large"
        else:
            assert out["end_reason"] in ("message too large", "caller disconnected without stop")
    assert_healthy(srv)


async def test_max_call_seconds_closes_the_stream_and_finalises_with_the_reason(make_server):
    """Stream clock: a call sending 4 s when 2 s are allowed is closed at exactly 2 s. Wall clock: a
    started stream that goes silent is closed after MAX_CALL_SECONDS plus a grace. And a socket that
    never sends `start` is closed after START_TIMEOUT_S. All three at once, on one server."""
    srv = make_server(MAX_CALL_SECONDS=2, DEFAULT_AUDIO_FORMAT="wav")
    t0 = time.monotonic()
    idle = await RawStream(srv).open()  # upgraded, then nothing at all
    silent = await RawStream(srv).open()
    await silent.start()
    await silent.media(120, b"\xff" * 160)  # one frame, then silence on the wire
    audio = noise(4.0, seed=32)
    res = await run_call(SimConfig(srv.base, audio, speed=4, tail_s=0))
    assert res.closed_by_server and res.close_code == 1000 and "MAX_CALL_SECONDS" in res.close_reason
    out = await result_of(srv, res.call_sid)
    assert out["end_reason"] == "longest call reached" and out["duration_s"] == 2.0
    got = read_master(srv.responses, res.call_sid)
    assert np.array_equal(got, expected_master(audio)[:16000])

    closed = await silent.closed(timeout=wall_limit_s(2) + 5)
    waited = time.monotonic() - t0
    assert closed.code == 1000 and "MAX_CALL_SECONDS" in closed.reason, closed
    assert wall_limit_s(2) - 0.5 <= waited <= wall_limit_s(2) + 3, waited
    out = await result_of(srv, silent.call_sid)
    assert out["end_reason"] == "longest call reached (wall clock)"

    closed = await idle.closed(timeout=START_TIMEOUT_S + 5)
    waited = time.monotonic() - t0
    assert closed.code == 1008 and "start" in closed.reason, closed
    assert START_TIMEOUT_S - 0.5 <= waited <= START_TIMEOUT_S + 3, waited
    assert server_log_lines(srv, "no start message in time")
    assert_healthy(srv)


async def test_max_concurrent_calls_busy_twiml_and_1013_while_existing_calls_keep_their_audio(make_server):
    srv = make_server(MAX_CONCURRENT_CALLS=2, DEFAULT_AUDIO_FORMAT="wav")
    extra = new_sid()
    extra_token = await asyncio.to_thread(stream_token, srv, extra)  # minted while lines were free
    async with GoodCall(srv, seconds=3.0, speed=1.0) as a, GoodCall(srv, seconds=3.0, speed=1.0) as b:
        assert httpx.get(srv.base + "/healthz").json()["live_calls"] == 2
        busy = await asyncio.to_thread(webhook, srv, new_sid())
        assert busy.status_code == 200 and busy.headers["content-type"].startswith("text/xml")
        assert "busy" in busy.text and "<Hangup" in busy.text and "<Stream" not in busy.text
        before = call_dirs(srv)
        s = await RawStream(srv, call_sid=extra).open()
        await s.start(token=extra_token)
        closed = await s.closed()
        assert closed.code == 1013 and "MAX_CONCURRENT_CALLS" in closed.reason, closed
        assert call_dirs(srv) == before
        assert a.running() and b.running()
    # Both calls were recorded bit-exact (GoodCall checks on exit); the lines are free again.
    again = await asyncio.to_thread(webhook, srv, new_sid())
    assert "<Stream" in again.text
    metrics = httpx.get(srv.base + "/metrics").text
    assert "callscribe_calls_refused_total 1" in metrics
    assert_healthy(srv)


def test_bodies_over_max_body_bytes_get_413_json(make_server):
    srv = make_server(MAX_BODY_BYTES=2048)
    big_form = {"CallSid": new_sid(), "Padding": "x" * 4000}
    for path in ("/voice", "/status"):
        r = httpx.post(srv.base + path, data=big_form)
        assert r.status_code == 413 and "MAX_BODY_BYTES" in r.json()["error"], (path, r.text)
    r = httpx.post(srv.base + f"/audio/set-format/{new_sid()}", json={"format": "wav", "pad": "x" * 4000})
    assert r.status_code == 413 and r.headers["content-type"] == "application/json"

    def chunks():  # no Content-Length: counted as it streams in
        for _ in range(10):
            yield b"a=" + b"x" * 1000 + b"&"

    r = httpx.post(srv.base + "/voice", content=chunks(), headers={"content-type": "application/x-www-form-urlencoded"})
    assert r.status_code == 413 and "MAX_BODY_BYTES" in r.json()["error"]
    status, body = raw_http(srv.port, "/voice", {"Content-Length": "nonsense"}, method="POST")
    assert status == 400
    # Under the limit: served.
    assert webhook(srv, new_sid()).status_code == 200
    assert_healthy(srv)
