"""A scripted Micdrop server for the call page: the real page and assets, and a `/web-call` whose
every move a test writes down (close with 1011 once, send EndCall mid-goodbye, refuse the
upgrade…), recording each frame the page sends with its arrival time.

The real `WS /web-call` cannot be made to do these things on cue; the wire it must speak is the
same (app/micdrop/protocol.py), and the tests against the real server (test_call_page.py) check
that the two agree.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import types
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np
import uvicorn
from fastapi import FastAPI, WebSocket

from app.web import call_page, errors
from tests.support.sockets import LOCALHOST, free_port

RATE = 16_000


def tone(seconds: float, freq: float = 440.0, level: float = 0.3) -> bytes:
    """PCM16 LE mono 16 kHz: a sine (the assistant's "speech")."""
    t = np.arange(int(RATE * seconds)) / RATE
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype("<i2").tobytes()


@dataclass
class Frame:
    t: float  # seconds since the connection was accepted
    kind: str  # "text", "bytes" or "close"
    text: str = ""
    data: bytes = b""
    code: int | None = None


@dataclass
class Conn:
    """One WebSocket connection from the page, as the script sees it."""

    ws: WebSocket
    index: int  # 0 for the first connection, 1 for the first reconnect…
    t0: float = field(default_factory=time.monotonic)
    params: dict | None = None
    frames: list[Frame] = field(default_factory=list)
    gone: asyncio.Event = field(default_factory=asyncio.Event)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def texts(self) -> list[str]:
        return [f.text for f in self.frames if f.kind == "text"]

    @property
    def close_code(self) -> int | None:
        return next((f.code for f in self.frames if f.kind == "close"), None)

    async def send(self, text: str) -> None:
        await self.ws.send_text(text)

    async def call_frame(self, sid: str = "WB" + "0" * 32) -> None:
        await self.send("Call " + json.dumps({"sid": sid, "resumed": self.index > 0, "recording": f"/calls/{sid}/view"}))

    async def stream(self, pcm: bytes, frame_s: float = 0.1, lead_s: float = 0.2) -> None:
        """Send `pcm` as a server should: the first `lead_s` at once, then in real time."""
        step = int(RATE * frame_s) * 2
        start = time.monotonic()
        for i in range(0, len(pcm), step):
            if self.gone.is_set():
                return
            await self.ws.send_bytes(pcm[i:i + step])
            due = start + i / (2 * RATE) - lead_s
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def until(self, text: str, timeout: float = 10.0) -> None:
        """Wait for the page to send this text frame."""
        deadline = time.monotonic() + timeout
        while text not in self.texts():
            if time.monotonic() > deadline:
                raise AssertionError(f"the page did not send {text!r} in {timeout} s; got {self.texts()}")
            await asyncio.sleep(0.02)

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.close(code, reason)

    async def pump(self) -> None:
        while True:
            try:
                msg = await self.ws.receive()
            except (RuntimeError, OSError):
                break
            if msg["type"] == "websocket.disconnect":
                self.frames.append(Frame(self.now(), "close", code=msg.get("code")))
                break
            if msg.get("text") is not None:
                self.frames.append(Frame(self.now(), "text", text=msg["text"]))
            else:
                self.frames.append(Frame(self.now(), "bytes", data=msg.get("bytes") or b""))
        self.gone.set()


Script = Callable[[Conn], Awaitable[None]]


class ScriptedServer:
    """uvicorn in a thread: GET /call (the real page) and a scripted WS /web-call."""

    def __init__(self, api_key: str | None = None) -> None:
        self.port = free_port()
        self.base = f"http://{LOCALHOST}:{self.port}"
        self.script: Script | None = None  # None: refuse the upgrade (the browser sees 1006)
        self.conns: list[Conn] = []
        self.refused = 0
        self.hang = 0  # this many upgrades get no answer (the browser's socket stays CONNECTING)
        self.hung = 0
        app = FastAPI()
        errors.install(app)
        app.state.services = types.SimpleNamespace(settings=types.SimpleNamespace(api_key=api_key))
        app.include_router(call_page.router)
        app.add_api_websocket_route("/web-call", self._endpoint)
        self._server = uvicorn.Server(uvicorn.Config(app, host=LOCALHOST, port=self.port, log_level="warning",
                                                     ws="websockets-sansio", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, name="scripted-micdrop", daemon=True)

    def __enter__(self) -> "ScriptedServer":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the scripted server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    async def _endpoint(self, ws: WebSocket) -> None:
        if self.hang > 0:
            self.hang -= 1
            self.hung += 1
            await asyncio.sleep(7)  # the page gives up after 5 s; then a 403 to nobody
            await ws.close()
            return
        if self.script is None:
            self.refused += 1
            await ws.close()  # before accept: an HTTP 403, which the browser reports as 1006
            return
        await ws.accept()
        conn = Conn(ws, len(self.conns))
        self.conns.append(conn)
        try:
            first = await asyncio.wait_for(ws.receive(), 3)
        except asyncio.TimeoutError:
            await ws.close(4400, "missing params")
            return
        conn.params = json.loads(first.get("text") or "null")
        pump = asyncio.create_task(conn.pump())
        try:
            await self.script(conn)
            await asyncio.wait_for(conn.gone.wait(), 30)  # the page closes, or the script did
        finally:
            pump.cancel()
