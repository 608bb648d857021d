"""Media Streams protocol: parse Twilio's text frames into events, serialise our commands.

Theory of operation
-------------------
One WebSocket carries one stream. Twilio sends, in order::

    connected → start → (media | dtmf | mark)* → stop

`StreamProtocol.receive(text)` parses one text frame and checks it against that order with a
transition table (`_TRANSITIONS`). `StreamProtocol.send(command)` makes our frames: it owns the
streamSid (learnt at `start`) and refuses a send before `start` or after `stop` (`SendRefused`),
as starlette's WebSocket refuses to send on a closed socket. Two kinds of receive failure, as
Twilio's own warnings 31950/31951 justify:

* `ProtocolError(fatal=True)` — the stream cannot go on (not JSON at all before `start`, a
  second `start`, media before `start`, a `streamSid` that is not this stream's). The shell
  closes the socket with `close_code` and the message as reason.
* `ProtocolWarning` — one bad message in a good stream (a payload that is not base64, an
  unknown event, a wrongly typed field). The shell logs it once per kind and goes on, so a
  single corrupt frame never costs the rest of the call.

Field rules (from captures): numbers are JSON strings except `sampleRate`/`channels`;
`connected` has no `sequenceNumber`/`streamSid`; key order is not a contract.

Speed: a media message is 50 per second per track and the one message that matters for cost.
While streaming, a frame is first decoded by msgspec straight into a typed media message, the
payload's base64 included (`_fast_media`, ~1.1 µs); only a message that passes every rule of
the general path there becomes `Media` on it. Anything else (another event, a field of another
type, bad base64, a foreign streamSid) takes the general path: orjson (0.5 µs against json's
1.9) and the rules below, so warnings, kinds and fatal errors are the general path's alone.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
from typing import Any

import msgspec
import orjson

from app import close_codes
from app.twilio.events import (
    Command, Connected, Dtmf, Event, Mark, Media, SendClear, SendMark, SendMedia, Start, Stop,
)

__all__ = ["StreamState", "ProtocolError", "ProtocolWarning", "SendRefused", "StreamProtocol", "serialize",
           "CALL_SID_RE"]

CALL_SID_RE = re.compile(r"^CA[0-9a-f]{32}$")

# WebSocket close codes used for protocol failures (RFC 6455 §7.4.1), named in one place.
CLOSE_PROTOCOL = close_codes.PROTOCOL
CLOSE_UNSUPPORTED = close_codes.UNSUPPORTED
CLOSE_POLICY = close_codes.POLICY

MAX_MEDIA_PAYLOAD = 8000  # bytes of μ-law (1 s); Twilio sends 160. Larger is refused as hostile.
_MAX_PAYLOAD_B64 = (MAX_MEDIA_PAYLOAD * 4) // 3 + 4
_loads = orjson.loads
_a2b = binascii.a2b_base64


class _MediaBody(msgspec.Struct, gc=False):
    payload: bytes  # JSON base64 (standard alphabet, padded, no whitespace) → bytes, in C
    timestamp: str
    chunk: str
    track: str = "inbound"


class _MediaMessage(msgspec.Struct, gc=False):
    """A media message in Twilio's own form (numbers as strings); other fields are ignored."""

    event: str
    streamSid: str
    sequenceNumber: str
    media: _MediaBody


_decode_media = msgspec.json.Decoder(_MediaMessage).decode
# msgspec raises RecursionError for a deeply nested value, even in a field it skips: the general path decides.
_MSGSPEC_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


class StreamState(enum.Enum):
    AWAIT_CONNECTED = "awaiting connected"
    AWAIT_START = "awaiting start"
    STREAMING = "streaming"
    STOPPED = "stopped"


# Rule: which events each state accepts, and the state each one leads to.
_TRANSITIONS: dict[StreamState, dict[str, StreamState]] = {
    StreamState.AWAIT_CONNECTED: {"connected": StreamState.AWAIT_START, "start": StreamState.STREAMING},
    StreamState.AWAIT_START: {"start": StreamState.STREAMING},
    StreamState.STREAMING: {
        "media": StreamState.STREAMING, "dtmf": StreamState.STREAMING,
        "mark": StreamState.STREAMING, "stop": StreamState.STOPPED,
    },
    StreamState.STOPPED: {},
}
_KNOWN = {"connected", "start", "media", "dtmf", "mark", "stop"}


