"""AgentSession: the turn loop of one call — listen, transcribe, respond, speak, yield to barge-in.

Transport-agnostic: it talks to the call only through :class:`~app.agent.interfaces.CallIO`
(implemented by the WebSocket shell) and never imports FastAPI, Twilio JSON or the recorder.

Flow::

    feed_caller_audio (sync, per 20 ms frame) → TurnDetector ──TurnEnded──▶ queue
    worker task: queue → STT (off loop) → add caller turn → Responder.reply → _speak task
    _speak: each sentence → normalise → TTS chunks → io.play → io.mark(<unique name>)
    on_mark(name): the sentence was heard; when a reply's last mark echoes, the assistant turn
                   is recorded (and, for a goodbye reply, the call is hung up)

Time: every start/end in ``add_turn`` is an integer sample index on the call's stream clock.
Caller turns are the detector's sample indices; assistant audio sits where ``io.play`` says it
was placed (the recorder owns playback time: ``max(end of audio already queued, now)``), so each
sentence has an exact span. Turn taking runs on the stream's samples, never on the wall clock:
a replay at any speed, a burst after a network stall and a live call give the same caller turns.

Hang-up: the recording is cut at the stream's last moment (as a clear would), and a reply that
was still playing is recorded with the sentences played in full; the one the hang-up cut is kept
apart (``cut_text``, ``cut_by="hangup"``; not a barge-in). Caller turns not yet transcribed at
hang-up (the pending turn, or a backlog after a fast replay) are handed back by ``aclose()`` and
transcribed by ``transcribe_tail()`` after the audio file is written.

Barge-in (``barge_in=True``): when the caller has been speaking for ``min_barge_in_ms`` while
the assistant still has unplayed audio (marks pending) or a reply in the making, the session
cancels the reply (responder and TTS), sends ``clear``, and records the assistant turn as
interrupted. **Granularity is the sentence**: a sentence counts as heard only if its mark
echoed *before* the clear; echoes that Twilio sends for marks flushed by the clear are not
proof of playback and are ignored. The history given to the responder afterwards holds only
the heard sentences. A partly played sentence is not in the text (the recorder has its audio):
a reply cut during its first sentence is recorded with empty text, and one cut before any of
its audio played is not recorded at all. A goodbye reply that is interrupted does not hang up.

Consecutive caller turns that arrive before the assistant answers (the caller paused, then went
on) are answered together: each is its own transcript turn, the responder gets their text
joined. Empty transcriptions make no turn.

Turn extras passed to ``io.add_turn``: ``index`` (position in the conversation); caller turns
``stt_ms``; assistant turns ``latency_ms`` (stream ms from the end of the caller's speech to the
first reply audio's placement — includes the end-of-turn silence), ``stt_ms``, ``responder_ms``
(wall ms from asking the responder to its first sentence), ``tts_first_audio_ms`` (wall ms from
that sentence to its first audio), and ``sent_text`` when interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.agent.interfaces import CallIO, Message, Responder, SpeechToText, TextToSpeech, TurnCallback
from app.agent.normalize import normalize_for_speech
from app.agent.sentences import split_sentences
from app.agent.vad import SAMPLE_RATE, SpeechPaused, TurnDetector, TurnEnded, TurnState

__all__ = ["AgentSession"]

log = logging.getLogger(__name__)

_FLUSH = object()  # queue item: "the caller stopped without another turn; answer what is pending"


@dataclass
class _Utterance:
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

    def pending(self) -> list[str]:
        return [m for m in self.marks if m not in self.echoed]

    def full_text(self) -> str:
        return " ".join(self.sentences)

    def heard_text(self) -> str:
        return " ".join(s for s, m in zip(self.sentences, self.marks, strict=True) if m in self.echoed)

    def played_by(self, now: int) -> tuple[str, str]:
        """(sentences whose audio ended by ``now``, the sentence ``now`` falls inside or "")."""
        full = [s for s, (_, b) in zip(self.sentences, self.spans, strict=True) if b <= now]
        cut = next((s for s, (a, b) in zip(self.sentences, self.spans, strict=True) if a < now < b), "")
        return " ".join(full), cut


class AgentSession:
    """The per-call turn loop.

    Args:
        io: the call transport.
        stt: speech-to-text for whole caller turns.
        tts: streaming text-to-speech (8 kHz μ-law).
        responder: what to say; one instance per call.
        detector: turn detector fed with the caller's frames.
        barge_in: let the caller interrupt the assistant.
        min_barge_in_ms: how long the caller must have been speaking before the assistant yields.
        normalizer: text → speakable text, applied per sentence before TTS (transcripts keep the original).
        on_turn: optional ``(role, index, text, start, end, interrupted)`` callback (samples), called
            once per final turn, for embedders (no audio is copied).
        hangup_grace_s: after a goodbye, hang up this long past the expected end of playback even
            if the last mark never echoes.

    """

    def __init__(
        self,
        io: CallIO,
        stt: SpeechToText,
        tts: TextToSpeech,
        responder: Responder,
        detector: TurnDetector,
        *,
        barge_in: bool = True,
        min_barge_in_ms: float = 300.0,
        normalizer: Callable[[str], str] = normalize_for_speech,
        on_turn: TurnCallback | None = None,
        hangup_grace_s: float = 5.0,
    ) -> None:
        self.io = io
        self.stt = stt
        self.tts = tts
        self.responder = responder
        self.detector = detector
        self.barge_in = barge_in
        self.min_barge_in_ms = min_barge_in_ms
        self.normalizer = normalizer
        self.on_turn = on_turn
        self.hangup_grace_s = hangup_grace_s

        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._history: list[Message | _Utterance] = []
        self._active: list[_Utterance] = []  # assistant turns not yet recorded
        self._pending_marks: dict[str, _Utterance] = {}
        self._ignored_marks: set[str] = set()  # flushed by a clear: their echoes prove nothing
        self._ids = itertools.count(1)
        self._turn_index = 0
        self._unanswered: list[str] = []
        self._unanswered_end: int | None = None
        self._unanswered_stt_ms = 0.0
        self._awaiting_more = False
        self._barged_for: int | None = None
        self._worker: asyncio.Task[None] | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._hangup_timer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._speculative: tuple[tuple[int, int], asyncio.Future[str]] | None = None
        # Caller turns detected but not yet in the transcript, with their STT task once started.
        self._untranscribed: dict[tuple[int, int], tuple[TurnEnded, asyncio.Future[str] | None]] = {}
        self._tail: list[tuple[TurnEnded, asyncio.Future[str] | None]] = []
        self._closed = False
        self.hung_up = False
        self.barge_ins = 0

    # --- public API -------------------------------------------------------------------------
    async def start(self) -> None:
        """Start listening and speak the greeting (returns once it is under way)."""
        self._worker = asyncio.create_task(self._run_turns(), name="agent-turns")
        utt = self._new_utterance("greeting")
        sentences = split_sentences(self.responder.greeting())
        self._reply_task = asyncio.create_task(self._speak(utt, _aiter(sentences), time.perf_counter()))

    def feed_caller_audio(self, samples: np.ndarray, start_sample: int) -> None:
        """One inbound frame (int16, 8 kHz) starting at stream sample ``start_sample``. Cheap, sync."""
        if self._closed:
            return
        self.on_vad_events(self.detector.feed(samples, start_sample), start_sample + len(samples))

    def detect(self, audio: np.ndarray, start_sample: int, frame: int = 160) -> list[Any]:
        """Run the turn detector over recorded audio (catching up); thread-safe while not live."""
        events: list[Any] = []
        for i in range(0, len(audio), frame):
            events += self.detector.feed(audio[i:i + frame], start_sample + i)
        return events

    def on_vad_events(self, events: list[Any], now_sample: int) -> None:
        """React to the detector's events for audio up to ``now_sample``."""
        ended = False
        for ev in events:
            if isinstance(ev, SpeechPaused):
                # Transcribe during the end-of-turn silence; reused if the turn ends right here.
                self._speculative = ((ev.start_sample, ev.end_sample), self._transcribe(ev.audio))
            if isinstance(ev, TurnEnded):
                self._untranscribed[(ev.start_sample, ev.end_sample)] = (ev, None)
                self._queue.put_nowait(ev)
                ended = True
        self._check_barge_in(now_sample)
        if self._awaiting_more and not ended and self.detector.state is TurnState.QUIET:
            self._awaiting_more = False
            self._queue.put_nowait(_FLUSH)

    def on_mark(self, name: str) -> None:
        """Twilio echoed mark ``name``."""
        if name in self._ignored_marks:
            self._ignored_marks.discard(name)
            return
        utt = self._pending_marks.pop(name, None)
        if utt is None:
            return
        utt.echoed.add(name)
        self._maybe_finish(utt)

    def on_dtmf(self, digit: str) -> None:
        """The caller pressed a key; the responder may note it."""
        handler = getattr(self.responder, "on_dtmf", None)
        if handler is not None:
            handler(digit)

    def history(self) -> list[Message]:
        """The conversation as the responder sees it: heard text only."""
        out: list[Message] = []
        for item in self._history:
            if isinstance(item, Message):
                out.append(item)
            else:
                text = item.heard_text() if item.interrupted else item.full_text()
                if text:
                    out.append(Message("assistant", text))
        return out

    async def aclose(self) -> None:
        """Stop everything (the call is over); record what was heard of an unfinished reply.

        The recording was cut at ``io.stream_sample()`` (the stream's last moment): a reply still
        playing keeps the sentences played in full, and the one the hang-up cut is kept apart. The
        caller's pending turn and any turn not yet transcribed are kept for ``transcribe_tail()``.
        """
        if self._closed:
            return
        self._closed = True
        tasks = [t for t in (self._worker, self._reply_task, self._hangup_timer, *self._tasks) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        now = self.io.stream_sample()
        for ev in self.detector.flush(now):
            self._untranscribed[(ev.start_sample, ev.end_sample)] = (ev, None)
        self._tail = sorted(self._untranscribed.values(), key=lambda item: item[0].start_sample)
        self._untranscribed.clear()
        for utt in list(self._active):
            if utt.first_audio is None:
                self._active.remove(utt)
                continue
            if now >= utt.end:  # everything sent was played before the hang-up
                utt.echoed.update(utt.marks)
                self._record_assistant(utt, interrupted=False, end=utt.end)
                continue
            heard, cut = utt.played_by(now)
            self._record_assistant(utt, interrupted=True, end=min(utt.end, now), heard=heard,
                                   cut_by="hangup", cut_text=cut)

    @property
    def tail_pending(self) -> int:
        """Caller turns left to transcribe after hang-up."""
        return len(self._tail)

    async def transcribe_tail(self) -> None:
        """Transcribe the caller turns the hang-up left pending (after the audio file is written)."""
        tail, self._tail = self._tail, []
        for turn, task in tail:
            try:
                text = (await (task if task is not None else self.stt.transcribe(turn.audio))).strip()
            except Exception:
                log.exception("speech-to-text failed at hang-up; turn dropped")
                continue
            if text:
                self._add_turn("caller", text, turn.start_sample, turn.end_sample, False, at_hangup=True)

    # --- turns ------------------------------------------------------------------------------
    async def _run_turns(self) -> None:
        while True:
            item = await self._queue.get()
            if item is _FLUSH:
                if self._unanswered and self._queue.empty() and not self._caller_speaking():
                    await self._answer()
                continue
            turn: TurnEnded = item
            t0 = time.perf_counter()
            key = (turn.start_sample, turn.end_sample)
            spec, self._speculative = self._speculative, None
            if spec is not None and spec[0] == key:
                task = spec[1]  # usually finished already: stt_ms is what was left
            else:
                task = self._transcribe(turn.audio)
            self._untranscribed[key] = (turn, task)
            try:
                # Shielded: a hang-up now cancels this worker, not the transcription it waits for.
                text = (await asyncio.shield(task)).strip()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("speech-to-text failed; turn dropped")
                text = ""
            self._untranscribed.pop(key, None)
            stt_ms = (time.perf_counter() - t0) * 1000
            if text:
                self._add_turn("caller", text, turn.start_sample, turn.end_sample, False, stt_ms=round(stt_ms, 1))
                self._unanswered.append(text)
                self._unanswered_end = turn.end_sample
                self._unanswered_stt_ms = stt_ms
            if not self._unanswered:
                continue
            if not self._queue.empty() or self._caller_speaking():
                self._awaiting_more = True  # the caller went on talking: answer everything together
                continue
            await self._answer()

    async def _answer(self) -> None:
        caller_text = " ".join(self._unanswered)
        self._unanswered.clear()
        self._awaiting_more = False
        if self._reply_task is not None and not self._reply_task.done():
            await asyncio.wait([self._reply_task])  # only without barge-in: let the last reply finish
        history = self.history()
        self._history.append(Message("caller", caller_text))
        utt = self._new_utterance("reply", turn_end=self._unanswered_end)
        utt.stats["stt_ms"] = round(self._unanswered_stt_ms, 1)
        started = time.perf_counter()
        self._reply_task = asyncio.create_task(self._speak(utt, self.responder.reply(history, caller_text), started))
        await asyncio.wait([self._reply_task])

    def _caller_speaking(self) -> bool:
        return self.detector.state in (TurnState.SPEAKING, TurnState.STOPPING)

    # --- speaking ---------------------------------------------------------------------------
    def _new_utterance(self, kind: str, turn_end: int | None = None) -> _Utterance:
        utt = _Utterance(next(self._ids), kind, turn_end)
        self._active.append(utt)
        self._history.append(utt)
        return utt

    async def _speak(self, utt: _Utterance, sentences: AsyncIterator[str], started: float) -> None:
        try:
            async with contextlib.aclosing(sentences):  # type: ignore[type-var]
                async for sentence in sentences:
                    utt.stats.setdefault("responder_ms", round((time.perf_counter() - started) * 1000, 1))
                    await self._speak_sentence(utt, sentence)
            utt.ends_call = utt.kind == "reply" and bool(getattr(self.responder, "ends_call", False))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reply failed; keeping what was already said", extra={"utterance": utt.id})
        utt.done = True
        self._maybe_finish(utt)

    async def _speak_sentence(self, utt: _Utterance, sentence: str) -> None:
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

    async def _play(self, utt: _Utterance, chunk: bytes) -> tuple[int, int] | None:
        placed = await self.io.play(chunk)
        if placed is not None:
            if utt.first_audio is None:
                utt.first_audio = placed[0]
            utt.end = placed[1]
        return placed

    def _maybe_finish(self, utt: _Utterance) -> None:
        if not utt.done or utt.recorded or utt.pending():
            if utt.done and utt.ends_call and not utt.recorded and self._hangup_timer is None:
                wait_s = max(0, utt.end - self.io.stream_sample()) / SAMPLE_RATE + self.hangup_grace_s
                self._hangup_timer = self._spawn(self._hangup_later(wait_s))
            return
        if utt.sentences:
            self._record_assistant(utt, interrupted=False, end=utt.end)
        elif utt in self._active:
            self._active.remove(utt)
        if utt.ends_call:
            self._hangup()

    # --- barge-in ---------------------------------------------------------------------------
    def _check_barge_in(self, now_sample: int) -> None:
        start = self.detector.speech_start_sample
        if not self.barge_in or start is None or start == self._barged_for:
            return
        if (now_sample - start) / 8 < self.min_barge_in_ms:
            return
        replying = self._reply_task is not None and not self._reply_task.done()
        if not (self._pending_marks or replying):
            return
        self._barged_for = start
        self._spawn(self._interrupt())

    async def _interrupt(self) -> None:
        task = self._reply_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])  # no audio or mark may follow our clear
        if self._hangup_timer is not None:
            self._hangup_timer.cancel()
            self._hangup_timer = None
        # From here to io.clear() nothing awaits: the snapshot is what the caller heard.
        flushed = list(self._pending_marks)
        self._ignored_marks.update(flushed)
        self._pending_marks.clear()
        now = self.io.stream_sample()
        self.barge_ins += 1
        log.info("barge-in", extra={"flushed_marks": len(flushed), "stream_sample": now})
        for utt in list(self._active):
            utt.ends_call = False
            utt.interrupted = True
            self._record_assistant(utt, interrupted=True, end=min(utt.end, now), cut_by="barge-in")
        if flushed:
            await self.io.clear()

    # --- recording --------------------------------------------------------------------------
    def _record_assistant(self, utt: _Utterance, *, interrupted: bool, end: int, heard: str | None = None,
                          **cut: str) -> None:
        """Record one assistant turn. Interrupted: ``heard`` (default: the sentences whose marks
        echoed before the cut) is the text; ``cut`` says by what (``cut_by``) and which sentence."""
        if utt in self._active:
            self._active.remove(utt)
        if utt.recorded:
            return
        utt.recorded = True
        if utt.first_audio is None or (interrupted and utt.first_audio >= end):
            return  # nothing reached the caller
        extra: dict[str, Any] = dict(utt.stats)
        if utt.turn_end is not None:
            extra["latency_ms"] = round((utt.first_audio - utt.turn_end) * 1000 / SAMPLE_RATE, 1)
        if interrupted:
            extra["sent_text"] = utt.full_text()
            extra.update({k: v for k, v in cut.items() if v})
        text = (utt.heard_text() if heard is None else heard) if interrupted else utt.full_text()
        self._add_turn("assistant", text, utt.first_audio, end, interrupted, **extra)

    def _add_turn(self, role: str, text: str, start: int, end: int, interrupted: bool, **extra: Any) -> None:
        index = self._turn_index
        self._turn_index += 1
        try:
            self.io.add_turn(role, text, start, end, interrupted=interrupted, index=index, **extra)
        except Exception:
            log.exception("add_turn failed", extra={"role": role, "index": index})
        if self.on_turn is not None:
            try:
                self.on_turn(role, index, text, start, end, interrupted)
            except Exception:
                log.exception("on_turn callback failed", extra={"role": role, "index": index})

    # --- ending -----------------------------------------------------------------------------
    def _hangup(self) -> None:
        if self.hung_up or self._closed:
            return
        self.hung_up = True
        if self._hangup_timer is not None and self._hangup_timer is not asyncio.current_task():
            self._hangup_timer.cancel()
        self._spawn(self.io.hangup())

    async def _hangup_later(self, wait_s: float) -> None:
        await asyncio.sleep(wait_s)
        self._hangup_timer = None
        log.warning("goodbye played but its last mark never echoed; hanging up")
        for utt in list(self._active):
            if utt.ends_call:
                utt.echoed.update(utt.marks)
                self._maybe_finish(utt)
        self._hangup()

    def _transcribe(self, audio: np.ndarray) -> asyncio.Future[str]:
        """Start speech-to-text for one turn. Not cancelled by a hang-up: the tail reuses it."""
        fut = asyncio.ensure_future(self.stt.transcribe(audio))
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # a failure is logged where it is awaited
        return fut

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("agent task failed", exc_info=task.exception())


async def _aiter(items: list[str]) -> AsyncIterator[str]:
    for item in items:
        yield item
