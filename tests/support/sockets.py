"""Plain sockets to a server on 127.0.0.1: a free port, one raw HTTP request, a WebSocket handshake.

Nothing here normalises what it sends (no client library in the way), so a test can send a
request-target or a header byte for byte, and the benchmarks pay only for the bytes.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket

LOCALHOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick; free until someone binds it)."""
    with socket.socket() as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def http_request(method: str, target: str, host: str, port: int, headers: dict | None = None,
                 body: bytes = b"") -> bytes:
    """One HTTP/1.1 request, `Connection: close`, with the request-target exactly as given."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_response(data: bytes) -> tuple[int, bytes]:
    """(status, body) of a whole HTTP/1.1 response read until the server closed."""
    head, _, rest = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), rest


def raw_http(port: int, target: str, headers: dict | None = None, method: str = "GET", body: bytes = b"") -> tuple[int, bytes]:
    """One HTTP/1.1 request with the request-target sent byte for byte (no client normalisation)."""
    with socket.create_connection((LOCALHOST, port), timeout=10) as s:
        s.sendall(http_request(method, target, LOCALHOST, port, headers, body))
        chunks = []
        while True:
            c = s.recv(65536)
            if not c:
                break
            chunks.append(c)
    return parse_response(b"".join(chunks))


def ws_upgrade_request(host: str, port: int, path: str = "/media-stream", headers: dict | None = None) -> bytes:
    """The client's opening handshake (RFC 6455 §4.1) with a fresh key and any extra headers."""
    key = base64.b64encode(os.urandom(16)).decode()
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n").encode()


async def ws_connect(host: str, port: int, path: str = "/media-stream", headers: dict | None = None,
                     timeout: float = 10.0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw TCP connection upgraded to a WebSocket: frames are then the caller's to write and read.

    Raises RuntimeError (with the server's answer) when the handshake is not a 101."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    writer.write(ws_upgrade_request(host, port, path, headers))
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        writer.close()
        raise RuntimeError(f"handshake refused: {head[:200]!r}")
    return reader, writer
