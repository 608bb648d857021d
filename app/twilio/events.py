"""Frozen dataclasses for Media Streams messages, Twilio → us (events) and us → Twilio (commands).

`Media`, 100 a second per call, is a NamedTuple: as immutable, and made in 0.2 µs where a frozen
dataclass takes 0.6 (its __init__ goes through object.__setattr__).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

__all__ = [
    "Connected", "Start", "Media", "Dtmf", "Mark", "Stop", "Event",
    "SendMedia", "SendMark", "SendClear", "Command",
]


@dataclass(frozen=True, slots=True)
class Connected:
    protocol: str
    version: str


@dataclass(frozen=True, slots=True)
class Start:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...]
    custom_parameters: dict[str, str] = field(default_factory=dict)
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000
    channels: int = 1


class Media(NamedTuple):
    sequence_number: int
    track: str  # "inbound" or "outbound"
    chunk: int
    timestamp: int  # ms since the stream started (Twilio's media clock)
    payload: bytes  # raw μ-law bytes (base64-decoded)


@dataclass(frozen=True, slots=True)
class Dtmf:
    sequence_number: int
    digit: str
    track: str = "inbound_track"


@dataclass(frozen=True, slots=True)
class Mark:
    sequence_number: int
    name: str


@dataclass(frozen=True, slots=True)
class Stop:
    sequence_number: int
    account_sid: str
    call_sid: str


Event = Connected | Start | Media | Dtmf | Mark | Stop


@dataclass(frozen=True, slots=True)
class SendMedia:
    payload: bytes  # raw μ-law 8 kHz, no file header


@dataclass(frozen=True, slots=True)
class SendMark:
    name: str


@dataclass(frozen=True, slots=True)
class SendClear:
    pass


Command = SendMedia | SendMark | SendClear
