"""Fakes for AgentSession tests, all scripted from one timeline of caller utterances.

The caller's audio is a square wave whose amplitude encodes which utterance it is, so the fake
STT can tell the utterances apart from the turn audio alone, and the fake VAD agrees with both.
FakeCallIO plays audio in virtual stream time like Twilio: media is queued, a mark echoes when
playback reaches it, and ``clear`` flushes the queue and echoes every pending mark at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np

from app.agent.interfaces import Message
from app.agent.session import AgentSession
from app.agent.vad import TurnDetector, TurnParams

FRAME_MS = 20


@dataclass
class Say:
    start_ms: int
    end_ms: int
    text: str  # what the fake STT will hear ("" = noise that transcribes to nothing)


@dataclass
class Timeline:
    utterances: list[Say]

    def amplitude(self, k: int) -> int:
        return 2000 + 1000 * k

    def frame(self, t_ms: int) -> np.ndarray:
        for k, u in enumerate(self.utterances):
            if u.start_ms <= t_ms < u.end_ms:
                a = self.amplitude(k)
                return np.where(np.arange(160) % 8 < 4, a, -a).astype(np.int16)
        return np.zeros(160, np.int16)

    def text_for(self, audio: np.ndarray) -> str:
        peak = int(np.abs(audio.astype(np.int32)).max()) if len(audio) else 0
        for k, u in enumerate(self.utterances):
            if abs(peak - self.amplitude(k)) < 400:
                return u.text
        return ""


class LoudIsSpeech:
    def speech_probability(self, window: np.ndarray) -> float:
        return 1.0 if float(np.abs(window).max()) > 0.03 else 0.0


class FakeSTT:
    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.calls = 0

    async def transcribe(self, audio: np.ndarray) -> str:
        self.calls += 1
        await asyncio.sleep(0)
        return self.timeline.text_for(audio)


class FakeTTS:
    """10 ms of audio per character, in two chunks; records what it was asked to say."""

    def __init__(self) -> None:
        self.spoken: list[str] = []

    async def stream(self, text: str) -> AsyncIterator[bytes]:
        self.spoken.append(text)
        n = len(text) * 80
        yield b"\x7f" * (n // 2)
        await asyncio.sleep(0)
        yield b"\x7f" * (n - n // 2)


class ScriptedResponder:
    """Replies in order; the reply at ``goodbye_at`` ends the call."""

    def __init__(self, replies: list[list[str]], goodbye_at: int | None = None, greeting: str = "") -> None:
        self.replies = replies
        self.goodbye_at = goodbye_at
        self._greeting = greeting or "Thank you for calling Acme. This is Jarvis. How can I help?"
        self.calls: list[tuple[list[Message], str]] = []
        self.ends_call = False
        self.digits: list[str] = []

    def greeting(self) -> str:
        return self._greeting

    def notes(self) -> list[str]:
        return []

    def on_dtmf(self, digit: str) -> None:
        self.digits.append(digit)

    async def reply(self, history: list[Message], caller_text: str) -> AsyncIterator[str]:
        n = len(self.calls)
        self.calls.append((list(history), caller_text))
        self.ends_call = False
        for sentence in self.replies[n] if n < len(self.replies) else ["Okay."]:
            await asyncio.sleep(0)
            yield sentence
        self.ends_call = n == self.goodbye_at


@dataclass
class FakeCallIO:
    now: float = 0.0
    queue_end: float = 0.0
    played: list[tuple[float, int]] = field(default_factory=list)  # (placed at ms, bytes)
    marks: list[tuple[str, float]] = field(default_factory=list)  # pending (name, plays at ms)
    echoed: list[tuple[str, float]] = field(default_factory=list)
    clears: list[float] = field(default_factory=list)
    turns: list[dict] = field(default_factory=list)
    hangup_at: float | None = None
    journal: list[tuple[str, dict]] = field(default_factory=list)
    session: AgentSession | None = None

    def stream_sample(self) -> int:
        return round(self.now * 8)

    async def play(self, ulaw: bytes) -> tuple[int, int]:
        start = max(self.queue_end, self.now)
        self.played.append((start, len(ulaw)))
        self.queue_end = start + len(ulaw) / 8
        return round(start * 8), round(self.queue_end * 8)

    async def mark(self, name: str) -> None:
        self.marks.append((name, max(self.queue_end, self.now)))

    async def clear(self, at: int | None = None) -> None:
        self.clears.append(self.now)
        self.queue_end = self.now
        flushed, self.marks = self.marks, []
        for name, _ in flushed:  # Twilio echoes flushed marks too
            self.echoed.append((name, self.now))
            assert self.session is not None
            self.session.on_mark(name)

    async def hangup(self) -> None:
        self.hangup_at = self.now

    def add_turn(self, role: str, text: str, start: int, end: int, interrupted: bool = False, **extra) -> None:
        self.turns.append(dict(role=role, text=text, start_ms=start / 8, end_ms=end / 8, start_sample=start,
                               end_sample=end, interrupted=interrupted, **extra))

    def read_caller_audio(self, start: int, stop: int) -> np.ndarray:
        return np.zeros(max(0, stop - start), np.int16)

    def journal_event(self, kind: str, **data) -> None:
        self.journal.append((kind, data))

    def no_reply(self) -> None:
        self.journal.append(("no_reply", {}))

    def tick(self) -> None:
        due = [m for m in self.marks if m[1] <= self.now]
        self.marks = [m for m in self.marks if m[1] > self.now]
        for name, _ in due:
            self.echoed.append((name, self.now))
            assert self.session is not None
            self.session.on_mark(name)


def make_session(
    timeline: Timeline, responder: ScriptedResponder, **kwargs
) -> tuple[AgentSession, FakeCallIO, FakeTTS]:
    io = FakeCallIO()
    tts = FakeTTS()
    detector = TurnDetector(LoudIsSpeech(), TurnParams(start_ms=100, stop_ms=500, min_turn_ms=100))
    session = AgentSession(io, FakeSTT(timeline), tts, responder, detector, **kwargs)
    io.session = session
    return session, io, tts


async def drive(session: AgentSession, io: FakeCallIO, timeline: Timeline, until_ms: int) -> None:
    """Feed the caller's frames in virtual time, echo marks, let the session's tasks run."""
    for i in range(until_ms // FRAME_MS):
        t = i * FRAME_MS
        io.now = t
        session.feed_caller_audio(timeline.frame(t), t * 8)
        io.tick()
        for _ in range(8):
            await asyncio.sleep(0)
        if io.hangup_at is not None:
            return