class ProtocolError(Exception):
    """A message that ends the stream. `close_code` is the WebSocket close code to use."""

    def __init__(self, message: str, close_code: int = CLOSE_PROTOCOL) -> None:
        super().__init__(message)
        self.close_code = close_code


class ProtocolWarning(Exception):
    """A bad message that is skipped; the stream goes on. `kind` groups warnings for logging."""

    def __init__(self, message: str, kind: str) -> None:
        super().__init__(message)
        self.kind = kind


def _shown(v: Any) -> str:
    """A hostile value, short enough for a log line (repr escapes control characters)."""
    if isinstance(v, str):
        return repr(v[:40]) + ("…" if len(v) > 40 else "")
    if isinstance(v, (dict, list)):
        return f"<{type(v).__name__}>"
    return repr(v)[:40]


def _is_digits(v: str) -> bool:
    # str.isdigit() alone accepts "²" or "١", which int() then rejects or reads as another number.
    return v.isascii() and v.isdigit()


def _int(obj: dict[str, Any], key: str, where: str) -> int:
    v = obj.get(key)
    if v.__class__ is str and len(v) < 16 and v.isascii() and v.isdigit():  # Twilio's form: first
        return int(v)
    if isinstance(v, bool) or v is None:
        raise ProtocolWarning(f"{where}.{key} missing or not a number", "field")
    if isinstance(v, int) and 0 <= v < 10**15:
        return v
    if isinstance(v, str) and _is_digits(v) and len(v) < 16:
        return int(v)
    raise ProtocolWarning(f"{where}.{key}={_shown(v)} is not a non-negative integer", "field")


def _str(obj: dict[str, Any], key: str, where: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str):
        raise ProtocolWarning(f"{where}.{key} missing or not a string", "field")
    return v


class SendRefused(RuntimeError):
    """A command for a stream that has not started or has stopped: nothing to send it on."""


