"""The agent's stage interfaces: one small ``Protocol`` per job, plus the call transport.

Owns the contracts between the turn loop (``session.py``) and its plug-ins:

- ``VoiceActivity``  speech probability for a window of 8 kHz audio (Silero, energy, fakes)
- ``SpeechToText``   a whole caller turn (int16, 8 kHz) → text
- ``Responder``      caller text → reply sentences, plus greeting, end-of-call flag and notes
- ``TextToSpeech``   text → PCM16 chunks at the call's rate (``rate``), streamed
- ``CallIO``         what the session needs from the call (implemented by the WebSocket shell)

Knows nothing about Twilio JSON, WebSockets, FastAPI or the recorder's storage.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import numpy as np

__all__ = [
    "CallIO",
    "Message",
    "Responder",
    "Role",
    "SpeechToText",
    "TextToSpeech",
    "TurnCallback",
    "VoiceActivity",
]

Role = Literal["caller", "assistant"]


@dataclass(frozen=True)
class Message:
    """One turn of the conversation as the responder sees it: only what was actually heard."""

    role: Role
    text: str


@runtime_checkable
class VoiceActivity(Protocol):
    """Speech probability source for the turn detector."""

    def speech_probability(self, window: np.ndarray) -> float:
        """Probability in [0, 1] that ``window`` (float32 in [-1, 1], 8 kHz, any length) holds speech.

        Implementations may rebuffer internally (Silero needs 256-sample windows) and are
        stateful: one instance per call stream.
        """
        ...


@runtime_checkable
class SpeechToText(Protocol):
    """Batch speech-to-text for one caller turn."""

    async def transcribe(self, audio: np.ndarray) -> str:
        """Text for ``audio`` (int16 mono, 8 kHz); ``""`` when nothing intelligible was said.

        Local engines must run off the event loop (``asyncio.to_thread``).
        """
        ...


@runtime_checkable
class Responder(Protocol):
    """Decides what the assistant says.

    End of call: after the async iterator returned by :meth:`reply` is exhausted, the session
    reads :attr:`ends_call`. ``True`` means "this reply was the goodbye": the session hangs up
    once the reply's last sentence has been played (its mark echoed). A reply that the caller
    interrupted never ends the call, whatever the flag says.
    """

    ends_call: bool
    """True when the reply most recently completed closes the conversation."""

    def greeting(self) -> str:
        """The first thing the assistant says when the call connects."""
        ...

    def reply(self, history: list[Message], caller_text: str) -> AsyncIterator[str]:
        """Reply sentences, each yielded as soon as it is ready.

        Implementations are async generators (``async def reply(...)`` with ``yield``).
        ``history`` is the conversation before ``caller_text`` and holds only what was heard
        (an interrupted assistant turn appears with its heard sentences only).
        """
        ...

    def notes(self) -> list[str]:
        """Messages taken during the call, for the summary (e.g. ``"Name: … — Reason: …"``)."""
        ...

    def on_dtmf(self, digit: str) -> None:
        """A keypad digit the caller pressed (may be noted; need not change the dialogue)."""
        ...


@runtime_checkable
class TextToSpeech(Protocol):
    """Streaming text-to-speech producing what the caller hears, as PCM16 at ``rate``."""

    rate: int

    def stream(self, text: str) -> AsyncIterator[bytes]:
        """PCM16 LE mono chunks at ``rate`` for ``text``, at least one per sentence, first before the rest is made.

        Implementations are async generators. Closing the iterator early stops synthesis.
        """
        ...


class CallIO(Protocol):
    """The session's view of one call; the WebSocket shell implements it.

    Where audio sits is an integer sample index on the call's stream clock (8 kHz here), from
    end to end: playback spans, turns, cuts. Milliseconds are for display only.
    """

    def stream_sample(self) -> int: ...   # the call's stream clock now (samples); exact, not extrapolated, once ended
    async def play(self, pcm: bytes) -> tuple[int, int] | None: ...  # PCM16 at the call's rate; returns [start, end) where it plays (None: call over)
    async def mark(self, name: str) -> None: ...     # send a mark; on_mark(name) is called when Twilio echoes it
    async def clear(self, at: int | None = None) -> None: ...  # send clear; the recording's assistant track is cut at `at` (default: stream_sample())
    async def hangup(self) -> None: ...              # close the stream (ends the call)
    def add_turn(self, role: str, text: str, start: int, end: int, interrupted: bool = False, **extra: object) -> None: ...
    def read_caller_audio(self, start: int, stop: int) -> np.ndarray: ...  # int16 samples [start, stop) as recorded
    def journal_event(self, kind: str, **data: object) -> None: ...  # anything else the summary should know
    def no_reply(self) -> None: ...  # the caller's turn gets no answer (a browser client stops waiting for one)


class TurnCallback(Protocol):
    """Per-message event for embedders: called once each turn is final (no audio is copied)."""

    def __call__(
        self, role: str, index: int, text: str, start: int, end: int, interrupted: bool
    ) -> None: ...
