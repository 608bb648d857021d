"""The browser calls one process holds, across their sockets, and how their ids are made.

A browser call outlives a socket: `BrowserCall` keeps its session, transport, the digest of the
authorization it started with (a reconnect must present the same) and its reconnect timer;
`BrowserCalls` is this process's table of them. A call's id is `WB` + 32 hex digits: an HMAC of
the page's `callId` with the store's secret (the same on every worker, so a reconnect finds its
call, and a client can neither pick nor guess another call's id), or random without a callId.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
import uuid
from dataclasses import dataclass, field

from app.call.session import CallSession
from app.web.micdrop_transport import MicdropTransport

__all__ = ["CALL_ID", "BrowserCall", "BrowserCalls", "call_sid", "digest"]

CALL_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")  # the page's per-call id: unguessable, never a path


@dataclass
class BrowserCall:
    """One browser call across its sockets."""

    call: CallSession
    transport: MicdropTransport
    auth: str  # a digest of the authorization it started with: a reconnect must present the same
    socket_id: int = 0  # which socket is attached (a newer one replaces an older)
    resume_timer: asyncio.TimerHandle | None = None
    reconnects: int = 0
    finishing: bool = False
    t0: float = field(default_factory=time.monotonic)


class BrowserCalls:
    """This process's browser calls by id, and the timers of those waiting for a reconnect."""

    def __init__(self) -> None:
        self.calls: dict[str, BrowserCall] = {}
        self._sockets = 0

    def next_socket(self) -> int:
        self._sockets += 1
        return self._sockets


def digest(authorization: str | None) -> str:
    """What is kept of an authorization (a key or token is never kept itself)."""
    return hashlib.sha256((authorization or "").encode()).hexdigest()


def call_sid(secret: bytes, call_id: str | None) -> str:
    """WB + 32 hex: the page's callId signed with the store's secret (the same on every worker),
    so a reconnect finds its call and nobody can pick another call's id; random without one."""
    if not call_id:
        return "WB" + uuid.uuid4().hex
    return "WB" + hmac.new(secret, b"web-call:" + call_id.encode(), hashlib.sha256).hexdigest()[:32]
