"""Tools for the security and reliability tests: a good call to compare bit-exactly, a raw Media
Streams client that can send anything, a raw WebSocket over TCP, and small readers of the outputs.

Everything talks to a real `callscribe serve` process (tests.support.server.Server) over real
sockets; nothing here calls an outside service. Messages, frames and raw sockets come from
tests/support (frames, sockets).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import websockets
from websockets.asyncio.client import connect

from app.audio import mulaw
from app.recording.track import HEADER_BYTES as HEADER, track_samples
from app.simulator import SimConfig, SimResult, run_call
from app.twilio.signature import compute_signature
from tests.support.frames import (
    CONNECTED, FIRST_TS, media_msg, new_sid, start_msg, stop_msg, token_from, voice_form,
)
from tests.support.sockets import LOCALHOST, ws_connect



def noise(seconds: float, seed: int) -> np.ndarray:
    """Full-scale random int16 audio, a whole number of 20 ms frames: every sample is checkable."""
    n = int(round(seconds * 50)) * 160
    return np.random.default_rng(seed).integers(-32768, 32767, n, endpoint=True).astype(np.int16)


def expected_master(audio: np.ndarray, first_ts: int = FIRST_TS) -> np.ndarray:
    """What the inbound master must hold for audio sent by the simulator: silence, then the μ-law round trip."""
    return np.concatenate([np.zeros(first_ts * 8, np.int16), mulaw.decode(mulaw.encode(audio))])


def read_master(responses: Path, sid: str, track: str = "inbound") -> np.ndarray:
    """A master's samples as its header says (a recovered master may reach past them: its last window)."""
    path = responses / ".calls" / sid / f"{track}.wav"
    raw = path.read_bytes()[HEADER: HEADER + 2 * track_samples(path)]
    return np.frombuffer(raw[: len(raw) // 2 * 2], "<i2")


def first_mismatch(a: np.ndarray, b: np.ndarray) -> str:
    n = min(len(a), len(b))
    bad = np.flatnonzero(a[:n] != b[:n])
    return f"lengths {len(a)} vs {len(b)}; first differing sample {bad[0] if len(bad) else None}"


def assert_healthy(server) -> None:
    r = httpx.get(server.base + "/healthz", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text
    assert server.proc.poll() is None, "server process died"


def log_text(server) -> str:
    return server.log.read_text(errors="replace")


def server_log_lines(server, needle: str) -> list[str]:
    return [line for line in log_text(server).splitlines() if needle in line]


def call_dirs(server) -> set[str]:
    d = server.responses / ".calls"
    return {p.name for p in d.iterdir() if p.is_dir()} if d.exists() else set()


def outputs_of(server, sid: str) -> list[str]:
    return sorted(p.name for p in server.responses.glob(f"call_{sid}*"))


async def result_of(server, sid: str, timeout: float = 30.0) -> dict:
    return await asyncio.to_thread(server.result, sid, timeout)


# ------------------------------------------------------------------------------------------ a good call


class GoodCall:
    """A well-behaved simulated call that runs while a test misbehaves elsewhere on the same server.

    `async with GoodCall(server) as good:` starts it and waits until its stream is live; on exit it
    waits for the hang-up and checks that the inbound master is exactly what was sent, sample for
    sample, and that the call ended normally.
    """

    def __init__(self, server, seconds: float = 3.0, speed: float = 1.0, seed: int | None = None,
                 auth_token: str | None = None, **cfg) -> None:
        self.server = server
        self.sid = new_sid()
        self.audio = noise(seconds, seed if seed is not None else int(self.sid[2:10], 16))
        self.cfg = SimConfig(server.base, self.audio, call_sid=self.sid, speed=speed, tail_s=0,
                             auth_token=auth_token, **cfg)
        self.task: asyncio.Task | None = None
        self.res: SimResult | None = None

    async def __aenter__(self) -> "GoodCall":
        self.task = asyncio.create_task(run_call(self.cfg))
        live = self.server.responses / ".calls" / self.sid / "journal.jsonl"
        deadline = time.monotonic() + 10
        while not live.exists():
            assert not self.task.done(), f"good call ended before it started: {self.task.exception()!r}"
            assert time.monotonic() < deadline, "good call did not start"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)  # a few frames in
        return self

    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    async def __aexit__(self, *exc) -> None:
        assert self.task is not None
        if exc[0] is not None:
            self.task.cancel()
            return
        self.res = await asyncio.wait_for(self.task, 60)
        await self.check()

    async def check(self) -> None:
        res = self.res
        assert res is not None
        assert not res.closed_by_server, (res.close_code, res.close_reason)
        assert res.frames_sent == len(self.audio) // 160
        out = await result_of(self.server, self.sid)
        assert out["end_reason"] == "caller hung up (stop)", out["end_reason"]
        want = expected_master(self.audio)
        got = read_master(self.server.responses, self.sid)
        assert len(got) == len(want) and np.array_equal(got, want), first_mismatch(got, want)
        assert out["duration_s"] == round(len(want) / 8000, 3)


# ------------------------------------------------------------------------------------------ webhook


def webhook(server, sid: str, *, auth_token: str | None = None, signed_url: str | None = None,
            params: dict | None = None) -> httpx.Response:
    """POST /voice like Twilio (form, optionally signed over `signed_url`, default the URL posted)."""
    form = voice_form(sid, params=params)
    url = server.base + "/voice"
    headers = {}
    if auth_token:
        headers["X-Twilio-Signature"] = compute_signature(signed_url or url, form, auth_token)
    return httpx.post(url, data=form, headers=headers, timeout=10)


def stream_token(server, sid: str, **kw) -> str:
    r = webhook(server, sid, **kw)
    assert r.status_code == 200, r.text
    return token_from(r.text)


# ------------------------------------------------------------------------------------------ raw stream


@dataclass
class Closed:
    code: int | None
    reason: str


@dataclass
class RawStream:
    """A Media Streams client that sends exactly what it is told (hostile or not)."""

    server: object
    call_sid: str = field(default_factory=new_sid)
    stream_sid: str = field(default_factory=lambda: new_sid("MZ"))
    headers: dict = field(default_factory=dict)
    url: str | None = None
    seq: int = 0
    ws: object = None
    received: list = field(default_factory=list)
    sent_ok: int = 0
    send_failed: bool = False

    async def open(self) -> "RawStream":
        url = self.url or f"ws://{LOCALHOST}:{self.server.port}/media-stream"
        self.ws = await connect(url, additional_headers=self.headers, max_size=None, ping_interval=None,
                                compression=None, open_timeout=10, close_timeout=5, user_agent_header=None)
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        try:
            async for m in self.ws:
                self.received.append(m)
        except websockets.ConnectionClosed:
            pass

    async def send(self, data: str | bytes) -> bool:
        try:
            await self.ws.send(data)
            self.sent_ok += 1
            return True
        except websockets.ConnectionClosed:
            self.send_failed = True
            return False

    async def connected(self) -> bool:
        return await self.send(CONNECTED)

    def start_msg(self, token: str | None, tracks=("inbound",), **start_over) -> str:
        self.seq += 1
        return start_msg(self.seq, self.stream_sid, self.call_sid, None if token is None else {"token": token},
                         tracks, over=start_over)

    async def start(self, token: str | None = "webhook", tracks=("inbound",), **start_over) -> bool:
        if token == "webhook":
            token = await asyncio.to_thread(stream_token, self.server, self.call_sid)
        await self.connected()
        return await self.send(self.start_msg(token, tracks, **start_over))

    async def media(self, ts: int | str, payload: bytes | str, track: str = "inbound") -> bool:
        self.seq += 1
        return await self.send(media_msg(self.stream_sid, self.seq, ts, payload, track))

    async def stop(self) -> bool:
        self.seq += 1
        return await self.send(stop_msg(self.seq, self.stream_sid, self.call_sid))

    async def close(self) -> None:
        await self.ws.close()
        await self.closed()

    async def closed(self, timeout: float = 10.0) -> Closed:
        """Wait until the server (or we) closed the socket; the close code and reason the server sent."""
        await asyncio.wait_for(self._reader, timeout)
        await asyncio.wait_for(self.ws.wait_closed(), timeout)
        rcvd = getattr(self.ws, "close_code", None)
        return Closed(rcvd, self.ws.close_reason or "")

    def still_open(self) -> bool:
        return not self._reader.done()


class Model:
    """The expected inbound track for frames whose timestamps are all plausible and in order:
    each at timestamp × 8, holes silent, and where two frames overlap the first one written wins."""

    def __init__(self) -> None:
        self.x = np.zeros(0, np.int16)
        self.written = np.zeros(0, bool)

    def put(self, ts_ms: int, payload: bytes) -> None:
        a = ts_ms * 8
        pcm = mulaw.decode(payload)
        b = a + len(pcm)
        if b > len(self.x):
            self.x = np.concatenate([self.x, np.zeros(b - len(self.x), np.int16)])
            self.written = np.concatenate([self.written, np.zeros(b - len(self.written), bool)])
        free = ~self.written[a:b]
        self.x[a:b][free] = pcm[free]
        self.written[a:b] = True


def frame_bytes(rng: np.random.Generator, n: int = 160) -> bytes:
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes()


# ------------------------------------------------------------------------------------------ raw sockets


async def raw_ws_open(port: int, headers: dict | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw socket to /media-stream, upgraded: the test writes frames (tests.support.frames.ws_frame) itself."""
    return await ws_connect(LOCALHOST, port, headers=headers)
