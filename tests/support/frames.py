"""Twilio Media Streams messages as Twilio sends them, and the client WebSocket frames that carry them.

The messages (connected, start, media, stop; the voice webhook's form) follow
shared/reference/twilio-media-streams.md. They are built as text, not through app/twilio, so a
test can send what the protocol module would refuse, and so a benchmark measures the server, not
its own serialiser. Frames are RFC 6455 client frames (masked), for raw sockets.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets

FIRST_TS = 120  # ms: Twilio's first media.timestamp is ~100-160 ms, as the simulator uses
FRAME_MS = 20
FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law
TEST_ACCOUNT = "AC" + "0" * 32

CONNECTED = '{"event":"connected","protocol":"Call","version":"1.0.0"}'

# A media message by `%` formatting (sequenceNumber, track, chunk, timestamp, base64 payload,
# streamSid): a few µs a message for a load generator, the same text `media_msg` makes.
MEDIA = ('{"event":"media","sequenceNumber":"%d","media":{"track":"%s","chunk":"%d","timestamp":"%d",'
         '"payload":"%s"},"streamSid":"%s"}')

TOKEN_RE = re.compile(r'<Parameter name="token" value="([^"]+)"')


def new_sid(prefix: str = "CA") -> str:
    """A Twilio-shaped id: the prefix and 32 hex digits."""
    return prefix + secrets.token_hex(16)


def _dumps(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"))


# ------------------------------------------------------------------------------------------ webhook


def voice_form(call_sid: str, account_sid: str = TEST_ACCOUNT, params: dict | None = None) -> dict[str, str]:
    """The form Twilio POSTs to the voice webhook for a ringing inbound call (`params` add or replace fields)."""
    return {"AccountSid": account_sid, "ApiVersion": "2010-04-01", "CallSid": call_sid, "CallStatus": "ringing",
            "Direction": "inbound", "From": "+15005550006", "To": "+15005550001"} | (params or {})


PARAMETER_RE = re.compile(r'<Parameter name="([^"]+)" value="([^"]*)"')


def parameters_from(twiml: str) -> dict[str, str]:
    """Every `<Parameter>` of the webhook's TwiML: what Twilio sends as the stream's customParameters."""
    return dict(PARAMETER_RE.findall(twiml))


def token_from(twiml: str) -> str:
    """The stream token the webhook's TwiML hands to the Media Stream."""
    m = TOKEN_RE.search(twiml)
    if not m:
        raise ValueError(f"no stream token in the TwiML: {twiml[:300]}")
    return m.group(1)


# ------------------------------------------------------------------------------------------ stream messages


def start_msg(seq: int, stream_sid: str, call_sid: str, params: dict | None = None, tracks=("inbound",),
              account_sid: str = TEST_ACCOUNT, over: dict | None = None) -> str:
    """A `start` message; `params` are the customParameters, `over` replaces fields of `start`."""
    body = {"accountSid": account_sid, "streamSid": stream_sid, "callSid": call_sid, "tracks": list(tracks),
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": dict(params or {})}
    body.update(over or {})
    return _dumps({"event": "start", "sequenceNumber": str(seq), "start": body, "streamSid": stream_sid})


def media_msg(stream_sid: str, seq: int, ts: int | str, payload: bytes | str, track: str = "inbound",
              chunk: int | None = None) -> str:
    """A `media` message; `payload` is μ-law bytes or already base64 text (which may be anything)."""
    b64 = payload if isinstance(payload, str) else base64.b64encode(payload).decode()
    return _dumps({"event": "media", "sequenceNumber": str(seq), "media": {
        "track": track, "chunk": str(chunk if chunk is not None else seq - 1), "timestamp": str(ts),
        "payload": b64}, "streamSid": stream_sid})


def stop_msg(seq: int, stream_sid: str, call_sid: str, account_sid: str = TEST_ACCOUNT) -> str:
    return _dumps({"event": "stop", "sequenceNumber": str(seq), "streamSid": stream_sid,
                   "stop": {"accountSid": account_sid, "callSid": call_sid}})


# ------------------------------------------------------------------------------------------ WebSocket frames

ZERO_KEY = b"\0\0\0\0"  # a masking key that makes masking a no-op for the sender (the server still unmasks)


def frame_head(n: int, opcode: int = 0x1, fin: bool = True) -> bytes:
    """A client frame's bytes before its masking key: FIN and opcode, the MASK bit, the payload length."""
    b0 = (0x80 if fin else 0) | opcode
    if n < 126:
        return bytes((b0, 0x80 | n))
    if n < 65536:
        return bytes((b0, 0x80 | 126)) + n.to_bytes(2, "big")
    return bytes((b0, 0x80 | 127)) + n.to_bytes(8, "big")


def _mask(data: bytes, key: bytes) -> bytes:
    n = len(data)
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "little") ^ int.from_bytes(keys, "little")).to_bytes(n, "little")


def ws_frame(payload: bytes, opcode: int = 0x1, fin: bool = True, key: bytes | None = None) -> bytes:
    """A client → server WebSocket frame (masked, RFC 6455 §5.2); a random masking key unless `key`."""
    key = os.urandom(4) if key is None else key
    body = payload if key == ZERO_KEY else _mask(payload, key)
    return frame_head(len(payload), opcode, fin) + key + body
