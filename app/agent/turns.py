"""Caller turns: from the caller's audio to transcribed turns, in order, with none lost at hang-up.

Owns what lies between the turn detector and a caller line in the transcript:

- feeding the :class:`~app.agent.vad.TurnDetector` (live, frame by frame, or catching up on
  recorded audio);
- speculative speech-to-text: a ``SpeechPaused`` starts transcribing during the end-of-turn
  silence, and the ``TurnEnded`` with the same span reuses that text instead of starting again;
- the queue of ended turns, read one at a time by the conversation loop (:meth:`next`), and a
  ``QUIET`` marker it may ask for when the caller falls quiet without ending another turn;
- the turns detected but not yet in the transcript, with their speech-to-text task once started.
  At hang-up (:meth:`close`) the detector's turn in progress joins them and they become the
  *tail*, transcribed by :meth:`transcribe_tail` after the audio file is written, reusing any
  transcription already under way (a hang-up never cancels one).

Time: turns are placed by the detector in integer stream samples, never on the wall clock: a
replay at any speed, a burst after a network stall and a live call give the same caller turns.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np

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


@dataclass(frozen=True)
class CallerQuiet:
    """The caller fell quiet without ending another turn (queued after :meth:`TurnCollector.wait_for_quiet`)."""


QUIET = CallerQuiet()


class TurnCollector:
    """One call's caller turns, from detector events to text.

    Args:
        detector: the call's turn detector (stateful, one per call).
        stt: speech-to-text for whole caller turns.

    """

    def __init__(self, detector: TurnDetector, stt: SpeechToText) -> None:
        self.detector = detector
        self.stt = stt
        self._queue: asyncio.Queue[TurnEnded | CallerQuiet] = asyncio.Queue()
        self._speculative: tuple[Span, asyncio.Future[str]] | None = None
        self._untranscribed: dict[Span, tuple[TurnEnded, asyncio.Future[str] | None]] = {}
        self._tail: list[tuple[TurnEnded, asyncio.Future[str] | None]] = []
        self._wants_quiet = False

    # --- detection --------------------------------------------------------------------------
    def feed(self, samples: np.ndarray, start_sample: int) -> list[VadEvent]:
        """One live frame through the detector; hand its events to :meth:`take`."""
        return self.detector.feed(samples, start_sample)

    def detect(self, audio: np.ndarray, start_sample: int, frame: int = 160) -> list[VadEvent]:
        """Run the detector over recorded audio (catching up); thread-safe while not live."""
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
                self._speculative = ((ev.start_sample, ev.end_sample), self._transcribe(ev.audio))
            if isinstance(ev, TurnEnded):
                self._untranscribed[(ev.start_sample, ev.end_sample)] = (ev, None)
                self._queue.put_nowait(ev)
                ended = True
        if self._wants_quiet and not ended and self.detector.state is TurnState.QUIET:
            self._wants_quiet = False
            self._queue.put_nowait(QUIET)

    def end_turn(self, end_sample: int) -> bool:
        """The client says the caller stopped speaking at ``end_sample``: end the detector's turn
        there. False when the detector heard no speech in it (noise: no turn, nothing to answer)."""
        events = self.detector.flush(end_sample)
        self.take(events)
        return any(isinstance(ev, TurnEnded) for ev in events)

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
        return CallerTurn(turn.start_sample, turn.end_sample, text, (time.perf_counter() - t0) * 1000)

    def _transcribe(self, audio: np.ndarray) -> asyncio.Future[str]:
        """Start speech-to-text for one turn. Not cancelled by a hang-up: the tail reuses it."""
        fut = asyncio.ensure_future(self.stt.transcribe(audio))
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # a failure is logged where it is awaited
        return fut

    # --- hang-up ----------------------------------------------------------------------------
    def close(self, end_sample: int) -> None:
        """The stream ended at ``end_sample``: end the turn in progress and keep every turn not yet
        transcribed, in order, for :meth:`transcribe_tail`. Call once :meth:`next` is no longer awaited."""
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