class StreamProtocol:
    """Parser + state machine for one Media Stream, both ways. No I/O."""

    def __init__(self) -> None:
        self.state = StreamState.AWAIT_CONNECTED
        self.stream_sid: str | None = None
        self.last_sequence = 0

    def receive(self, text: str | bytes) -> Event:
        """Parse one frame. Raises ProtocolError (fatal) or ProtocolWarning (skip it)."""
        if text.__class__ is not str and isinstance(text, (bytes, bytearray, memoryview)):
            raise ProtocolWarning("binary frame: Media Streams messages are JSON text frames", "binary")
        media = self.receive_media(text)
        if media is not None:
            return media
        return self._receive_json(text)

    def receive_media(self, text: str) -> Media | None:
        """The per-frame path alone: a valid media message of this stream → Media; None (and no
        change to the stream's state) for anything else, which ``receive`` then parses in full."""
        if self.state is StreamState.STREAMING:
            media = self._fast_media(text)
            if media is not None:
                self.last_sequence = media.sequence_number
                return media
        return None

    def _receive_json(self, text: str) -> Event:
        """The general path: any text frame, every rule, every warning."""
        try:
            msg = _loads(text)
        except (ValueError, RecursionError):  # orjson.JSONDecodeError is a ValueError
            raise ProtocolWarning("message is not JSON", "json") from None
        if msg.__class__ is not dict:
            raise ProtocolWarning("message is not a JSON object", "json")
        if self.state is StreamState.STREAMING and msg.get("event") == "media":
            if msg.get("streamSid") != self.stream_sid:
                raise ProtocolError(f"streamSid {_shown(msg.get('streamSid'))} is not this stream's", CLOSE_POLICY)
            media = self._parse_media(msg)
            self.last_sequence = media.sequence_number
            return media
        event = msg.get("event")
        if not isinstance(event, str) or event not in _KNOWN:  # a list or dict is not hashable
            raise ProtocolWarning(f"unknown event {_shown(event)}", "event")
        allowed = _TRANSITIONS[self.state]
        if event not in allowed:
            expected = " or ".join(sorted(allowed)) or "nothing (stream stopped)"
            fatal = event == "start" or self.state in (StreamState.AWAIT_CONNECTED, StreamState.AWAIT_START)
            text_ = f"expected {expected} but got {event} while {self.state.value}"
            if fatal:
                raise ProtocolError(text_, CLOSE_PROTOCOL)
            raise ProtocolWarning(text_, "order")
        if event != "connected":
            sid = msg.get("streamSid")
            if self.stream_sid is not None and sid != self.stream_sid:
                raise ProtocolError(f"streamSid {_shown(sid)} is not this stream's", CLOSE_POLICY)
        parsed = getattr(self, f"_parse_{event}")(msg)
        self.state = allowed[event]
        seq = getattr(parsed, "sequence_number", None)
        if seq is not None:
            self.last_sequence = seq
        return parsed

    def send(self, command: Command) -> str:
        """Our command → the text frame to send, for this stream. Raises SendRefused when the
        stream is not streaming (no streamSid yet, or Twilio said stop)."""
        if self.state is not StreamState.STREAMING or self.stream_sid is None:
            raise SendRefused(f"cannot send {type(command).__name__} while {self.state.value}")
        return serialize(command, self.stream_sid)

    # ---------------------------------------------------------------- per event

    def _parse_connected(self, msg: dict[str, Any]) -> Connected:
        return Connected(protocol=str(msg.get("protocol", "")), version=str(msg.get("version", "")))

    def _parse_start(self, msg: dict[str, Any]) -> Start:
        body = msg.get("start")
        if not isinstance(body, dict):
            raise ProtocolError("start message has no start object", CLOSE_PROTOCOL)
        try:
            call_sid = _str(body, "callSid", "start")
            stream_sid = _str(body, "streamSid", "start")
            account_sid = _str(body, "accountSid", "start")
            seq = _int(msg, "sequenceNumber", "start")
        except ProtocolWarning as w:
            raise ProtocolError(str(w), CLOSE_PROTOCOL) from None
        if not CALL_SID_RE.match(call_sid):
            raise ProtocolError("start.callSid is not CA followed by 32 hex digits", CLOSE_POLICY)
        if not stream_sid or len(stream_sid) > 64:
            raise ProtocolError("start.streamSid is empty or longer than 64 characters", CLOSE_POLICY)
        if len(account_sid) > 64:
            raise ProtocolError("start.accountSid is longer than 64 characters", CLOSE_POLICY)
        tracks = body.get("tracks", ["inbound"])
        if not isinstance(tracks, list) or not tracks or not all(t in ("inbound", "outbound") for t in tracks):
            raise ProtocolError("start.tracks must be a list of 'inbound'/'outbound'", CLOSE_PROTOCOL)
        fmt = body.get("mediaFormat") or {}
        if not isinstance(fmt, dict):
            raise ProtocolError("start.mediaFormat is not an object", CLOSE_PROTOCOL)
        encoding = fmt.get("encoding", "audio/x-mulaw")
        rate = fmt.get("sampleRate", 8000)
        channels = fmt.get("channels", 1)
        if encoding != "audio/x-mulaw" or rate != 8000 or channels != 1:
            raise ProtocolError(
                f"unsupported mediaFormat {_shown(encoding)}/{_shown(rate)}/{_shown(channels)}: "
                "only audio/x-mulaw 8000 Hz mono",
                CLOSE_UNSUPPORTED,
            )
        params = body.get("customParameters") or {}
        if not isinstance(params, dict):
            raise ProtocolError("start.customParameters is not an object", CLOSE_PROTOCOL)
        # Twilio's <Parameter> values are strings; anything else (possibly deeply nested) is ignored.
        params = {str(k)[:200]: v[:500] for k, v in list(params.items())[:50] if isinstance(v, str)}
        top_sid = msg.get("streamSid", stream_sid)
        if top_sid != stream_sid:
            raise ProtocolError("streamSid differs from start.streamSid", CLOSE_POLICY)
        self.stream_sid = stream_sid
        return Start(seq, stream_sid, account_sid, call_sid, tuple(tracks), params)

    def _fast_media(self, text: str) -> Media | None:
        """A valid media message of this stream, in Twilio's form → Media; None for anything else
        (the general path then parses it and says what is wrong). Every check here is one of
        ``_parse_media``'s (the numbers: ``_int``'s string form, inlined), so what passes here
        passes there, with the same values."""
        try:
            m = _decode_media(text)
        except _MSGSPEC_ERRORS:
            return None
        body = m.media
        track, payload, seq, chunk, ts = body.track, body.payload, m.sequenceNumber, body.chunk, body.timestamp
        if (m.event == "media" and m.streamSid == self.stream_sid and (track == "inbound" or track == "outbound")
                and 0 < len(payload) <= MAX_MEDIA_PAYLOAD
                and 0 < len(seq) < 16 and 0 < len(chunk) < 16 and 0 < len(ts) < 16):
            digits = seq + chunk + ts
            if digits.isascii() and digits.isdigit():
                return Media(int(seq), track, int(chunk), int(ts), payload)
        return None

    def _parse_media(self, msg: dict[str, Any]) -> Media:
        body = msg.get("media")
        if body.__class__ is not dict:
            raise ProtocolWarning("media message has no media object", "field")
        track = body.get("track", "inbound")
        if track != "inbound" and track != "outbound":
            raise ProtocolWarning(f"media.track {_shown(track)} is not inbound/outbound", "field")
        payload_b64 = body.get("payload")
        if payload_b64.__class__ is not str:
            raise ProtocolWarning("media.payload missing or not a string", "field")
        if len(payload_b64) > _MAX_PAYLOAD_B64:
            raise ProtocolWarning("media.payload larger than 1 s of audio", "payload")
        try:
            payload = _a2b(payload_b64, strict_mode=True)  # = b64decode(validate=True), less wrapping
        except (binascii.Error, ValueError):
            raise ProtocolWarning("media.payload is not base64", "payload") from None
        if not payload:
            raise ProtocolWarning("media.payload is empty", "payload")
        if len(payload) > MAX_MEDIA_PAYLOAD:  # the length check above lets a few bytes over through
            raise ProtocolWarning("media.payload larger than 1 s of audio", "payload")
        return Media(_int(msg, "sequenceNumber", "media"), track, _int(body, "chunk", "media"),
                     _int(body, "timestamp", "media"), payload)

    def _parse_dtmf(self, msg: dict[str, Any]) -> Dtmf:
        body = msg.get("dtmf")
        if not isinstance(body, dict):
            raise ProtocolWarning("dtmf message has no dtmf object", "field")
        digit = _str(body, "digit", "dtmf")
        if not re.fullmatch(r"[0-9*#A-Da-dw]", digit):
            raise ProtocolWarning("dtmf.digit is not one key", "field")
        track = body.get("track", "inbound_track")
        return Dtmf(_int(msg, "sequenceNumber", "dtmf"), digit,
                    track[:20] if isinstance(track, str) else "inbound_track")

    def _parse_mark(self, msg: dict[str, Any]) -> Mark:
        body = msg.get("mark")
        if not isinstance(body, dict):
            raise ProtocolWarning("mark message has no mark object", "field")
        return Mark(_int(msg, "sequenceNumber", "mark"), _str(body, "name", "mark")[:200])

    def _parse_stop(self, msg: dict[str, Any]) -> Stop:
        body = msg.get("stop") if isinstance(msg.get("stop"), dict) else {}
        seq = msg.get("sequenceNumber")
        return Stop(
            int(seq) if isinstance(seq, str) and _is_digits(seq) and len(seq) < 16 else self.last_sequence + 1,
            str(body.get("accountSid", "")),
            str(body.get("callSid", "")),
        )


def serialize(command: Command, stream_sid: str) -> str:
    """Our command → the JSON text frame Twilio expects."""
    if isinstance(command, SendMedia):
        payload = base64.b64encode(command.payload).decode("ascii")
        return '{"event":"media","streamSid":"%s","media":{"payload":"%s"}}' % (stream_sid, payload)
    if isinstance(command, SendMark):
        return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": command.name}},
                          separators=(",", ":"))
    if isinstance(command, SendClear):
        return '{"event":"clear","streamSid":"%s"}' % stream_sid
    raise TypeError(f"not a command: {command!r}")
