"""What a call's session needs from whatever carries the call, and what it knows about the call.

`CallTransport` is the session's only way out to the caller: assistant audio as PCM16 at the
transport's rate (and what of it the caller will hear once the line's codec has had it, so the
recording holds exactly that), marks (echoed back when playback reaches them) and clear (or the transport's
equivalent), close with a code and a reason, and two notices for clients that show the
conversation (``said``: a transcript line; ``no_reply``: no answer is coming); a phone line ignores them. `CallParticipant` is what listens and talks on
the call (the assistant, or the transcriber of a call nobody answers). `CallInfo` holds the facts
a transport knows at the start: ids, mode, tracks, rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

__all__ = ["CallInfo", "CallParticipant", "CallTransport"]

class CallTransport(Protocol):
    rate: int  # samples per second of the audio it carries, both ways

    def as_heard(self, pcm: bytes) -> bytes: ...  # the PCM as the caller will hear it (after the line's codec)

    async def send_audio(self, pcm: bytes, at: int) -> None: ...  # PCM16 LE mono at `rate`, playing from sample `at`

    async def mark(self, name: str) -> None: ...  # the session's on_mark(name) follows when playback reaches it

    async def clear(self) -> None: ...  # drop what is queued and not yet played

    async def close(self, code: int, reason: str) -> None: ...  # end the call from our side

    def said(self, role: str, text: str) -> None: ...  # a transcript line ("caller"/"assistant"), for clients that show it

    def no_reply(self) -> None: ...  # the caller's turn gets no answer (a client waiting for one stops waiting)


class CallParticipant(Protocol):
    """The assistant, or the transcriber of a call the assistant does not answer."""

    async def start(self) -> None: ...

    def feed_caller_audio(self, samples: np.ndarray, start_sample: int) -> None: ...

    def on_mark(self, name: str) -> None: ...

    def on_dtmf(self, digit: str) -> None: ...

    # Turns a client reports itself (a browser's StartSpeaking / StopSpeaking), and a dropped socket.
    def caller_started(self) -> None: ...

    def caller_stopped(self) -> None: ...

    def connection_lost(self, cut_by: str = "connection lost") -> None: ...

    async def aclose(self) -> None: ...

    @property
    def tail_pending(self) -> int: ...

    async def transcribe_tail(self) -> None: ...


@dataclass(frozen=True)
class CallInfo:
    sid: str  # CallSid (CA + 32 hex) or a browser call's id (WB + 32 hex)
    mode: str  # "assistant" (we answer) or "listen" (both voices forked to us)
    rate: int  # the transport's native rate: masters are written at it
    source: str = "phone"  # "phone" or "browser"
    stream_id: str = ""
    account_id: str = ""
    tracks: tuple[str, ...] = ("inbound",)
    params: tuple[str, ...] = field(default_factory=tuple)  # names of custom parameters (never values)
    from_last4: str | None = None  # the last four digits of the caller's number (phone calls), never more
