"""A plain WebSocket client speaking the Micdrop protocol, as the browser client does (for tests).

`WebCallClient` connects to a server's /web-call, sends the params, and keeps every frame it
receives with the time it arrived (text as str, audio as bytes). `speak` sends one turn the way
the Micdrop client does: `StartSpeaking`, ~100 ms PCM16 16 kHz chunks at real time, `StopSpeaking`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

import numpy as np
import websockets

RATE = 16_000
CHUNK = 1600  # samples: the client's ~100 ms chunks


@dataclass
class WebCallClient:
    url: str
    frames: list[tuple[float, str | bytes]] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""
    ws: object = None
    t0: float = 0.0
    _reader: asyncio.Task | None = None
    _got: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    async def open(cls, port: int, params: dict | str | bytes | None, **connect) -> "WebCallClient":
        c = cls(f"ws://127.0.0.1:{port}/web-call")
        c.ws = await websockets.connect(c.url, max_size=None, **connect)
        c.t0 = time.monotonic()
        c._reader = asyncio.create_task(c._read())
        if params is not None:
            try:
                await c.ws.send(params if isinstance(params, (str, bytes)) else json.dumps(params))
            except websockets.ConnectionClosed:
                pass  # refused before it read them (an origin not allowed): `closed()` says why
        return c

    async def _read(self) -> None:
        try:
            async for m in self.ws:
                self.frames.append((time.monotonic() - self.t0, m))
                self._got.set()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code or 1006
            self.close_reason = self.ws.close_reason or ""
            self._got.set()

    # --- what arrived ---
    def texts(self) -> list[str]:
        return [m for _, m in self.frames if isinstance(m, str)]

    def audio(self) -> bytes:
        return b"".join(m for _, m in self.frames if isinstance(m, bytes))

    def info(self) -> dict:
        """The `Call {...}` extension frame: the call's id and its recording."""
        for t in self.texts():
            if t.startswith("Call "):
                return json.loads(t[5:])
        raise AssertionError(f"no Call frame in {self.texts()}")

    def messages(self) -> list[dict]:
        return [json.loads(t[8:]) for t in self.texts() if t.startswith("Message ")]

    async def wait_for(self, predicate, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self):
            if self.close_code is not None and not predicate(self):
                raise AssertionError(f"closed ({self.close_code} {self.close_reason!r}) before the condition; "
                                     f"texts: {self.texts()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; texts: {self.texts()}")
            self._got.clear()
            try:
                await asyncio.wait_for(self._got.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def closed(self, timeout: float = 10.0) -> tuple[int | None, str]:
        if self._reader is not None:
            await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code, self.close_reason

    # --- what we send ---
    async def send(self, data: str | bytes) -> None:
        await self.ws.send(data)

    async def speak(self, pcm: np.ndarray, realtime: float = 1.0, stop: bool = True) -> None:
        """One turn: StartSpeaking, the audio in ~100 ms chunks (paced at `realtime`), StopSpeaking."""
        await self.ws.send("StartSpeaking")
        data = np.asarray(pcm, "<i2")
        for i in range(0, len(data), CHUNK):
            await self.ws.send(data[i:i + CHUNK].tobytes())
            if realtime:
                await asyncio.sleep(CHUNK / RATE / realtime)
        if stop:
            await self.ws.send("StopSpeaking")

    async def hang_up(self) -> None:
        """The client hangs up: a normal close (Micdrop's stop() sends one with no code; either is a hang-up)."""
        await self.ws.close()
        await self.closed()

    async def drop(self) -> None:
        """The network goes: no close frame (the server sees 1006). The socket is closed on the
        loop's next turn, so this awaits one."""
        self.ws.transport.abort()
        await asyncio.sleep(0.05)
