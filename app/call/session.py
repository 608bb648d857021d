"""CallSession: one call in progress, whatever carries it.

A transport shell feeds it PCM16 at the call's rate (``on_audio`` with the position its clock
understands), DTMF and mark echoes; the session places the audio (the recorder), keeps the
incremental export going (``ExportSchedule``), drives the assistant or the transcriber, enforces
the call's length limit, emits the embedder's events, and sends the assistant's audio, marks and
clears back through the :class:`~app.call.transport.CallTransport`. It is the ``CallIO`` the
assistant talks to. Where audio sits is an integer sample index at the call's rate throughout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from app import close_codes
from app.audio.chime import chime
from app.call.end import EndReason
from app.call.export_schedule import ExportSchedule
from app.call.transport import CallInfo, CallParticipant, CallTransport
from app.recording.events import RecordingEvents, emit, read_span
from app.recording.export import ConversationExporter
from app.recording.finalize import ExportOptions
from app.recording.recorder import CallRecorder
from app.recording.timeline import Clock
from app.storage.coordination import CallLock
from app.storage.store import CallStore

__all__ = ["CallSession", "CallLimits"]

log = logging.getLogger("callscribe.call")

EXTRAPOLATE_S = 0.02  # the clock between two chunks runs on the wall clock for at most one frame
PROGRESS_S = 0.1  # call time between two reports of the settled sample to the export schedule (and chunk events)


async def catch_up() -> None:
    """Let the event loop read what the caller's socket already holds before the line's clock is
    read: frames that reached us while this process was busy (a loaded machine, a call's start-up)
    move the clock first, so audio sent now is placed after them, where the line plays it. Two
    passes: asyncio polls its sockets after the callbacks already due (this task's among them),
    uvloop before them; the frames read are recorded in the protocol's callback (the frame sink)
    or, queued, by the stream's loop, which runs before this task's next step. (A WebSocket
    implementation that parses in a task of its own, uvicorn's legacy `websockets`, would need one
    more pass; ours is named in app/serving.py.)"""
    await asyncio.sleep(0)
    await asyncio.sleep(0)


class CallLimits:
    """How long a call may last and how its timeline is checked (from settings)."""

    def __init__(self, *, reorder_window_ms: int = 2000, max_clock_jump_s: int = 600,
                 max_call_seconds: int = 4 * 3600, export_interval_s: float = 5.0,
                 master_writes: str = "auto") -> None:
        self.master_writes = master_writes  # how frames reach the masters (MASTER_WRITES)
        self.reorder_window_ms = reorder_window_ms
        self.max_clock_jump_s = max_clock_jump_s
        self.max_call_seconds = max_call_seconds
        self.export_interval_s = export_interval_s


class CallSession:
    def __init__(self, info: CallInfo, transport: CallTransport, *, store: CallStore, lock: CallLock,
                 opts: ExportOptions, executor: Executor, limits: CallLimits | None = None,
                 clock: Clock | None = None, wall_clock: Callable[[], float] = time.monotonic,
                 events: RecordingEvents | None = None, chunk_bytes: int = 0) -> None:
        limits = limits or CallLimits()
        self.info = info
        self.sid = info.sid
        self.mode = info.mode
        self.rate = info.rate
        self.started_at = time.time()  # wall clock (epoch s) when the stream started
        self.store = store
        self.lock = lock
        self.transport = transport
        self.wall_clock = wall_clock
        self.recorder = CallRecorder(store.files(self.sid, create=True).folder, self.sid, rate=info.rate,
                                     reorder_window_ms=limits.reorder_window_ms,
                                     max_clock_jump_s=limits.max_clock_jump_s,
                                     max_seconds=limits.max_call_seconds, clock=clock,
                                     master_writes=limits.master_writes)
        self.export = ExportSchedule(store, self.sid, opts, executor, interval_s=limits.export_interval_s,
                                     rate=info.rate, settled=self.settled_sample)
        self.agent: CallParticipant | None = None  # the assistant, in assistant mode
        self.transcriber: CallParticipant | None = None  # a transcript when no assistant answers
        self.events = events
        self.chunk_samples = chunk_bytes // 2  # PCM16: chunk events every N bytes of each track
        self._chunk_done = 0
        self._turn_index = 0
        self.ended = False
        self.end_reason: EndReason | None = None
        self._last_audio_wall = wall_clock()
        self._frame = round(EXTRAPOLATE_S * info.rate)  # samples in one frame of the line
        self._progress_step = max(1, int(PROGRESS_S * info.rate))
        self._progress_at = 0  # the call's clock (samples) at which the export schedule next hears of progress
        resumed = self.recorder.clock.frontier  # a restarted call continues after what is on disk
        self.recorder.event("start", call_sid=self.sid, stream_sid=info.stream_id, account_sid=info.account_id,
                            mode=info.mode, source=info.source, rate=info.rate, tracks=list(info.tracks),
                            params=sorted(info.params), from_last4=info.from_last4,
                            **({"resumed_at_sample": resumed} if resumed else {}))

    # ------------------------------------------------------------------ lifecycle
    def begin(self) -> None:
        """Start background work (the incremental exporter)."""
        self.export.begin()

    def participants(self) -> list[CallParticipant]:
        return [p for p in (self.agent, self.transcriber) if p is not None]

    def line_closed(self) -> None:
        """The transport read the end of the line (the caller hung up, the socket closed): nothing
        more is sent, and the clock is the stream's last moment. ``stop_background`` follows."""
        self.ended = True

    async def stop_background(self) -> tuple[ConversationExporter | None, int]:
        """Called once at the end: cut at hang-up, stop the assistant and the export; close the masters.

        The call lasted as long as its stream: assistant audio placed after the stream's last
        moment was still queued at the transport when the caller hung up, never heard, so it is
        cut as a clear would cut it (but it is no barge-in)."""
        self.ended = True
        if self.mode == "assistant":
            self.recorder.cut_at_hangup(self.recorder.stream_samples)
        for part in self.participants():
            try:
                await part.aclose()
            except Exception:
                log.exception("call %s: %s did not close cleanly", self.sid, type(part).__name__)
        exporter = await self.export.stop()
        total = self.recorder.close(str(self.end_reason or "ended"))
        if self.events is not None and self.chunk_samples:
            self._emit_chunks(total, final=True)
        return exporter, total

    @property
    def tail_pending(self) -> int:
        """Turns the hang-up left to transcribe (the transcript is rewritten when they are done)."""
        return sum(p.tail_pending for p in self.participants())

    async def transcribe_tail(self) -> None:
        for part in self.participants():
            try:
                await part.transcribe_tail()
            except Exception:
                log.exception("call %s: transcribing the last turns failed", self.sid)

    def settled_sample(self) -> int:
        """Before this sample the recording can no longer change (late audio falls in the clock's window)."""
        return max(0, self.recorder.stream_samples - self.recorder.clock.window)

    def read_track(self, track: str, start: int, stop: int) -> np.ndarray:
        return read_span(self.recorder.files.master(track), start, stop)

    # ------------------------------------------------------------------ the transport → us
    def on_audio(self, track: str, position: float, pcm: bytes) -> None:
        """One chunk of PCM16 at the call's rate; `position` is what the call's clock reads.

        The per-frame path: the export schedule hears of progress once per PROGRESS_S of call time
        (its decisions are in seconds), not per chunk."""
        self._last_audio_wall = self.wall_clock()
        recorder = self.recorder
        placed = recorder.on_audio(track, position, pcm)
        if self.agent is not None:
            for tr, start, data in placed:
                if tr == "inbound":
                    self.agent.feed_caller_audio(np.frombuffer(data, "<i2"), start)
        now = recorder.clock.now()  # read once per chunk
        if now >= self._progress_at:
            self._progress_at = now + self._progress_step
            settled = max(0, now - recorder.clock.window)
            self.export.on_progress(settled)
            if self.events is not None and self.chunk_samples:
                self._emit_chunks(settled)
        if now >= recorder.max_samples and not self.ended:
            self.end_reason = EndReason.LONGEST_CALL

    def _emit_chunks(self, settled: int, final: bool = False) -> None:
        """Chunk events for settled audio (late frames can no longer change it). At hang-up
        (``final``) the rest goes too, the last chunk short: a call's chunks add up to its recording."""
        while settled - self._chunk_done >= self.chunk_samples or (final and settled > self._chunk_done):
            a, b = self._chunk_done, min(settled, self._chunk_done + self.chunk_samples)
            inbound = self.read_track("inbound", a, b)
            outbound = self.read_track("outbound", a, b)
            emit(self.events, "on_track_audio_data", self.sid, "inbound", inbound, self.rate)
            emit(self.events, "on_track_audio_data", self.sid, "outbound", outbound, self.rate)
            mixed = np.clip(inbound.astype(np.int32) + outbound, -32768, 32767).astype(np.int16)
            emit(self.events, "on_audio_data", self.sid, mixed, self.rate)
            self._chunk_done = b

    def on_dtmf(self, digit: str) -> None:
        at = self.stream_sample()
        self.recorder.event("dtmf", digit=digit, at_ms=self.recorder.ms(at), at_sample=at)
        if self.agent is not None:
            self.agent.on_dtmf(digit)

    def on_mark(self, name: str) -> None:
        self.recorder.event("mark", name=name, at_ms=self.recorder.ms(self.stream_sample()))
        if self.agent is not None:
            self.agent.on_mark(name)

    # ------------------------------------------------------------------ CallIO (the assistant's side)
    def stream_sample(self) -> int:
        """The call's clock (samples). A clock that moves only with the audio (Twilio's) is
        extrapolated by at most one frame of wall time between chunks while the call goes on;
        once it has ended, it is exactly the stream's last moment."""
        if self.ended or self.recorder.clock.follows_wall:
            return self.recorder.stream_samples
        since = min(EXTRAPOLATE_S, max(0.0, self.wall_clock() - self._last_audio_wall))
        return self.recorder.stream_samples + int(since * self.rate)

    def playback_slot(self) -> int:
        """Where audio sent now starts to play when nothing is queued before it. A line that plays
        in frame-sized slots on the stream's grid (Twilio plays 20 ms packets) starts it at the
        end of the latest frame, or one frame later once a frame's worth of wall time has passed
        without the next one (the line has moved on; its frame is late or not read yet).
        Extrapolating by the exact wall time instead lands mid-slot, where nothing starts: this is
        ``stream_sample()`` (at most one frame past the latest) rounded down to the frame grid."""
        latest = self.recorder.stream_samples
        return latest + (self.stream_sample() - latest) // self._frame * self._frame

    async def play(self, pcm: bytes) -> tuple[int, int] | None:
        """Send assistant audio (PCM16 at the call's rate); returns the [start, end) samples where
        it plays (None: not sent, the call is over or nobody is answering)."""
        if self.ended or self.mode != "assistant":
            return None
        if not self.recorder.clock.follows_wall:
            await catch_up()  # even behind audio still queued: the line may be past it if we were behind
            if self.ended:
                return None
        span = self.recorder.play(self.transport.as_heard(pcm), self.playback_slot())
        await self.transport.send_audio(pcm, span[0])
        return span

    async def play_chime(self) -> None:
        """The greeting tone (GREETING=tone): played, marked "greeting", and in the transcript."""
        span = await self.play(chime(self.rate))
        await self.mark("greeting")
        if span is not None:
            self.add_turn("assistant", "(greeting chime)", *span)

    async def mark(self, name: str) -> None:
        if self.ended or self.mode != "assistant":
            return
        await self.transport.mark(name)

    async def clear(self, at: int | None = None) -> None:
        """Barge-in: cut the assistant track at ``at`` (default: now) and drop what the transport queued."""
        if self.ended or self.mode != "assistant":
            return
        self.recorder.clear(self.stream_sample() if at is None else at)
        await self.transport.clear()

    async def hangup(self) -> None:
        if self.ended:
            return
        self.end_reason = EndReason.ASSISTANT_HUNG_UP
        await self.transport.close(close_codes.NORMAL, "call ended by the assistant")

    def add_turn(self, role: str, text: str, start: int, end: int, interrupted: bool = False,
                 **extra: Any) -> None:
        """One turn of the transcript; ``start``/``end`` are sample indexes on the call's clock."""
        self.recorder.add_turn(role, text, start, end, interrupted, **extra)
        if not self.ended and text:
            self.transport.said(role, text)
        if self.events is not None:
            index = extra.get("index", self._turn_index)
            self._turn_index += 1
            track = "inbound" if role == "caller" else "outbound"
            emit(self.events, "on_turn_audio", self.sid, role, index, text, self.read_track(track, start, end),
                 self.rate)

    def read_caller_audio(self, start: int, stop: int) -> np.ndarray:
        return self.read_track("inbound", start, stop)

    def no_reply(self) -> None:
        if not self.ended:
            self.transport.no_reply()

    # ------------------------------------------------------------------ turns the client reports
    def caller_started(self) -> None:
        """The client says the caller started speaking (a browser's StartSpeaking): the next
        audio is a new burst, and the assistant stops talking (the client stopped playing it)."""
        begin = getattr(self.recorder.clock, "begin_burst", None)
        if begin is not None:
            begin("inbound")
        if self.agent is not None:
            self.agent.caller_started()

    def caller_stopped(self) -> None:
        """The client says the caller stopped (StopSpeaking): the turn ends; with nobody to
        answer it, the client is told at once that no answer is coming."""
        if self.agent is not None:
            self.agent.caller_stopped()
        else:
            self.no_reply()

    def connection_lost(self, cut_by: str = "connection lost") -> None:
        """The client stopped playing our audio without the caller speaking: its socket dropped
        (it may come back), or it paused ("paused"). What was not heard is cut."""
        if self.agent is not None:
            self.agent.connection_lost(cut_by)

    def journal_event(self, kind: str, **data: Any) -> None:
        """Anything else the call's summary should know (e.g. the messages the assistant took)."""
        self.recorder.event(kind, **data)
