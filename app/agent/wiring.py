"""From settings to a per-call assistant: shared engines, one session per call.

Engines that hold models (Whisper, hibari) are built once per process and loaded off the event
loop at start-up (`warmup`); each call gets its own responder (dialogue state) and turn detector
(Silero state). `CallAgent` is what the media-stream shell drives: `start()` on the first caller
frame, `feed_caller_audio()` per frame, `on_mark()`, `on_dtmf()`, `aclose()` at hang-up, when the
messages the receptionist took are written to the call's journal for the summary.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import numpy as np

from app.agent.end_of_turn import EndOfTurnPolicy
from app.agent.factory import make_stt, make_tts
from app.agent.interfaces import CallIO
from app.agent.responder import make_responder
from app.agent.session import AgentSession
from app.agent.transcriber import TrackTranscriber, TranscriberIO, TranscriptionWorker
from app.agent.vad import SAMPLE_RATE, TurnParams, default_detector
from app.config import Settings

__all__ = ["AgentFactory", "CallAgent", "turn_taking"]

log = logging.getLogger("callscribe.agent")

CATCH_UP_S = 10  # seconds of recorded caller audio the detector catches up on at a time
# A client that says when the caller stops (StopSpeaking) owns the end of the turn: our silence
# timer is set past the longest turn, so only the client's word (or a forced cut) ends one.
CLIENT_TURN_STOP_MS = 60_000
# With the end of turn from the words: the pause after which the turn so far is transcribed
# (SpeechPaused), and the silence kept after the turn's last speech (tail). Equal, so that the
# early transcription hears exactly the audio the turn ends with.
JUDGE_PAUSE_MS = 120


def turn_taking(s: Settings, *, turns_from_client: bool = False) -> tuple[TurnParams, EndOfTurnPolicy | None]:
    """The turn detector's tuning and the end of turn from the words (None: a fixed wait) for a call.

    Turns the client ends itself never end on our silence timer (the client decides). When every
    verdict of the words would wait the same (all three END_OF_TURN_* equal), the detector's
    ``stop_ms`` ends every turn, as before the rule existed."""
    if turns_from_client:
        return TurnParams(stop_ms=CLIENT_TURN_STOP_MS), None
    policy = EndOfTurnPolicy(complete_ms=s.end_of_turn_complete_ms, incomplete_ms=s.end_of_turn_incomplete_ms,
                             default_ms=s.end_of_turn_ms)
    if policy.fixed:
        return TurnParams(stop_ms=s.end_of_turn_ms), None
    return TurnParams(stop_ms=s.end_of_turn_ms, pause_ms=JUDGE_PAUSE_MS, tail_ms=JUDGE_PAUSE_MS), policy


class _SttAt:
    """The shared speech-to-text, hearing one call's audio at its rate (and, for local Whisper,
    with the assistant's shorter encoder window: the reply waits on this text)."""

    def __init__(self, stt, rate: int, window_s: float | None = None) -> None:
        self._stt, self._rate = stt, rate
        self._kw = {"window_s": window_s} if window_s is not None and hasattr(stt, "window_s") else {}

    async def transcribe(self, audio: np.ndarray) -> str:
        if self._rate == SAMPLE_RATE:
            return await self._stt.transcribe(audio, **self._kw)
        return await self._stt.transcribe(audio, rate=self._rate, **self._kw)


class _TtsAt:
    """The shared voice, speaking at one call's rate."""

    def __init__(self, tts, rate: int) -> None:
        self._tts, self.rate = tts, rate

    def stream(self, text: str):
        if self.rate == getattr(self._tts, "rate", SAMPLE_RATE):
            return self._tts.stream(text)
        return self._tts.stream(text, rate=self.rate)


class AgentFactory:
    def __init__(self, settings: Settings) -> None:
        self.settings = s = settings
        self._client: httpx.AsyncClient | None = None
        needs_http = "openai" in (s.stt_provider, s.tts_provider, s.responder)
        if needs_http:
            self._client = httpx.AsyncClient(timeout=30.0)
        common = {"client": self._client, "base_url": s.openai_base_url, "api_key": s.openai_api_key or ""}
        self.stt = make_stt(s.stt_provider, model=s.openai_stt_model, model_dir=s.stt_model_path, **common)
        self.tts = make_tts(s.tts_provider, model=s.openai_tts_model, voice=s.openai_tts_voice, **common)
        self.ready = False
        self._worker: TranscriptionWorker | None = None  # listen-only transcription, made on first use

    def warmup(self) -> None:
        """Load the local models (blocking: run in a thread at start-up)."""
        speaks = self.settings.greeting == "assistant"  # transcription alone needs no voice
        for engine in (self.stt, self.tts) if speaks else (self.stt,):
            load = getattr(engine, "load", None)
            if load is not None:
                load()
        self.ready = True
        log.info("assistant ready (speech-to-text %s, voice %s, responder %s)", self.settings.stt_provider,
                 self.settings.tts_provider, self.settings.responder)

    def responder(self):
        s = self.settings
        return make_responder("openai" if s.responder == "openai" else "local", client=self._client,
                              base_url=s.openai_base_url, api_key=s.openai_api_key or "", model=s.openai_chat_model,
                              business_name=s.business_name, assistant_name=s.assistant_name,
                              opening_hours=s.opening_hours)

    def __call__(self, io: CallIO, rate: int = SAMPLE_RATE, *, turns_from_client: bool = False) -> "CallAgent":
        """The assistant for one call at ``rate`` (its native rate: 8 kHz phone, 16 kHz browser).
        ``turns_from_client``: the client says when the caller starts and stops speaking
        (a browser's StartSpeaking/StopSpeaking); our detector only guards against noise."""
        return CallAgent(self, io, rate, turns_from_client=turns_from_client)

    def transcriber(self, io: TranscriberIO, tracks: tuple[str, ...]) -> TrackTranscriber:
        """A transcript for a call the assistant does not answer, from the same speech-to-text."""
        if self._worker is None:
            self._worker = TranscriptionWorker(self.stt)
        return TrackTranscriber(io, self._worker, tracks)

    async def aclose(self) -> None:
        if self._worker is not None:
            self._worker.shutdown()
        if self._client is not None:
            await self._client.aclose()


