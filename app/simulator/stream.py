"""The Media Streams WebSocket of one call: Twilio's clock sending frames, the server's messages played.

``StreamSession`` runs two tasks on one socket. The sender (``run_clock``) is the call's clock:
after ``connected`` and ``start`` it steps one 20 ms slot at a time, and in each slot first
plays what the server sent (connect mode: ``PlaybackBuffer`` into ``HeardAudio``, echoing the
marks playback reached), then sends the media frame(s) Twilio captured during that slot (the
caller's audio or silence; both tracks in listen mode, the other party's being what the caller
hears), then any ``dtmf`` due. The receiver (``receive_loop``) reads the server's ``media``,
``mark`` and ``clear`` as ``wire.read_server_message`` sees them and feeds the buffer. Sends
hold a lock, so sequence numbers stay contiguous whichever task sends.

A call goes through three phases: the lead (``speak_at_s``, or a wait for the greeting), the
caller's audio, the tail (``tail_s``, or a wait for the assistant to finish; see ``wait``);
``duration_s`` cuts it at a fixed length instead. Pacing: with ``speed > 0`` slot k is due at
``t0 + k*20ms/speed`` on the event loop's monotonic clock (no drift); with ``speed == 0`` slots
run back to back, yielding to the event loop once per slot; while the caller waits on a quiet
line the slots run at real time (the server may need it to think). Faster than real time, the
second slot waits for the server's first audio or mark (``_first_answer``, at most
``FIRST_ANSWER_WAIT_S``), as a real line's 20 ms would let the greeting start.

The socket is opened and closed by ``call.run_call``; this module neither dials nor posts.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any, Callable

import websockets
from websockets.asyncio.client import ClientConnection

from app.simulator import wire
from app.simulator.config import FRAME_BYTES, FRAME_MS, LOG_LIMIT, RATE, ULAW_SILENCE, SimConfig, SimResult
from app.simulator.playback import HeardAudio, PlaybackBuffer
from app.simulator.twiml import TwimlStream
from app.simulator.wait import wait_verdict
from app.twilio.events import SendClear, SendMark, SendMedia

__all__ = ["StreamSession"]


FIRST_ANSWER_WAIT_S = 0.5  # faster than real time: how long the second frame waits for the server's greeting


def _slot_range(at_s: float, length_s: float) -> range:
    start = max(0, round(at_s * 1000 / FRAME_MS))
    end = max(start, round((at_s + length_s) * 1000 / FRAME_MS))
    return range(start, end)


class StreamSession:
    """One Media Streams WebSocket: a sender (the call clock) and a receiver (server messages)."""

    def __init__(self, cfg: SimConfig, ws: ClientConnection, res: SimResult, stream: TwimlStream) -> None:
        self.cfg = cfg
        self.ws = ws
        self.res = res
        self.stream = stream
        self.bidirectional = stream.mode == "connect"
        self.seq = 0
        self.chunks = {"inbound": 0, "outbound": 0}
        self.send_lock = asyncio.Lock()
        self.closed = False
        self.hangup = False  # we sent stop / dropped the socket: later closes are not the server's
        self.now_ms = cfg.first_timestamp_ms  # stream clock: end of the last slot played
        self.playback = PlaybackBuffer()
        # The last sign of the assistant (audio or mark arriving, audio playing): stream ms, wall s.
        self.activity_ms = float(self.now_ms)
        self.activity_wall = 0.0
        self.heard = HeardAudio()

    # ---- sending

    def _touch(self) -> None:
        """The assistant did something now (see ``wait_verdict``)."""
        self.activity_ms = float(self.now_ms)
        self.activity_wall = asyncio.get_running_loop().time()

    async def _send(self, build: Callable[[int], dict[str, Any]] | dict[str, Any], numbered: bool = True) -> bool:
        """Send one message; ``build(seq)`` gets the next sequence number. False once closed."""
        async with self.send_lock:
            if self.closed:
                return False
            if numbered:
                self.seq += 1
                msg = build(self.seq) if callable(build) else build
            else:
                msg = build if isinstance(build, dict) else build(0)
            try:
                await self.ws.send(wire.dumps(msg))
            except websockets.ConnectionClosed as exc:
                self._on_closed(exc)
                return False
            self.res.messages_sent += 1
            self.res.last_sequence_number = self.seq
            return True

    async def send_connected_start(self) -> None:
        res = self.res
        await self._send(wire.connected(), numbered=False)
        await self._send(
            lambda seq: wire.start(seq, account_sid=res.account_sid, stream_sid=res.stream_sid, call_sid=res.call_sid,
                                   tracks=res.tracks, parameters=self.stream.parameters)
        )

    async def _send_media(self, track: str, ts: int, payload: bytes) -> None:
        self.chunks[track] += 1
        chunk = self.chunks[track]
        ok = await self._send(lambda seq: wire.media(seq, self.res.stream_sid, track, chunk, ts, payload))
        if ok:
            self.res.frames_sent += 1

    async def _send_dtmf(self, digit: str) -> None:
        ok = await self._send(lambda seq: wire.dtmf(seq, self.res.stream_sid, digit))
        if ok:
            self.res.dtmf_sent.append(digit)

    async def _echo_mark(self, name: str, cleared: bool) -> None:
        arrived = self.playback.arrival(name, self.now_ms)
        self.res.marks_echoed.append(name)
        if cleared:
            self.res.marks_cleared.append(name)
        self.res.mark_log.append((name, arrived, self.now_ms, cleared))
        await self._send(lambda seq: wire.mark(seq, self.res.stream_sid, name))

    async def send_stop(self) -> None:
        self.hangup = True
        ok = await self._send(lambda seq: wire.stop(seq, self.res.stream_sid, self.res.account_sid, self.res.call_sid))
        self.res.stop_sent = ok

    # ---- the call clock

    async def run_clock(self, inbound: bytes, outbound: bytes, total_slots: int | None) -> None:
        """Stream the call: an optional lead before the caller's audio, the audio, a tail.

        The lead is ``cfg.speak_at_s`` or, when None, a wait for the greeting; the tail is
        ``cfg.tail_s`` or, when None, a wait for the assistant to finish (``wait_verdict``).
        ``total_slots`` (from ``cfg.duration_s``) ends the call at a fixed length instead.
        The caller's track is silence outside its audio; in listen mode the outbound track is
        not shifted (it is the other party, not the caller waiting to speak).
        """
        cfg = self.cfg
        loop = asyncio.get_running_loop()
        gap_slots: set[int] = set()
        for at, length in cfg.gaps:
            gap_slots.update(_slot_range(at, length))
        dtmf_at: dict[int, list[str]] = {}
        for at, digit in cfg.dtmf:
            dtmf_at.setdefault(max(0, round(at * 1000 / FRAME_MS)), []).append(str(digit))
        if dtmf_at and not self.bidirectional:
            self.res.warn("dtmf-listen", "dtmf is only sent on bidirectional (<Connect>) streams; skipped")
            dtmf_at = {}
        send_in = "inbound" in self.res.tracks
        send_out = "outbound" in self.res.tracks
        silence = bytes([ULAW_SILENCE]) * FRAME_BYTES
        audio_slots = math.ceil(max(len(inbound), len(outbound) if not self.bidirectional else 0) / FRAME_BYTES)
        speak_at = cfg.speak_at_s if cfg.speak_at_s is not None else (None if self.bidirectional else 0.0)
        lead_slots = None if speak_at is None else max(0, round(speak_at * 1000 / FRAME_MS))
        tail_slots = None if cfg.tail_s is None else max(0, math.ceil(cfg.tail_s * 1000 / FRAME_MS - 1e-9))
        if total_slots is not None:
            tail_slots = total_slots  # a fixed length: the call ends there, not after a tail
        speed_period = FRAME_MS / 1000 / cfg.speed if cfg.speed > 0 else 0.0

        phase = "lead"
        speech_k0 = tail_k0 = 0
        wait: tuple[int, float, float] | None = None  # (slot, stream ms, wall s) where a wait began
        self.activity_wall = loop.time()
        due = loop.time()  # wall time slot k is due; advanced per slot, so no drift
        period = speed_period
        k = 0
        while not self.closed:
            if total_slots is not None and k >= total_slots:
                break
            verdict = "waiting"
            if phase == "lead":
                if lead_slots is None:
                    if wait is None:
                        wait = (k, float(self.now_ms), loop.time())
                    verdict = self._verdict(wait, loop.time())
                    if verdict in ("quiet", "max-wait"):
                        self._end_wait("greeting", wait, verdict)
                        phase, wait = "speak", None
                elif k >= lead_slots:
                    phase = "speak"
                if phase == "speak":
                    speech_k0 = k
                    self.res.speech_start_ms = cfg.first_timestamp_ms + FRAME_MS * k
            if phase == "speak" and k - speech_k0 >= audio_slots:
                phase, tail_k0 = "tail", k
                self.res.speech_end_ms = cfg.first_timestamp_ms + FRAME_MS * k
            if phase == "tail":
                if tail_slots is not None:
                    if k - tail_k0 >= tail_slots:
                        break
                else:
                    if wait is None:
                        wait = (k, float(self.now_ms), loop.time())
                    verdict = self._verdict(wait, loop.time())
                    if verdict in ("quiet", "max-wait"):
                        self._end_wait("tail", wait, verdict)
                        wait = None
                        break
            # Pacing: the call's speed, except real time while the line is idle and the server
            # may be thinking (wait_verdict "idle"). A change of pace re-anchors the deadline.
            new_period = FRAME_MS / 1000 if (verdict == "idle" and (cfg.speed == 0 or cfg.speed > 1)) else speed_period
            if new_period != period:
                period = new_period
                due = max(due, loop.time())
            if period:
                delay = due - loop.time()
                await asyncio.sleep(delay if delay > 0 else 0)
            else:
                await asyncio.sleep(0)
            due += period
            if self.closed:
                break
            ts = cfg.first_timestamp_ms + FRAME_MS * k
            pos = ts * RATE // 1000
            self.heard.reserve(pos + FRAME_BYTES)
            # 1. what the caller hears during [ts, ts+20)
            if self.bidirectional:
                playing = self.playback.queued_bytes > 0
                played, reached = self.playback.play()
                self.heard.write(pos, played)
                self.now_ms = ts + FRAME_MS
                if playing:
                    self._touch()
                for name in reached:
                    await self._echo_mark(name, cleared=False)
            else:
                a = k * FRAME_BYTES
                out_frame = outbound[a : a + FRAME_BYTES]
                if out_frame:
                    self.heard.write(pos, out_frame)
                self.now_ms = ts + FRAME_MS
            # 2. the frames Twilio captured during that slot
            if k not in gap_slots:
                if send_in:
                    frame = b""
                    if phase == "speak":
                        a = (k - speech_k0) * FRAME_BYTES
                        frame = inbound[a : a + FRAME_BYTES]
                    await self._send_media("inbound", ts, frame + silence[len(frame) :])
                if send_out:
                    a = k * FRAME_BYTES
                    frame = outbound[a : a + FRAME_BYTES]
                    await self._send_media("outbound", ts, frame + silence[len(frame) :])
            for digit in dtmf_at.get(k, ()):
                await self._send_dtmf(digit)
            if k == 0 and self.bidirectional and period < FRAME_MS / 1000:
                await self._first_answer()
                due = max(due, loop.time())
            k += 1
        if wait is not None:  # the server hung up (or the fixed length ran out) while we waited
            self._end_wait("greeting" if phase == "lead" else "tail", wait, "closed" if self.closed else "duration")
        self.res.stream_duration_ms = self.now_ms

    async def _first_answer(self) -> None:
        """Faster than real time, the second frame waits (up to FIRST_ANSWER_WAIT_S of wall time) for
        the server's first audio or mark: on a real line the server has 20 ms after the first frame,
        time enough to start its greeting, which then plays from the next slot. Unpaced, the whole
        call would otherwise reach the server before its greeting left, and the caller would not
        hear it (the server places it after every frame it has read)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + FIRST_ANSWER_WAIT_S
        res = self.res
        while not (res.media_received_bytes or res.marks_received or self.closed) and loop.time() < end:
            await asyncio.sleep(0.002)

    def _verdict(self, wait: tuple[int, float, float], now_wall: float) -> str:
        return wait_verdict(
            self.now_ms,
            now_wall,
            start_ms=wait[1],
            start_wall=wait[2],
            last_ms=self.activity_ms,
            last_wall=self.activity_wall,
            playing=self.playback.pending,
            quiet_s=self.cfg.quiet_s,
            max_wait_s=self.cfg.max_wait_s,
        )

    def _end_wait(self, what: str, wait: tuple[int, float, float], how: str) -> None:
        waited = int(self.now_ms - wait[1])
        self.res.waits.append((what, waited, how))
        if how == "max-wait":
            if what == "greeting":
                self.res.warn("max-wait", f"the greeting was still going after --max-wait {self.cfg.max_wait_s:g} s; the caller spoke anyway")
            else:
                self.res.warn("max-wait", f"the assistant was still going after --max-wait {self.cfg.max_wait_s:g} s; the caller hung up anyway")

    # ---- receiving

    def _on_closed(self, exc: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        rcvd = getattr(exc, "rcvd", None)
        if rcvd is not None:
            self.res.close_code, self.res.close_reason = rcvd.code, rcvd.reason
        else:
            self.res.close_code = self.ws.close_code if self.ws.close_code is not None else 1006
            self.res.close_reason = self.ws.close_reason or None
        if not self.hangup:
            self.res.closed_by_server = True

    async def receive_loop(self) -> None:
        try:
            async for message in self.ws:
                await self._handle(message)
        except websockets.ConnectionClosed as exc:
            self._on_closed(exc)
            return
        self._on_closed(None)

    async def _handle(self, message: str | bytes) -> None:
        res = self.res
        read = wire.read_server_message(message, res.stream_sid)
        if read.event is not None:
            res.events_received[read.event] = res.events_received.get(read.event, 0) + 1
        for kind, text in read.warnings:
            res.warn(kind, text)
        if not read.accepted:
            return
        if not self.bidirectional:
            res.warn("unidirectional", f"server sent {read.event} on a unidirectional <Start><Stream>; Twilio ignores it")
            return
        if self.hangup:
            return  # the call is over; nothing plays any more
        self._touch()
        for kind, text in read.command_warnings:
            res.warn(kind, text)
        command = read.command
        if isinstance(command, SendMedia):
            self._on_media(command.payload)
        elif isinstance(command, SendMark):
            await self._on_mark(command.name)
        elif isinstance(command, SendClear):
            await self._on_clear()

    def _on_media(self, audio: bytes) -> None:
        res = self.res
        res.media_received_bytes += len(audio)
        if not audio:
            return
        delay_ms = self.playback.add_audio(audio)
        if delay_ms is None:
            res.warn("31931", "31931 Media Discarded: more than 10 minutes of audio buffered")
            return
        if len(res.media_log) < LOG_LIMIT:
            res.media_log.append((self.now_ms, self.now_ms + delay_ms, len(audio)))

    async def _on_mark(self, name: str) -> None:
        self.res.marks_received.append(name)
        if not self.playback.add_mark(name, self.now_ms):
            await self._echo_mark(name, cleared=False)  # nothing buffered: echoed at once

    async def _on_clear(self) -> None:
        res = self.res
        res.clears += 1
        if len(res.clear_log) < LOG_LIMIT:
            res.clear_log.append(self.now_ms)
        for name in self.playback.clear():
            await self._echo_mark(name, cleared=True)
