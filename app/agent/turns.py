"""Caller turns: from the caller's audio to transcribed turns, in order, with none lost at hang-up.

Owns what lies between the turn detector and a caller line in the transcript:

- feeding the :class:`~app.agent.vad.TurnDetector` (live, frame by frame, or catching up on
  recorded audio);
- speculative speech-to-text: a ``SpeechPaused`` starts transcribing during the end-of-turn
  silence, and the ``TurnEnded`` with the same span reuses that text instead of starting again;
- the end of turn from the words (with an :class:`~app.agent.end_of_turn.EndOfTurnPolicy`): the
  speculative text decides how much silence ends this pause's turn (short after a finished
  sentence, long after "and", "so", "my number is"). While it is being transcribed, the frames
  that follow are held back from the detector (at most ``max_hold_ms`` of them), then fed
  through it once the wait is decided: the turn ends at the same stream sample whether the call
  is live or replayed at any speed, and no turn ends before its words were judged;
- the queue of ended turns, read one at a time by the conversation loop (:meth:`next`), and a
  ``QUIET`` marker it may ask for when the caller falls quiet without ending another turn;
- the turns detected but not yet in the transcript, with their speech-to-text task once started.
  At hang-up (:meth:`close`) the detector's turn in progress joins them and they become the
  *tail*, transcribed by :meth:`transcribe_tail` after the audio file is written, reusing any
  transcription already under way (a hang-up never cancels one).

Time: turns are placed by the detector in integer stream samples, never on the wall clock: a
replay at any speed, a burst after a network stall and a live call give the same caller turns
(with the policy, as long as a pause's transcription takes less than ``max_hold_ms`` of audio to
arrive; past that the pause waits ``default_ms`` and the frames go on to the detector).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import numpy as np

from app.agent.end_of_turn import EndOfTurnPolicy
from app.agent.interfaces import SpeechToText
from app.agent.vad import SpeechPaused, TurnDetector, TurnEnded, TurnState, VadEvent

__all__ = ["QUIET", "CallerQuiet", "CallerTurn", "TurnCollector"]

log = logging.getLogger(__name__)

Span = tuple[int, int]  # a turn's [start, end) in stream samples


@dataclass(frozen=True)
class CallerTurn:
    """One ended caller turn and its text (``""``: nothing intelligible, so no transcript line)."""

    start: int  # stream samples
    end: int
    text: str
    stt_ms: float = 0.0  # wall ms spent waiting for the text after the turn ended (0 for the tail)
    wait_ms: int | None = None  # the silence that ended it, when its words decided it (end_of_turn.py)


@dataclass(frozen=True)
class CallerQuiet:
    """The caller fell quiet without ending another turn (queued after :meth:`TurnCollector.wait_for_quiet`)."""


QUIET = CallerQuiet()


class TurnCollector:
    """One call's caller turns, from detector events to text.

    Args:
        detector: the call's turn detector (stateful, one per call).
        stt: speech-to-text for whole caller turns.
        policy: the end of turn from the words (None, or a fixed one: the detector's ``stop_ms``
            ends every turn, and no frame is ever held back).
        max_hold_ms: the most caller audio held back from the detector while a pause's words are
            transcribed (then the pause waits ``policy.default_ms``, and the frames go on).

    """

    def __init__(self, detector: TurnDetector, stt: SpeechToText, policy: EndOfTurnPolicy | None = None,
                 max_hold_ms: int = 1000) -> None:
        self.detector = detector
        self.stt = stt
        self.policy = policy if policy is not None and not policy.fixed else None
        self.on_events: Callable[[list[VadEvent], int], None] | None = None
        """Who hears the detector's events for held frames released later (the session; default :meth:`take`)."""
        self._max_hold = max_hold_ms * detector._ms
        self._hold: Span | None = None  # the pause whose words are being judged; frames wait meanwhile
        self._held: list[tuple[np.ndarray, int]] = []
        self._held_n = 0
        self.decisions: list[tuple[str, int]] = []  # (text, wait ms) per judged pause, for tests and stats
        self._waits: dict[Span, int] = {}  # the wait decided for the pause a turn may end in
        self._live = False  # frames come through feed() on the event loop (not detect() in a thread)
        self._queue: asyncio.Queue[TurnEnded | CallerQuiet] = asyncio.Queue()
        self._speculative: tuple[Span, asyncio.Future[str]] | None = None
        self._untranscribed: dict[Span, tuple[TurnEnded, asyncio.Future[str] | None]] = {}
        self._tail: list[tuple[TurnEnded, asyncio.Future[str] | None]] = []
        self._wants_quiet = False

    # --- detection --------------------------------------------------------------------------
    def feed(self, samples: np.ndarray, start_sample: int) -> list[VadEvent]:
        """One live frame through the detector; hand its events to :meth:`take`. While a pause's
        words are judged the frame is held back (no events now; they come through ``on_events``)."""
        self._live = True
        if self._hold is not None:
            self._held.append((np.array(samples, np.int16), start_sample))
            self._held_n += len(samples)
            if self._held_n >= self._max_hold:  # speech-to-text is too slow: stop waiting for it
                self._release(None)
            return []
        return self.detector.feed(samples, start_sample)

    def detect(self, audio: np.ndarray, start_sample: int, frame: int = 160) -> list[VadEvent]:
        """Run the detector over recorded audio (catching up); thread-safe while not live. Pauses
        found here are not judged (the detector must not be touched from the loop meanwhile)."""
        events: list[VadEvent] = []
        for i in range(0, len(audio), frame):
            events += self.detector.feed(audio[i:i + frame], start_sample + i)
        return events

    def take(self, events: list[VadEvent]) -> None:
        """React to the detector's events: transcribe a pause speculatively, queue ended turns."""
        ended = False
        for ev in events:
            if isinstance(ev, SpeechPaused):
                # Transcribe during the end-of-turn silence; reused if the turn ends right here.
                span = (ev.start_sample, ev.end_sample)
                fut = self._transcribe(ev.audio)
                self._speculative = (span, fut)
                if self.policy is not None and self._live and self._hold is None and self.detector.pause_span == span:
                    self._hold = span  # the next frames wait for the words
                    asked = time.perf_counter()
                    fut.add_done_callback(lambda f, span=span, asked=asked: self._judged(span, f, asked))
            if isinstance(ev, TurnEnded):
                self._untranscribed[(ev.start_sample, ev.end_sample)] = (ev, None)
                self._queue.put_nowait(ev)
                ended = True
        if self._wants_quiet and not ended and self.detector.state is TurnState.QUIET:
            self._wants_quiet = False
            self._queue.put_nowait(QUIET)

    # --- the end of turn from the words ------------------------------------------------------
    def _judged(self, span: Span, fut: asyncio.Future[str], asked: float) -> None:
        """The words of the pause ``span`` are known: decide its wait, release the held frames."""
        if fut.cancelled() or fut.exception() is not None:
            text = None
        else:
            text = fut.result()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("pause judged in %.0f ms (%d ms of audio held): %r → wait %s ms",
                      (time.perf_counter() - asked) * 1000, self._held_n // self.detector._ms, text,
                      self.policy.wait_ms(text) if self.policy else None)
        if self._hold == span:
            self._release(text)
        elif text is not None and self.policy is not None and self._live and self.detector.pause_span == span:
            # Late (the hold gave up) but the caller is still silent in this pause: decide now.
            self._emit(self._decide(text), self.detector._last_end)

    def _decide(self, text: str | None) -> list[VadEvent]:
        assert self.policy is not None
        wait = self.policy.wait_ms(text)
        if text is not None:
            self.decisions.append((text, wait))
        span = self.detector.pause_span
        if span is not None:
            self._waits = {span: wait}  # only the latest pause can still end its turn
        return self.detector.end_pause_after(wait)

    def _release(self, text: str | None) -> None:
        """Stop holding: set this pause's wait from ``text`` (None: unknown), feed the held frames."""
        held, self._held, self._held_n = self._held, [], 0
        span, self._hold = self._hold, None
        if span is not None and self.detector.pause_span == span:
            self._emit(self._decide(text), self.detector._last_end)
        for samples, start in held:
            if self._hold is not None:  # a new pause began among the held frames: hold the rest again
                self._held.append((samples, start))
                self._held_n += len(samples)
                continue
            self._emit(self.detector.feed(samples, start), start + len(samples))

    def _emit(self, events: list[VadEvent], now_sample: int) -> None:
        if self.on_events is not None:
            self.on_events(events, now_sample)
        else:
            self.take(events)

    def _drain_held(self) -> None:
        """Feed the held frames without judging (the call or the turn is ending now)."""
        held, self._held, self._held_n, self._hold = self._held, [], 0, None
        events: list[VadEvent] = []
        for samples, start in held:
            events += self.detector.feed(samples, start)
        self.take([ev for ev in events if not isinstance(ev, SpeechPaused)])

    def end_turn(self, end_sample: int) -> bool:
        """The client says the caller stopped speaking at ``end_sample``: end the detector's turn
        there. False when the detector heard no speech in it (noise: no turn, nothing to answer)."""
        self._drain_held()
        events = self.detector.flush(end_sample)
        self.take(events)
        return any(isinstance(ev, TurnEnded) for ev in events)

    @property
    def judging(self) -> bool:
        """A pause's words are being transcribed to decide its wait; frames are held back meanwhile."""
        return self._hold is not None

    def caller_speaking(self) -> bool:
        return self.detector.state in (TurnState.SPEAKING, TurnState.STOPPING)

    def more_coming(self) -> bool:
        """Another turn is queued, or the caller is speaking: what is pending may be answered with it."""
        return not self._queue.empty() or self.caller_speaking()

    def wait_for_quiet(self) -> None:
        """Queue ``QUIET`` the next time the caller is quiet without having ended another turn."""
        self._wants_quiet = True

    def stop_waiting(self) -> None:
        self._wants_quiet = False

    # --- transcription ----------------------------------------------------------------------
    async def next(self) -> CallerTurn | CallerQuiet:
        """The next ended turn, transcribed (failures give ``""``), or ``QUIET``."""
        item = await self._queue.get()
        if isinstance(item, CallerQuiet):
            return item
        turn = item
        t0 = time.perf_counter()
        key = (turn.start_sample, turn.end_sample)
        spec, self._speculative = self._speculative, None
        if spec is not None and spec[0] == key:
            task = spec[1]  # usually finished already: stt_ms is what was left
        else:
            task = self._transcribe(turn.audio)
        self._untranscribed[key] = (turn, task)
        try:
            # Shielded: a hang-up now cancels the caller of next(), not the transcription it waits for.
            text = (await asyncio.shield(task)).strip()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("speech-to-text failed; turn dropped")
            text = ""
        self._untranscribed.pop(key, None)
        return CallerTurn(turn.start_sample, turn.end_sample, text, (time.perf_counter() - t0) * 1000,
                          self._waits.pop(key, None))

    def _transcribe(self, audio: np.ndarray) -> asyncio.Future[str]:
        """Start speech-to-text for one turn. Not cancelled by a hang-up: the tail reuses it."""
        fut = asyncio.ensure_future(self.stt.transcribe(audio))
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # a failure is logged where it is awaited
        return fut

    # --- hang-up ----------------------------------------------------------------------------
    def close(self, end_sample: int) -> None:
        """The stream ended at ``end_sample``: end the turn in progress and keep every turn not yet
        transcribed, in order, for :meth:`transcribe_tail`. Call once :meth:`next` is no longer awaited."""
        self._drain_held()
        for ev in self.detector.flush(end_sample):
            self._untranscribed[(ev.start_sample, ev.end_sample)] = (ev, None)
        self._tail = sorted(self._untranscribed.values(), key=lambda item: item[0].start_sample)
        self._untranscribed.clear()

    @property
    def tail_pending(self) -> int:
        """Caller turns left to transcribe after hang-up."""
        return len(self._tail)

    async def transcribe_tail(self) -> AsyncIterator[CallerTurn]:
        """The tail's turns that have text, each as soon as it is transcribed (failures are logged)."""
        tail, self._tail = self._tail, []
        for turn, task in tail:
            try:
                text = (await (task if task is not None else self.stt.transcribe(turn.audio))).strip()
            except Exception:
                log.exception("speech-to-text failed at hang-up; turn dropped")
                continue
            if text:
                yield CallerTurn(turn.start_sample, turn.end_sample, text)
