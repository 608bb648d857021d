"""Fakes for driving a real CallSession in-process: a transport that records what the session sent,
a participant that records what it was fed, a wall clock the test moves, and an events sink."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


def level(value: int, ms: float, rate: int = 8000) -> bytes:
    """`ms` of PCM16 at one constant value: easy to find again on a track."""
    return np.full(round(ms * rate / 1000), value, "<i2").tobytes()


@dataclass
class Wall:
    """The call's wall clock in seconds; the test moves it."""

    t: float = 0.0

    def __call__(self) -> float:
        return self.t


@dataclass
class FakeTransport:
    """A CallTransport whose line halves every sample: what the recording holds must be what it
    says the caller heard (`as_heard`), not what the session sent."""

    rate: int = 8000
    sent: list[bytes] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)
    clears: int = 0
    closed: list[tuple[int, str]] = field(default_factory=list)
    said_lines: list[tuple[str, str]] = field(default_factory=list)
    no_replies: int = 0
    at: list[int] = field(default_factory=list)  # where each sent chunk plays (samples)

    def as_heard(self, pcm: bytes) -> bytes:
        return (np.frombuffer(pcm, "<i2") // 2).astype("<i2").tobytes()

    async def send_audio(self, pcm: bytes, at: int) -> None:
        self.sent.append(pcm)
        self.at.append(at)

    async def mark(self, name: str) -> None:
        self.marks.append(name)

    async def clear(self) -> None:
        self.clears += 1

    async def close(self, code: int, reason: str) -> None:
        self.closed.append((code, reason))

    def said(self, role: str, text: str) -> None:
        self.said_lines.append((role, text))

    def no_reply(self) -> None:
        self.no_replies += 1


@dataclass
class FakeParticipant:
    """A CallParticipant that keeps what it is given. `tail` are turns (role, text, start, end) it
    still has to transcribe at hang-up; `add_turn` is where it writes them (the session's)."""

    add_turn: Callable[..., None] | None = None
    tail: list[tuple[str, str, int, int]] = field(default_factory=list)
    fed: list[tuple[int, np.ndarray]] = field(default_factory=list)
    marks: list[str] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)
    closed: bool = False

    async def start(self) -> None:
        return None

    def feed_caller_audio(self, samples: np.ndarray, start_sample: int) -> None:
        self.fed.append((start_sample, samples.copy()))

    def on_mark(self, name: str) -> None:
        self.marks.append(name)

    def on_dtmf(self, digit: str) -> None:
        self.digits.append(digit)

    async def aclose(self) -> None:
        self.closed = True

    @property
    def tail_pending(self) -> int:
        return len(self.tail)

    async def transcribe_tail(self) -> None:
        assert self.add_turn is not None
        while self.tail:
            self.add_turn(*self.tail.pop(0))


@dataclass
class Chunks:
    """RecordingEvents that keep every chunk and turn the session emits."""

    tracks: dict[str, list[np.ndarray]] = field(default_factory=lambda: {"inbound": [], "outbound": []})
    mixed: list[np.ndarray] = field(default_factory=list)
    turns: list[tuple[str, int, str, np.ndarray]] = field(default_factory=list)
    rates: set[int] = field(default_factory=set)

    def on_track_audio_data(self, call_sid: str, track: str, audio: np.ndarray, sample_rate: int) -> None:
        self.tracks[track].append(audio.copy())
        self.rates.add(sample_rate)

    def on_audio_data(self, call_sid: str, audio: np.ndarray, sample_rate: int) -> None:
        self.mixed.append(audio.copy())

    def on_turn_audio(self, call_sid: str, role: str, index: int, text: str, audio: np.ndarray,
                      sample_rate: int) -> None:
        self.turns.append((role, index, text, audio.copy()))
