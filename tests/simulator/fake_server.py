"""A tiny fake Twilio-facing server for the simulator's tests: raw asyncio HTTP and websockets.

``FakeServer`` answers ``/voice`` (TwiML), ``/status`` and ``GET /calls/{sid}``, and records every
stream message; handlers script what it sends back. Every test runs its own event loop with
``asyncio.run`` (``run``) or a server thread (``served_in_thread``), so it does not depend on
pytest-asyncio settings. Timing-sensitive tests use speed 10 (2 ms per 20 ms slot); the rest
run at speed 0.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Response

from app.audio.mulaw import encode as ulaw_encode
from app.simulator import SimConfig, SimResult, run_call


TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_WSS = "wss://public.example.com/media-stream"

Handler = Callable[["FakeServer", ServerConnection, dict[str, Any]], Awaitable[None]]


def tone(seconds: float, freq: float = 440.0, amp: float = 8000.0) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.int16)


def ulaw_tone(seconds: float, freq: float = 1000.0) -> bytes:
    return ulaw_encode(tone(seconds, freq, 12000))


class FakeServer:
    """/voice + /status over raw asyncio HTTP, and a websockets server for the stream."""

    def __init__(self, twiml: str | Callable[["FakeServer"], str] | None = None, handler: Handler | None = None, reject_ws: int | None = None) -> None:
        self._twiml = twiml
        self.handler = handler
        self.reject_ws = reject_ws
        self.http_requests: list[dict[str, Any]] = []
        self.ws_headers: Headers | None = None
        self.ws_path: str | None = None
        self.received: list[str] = []  # raw text frames from the simulator, in order
        self.parsed: list[dict[str, Any]] = []
        self.ws_closed_code: int | None = None
        self.last_inbound_ts = -1
        self.state: dict[str, Any] = {}

    # -- lifecycle

    async def __aenter__(self) -> "FakeServer":
        self._http = await asyncio.start_server(self._http_conn, "127.0.0.1", 0)
        self.http_port = self._http.sockets[0].getsockname()[1]
        self._ws = await serve(self._ws_conn, "127.0.0.1", 0, process_request=self._process_request, compression=None)
        self.ws_port = self._ws.sockets[0].getsockname()[1] if hasattr(self._ws, "sockets") else list(self._ws.server.sockets)[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._ws.close()
        await self._ws.wait_closed()
        self._http.close()
        await self._http.wait_closed()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.ws_port}/media-stream"

    def twiml(self) -> str:
        if self._twiml is None:
            return connect_twiml(self.ws_url)
        return self._twiml(self) if callable(self._twiml) else self._twiml

    # -- HTTP

    async def _http_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = (await reader.readline()).decode()
            method, path, _ = line.split(" ", 2)
            headers: dict[str, str] = {}
            while True:
                h = (await reader.readline()).decode()
                if h in ("\r\n", "\n", ""):
                    break
                k, _, v = h.partition(":")
                headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            text = body.decode()
            self.http_requests.append(
                {"method": method, "path": path, "headers": headers, "body": text, "params": dict(parse_qsl(text, keep_blank_values=True)), "pairs": parse_qsl(text, keep_blank_values=True)}
            )
            if path == "/voice":
                status, ctype, out = 200, "text/xml", self.twiml().encode()
            elif path == "/status":
                status, ctype, out = 204, "text/plain", b""
            elif path.startswith("/calls/") and method == "GET":
                # GET /calls/{sid} as app/web/calls_api.py answers it; state from self.call_states
                sid = path.rsplit("/", 1)[1]
                states = self.state.setdefault("call_states", ["finalized"])
                state = states.pop(0) if len(states) > 1 else states[0]
                names = {"conversation": f"call_{sid}_conversation.mp3", "transcript": f"call_{sid}.txt",
                         "summary": f"call_{sid}_summary.txt", "json": f"call_{sid}.json"}
                result = {"files": names, "audio": {"path": f"/srv/responses/{names['conversation']}"}}
                body = {"call_sid": sid, "state": state, "files": {n: f"/calls/{sid}/files/{n}" for n in names.values()},
                        "result": result if state == "finalized" else {}}
                status, ctype, out = 200, "application/json", json.dumps(body).encode()
            else:
                status, ctype, out = 404, "text/plain", b"not found"
            reason = {200: "OK", 204: "No Content", 404: "Not Found"}[status]
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(out)}\r\nConnection: close\r\n\r\n".encode() + out)
            await writer.drain()
        finally:
            writer.close()

    def requests(self, path: str) -> list[dict[str, Any]]:
        return [r for r in self.http_requests if r["path"] == path]

    # -- WebSocket

    def _process_request(self, conn: ServerConnection, request: Any) -> Response | None:
        if self.reject_ws:
            return conn.respond(self.reject_ws, "Forbidden\n")
        return None

    async def _ws_conn(self, ws: ServerConnection) -> None:
        self.ws_headers = ws.request.headers
        self.ws_path = ws.request.path
        try:
            async for raw in ws:
                self.received.append(raw)
                msg = json.loads(raw)
                self.parsed.append(msg)
                if msg["event"] == "media" and msg["media"]["track"] == "inbound":
                    self.last_inbound_ts = int(msg["media"]["timestamp"])
                if msg["event"] == "mark":
                    self.state.setdefault("echo_after_ts", {})[msg["mark"]["name"]] = self.last_inbound_ts
                if self.handler is not None:
                    await self.handler(self, ws, msg)
        except Exception:
            pass
        self.ws_closed_code = ws.close_code

    def events(self, name: str) -> list[dict[str, Any]]:
        return [m for m in self.parsed if m["event"] == name]


def connect_twiml(url: str, params: dict[str, str] | None = None) -> str:
    inner = "".join(f'<Parameter name="{k}" value="{v}" />' for k, v in (params or {}).items())
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Connect><Stream url="{url}">{inner}</Stream></Connect></Response>'


def listen_twiml(url: str) -> str:
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Start>'
        f'<Stream name="callscribe" track="both_tracks" url="{url}" /></Start><Dial>+15005550001</Dial></Response>'
    )


def run(server: FakeServer, **kw: Any) -> SimResult:
    async def go() -> SimResult:
        async with server:
            return await run_call(SimConfig(base_url=server.base_url, caller_audio=kw.pop("caller_audio", None), **kw))

    return asyncio.run(go())


async def send(ws: ServerConnection, server: FakeServer, event: str, **fields: Any) -> None:
    msg: dict[str, Any] = {"event": event, "streamSid": server.state["sid"]}
    msg.update(fields)
    await ws.send(json.dumps(msg))


def sid_of(server: FakeServer, msg: dict[str, Any]) -> None:
    if msg["event"] == "start":
        server.state["sid"] = msg["streamSid"]


def reply_after_caller(delay_s: float, seconds: float = 1.0, freq: float = 1000.0) -> Handler:
    """A server that answers the caller: `seconds` of tone + a mark, `delay_s` (wall) after the
    first silent inbound frame that follows the caller's tone (its end of turn)."""

    async def handler(server: FakeServer, ws: ServerConnection, msg: dict[str, Any]) -> None:
        sid_of(server, msg)
        if msg["event"] != "media" or server.state.get("answered"):
            return
        loud = base64.b64decode(msg["media"]["payload"]) != b"\xff" * 160
        if loud:
            server.state["heard_caller"] = True
        elif server.state.get("heard_caller"):
            server.state["answered"] = True

            async def answer() -> None:
                await asyncio.sleep(delay_s)
                await send(ws, server, "media", media={"payload": base64.b64encode(ulaw_tone(seconds, freq)).decode()})
                await send(ws, server, "mark", mark={"name": "reply"})

            server.state["task"] = asyncio.create_task(answer())

    return handler



@contextlib.contextmanager
def served_in_thread(server: FakeServer) -> Iterator[FakeServer]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def serve_forever() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.__aenter__())
        ready.set()
        loop.run_forever()

    th = threading.Thread(target=serve_forever, daemon=True)
    th.start()
    assert ready.wait(5)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.__aexit__(None, None, None), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        th.join(5)
        loop.close()
