"""Tools for the security and reliability tests: a good call to compare bit-exactly, a raw Media
Streams client that can send anything, raw HTTP and raw TCP, and small readers of the outputs.

Everything talks to a real `callscribe serve` process (tests.e2e.conftest.Server) over real
sockets; nothing here calls an outside service.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import websockets
from websockets.asyncio.client import connect

from app.audio import mulaw
from app.simulator import SimConfig, SimResult, run_call
from app.twilio.signature import compute_signature

FIRST_TS = 120  # ms: the simulator's first media.timestamp, like Twilio's
HEADER = 44


def new_sid(prefix: str = "CA") -> str:
    return prefix + secrets.token_hex(16)


def noise(seconds: float, seed: int) -> np.ndarray:
    """Full-scale random int16 audio, a whole number of 20 ms frames: every sample is checkable."""
    n = int(round(seconds * 50)) * 160
    return np.random.default_rng(seed).integers(-32768, 32767, n, endpoint=True).astype(np.int16)


def expected_master(audio: np.ndarray, first_ts: int = FIRST_TS) -> np.ndarray:
    """What the inbound master must hold for audio sent by the simulator: silence, then the μ-law round trip."""
    return np.concatenate([np.zeros(first_ts * 8, np.int16), mulaw.decode(mulaw.encode(audio))])


def read_master(responses: Path, sid: str, track: str = "inbound") -> np.ndarray:
    raw = (responses / ".calls" / sid / f"{track}.wav").read_bytes()[HEADER:]
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

    def __init__(self, server, seconds: float = 3.0, speed: float = 2.0, seed: int | None = None,
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
    form = {"CallSid": sid, "AccountSid": "AC" + "0" * 32, "From": "+15005550006", "To": "+15005550001",
            "CallStatus": "ringing", "Direction": "inbound"} | (params or {})
    url = server.base + "/voice"
    headers = {}
    if auth_token:
        headers["X-Twilio-Signature"] = compute_signature(signed_url or url, form, auth_token)
    return httpx.post(url, data=form, headers=headers, timeout=10)


def token_from(twiml: str) -> str:
    return twiml.split('name="token" value="')[1].split('"')[0]


def stream_token(server, sid: str, **kw) -> str:
    r = webhook(server, sid, **kw)
    assert r.status_code == 200, r.text
    return token_from(r.text)


# ------------------------------------------------------------------------------------------ raw stream


def media_msg(sid: str, seq: int, ts: int | str, payload: bytes | str, track: str = "inbound",
              chunk: int | None = None) -> str:
    b64 = payload if isinstance(payload, str) else base64.b64encode(payload).decode()
    return json.dumps({"event": "media", "sequenceNumber": str(seq), "media": {
        "track": track, "chunk": str(chunk if chunk is not None else seq - 1), "timestamp": str(ts),
        "payload": b64}, "streamSid": sid}, separators=(",", ":"))


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
        url = self.url or f"ws://127.0.0.1:{self.server.port}/media-stream"
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
        return await self.send('{"event":"connected","protocol":"Call","version":"1.0.0"}')

    def start_msg(self, token: str | None, tracks=("inbound",), **start_over) -> str:
        self.seq += 1
        body = {"accountSid": "AC" + "0" * 32, "streamSid": self.stream_sid, "callSid": self.call_sid,
                "tracks": list(tracks), "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": {} if token is None else {"token": token}}
        body.update(start_over)
        return json.dumps({"event": "start", "sequenceNumber": str(self.seq), "start": body,
                           "streamSid": self.stream_sid}, separators=(",", ":"))

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
        return await self.send(json.dumps({"event": "stop", "sequenceNumber": str(self.seq),
                                           "streamSid": self.stream_sid,
                                           "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_sid}}))

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


def raw_http(port: int, target: str, headers: dict | None = None, method: str = "GET", body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP/1.1 request with the request-target sent byte for byte (no client normalisation)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        chunks = []
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
    resp = b"".join(chunks)
    head, _, rest = resp.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, rest


def ws_frame(payload: bytes, opcode: int = 1, fin: bool = True) -> bytes:
    """A client→server WebSocket frame (masked, RFC 6455 §5.2)."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(head) + mask + masked


async def raw_ws_open(port: int, headers: dict | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    writer.write((f"GET /media-stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer
