"""Twilio's side of the Media Streams wire, as pure functions: the messages it sends, and how it reads the server's.

Twilio → server: ``connected``, ``start``, a ``media`` frame every 20 ms (160 μ-law bytes),
``dtmf`` (connect mode only), mark echoes, and finally ``stop`` — compact JSON, Twilio's
observed key order, numbers as strings. ``sequenceNumber`` counts every message but
``connected``; ``chunk`` counts per track. The caller (``stream``) numbers them; these
functions only shape them.

Server → Twilio: ``media``, ``mark`` and ``clear``. ``read_server_message`` checks one frame as
Twilio does and turns it into the server's command (``SendMedia``, ``SendMark``, ``SendClear``
from ``app.twilio.events``), with the warnings Twilio would log (31950 binary frame, 31951
invalid message…). ``app.twilio.protocol`` is the server's half of the same wire (it reads
what Twilio sends and writes commands); this module is its mirror image, so it shares the
command classes but not the code.

Nothing here does I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from app.simulator.config import RATE
from app.twilio.events import Command, SendClear, SendMark, SendMedia

__all__ = ["dumps", "connected", "start", "media", "dtmf", "mark", "stop", "ServerMessage", "read_server_message"]

Warn = tuple[str, str]  # (kind, text): see SimResult.warn

# The fields each server message may have; any other is warned about but the message is processed.
_ALLOWED = {"media": {"event", "streamSid", "media"}, "mark": {"event", "streamSid", "mark"}, "clear": {"event", "streamSid"}}
_FILE_HEADERS = (b"RIFF", b"ID3\x03", b"ID3\x04", b"OggS", b"fLaC")


def dumps(obj: dict[str, Any]) -> str:
    """One text frame: compact JSON, as Twilio sends it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- Twilio → server


def connected() -> dict[str, Any]:
    return {"event": "connected", "protocol": "Call", "version": "1.0.0"}


def start(seq: int, *, account_sid: str, stream_sid: str, call_sid: str, tracks: list[str],
          parameters: dict[str, str]) -> dict[str, Any]:
    return {
        "event": "start",
        "sequenceNumber": str(seq),
        "start": {
            "accountSid": account_sid,
            "streamSid": stream_sid,
            "callSid": call_sid,
            "tracks": list(tracks),
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
            "customParameters": dict(parameters),
        },
        "streamSid": stream_sid,
    }


def media(seq: int, stream_sid: str, track: str, chunk: int, timestamp: int, payload: bytes) -> dict[str, Any]:
    b64 = base64.b64encode(payload).decode("ascii")
    return {
        "event": "media",
        "sequenceNumber": str(seq),
        "media": {"track": track, "chunk": str(chunk), "timestamp": str(timestamp), "payload": b64},
        "streamSid": stream_sid,
    }


def dtmf(seq: int, stream_sid: str, digit: str) -> dict[str, Any]:
    return {
        "event": "dtmf",
        "streamSid": stream_sid,
        "sequenceNumber": str(seq),
        "dtmf": {"track": "inbound_track", "digit": digit},
    }


def mark(seq: int, stream_sid: str, name: str) -> dict[str, Any]:
    return {"event": "mark", "sequenceNumber": str(seq), "streamSid": stream_sid, "mark": {"name": name}}


def stop(seq: int, stream_sid: str, account_sid: str, call_sid: str) -> dict[str, Any]:
    return {
        "event": "stop",
        "sequenceNumber": str(seq),
        "streamSid": stream_sid,
        "stop": {"accountSid": account_sid, "callSid": call_sid},
    }


# --------------------------------------------------------------------------- server → Twilio


@dataclass(frozen=True)
class ServerMessage:
    """One frame from the server, as Twilio reads it.

    Twilio logs ``warnings`` whatever the stream's state, but ``command_warnings`` only when it
    gets as far as the message's body: not on a unidirectional stream, not after the hang-up.
    """

    event: str | None = None  # str(msg["event"]) once the frame is a JSON object (Twilio counts it)
    accepted: bool = False  # a media, mark or clear for this stream (extra fields or not)
    warnings: tuple[Warn, ...] = ()
    command: Command | None = None  # None when the body is malformed (or the frame not accepted)
    command_warnings: tuple[Warn, ...] = ()


def read_server_message(message: str | bytes, stream_sid: str) -> ServerMessage:
    """Check one WebSocket frame from the server against the stream ``stream_sid``."""
    if isinstance(message, bytes):
        return ServerMessage(warnings=(("31950", "31950 Malformed Message: WebSocket binary frame (Twilio wants JSON text frames)"),))
    try:
        msg = json.loads(message)
    except ValueError:
        return ServerMessage(warnings=(("31951", "31951 Invalid Message: not JSON"),))
    if not isinstance(msg, dict):
        return ServerMessage(warnings=(("31951", "31951 Invalid Message: JSON is not an object"),))
    event = msg.get("event")
    if event not in _ALLOWED:
        return ServerMessage(str(event), warnings=(("31951", f"31951 Invalid Message: unknown event {event!r}"),))
    if msg.get("streamSid") != stream_sid:
        text = f"31951 Invalid Message: {event} with wrong or missing streamSid {msg.get('streamSid')!r}"
        return ServerMessage(str(event), warnings=(("31951", text),))
    warnings: tuple[Warn, ...] = ()
    extra = set(msg) - _ALLOWED[event]
    if extra:
        warnings = (("31951-extra", f"31951 Invalid Message: extra field(s) {sorted(extra)} in {event} (processed anyway)"),)
    command, command_warnings = _read_command(event, msg)
    return ServerMessage(str(event), True, warnings, command, command_warnings)


def _read_command(event: str, msg: dict[str, Any]) -> tuple[Command | None, tuple[Warn, ...]]:
    if event == "clear":
        return SendClear(), ()
    body = msg.get(event)
    key = "payload" if event == "media" else "name"
    value = body.get(key) if isinstance(body, dict) else None
    if not isinstance(value, str):
        return None, (("31951", f"31951 Invalid Message: {event} without {event}.{key} string"),)
    if event == "mark":
        return SendMark(value), ()
    try:
        audio = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None, (("31951", "31951 Invalid Message: media.payload is not valid base64"),)
    if audio[:4] in _FILE_HEADERS:
        return SendMedia(audio), (("header", "media.payload starts with a file header; Twilio plays it as noise"),)
    return SendMedia(audio), ()
