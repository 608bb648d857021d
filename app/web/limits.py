"""Request limits as a small ASGI middleware: body size (413 with a message) and sane paths (400).

A path whose decoded form holds a NUL or another control character never names a file or a
route; it is refused here, before a handler can pass it to the file system (where a NUL raises
ValueError, a 500).
"""

from __future__ import annotations

import json


class BodySizeLimit:
    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if _bad_path(scope.get("path", "")):
            return await self._reject(send, 0, "request path contains a control character (e.g. %00)", 400)
        limit = self.max_bytes
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        return await self._reject(send, limit)
                except ValueError:
                    return await self._reject(send, limit, "invalid Content-Length", 400)
        seen = 0

        async def limited_receive():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge()
            return msg

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._reject(send, limit)

    async def _reject(self, send, limit: int, message: str | None = None, status: int = 413) -> None:
        body = json.dumps({"error": message or f"request body larger than {limit} bytes (MAX_BODY_BYTES)"}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


class _TooLarge(Exception):
    pass


def _bad_path(path: str) -> bool:
    return any(ord(c) < 0x20 or ord(c) == 0x7F for c in path)
