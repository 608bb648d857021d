"""LiveCall: one call in progress — protocol events in, recorder and assistant driven, commands out.

It is the `CallIO` the assistant talks to (play / mark / clear / hangup / add_turn) and it owns
the call's incremental export: every `export_interval_s` the settled part of the conversation
(before stream time minus the reorder window: nothing there can change any more, since a
`clear` only removes audio after "now") is encoded on a worker thread, so the files are ready
moments after hang-up whatever the call's length. A format chosen mid-call replaces the
exporter, which catches up in the background.

The I/O is injected (`send`, `close`), so this module knows nothing of FastAPI.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

import numpy as np

from app.recording.events import emit, read_span
from app.recording.export import ConversationExporter
from app.recording.finalize import ExportOptions, make_exporter
from app.recording.recorder import CallRecorder
from app.recording.store import CallLock, CallStore
from app.twilio.events import Dtmf, Mark, Media, SendClear, SendMark, SendMedia, Start
from app.twilio.protocol import serialize

__all__ = ["LiveCall", "tone"]

log = logging.getLogger("callscribe.call")

Send = Callable[[str], Awaitable[None]]
Close = Callable[[int, str], Awaitable[None]]


def tone(seconds: float = 0.6, freqs: tuple[float, ...] = (440.0, 660.0)) -> bytes:
    """A short two-note chime as 8 kHz μ-law (the built-in greeting when the assistant is off)."""
    from app.audio.mulaw import float_to_ulaw

    n = int(seconds * 8000)
    parts = []
    for f in freqs:
        t = np.arange(n // len(freqs)) / 8000
        env = np.minimum(1, np.minimum(t, t[::-1]) / 0.02)
        parts.append(0.4 * env * np.sin(2 * np.pi * f * t))
    return float_to_ulaw(np.concatenate(parts))


class LiveCall:
    def __init__(self, start: Start, *, mode: str, store: CallStore, lock: CallLock, opts: ExportOptions,
                 executor: Executor, send: Send, close: Close, reorder_window_ms: int = 2000,
                 max_clock_jump_s: int = 600, max_call_seconds: int = 4 * 3600, export_interval_s: float = 5.0,
                 wall_clock: Callable[[], float] = time.monotonic, events: Any = None,
                 chunk_bytes: int = 0) -> None:
        self.sid = start.call_sid
        self.stream_sid = start.stream_sid
        self.mode = mode
        self.started_at = time.time()  # wall clock (epoch s) when the stream started
        self.store = store
        self.lock = lock
        self.opts = opts
        self.executor = executor
        self._send = send
        self._close = close
        self.wall_clock = wall_clock
        self.recorder = CallRecorder(store.call_dir(self.sid, create=True), self.sid,
                                     reorder_window_ms=reorder_window_ms, max_clock_jump_s=max_clock_jump_s,
                                     max_samples=max_call_seconds * 8000)
        self.max_call_seconds = max_call_seconds
        self.export_interval_s = export_interval_s
        self.agent: Any = None  # the assistant, in assistant mode
        self.transcriber: Any = None  # a transcript when no assistant answers (listen-only)
        self.events = events
        self.chunk_samples = chunk_bytes // 2  # PCM16: chunk events every N bytes of each track
        self._chunk_done = 0
        self._turn_index = 0
        self.ended = False
        self.end_reason: str | None = None
        self._last_frame_wall = wall_clock()
        self._exporter: ConversationExporter | None = None
        self._format_mtime = store.format_mtime(self.sid)
        self._export_busy: asyncio.Future | None = None
        self._export_task: asyncio.Task | None = None
        self._export_kick = asyncio.Event()
        self._kick_at = int(export_interval_s * 8000 * 2)  # samples of unexported stream time
        self._marks_pending: list[str] = []
        self.recorder.event("start", call_sid=self.sid, stream_sid=self.stream_sid, account_sid=start.account_sid,
                            mode=mode, tracks=list(start.tracks),
                            params=sorted(k for k in start.custom_parameters if k != "token"))

    # ------------------------------------------------------------------ lifecycle
    def begin(self) -> None:
        """Start background work (the incremental exporter)."""
        if not self.opts.record_audio:
            return
        try:
            self._exporter = make_exporter(self.store, self.sid, self.opts)
        except Exception as exc:
            log.error("call %s: cannot open the exporter (%s); will export at hang-up", self.sid, type(exc).__name__)
        if self.export_interval_s > 0:
            self._export_task = asyncio.get_running_loop().create_task(self._export_loop())

    async def _export_loop(self) -> None:
        # Ticks every export_interval_s of wall time, and sooner when the stream clock has run
        # ahead (a replay faster than real time): what is left at hang-up stays small either way.
        while not self.ended:
            try:
                await asyncio.wait_for(self._export_kick.wait(), self.export_interval_s)
            except asyncio.TimeoutError:
                pass
            self._export_kick.clear()
            if self.ended:
                break
            await self._advance_export()

    async def _advance_export(self) -> None:
        loop = asyncio.get_running_loop()
        mtime = self.store.format_mtime(self.sid)
        if mtime != self._format_mtime:
            self._format_mtime = mtime
            old, self._exporter = self._exporter, None
            if old is not None:
                await loop.run_in_executor(self.executor, old.abort)
            try:
                self._exporter = await loop.run_in_executor(self.executor, make_exporter, self.store, self.sid, self.opts)
            except Exception as exc:
                log.error("call %s: cannot open the exporter (%s)", self.sid, type(exc).__name__)
                return
        exporter = self._exporter
        settled = self.recorder.stream_samples - self.recorder.clock.window
        if exporter is None or settled <= exporter.done:
            return
        self._export_busy = loop.run_in_executor(self.executor, exporter.advance, settled)
        try:
            await self._export_busy
        except asyncio.CancelledError:
            raise  # call ending: finish() waits for this advance on the exporter's lock
        except Exception as exc:
            log.error("call %s: incremental export failed (%s); will retry at hang-up", self.sid, type(exc).__name__)
            self._exporter = None
            await loop.run_in_executor(self.executor, exporter.abort)
        finally:
            self._export_busy = None

    async def stop_background(self) -> tuple[ConversationExporter | None, int]:
        """Called once at the end: cut at hang-up, stop the assistant and the export loop; close the masters.

        The call lasted as long as its stream: assistant audio placed after the stream's last
        moment was still queued at Twilio when the caller hung up, never heard, so it is cut as a
        clear would cut it (but it is no barge-in)."""
        self.ended = True
        if self.mode == "assistant":
            self.recorder.cut_at_hangup(self.recorder.stream_samples)
        for part in (self.agent, self.transcriber):
            if part is not None:
                try:
                    await part.aclose()
                except Exception:
                    log.exception("call %s: %s did not close cleanly", self.sid, type(part).__name__)
        if self._export_task is not None:
            self._export_task.cancel()
            try:
                await self._export_task
            except (asyncio.CancelledError, Exception):
                pass
        if self._export_busy is not None:
            try:
                await self._export_busy
            except Exception:
                self._exporter = None
        total = self.recorder.close(self.end_reason or "ended")
        if self.events is not None and self.chunk_samples:
            self._emit_chunks(total, final=True)
        return self._exporter, total

    @property
    def tail_pending(self) -> int:
        """Turns the hang-up left to transcribe (the transcript is rewritten when they are done)."""
        return sum(p.tail_pending for p in (self.agent, self.transcriber) if p is not None)

    async def transcribe_tail(self) -> None:
        for part in (self.agent, self.transcriber):
            if part is not None:
                try:
                    await part.transcribe_tail()
                except Exception:
                    log.exception("call %s: transcribing the last turns failed", self.sid)

    def settled_sample(self) -> int:
        """Before this sample the recording can no longer change (late frames fall in the reorder window)."""
        return max(0, self.recorder.stream_samples - self.recorder.clock.window)

    def read_track(self, track: str, start: int, stop: int) -> np.ndarray:
        return read_span(self.recorder.call_dir / f"{track}.wav", start, stop)

    # ------------------------------------------------------------------ Twilio → us
    def on_media(self, ev: Media) -> None:
        self._last_frame_wall = self.wall_clock()
        for track, start, pcm in self.recorder.on_media(ev.track, ev.timestamp, ev.payload):
            if track == "inbound" and self.agent is not None:
                self.agent.feed_caller_audio(np.frombuffer(pcm, "<i2"), start)
        exporter = self._exporter
        if exporter is not None and self._export_busy is None \
                and self.recorder.stream_samples - exporter.done > self._kick_at + self.recorder.clock.window:
            self._export_kick.set()
        if self.recorder.stream_samples >= self.max_call_seconds * 8000 and not self.ended:
            self.end_reason = "longest call reached"
        if self.events is not None and self.chunk_samples:
            self._emit_chunks(self.recorder.stream_samples - self.recorder.clock.window)

    def _emit_chunks(self, settled: int, final: bool = False) -> None:
        """Chunk events for settled audio (late frames can no longer change it). At hang-up
        (``final``) the rest goes too, the last chunk short: a call's chunks add up to its recording."""
        while settled - self._chunk_done >= self.chunk_samples or (final and settled > self._chunk_done):
            a, b = self._chunk_done, min(settled, self._chunk_done + self.chunk_samples)
            inbound = read_span(self.recorder.call_dir / "inbound.wav", a, b)
            outbound = read_span(self.recorder.call_dir / "outbound.wav", a, b)
            emit(self.events, "on_track_audio_data", self.sid, "inbound", inbound, 8000)
            emit(self.events, "on_track_audio_data", self.sid, "outbound", outbound, 8000)
            mixed = np.clip(inbound.astype(np.int32) + outbound, -32768, 32767).astype(np.int16)
            emit(self.events, "on_audio_data", self.sid, mixed, 8000)
            self._chunk_done = b

    def on_dtmf(self, ev: Dtmf) -> None:
        at = self.stream_sample()
        self.recorder.event("dtmf", digit=ev.digit, at_ms=at / 8, at_sample=at)
        if self.agent is not None and hasattr(self.agent, "on_dtmf"):
            self.agent.on_dtmf(ev.digit)

    def on_mark(self, ev: Mark) -> None:
        self.recorder.event("mark", name=ev.name, at_ms=self.stream_time_ms())
        if self.agent is not None:
            self.agent.on_mark(ev.name)

    # ------------------------------------------------------------------ CallIO (the assistant's side)
    def stream_sample(self) -> int:
        """Stream clock (samples): the end of the latest caller frame, extrapolated by at most 20 ms
        of wall time while the call goes on; exactly the stream's last moment once it has ended."""
        if self.ended:
            return self.recorder.stream_samples
        since = min(0.02, max(0.0, self.wall_clock() - self._last_frame_wall))
        return self.recorder.stream_samples + int(since * 8000)

    def stream_time_ms(self) -> float:
        """The stream clock in ms, for display and journal times."""
        return self.stream_sample() / 8

    async def play(self, ulaw: bytes) -> tuple[int, int] | None:
        """Send assistant audio; returns the [start, end) samples where it plays (None: not sent)."""
        if self.ended or self.mode != "assistant":
            return None
        span = self.recorder.play(ulaw, self.stream_sample())
        await self._send(serialize(SendMedia(ulaw), self.stream_sid))
        return span

    async def mark(self, name: str) -> None:
        if self.ended or self.mode != "assistant":
            return
        await self._send(serialize(SendMark(name), self.stream_sid))

    async def clear(self) -> None:
        if self.ended or self.mode != "assistant":
            return
        self.recorder.clear(self.stream_sample())
        await self._send(serialize(SendClear(), self.stream_sid))

    async def hangup(self) -> None:
        if self.ended:
            return
        self.end_reason = "assistant hung up"
        await self._close(1000, "call ended by the assistant")

    def add_turn(self, role: str, text: str, start: int, end: int, interrupted: bool = False,
                 **extra: Any) -> None:
        """One turn of the transcript; ``start``/``end`` are sample indexes on the stream clock."""
        self.recorder.add_turn(role, text, start, end, interrupted, **extra)
        if self.events is not None:
            index = extra.get("index", self._turn_index)
            self._turn_index += 1
            track = "inbound" if role == "caller" else "outbound"
            audio = self.read_track(track, start, end)
            emit(self.events, "on_turn_audio", self.sid, role, index, text, audio, 8000)

    def read_caller_audio(self, start: int, stop: int) -> np.ndarray:
        return self.read_track("inbound", start, stop)

    def journal_event(self, kind: str, **data: Any) -> None:
        """Anything else the call's summary should know (e.g. the messages the assistant took)."""
        self.recorder.event(kind, **data)
