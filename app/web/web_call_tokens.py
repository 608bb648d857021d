"""Browser-call tokens: what a site's backend hands a browser instead of the API key.

``POST /web-call/tokens`` (behind the API key) mints one; the browser puts it in its params as
``"authorization": "<token>"``. A token is signed with the store's shared secret (every worker
checks it without asking the others), carries its expiry, and is single-use: the first call that
presents it owns it (the coordinator's ``use_once``), and only that call's reconnects may present
it again. Shape: ``wct_<expiry epoch s>_<nonce 32 hex>_<signature 32 hex>``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time

__all__ = ["PREFIX", "TokenError", "mint", "check"]

PREFIX = "wct_"
_SHAPE = re.compile(r"^wct_(\d{10})_([0-9a-f]{32})_([0-9a-f]{32})$")


class TokenError(ValueError):
    """Not a token we made, or expired: the message says which (no secret in it)."""


def _sign(secret: bytes, body: str) -> str:
    return hmac.new(secret, body.encode(), hashlib.sha256).hexdigest()[:32]


def mint(secret: bytes, ttl_s: int, now: float | None = None) -> tuple[str, int]:
    """A new token and its expiry (epoch seconds)."""
    expires = int((time.time() if now is None else now) + ttl_s)
    body = f"{PREFIX}{expires}_{secrets.token_hex(16)}"
    return f"{body}_{_sign(secret, body)}", expires


def check(secret: bytes, token: str, now: float | None = None) -> tuple[str, int]:
    """(nonce, expiry) of a valid, unexpired token; raises TokenError."""
    m = _SHAPE.match(token)
    if not m or not hmac.compare_digest(m.group(3), _sign(secret, token[: m.start(3) - 1])):
        raise TokenError("not a valid browser-call token")
    expires = int(m.group(1))
    if expires < (time.time() if now is None else now):
        raise TokenError("the browser-call token has expired; ask for a new one")
    return m.group(2), expires
