"""One browser-call socket (WS /web-call): `WebCallSocket` sends, closes, refuses and drains; `close_code_of`.

A refusal is a close with a code and a reason, then a drain of what the client still sends until
its close frame. The call behind the socket is wired up in `app.web.web_call`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from app.cancellation import within

__all__ = ["WebCallSocket", "close_code_of"]

log = logging.getLogger("callscribe.webcall")


def close_code_of(msg: dict) -> int:
    """The close code of an ASGI ``websocket.disconnect``, 1006 when no close frame arrived.

    uvicorn's websockets-sansio protocol (app/serving.py) reports a connection lost without a
    close frame as 1005, the code of a close frame *without* a code; only a received close frame
    carries a "reason". A dropped network is not a hang-up: it must read 1006 here."""
    code = msg.get("code") or 1005
    if code == 1005 and "reason" not in msg:
        return 1006
    return code


class WebCallSocket:
    """The socket side of a browser call: one sender at a time, the close handshake, the refusal."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws
        self.close_code: int | None = None  # the client's, when it closed
        self.closed_by_us = False
        self._closing: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()

    # --- sending (one sender at a time on a socket) ---
    async def _send_text(self, text: str) -> None:
        async with self._lock:
            if self.ws.application_state == WebSocketState.CONNECTED and not self.closed_by_us:
                await self.ws.send_text(text)

    async def _send_bytes(self, data: bytes) -> None:
        async with self._lock:
            if self.ws.application_state == WebSocketState.CONNECTED and not self.closed_by_us:
                await self.ws.send_bytes(data)

    async def _close(self, code: int, reason: str) -> None:
        """Start the close handshake and return: the reader goes on draining what the client still
        sends until its close frame (a client mid-flood would otherwise stall the handshake
        behind a full receive queue)."""
        if self.closed_by_us:
            return
        self.closed_by_us = True
        self._closing = asyncio.ensure_future(self._send_close(code, reason[:120]))

    async def _send_close(self, code: int, reason: str) -> None:
        async with self._lock:
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await self.ws.close(code=code, reason=reason)

    async def refuse(self, code: int, reason: str) -> None:
        log.info("web call refused (%d): %s", code, reason)
        await self._close(code, reason)
        await self._drain()

    async def _drain(self, timeout: float = 10.0) -> None:
        """Read and drop until the client's close frame (or give up after `timeout`)."""
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(timeout):
                while await self._receive() is not None:
                    pass
        if self._closing is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await within(asyncio.shield(self._closing), 5)

    async def _receive(self) -> str | bytes | None:
        """The next frame; None once the client has gone (its close code kept)."""
        try:
            msg = await self.ws.receive()
        except (RuntimeError, WebSocketDisconnect):
            return None
        if msg["type"] == "websocket.disconnect":
            self.close_code = close_code_of(msg)
            return None
        text = msg.get("text")
        return text if text is not None else (msg.get("bytes") or b"")