class CallAgent:
    """One call's assistant.

    Frames that arrive while it is being built (loading the turn detector) are not lost: the
    detector catches up on them from the recording before it goes live, so a replay streamed
    faster than real time is heard from its first word. At hang-up, ``aclose()`` records what was
    heard and ``transcribe_tail()`` transcribes the caller turns still pending.
    """

    def __init__(self, factory: AgentFactory, io: CallIO, rate: int = SAMPLE_RATE, *,
                 turns_from_client: bool = False) -> None:
        self.factory = factory
        self.io = io
        self.rate = rate
        self.turns_from_client = turns_from_client
        self.session: AgentSession | None = None
        self.responder = factory.responder()
        self._missed: tuple[int, int] | None = None  # caller samples received before the session was live
        self._starting: asyncio.Event | None = None  # set once start() is over
        self._stop_pending = False  # the client ended a turn while the session was being built
        self._closed = False

    async def start(self) -> None:
        self._starting = starting = asyncio.Event()
        try:
            s = self.factory.settings
            params, policy = turn_taking(s, turns_from_client=self.turns_from_client)
            detector = await asyncio.to_thread(default_detector, params, self.rate)
            session = AgentSession(self.io, _SttAt(self.factory.stt, self.rate, s.stt_window_s),
                                   _TtsAt(self.factory.tts, self.rate), self.responder, detector,
                                   barge_in=s.barge_in, rate=self.rate, end_of_turn=policy)
            # Catch up from the recording on what arrived meanwhile (all of it, for a fast replay
            # that is already over): even then, the caller's turns are found and transcribed.
            while self._missed is not None:
                (a, b), self._missed = self._missed, None
                stop = min(b, a + CATCH_UP_S * self.rate)  # a block at a time: memory stays flat for any backlog
                if stop < b:
                    self._missed = (stop, b) if self._missed is None else (stop, max(b, self._missed[1]))
                audio = self.io.read_caller_audio(a, stop)
                events = await asyncio.to_thread(session.detect, audio, a)
                session.on_vad_events(events, stop)
            self.session = session  # from here on, frames go to it directly
            if not self._closed:
                await session.start()
                if self._stop_pending:
                    self._stop_pending = False
                    session.caller_stopped()
        finally:
            starting.set()

    def feed_caller_audio(self, samples: np.ndarray, start_sample: int) -> None:
        if self.session is not None:
            self.session.feed_caller_audio(samples, start_sample)
        elif not self._closed:
            end = start_sample + len(samples)
            a, b = self._missed or (start_sample, end)
            self._missed = (min(a, start_sample), max(b, end))

    def on_mark(self, name: str) -> None:
        if self.session is not None:
            self.session.on_mark(name)

    # Turns the client reports (browser calls): before the session is live, an end is kept for it.
    def caller_started(self) -> None:
        self._stop_pending = False
        if self.session is not None:
            self.session.caller_started()

    def caller_stopped(self) -> None:
        if self.session is not None:
            self.session.caller_stopped()
        else:
            self._stop_pending = True

    def connection_lost(self, cut_by: str = "connection lost") -> None:
        if self.session is not None:
            self.session.connection_lost(cut_by)

    def on_dtmf(self, digit: str) -> None:
        if self.session is not None:
            self.session.on_dtmf(digit)

    async def aclose(self) -> None:
        self._closed = True
        if self._starting is not None:
            await self._starting.wait()  # a call shorter than start-up still has its turns found
        if self.session is not None:
            await self.session.aclose()
        self._journal_notes()

    @property
    def tail_pending(self) -> int:
        return self.session.tail_pending if self.session is not None else 0

    async def transcribe_tail(self) -> None:
        if self.session is not None:
            await self.session.transcribe_tail()

    def _journal_notes(self) -> None:
        notes = self.responder.notes()
        if notes:
            self.io.journal_event("notes", notes=notes)
