"""Playout: speaking the assistant's utterances and accounting for what the caller heard of them.

Owns :class:`Utterance` (one assistant turn: its sentences, where each played, its marks and
their echoes) and :class:`Playout`, which speaks an utterance sentence by sentence — normalise →
TTS chunks → ``io.play`` → ``io.mark(<unique name>)`` — and records it as an assistant turn once
it is over: played out, interrupted by a barge-in, or cut by the hang-up. When to speak, and what
to do once a goodbye was heard, is the conversation loop's business (``session.py``).

Time: each sentence sits where ``io.play`` says its audio was placed (the recorder owns playback
time: ``max(end of audio already queued, now)``), so each has an exact ``[start, end)`` span in
stream samples.

What was heard: **granularity is the sentence**. A sentence counts as heard once its mark echoed;
at a barge-in, the echoes Twilio sends for the marks its clear flushed are no proof of playback
and are ignored. A partly played sentence is not in the text (the recorder has its audio): a
reply cut during its first sentence is recorded with empty text, and one cut before any of its
audio played is not recorded at all. At hang-up the recording is cut at the stream's last moment
(as a clear would): a reply still playing keeps the sentences whose audio ended by then, and the
one the hang-up cut is kept apart (``cut_text``, ``cut_by="hangup"``; not a barge-in).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from app.agent.interfaces import CallIO, TextToSpeech
from app.agent.vad import SAMPLE_RATE

__all__ = ["AssistantTurn", "Playout", "Utterance"]


@dataclass(frozen=True)
class AssistantTurn:
    """An assistant turn as it goes into the transcript (``extra``: the turn extras, see session.py)."""

    text: str
    start: int  # stream samples
    end: int
    interrupted: bool
    extra: dict[str, Any]


@dataclass
class Utterance:
    """One assistant turn being generated, played and accounted for."""

    id: int
    kind: str  # "greeting" | "reply"
    turn_end: int | None = None  # stream sample where the caller's turn it answers ended
    sentences: list[str] = field(default_factory=list)  # fully sent (audio + mark), in order
    spans: list[tuple[int, int]] = field(default_factory=list)  # each sentence's [start, end) on the line
    marks: list[str] = field(default_factory=list)
    echoed: set[str] = field(default_factory=set)
    first_audio: int | None = None
    end: int = 0
    done: bool = False
    ends_call: bool = False
    interrupted: bool = False
    recorded: bool = False
    stats: dict[str, float] = field(default_factory=dict)
    rate: int = SAMPLE_RATE  # the call's samples per second

    def pending(self) -> list[str]:
        return [m for m in self.marks if m not in self.echoed]

    def assume_heard(self) -> None:
        """Count every sentence sent as heard (its audio played out, though no echo says so)."""
        self.echoed.update(self.marks)

    def full_text(self) -> str:
        return " ".join(self.sentences)

    def heard_text(self) -> str:
        return " ".join(s for s, m in zip(self.sentences, self.marks, strict=True) if m in self.echoed)

    def played_by(self, now: int) -> tuple[str, str]:
        """(sentences whose audio ended by ``now``, the sentence ``now`` falls inside or "")."""
        full = [s for s, (_, b) in zip(self.sentences, self.spans, strict=True) if b <= now]
        cut = next((s for s, (a, b) in zip(self.sentences, self.spans, strict=True) if a < now < b), "")
        return " ".join(full), cut

    def as_turn(self, *, interrupted: bool, end: int, heard: str | None = None, **cut: str) -> AssistantTurn | None:
        """The transcript turn, or None when nothing reached the caller. Interrupted: ``heard``
        (default: the sentences whose marks echoed) is the text; ``cut`` says by what (``cut_by``)
        and which sentence (``cut_text``)."""
        if self.first_audio is None or (interrupted and self.first_audio >= end):
            return None
        extra: dict[str, Any] = dict(self.stats)
        if self.turn_end is not None:
            extra["latency_ms"] = round((self.first_audio - self.turn_end) * 1000 / self.rate, 1)
        if interrupted:
            extra["sent_text"] = self.full_text()
            extra.update({k: v for k, v in cut.items() if v})
        text = (self.heard_text() if heard is None else heard) if interrupted else self.full_text()
        return AssistantTurn(text, self.first_audio, end, interrupted, extra)


class Playout:
    """Speaks utterances on the call and records each once as an assistant turn.

    Args:
        io: the call transport (``play`` and ``mark``).
        tts: streaming text-to-speech.
        normalizer: text → speakable text, per sentence (the transcript keeps the original).
        record: called once per utterance that reached the caller, with its transcript turn.

    """

    def __init__(self, io: CallIO, tts: TextToSpeech, normalizer: Callable[[str], str],
                 record: Callable[[AssistantTurn], None], rate: int = SAMPLE_RATE) -> None:
        self.io = io
        self.rate = rate
        self.tts = tts
        self.normalizer = normalizer
        self._record = record
        self.active: list[Utterance] = []  # not yet recorded
        self._pending_marks: dict[str, Utterance] = {}
        self._ignored_marks: set[str] = set()  # flushed by a clear: their echoes prove nothing
        self._ids = itertools.count(1)

    def new(self, kind: str, turn_end: int | None = None) -> Utterance:
        utt = Utterance(next(self._ids), kind, turn_end, rate=self.rate)
        self.active.append(utt)
        return utt

    @property
    def marks_pending(self) -> bool:
        """Audio was sent whose marks have not echoed (the caller may not have heard it yet)."""
        return bool(self._pending_marks)

    # --- speaking ---------------------------------------------------------------------------
    async def speak(self, utt: Utterance, sentences: AsyncIterator[str], started: float) -> None:
        """Say each sentence as it comes (``started``: when it was asked for, for ``responder_ms``)."""
        async with contextlib.aclosing(sentences):  # type: ignore[type-var]
            async for sentence in sentences:
                utt.stats.setdefault("responder_ms", round((time.perf_counter() - started) * 1000, 1))
                await self._speak_sentence(utt, sentence)

    async def _speak_sentence(self, utt: Utterance, sentence: str) -> None:
        spoken = self.normalizer(sentence)
        if not spoken.strip():
            return
        t0 = time.perf_counter()
        span: tuple[int, int] | None = None
        tts_stream = self.tts.stream(spoken)
        async with contextlib.aclosing(tts_stream):  # type: ignore[type-var]
            async for chunk in tts_stream:
                if not chunk:
                    continue
                utt.stats.setdefault("tts_first_audio_ms", round((time.perf_counter() - t0) * 1000, 1))
                placed = await self._play(utt, chunk)
                if placed is not None:
                    span = placed if span is None else (span[0], placed[1])
        if span is None:
            return
        name = f"{utt.kind[0]}{utt.id}.{len(utt.sentences)}"
        utt.sentences.append(sentence)
        utt.spans.append(span)
        utt.marks.append(name)
        self._pending_marks[name] = utt
        await self.io.mark(name)

    async def _play(self, utt: Utterance, chunk: bytes) -> tuple[int, int] | None:
        placed = await self.io.play(chunk)
        if placed is not None:
            if utt.first_audio is None:
                utt.first_audio = placed[0]
            utt.end = placed[1]
        return placed

    # --- accounting -------------------------------------------------------------------------
    def on_mark(self, name: str) -> Utterance | None:
        """Mark ``name`` echoed: its sentence was heard. Returns its utterance (None: not ours, or flushed)."""
        if name in self._ignored_marks:
            self._ignored_marks.discard(name)
            return None
        utt = self._pending_marks.pop(name, None)
        if utt is not None:
            utt.echoed.add(name)
        return utt

    def finish(self, utt: Utterance) -> bool:
        """Record ``utt`` if it is done and every mark echoed; True when it was finished just now."""
        if not utt.done or utt.recorded or utt.pending():
            return False
        if utt.sentences:
            self._record_once(utt, interrupted=False, end=utt.end)
        elif utt in self.active:
            self.active.remove(utt)
        return True

    def interrupt(self, now: int, cut_by: str = "barge-in") -> list[str]:
        """Barge-in at stream sample ``now`` (nothing may play after it): record every utterance
        as interrupted with what was heard, ignore the echoes of the marks still pending, and
        return those marks (a clear must flush them). ``cut_by``: "barge-in", or "connection lost"
        (a browser's socket dropped: its playback stopped there)."""
        flushed = list(self._pending_marks)
        self._ignored_marks.update(flushed)
        self._pending_marks.clear()
        for utt in list(self.active):
            utt.ends_call = False
            utt.interrupted = True
            self._record_once(utt, interrupted=True, end=min(utt.end, now), cut_by=cut_by)
        return flushed

    def hang_up(self, now: int) -> None:
        """The call ended at stream sample ``now``: record what was played of each utterance."""
        for utt in list(self.active):
            if utt.first_audio is None:
                self.active.remove(utt)
                continue
            if now >= utt.end:  # everything sent was played before the hang-up
                utt.assume_heard()
                self._record_once(utt, interrupted=False, end=utt.end)
                continue
            heard, cut = utt.played_by(now)
            self._record_once(utt, interrupted=True, end=min(utt.end, now), heard=heard, cut_by="hangup", cut_text=cut)

    def _record_once(self, utt: Utterance, *, interrupted: bool, end: int, heard: str | None = None,
                     **cut: str) -> None:
        """Record ``utt`` once (see :meth:`Utterance.as_turn`) and forget it."""
        if utt in self.active:
            self.active.remove(utt)
        if utt.recorded:
            return
        utt.recorded = True
        turn = utt.as_turn(interrupted=interrupted, end=end, heard=heard, **cut)
        if turn is not None:
            self._record(turn)
