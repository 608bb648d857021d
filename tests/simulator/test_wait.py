"""When the caller speaks and hangs up: ``wait_verdict``'s rules, then the waits on calls."""

from __future__ import annotations

import base64
import time
from typing import Any

import numpy as np
import pytest
from websockets.asyncio.server import ServerConnection

from app.audio.mulaw import decode as ulaw_decode
from app.simulator import wait_verdict
from tests.simulator.fake_server import (
    FakeServer, listen_twiml, reply_after_caller, run, send, sid_of, tone, ulaw_tone,
)


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
