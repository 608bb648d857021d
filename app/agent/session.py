"""AgentSession: the turn loop of one call — listen, transcribe, respond, speak, yield to barge-in.

Transport-agnostic: it talks to the call only through :class:`~app.agent.interfaces.CallIO`
(implemented by the WebSocket shell) and never imports FastAPI, Twilio JSON or the recorder.
It glues two parts: :class:`~app.agent.turns.TurnCollector` (caller audio → transcribed turns,
and the tail left at hang-up) and :class:`~app.agent.playout.Playout` (replies → audio and marks,
and what was heard of them). This module holds the conversation: the greeting, answering,
the history of heard text, barge-in, and hanging up after a goodbye.

Flow::

    feed_caller_audio (sync, per 20 ms frame) → TurnCollector (detector) ──TurnEnded──▶ queue
    _run_turns: TurnCollector.next() (STT off loop) → add caller turn → Responder.reply → _speak task
    _speak: Playout.speak: each sentence → normalise → TTS chunks → io.play → io.mark(<unique name>)
    on_mark(name): the sentence was heard; when a reply's last mark echoes, the assistant turn
                   is recorded (and, for a goodbye reply, the call is hung up)

Time: every start/end in ``add_turn`` is an integer sample index on the call's stream clock
(caller turns: the detector's; assistant turns: where ``io.play`` placed the audio).

Hang-up: ``aclose()`` records what was heard of a reply still playing (see playout.py) and keeps
the caller turns not yet transcribed for ``transcribe_tail()`` (see turns.py), which runs after
the audio file is written.

Barge-in (``barge_in=True``): when the caller has been speaking for ``min_barge_in_ms`` while
the assistant still has unplayed audio (marks pending) or a reply in the making, the session
cancels the reply (responder and TTS), sends ``clear``, and records the assistant turn as
interrupted with the sentences heard before the clear. The history given to the responder
afterwards holds only the heard sentences. A goodbye reply that is interrupted does not hang up.

Consecutive caller turns that arrive before the assistant answers (the caller paused, then went
on) are answered together: each is its own transcript turn, the responder gets their text
joined. Empty transcriptions make no turn.

Turn extras passed to ``io.add_turn``: ``index`` (position in the conversation); caller turns
``stt_ms`` (``at_hangup`` for the tail), ``end_of_turn_ms`` (the silence that ended the turn, when
its words decided it: see ``end_of_turn.py``); assistant turns ``latency_ms`` (stream ms from the end
of the caller's speech to the first reply audio's placement — includes the end-of-turn silence),
``stt_ms``, ``responder_ms`` (wall ms from asking the responder to its first sentence),
``tts_first_audio_ms`` (wall ms from that sentence to its first audio), and, when interrupted,
``sent_text``, ``cut_by`` and ``cut_text``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import numpy as np

from app.agent.end_of_turn import EndOfTurnPolicy
from app.agent.interfaces import CallIO, Message, Responder, SpeechToText, TextToSpeech, TurnCallback
from app.agent.normalize import normalize_for_speech
from app.agent.playout import AssistantTurn, Playout, Utterance
from app.agent.sentences import split_sentences
from app.agent.turns import CallerQuiet, TurnCollector
from app.agent.vad import SAMPLE_RATE, TurnDetector, VadEvent

__all__ = ["AgentSession"]

log = logging.getLogger(__name__)

class AgentSession:
    """The per-call turn loop.

    Args:
        io: the call transport.
        stt: speech-to-text for whole caller turns.
        tts: streaming text-to-speech (PCM16 at the call's rate).
        responder: what to say; one instance per call.
        detector: turn detector fed with the caller's frames.
        barge_in: let the caller interrupt the assistant.
        min_barge_in_ms: how long the caller must have been speaking before the assistant yields.
        normalizer: text → speakable text, applied per sentence before TTS (transcripts keep the original).
        on_turn: optional ``(role, index, text, start, end, interrupted)`` callback (samples), called
            once per final turn, for embedders (no audio is copied).
        hangup_grace_s: after a goodbye, hang up this long past the expected end of playback even
            if the last mark never echoes.
        rate: the call's samples per second (its stream clock, the caller's audio, the voice).
        end_of_turn: the end of turn from the words (see ``end_of_turn.py``); None: the detector's
            ``stop_ms`` of silence ends every turn.

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
        rate: int = SAMPLE_RATE,
        end_of_turn: EndOfTurnPolicy | None = None,
    ) -> None:
        self.io = io
        self.rate = rate
        self.responder = responder
        self.barge_in = barge_in
        self.min_barge_in_ms = min_barge_in_ms
        self.on_turn = on_turn
        self.hangup_grace_s = hangup_grace_s
        self.turns = TurnCollector(detector, stt, end_of_turn)
        self.turns.on_events = self.on_vad_events  # held frames released after a pause's words are judged
        self.playout = Playout(io, tts, normalizer, self._record_assistant, rate)

        self._history: list[Message | Utterance] = []
        self._turn_index = 0
        self._unanswered: list[str] = []
        self._unanswered_end: int | None = None
        self._unanswered_stt_ms = 0.0
        self._barged_for: int | None = None
        self._worker: asyncio.Task[None] | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._hangup_timer: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
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
        """One inbound frame (int16 at the call's rate) starting at stream sample ``start_sample``. Cheap, sync."""
        if self._closed:
            return
        self.on_vad_events(self.turns.feed(samples, start_sample), start_sample + len(samples))

    def detect(self, audio: np.ndarray, start_sample: int) -> list[VadEvent]:
        """Run the turn detector over recorded audio (catching up); thread-safe while not live."""
        return self.turns.detect(audio, start_sample, self.rate // 50)

    def on_vad_events(self, events: list[VadEvent], now_sample: int) -> None:
        """React to the detector's events for audio up to ``now_sample``."""
        self.turns.take(events)
        self._check_barge_in(now_sample)

    # --- turns the client reports (a browser's StartSpeaking / StopSpeaking) ------------------
    def caller_started(self) -> None:
        """The client heard the caller start: it stopped playing our audio at once, so whatever
        is playing or being made is cut now (no minimum speech: the client's detector decided)."""
        if self._closed:
            return
        replying = self._reply_task is not None and not self._reply_task.done()
        if self.playout.marks_pending or replying:
            self._spawn(self._interrupt())

    def caller_stopped(self) -> None:
        """The client heard the caller stop: the turn ends here. If our detector heard no speech
        in it (noise the client took for speech), nothing will answer: the client is told so."""
        if self._closed:
            return
        if not self.turns.end_turn(self.io.stream_sample()):
            self.io.no_reply()

    def connection_lost(self, cut_by: str = "connection lost") -> None:
        """The client stopped playing without the caller speaking (its socket dropped, or it
        paused): what was not heard is cut, recorded as cut by ``cut_by`` (no barge-in)."""
        if self._closed:
            return
        replying = self._reply_task is not None and not self._reply_task.done()
        if self.playout.marks_pending or replying:
            self._spawn(self._interrupt(cut_by))

    def on_mark(self, name: str) -> None:
        """Twilio echoed mark ``name``."""
        utt = self.playout.on_mark(name)
        if utt is not None:
            self._maybe_finish(utt)

    def on_dtmf(self, digit: str) -> None:
        """The caller pressed a key; the responder may note it."""
        self.responder.on_dtmf(digit)

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
        self.turns.close(now)
        self.playout.hang_up(now)

    @property
    def tail_pending(self) -> int:
        """Caller turns left to transcribe after hang-up."""
        return self.turns.tail_pending

    async def transcribe_tail(self) -> None:
        """Transcribe the caller turns the hang-up left pending (after the audio file is written)."""
        async for turn in self.turns.transcribe_tail():
            self._add_turn("caller", turn.text, turn.start, turn.end, False, at_hangup=True)

    # --- turns ------------------------------------------------------------------------------
    async def _run_turns(self) -> None:
        while True:
            turn = await self.turns.next()
            if isinstance(turn, CallerQuiet):
                if self._unanswered and not self.turns.more_coming():
                    await self._answer()
                continue
            if turn.text:
                extra = {} if turn.wait_ms is None else {"end_of_turn_ms": turn.wait_ms}
                self._add_turn("caller", turn.text, turn.start, turn.end, False, stt_ms=round(turn.stt_ms, 1), **extra)
                self._unanswered.append(turn.text)
                self._unanswered_end = turn.end
                self._unanswered_stt_ms = turn.stt_ms
            if not self._unanswered:
                self.io.no_reply()  # nothing intelligible: no answer is coming
                continue
            if self.turns.more_coming():
                self.turns.wait_for_quiet()  # the caller went on talking: answer everything together
                continue
            await self._answer()

    async def _answer(self) -> None:
        caller_text = " ".join(self._unanswered)
        self._unanswered.clear()
        self.turns.stop_waiting()
        if self._reply_task is not None and not self._reply_task.done():
            await asyncio.wait([self._reply_task])  # only without barge-in: let the last reply finish
        history = self.history()
        self._history.append(Message("caller", caller_text))
        utt = self._new_utterance("reply", turn_end=self._unanswered_end)
        utt.stats["stt_ms"] = round(self._unanswered_stt_ms, 1)
        started = time.perf_counter()
        self._reply_task = asyncio.create_task(self._speak(utt, self.responder.reply(history, caller_text), started))
        await asyncio.wait([self._reply_task])

    # --- speaking ---------------------------------------------------------------------------
    def _new_utterance(self, kind: str, turn_end: int | None = None) -> Utterance:
        utt = self.playout.new(kind, turn_end)
        self._history.append(utt)
        return utt

    async def _speak(self, utt: Utterance, sentences: AsyncIterator[str], started: float) -> None:
        try:
            await self.playout.speak(utt, sentences, started)
            utt.ends_call = utt.kind == "reply" and self.responder.ends_call
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reply failed; keeping what was already said", extra={"utterance": utt.id})
        if utt.first_audio is None:
            self.io.no_reply()  # the reply said nothing (or failed before its first audio)
        utt.done = True
        self._maybe_finish(utt)

    def _maybe_finish(self, utt: Utterance) -> None:
        if self.playout.finish(utt):
            if utt.ends_call:
                self._hangup()
        elif utt.done and utt.ends_call and not utt.recorded and self._hangup_timer is None:
            wait_s = max(0, utt.end - self.io.stream_sample()) / self.rate + self.hangup_grace_s
            self._hangup_timer = self._spawn(self._hangup_later(wait_s))

    # --- barge-in ---------------------------------------------------------------------------
    def _check_barge_in(self, now_sample: int) -> None:
        start = self.turns.detector.speech_start_sample
        if not self.barge_in or start is None or start == self._barged_for:
            return
        if (now_sample - start) * 1000 / self.rate < self.min_barge_in_ms:
            return
        replying = self._reply_task is not None and not self._reply_task.done()
        if not (self.playout.marks_pending or replying):
            return
        self._barged_for = start
        self._spawn(self._interrupt())

    async def _interrupt(self, cut_by: str = "barge-in") -> None:
        task = self._reply_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])  # no audio or mark may follow our clear
        if self._hangup_timer is not None:
            self._hangup_timer.cancel()
            self._hangup_timer = None
        # From here to io.clear() nothing awaits: the snapshot is what the caller heard.
        now = self.io.stream_sample()
        if cut_by == "barge-in":
            self.barge_ins += 1
        flushed = self.playout.interrupt(now, cut_by)
        log.info(cut_by, extra={"flushed_marks": len(flushed), "stream_sample": now})
        if flushed:
            await self.io.clear(now)  # the cut where the snapshot was taken (a wall clock moves on)

    # --- recording --------------------------------------------------------------------------
    def _record_assistant(self, turn: AssistantTurn) -> None:
        self._add_turn("assistant", turn.text, turn.start, turn.end, turn.interrupted, **turn.extra)

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
        for utt in list(self.playout.active):
            if utt.ends_call:
                utt.assume_heard()
                self._maybe_finish(utt)
        self._hangup()

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
