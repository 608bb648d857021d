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
from typing import Any

import httpx
import numpy as np

from app.agent.factory import make_stt, make_tts
from app.agent.interfaces import CallIO
from app.agent.responder import make_responder
from app.agent.session import AgentSession
from app.agent.vad import TurnParams, default_detector

__all__ = ["AgentFactory", "CallAgent"]

log = logging.getLogger("callscribe.agent")


class AgentFactory:
    def __init__(self, settings: Any) -> None:
        self.settings = s = settings
        self._client: httpx.AsyncClient | None = None
        needs_http = "openai" in (s.stt_provider, s.tts_provider, s.responder)
        if needs_http:
            self._client = httpx.AsyncClient(timeout=30.0)
        common = {"client": self._client, "base_url": s.openai_base_url, "api_key": s.openai_api_key or ""}
        self.stt = make_stt(s.stt_provider, model=s.openai_stt_model, model_dir=s.stt_model_path, **common)
        self.tts = make_tts(s.tts_provider, model=s.openai_tts_model, voice=s.openai_tts_voice, **common)
        self.ready = False

    def warmup(self) -> None:
        """Load the local models (blocking: run in a thread at start-up)."""
        for engine in (self.stt, self.tts):
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

    def __call__(self, io: CallIO) -> "CallAgent":
        return CallAgent(self, io)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


class CallAgent:
    """One call's assistant. Frames that arrive while it is being built are not lost to the
    recording (the recorder has them); the turn detector simply starts listening a moment later."""

    def __init__(self, factory: AgentFactory, io: CallIO) -> None:
        self.factory = factory
        self.io = io
        self.session: AgentSession | None = None
        self.responder = factory.responder()
        self._closed = False

    async def start(self) -> None:
        s = self.factory.settings
        detector = await asyncio.to_thread(default_detector, TurnParams(stop_ms=s.end_of_turn_ms))
        if self._closed:
            return
        self.session = AgentSession(self.io, self.factory.stt, self.factory.tts, self.responder, detector,
                                    barge_in=s.barge_in)
        await self.session.start()

    def feed_caller_audio(self, samples: np.ndarray, start_sample: int) -> None:
        if self.session is not None:
            self.session.feed_caller_audio(samples, start_sample)

    def on_mark(self, name: str) -> None:
        if self.session is not None:
            self.session.on_mark(name)

    def on_dtmf(self, digit: str) -> None:
        if self.session is not None:
            self.session.on_dtmf(digit)

    async def aclose(self) -> None:
        self._closed = True
        if self.session is not None:
            await self.session.aclose()
        notes = self.responder.notes()
        journal = getattr(self.io, "journal_event", None)
        if notes and journal is not None:
            journal("notes", notes=notes)
