"""The app in-process: its settings for fast tests, and a whole Twilio call through Starlette's TestClient."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar
from pathlib import Path

import numpy as np
from starlette.testclient import TestClient, WebSocketTestSession

from app.audio import mulaw
from app.config import Settings
from tests.support.frames import (
    CONNECTED, FIRST_TS, FRAME_MS, media_msg, new_sid, parameters_from, start_msg, stop_msg, token_from, voice_form,
)


T = TypeVar("T")
During = Callable[[WebSocketTestSession, str], "bool | None"]  # (the socket, its streamSid) → closed by the server?


def settings_for(folder: Path, **overrides: object) -> Settings:
    """A chime greeting and no transcription (no speech model loads); WAV files, exact to compare."""
    return Settings(**({"recordings_directory": folder / "responses", "greeting": "tone", "transcribe": False,
                        "default_audio_format": "wav"} | overrides))


def wait_until(done: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"not done in {timeout} s")
        time.sleep(0.005)


def level_payload(value: int) -> bytes:
    """One 20 ms Twilio frame (μ-law) of one level."""
    return mulaw.encode(np.full(160, value, np.int16))


def stream_call(client: TestClient, *, seconds: float = 1.0, value: int = 1000, tracks: tuple[str, ...] = ("inbound",),
                sid: str | None = None, during: During | None = None, form: dict[str, str] | None = None) -> str:
    """One call as Twilio makes it: the voice webhook, then its Media Stream (connected, start with the
    webhook's parameters, `seconds` of frames of one level on each track, `during(ws, stream_sid)`, stop).
    `during` returns True when it saw the server close the stream (no stop is sent then).
    Returns the CallSid once the call's files are final."""
    sid = sid or new_sid()
    twiml = client.post("/voice", data=voice_form(sid, params=form)).text
    token_from(twiml)  # a clear error when the webhook handed out no stream token
    params = parameters_from(twiml)
    stream = new_sid("MZ")
    payload = level_payload(value)
    store = client.app.state.services.store
    seq = 1
    with client.websocket_connect("/media-stream") as ws:
        ws.send_text(CONNECTED)
        ws.send_text(start_msg(seq, stream, sid, params, tracks=tracks))  # every <Parameter>, as Twilio sends them
        for i in range(round(seconds * 1000 / FRAME_MS)):
            for track in tracks:
                seq += 1
                ws.send_text(media_msg(stream, seq, FIRST_TS + FRAME_MS * i, payload, track))
        if not (during is not None and during(ws, stream)):
            ws.send_text(stop_msg(seq + 1, stream, sid))
            wait_until(lambda: store.is_finalized(sid))  # before the socket closes: the stop was read
    wait_until(lambda: store.is_finalized(sid))
    return sid


def look_mid_call(client: TestClient, look: Callable[[str], T], seconds: float = 1.0) -> tuple[str, T]:
    """Record a call of `seconds`, and once the server has read all its frames, while it is still
    live, `look(sid)`; returns the CallSid and what `look` returned."""
    sid = new_sid()
    live = client.app.state.services.registry.live
    seen: list[T] = []

    def during(ws: WebSocketTestSession, stream_sid: str) -> None:
        end = (FIRST_TS / 1000 + seconds) * 8000  # what the test sent is still being read meanwhile
        wait_until(lambda: sid in live and live[sid].recorder.stream_samples >= end)
        seen.append(look(sid))

    stream_call(client, sid=sid, seconds=seconds, during=during)
    return sid, seen[0]
