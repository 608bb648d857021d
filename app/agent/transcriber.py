"""TrackTranscriber: a transcript for calls the assistant does not answer (listen-only recording).

It reads each track back from the call's masters, behind the recording (only the settled part:
late frames can no longer change it), finds the turns with the same turn detector the assistant
uses, and transcribes them with the offline speech-to-text. Nothing runs per frame on the event
loop. All calls of a process share one worker thread at lowered priority (`TranscriptionWorker`)
and one voice-activity model, reset and warmed on the audio just before each step, so a call
costs no model of its own (memory stays flat) and a hundred listen-only calls cannot crowd the
event loop: when the CPU is short, transcription falls behind, never the frames.
Everything is on the stream's clock (sample indexes), so a replay faster than real time gets the
same transcript as a live call.

At hang-up ``aclose()`` stops the loop after its current step and ``transcribe_tail()`` does the
rest (the last settled window and the turn in progress) after the audio file is written; the
call's summary says the transcript is pending until then.

Roles: the inbound track is the ``caller``; the outbound track, in a forked (listen-only) call,
is the ``other`` party.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from app.agent.interfaces import SpeechToText
from app.agent.vad import EnergyVAD, SileroVAD, TurnDetector, TurnEnded, VoiceActivity
from app.cancellation import within
from app.threads import background_executor

__all__ = ["TrackTranscriber", "TranscriberIO", "TranscriptionWorker"]

log = logging.getLogger("callscribe.transcriber")

ROLES = {"inbound": "caller", "outbound": "other"}
FRAME = 160  # samples fed to the detector at a time (20 ms at 8 kHz, as Twilio sends them)
WARM = 2400  # samples before a step replayed into the reset model (300 ms) to restore its state
BLOCK = 80_000  # samples read from a master at a time (10 s)


@dataclass
class TranscriberIO:
    """What the transcriber needs from the call: plain callables, no recorder or transport."""

    read: Callable[[str, int, int], np.ndarray]  # (track, start, stop) → int16 samples as recorded
    settled: Callable[[], int]  # sample index before which the recording can no longer change
    now: Callable[[], int]  # the stream's clock; at hang-up, its last moment
    add_turn: Callable[..., None]  # (role, text, start, end, interrupted=False, **extra)


class TranscriptionWorker:
    """One thread per process for every call's transcription, with one shared VAD model."""

    def __init__(self, stt: SpeechToText) -> None:
        self.stt = stt
        self._executor = background_executor("callscribe-transcribe", 1)
        self._vad: VoiceActivity | None = None

    def vad(self) -> VoiceActivity:
        """The shared model (worker thread only)."""
        if self._vad is None:
            try:
                self._vad = SileroVAD()
            except (ImportError, OSError, RuntimeError):
                self._vad = EnergyVAD()
        return self._vad

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def transcribe(self, audio: np.ndarray) -> str:
        sync = getattr(self.stt, "transcribe_sync", None)
        if sync is not None:  # local model: on this (niced) thread, one at a time
            return str(await self.run(sync, audio))
        return await self.stt.transcribe(audio)  # an HTTP provider: nothing to run here

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class TrackTranscriber:
    def __init__(self, io: TranscriberIO, worker: TranscriptionWorker, tracks: tuple[str, ...],
                 interval_s: float = 2.0) -> None:
        self.io = io
        self.worker = worker
        self.tracks = tracks
        self.interval_s = interval_s
        self.detectors: dict[str, TurnDetector] = {}  # track → its turn state (the model is shared)
        self.done = 0  # samples of every track already fed to the detectors
        self._loop_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._closed = False
        self._tail = False

    # The call's agent slot: start at the stream's start, frames are read back (not fed), close at hang-up.
    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="transcriber")

    def feed_caller_audio(self, samples: np.ndarray, start_sample: int) -> None:
        """Frames are read back from the masters instead: nothing to do per frame."""

    def on_mark(self, name: str) -> None:
        """Listen-only calls carry no marks of ours."""

    def on_dtmf(self, digit: str) -> None:
        """DTMF is journaled by the call itself."""

    def caller_started(self) -> None:
        """Turns are found in the settled masters, whatever the client says."""

    def caller_stopped(self) -> None:
        """Turns are found in the settled masters, whatever the client says."""

    def connection_lost(self, cut_by: str = "connection lost") -> None:
        """Nothing is playing: nothing to cut."""

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stopping.set()
        if self._loop_task is not None:
            await self._loop_task  # lets the step under way finish: no turn is half-done
        self._tail = True

    @property
    def tail_pending(self) -> int:
        return 1 if self._tail else 0

    async def transcribe_tail(self) -> None:
        """After hang-up: the rest of each track, then the turns still open."""
        if not self._tail:
            return
        self._tail = False
        await self._step(self.io.now(), final=True)

    # ------------------------------------------------------------------ work
    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await within(self._stopping.wait(), self.interval_s)
                return
            except asyncio.TimeoutError:
                pass
            try:
                await self._step(self.io.settled())
            except Exception:
                log.exception("transcription step failed; the next one retries from the same place")

    async def _step(self, until: int, final: bool = False) -> None:
        if until <= self.done and not final:
            return
        until = max(until, self.done)
        turns = await self.worker.run(self._detect, self.done, until, final)
        self.done = until
        for track, turn in sorted(turns, key=lambda tt: tt[1].start_sample):
            try:
                text = (await self.worker.transcribe(turn.audio)).strip()
            except Exception:
                log.exception("speech-to-text failed; turn dropped")
                continue
            if text:
                self.io.add_turn(ROLES[track], text, turn.start_sample, turn.end_sample, False,
                                 **({"at_hangup": True} if final else {}))

    def _detect(self, a: int, b: int, final: bool) -> list[tuple[str, TurnEnded]]:
        """Feed [a, b) of each track to its detector (in the worker thread)."""
        vad = self.worker.vad()
        out: list[tuple[str, TurnEnded]] = []
        for track in self.tracks:
            det = self.detectors.get(track)
            if det is None:
                det = self.detectors[track] = TurnDetector(vad)
            reset = getattr(vad, "reset", None)
            if reset is not None:  # the shared model: forget the last call, relive this one's last 300 ms
                reset()
                if a > 0:
                    vad.speech_probability(self.io.read(track, max(0, a - WARM), a).astype(np.float32) / 32768)
            pos = a
            while pos < b:
                stop = min(b, pos + BLOCK)
                audio = self.io.read(track, pos, stop)
                for i in range(0, len(audio), FRAME):
                    out += [(track, ev) for ev in det.feed(audio[i:i + FRAME], pos + i) if isinstance(ev, TurnEnded)]
                pos = stop
            if final:
                out += [(track, ev) for ev in det.flush(b)]
        return out
