"""A Twilio emulator: places one simulated call against a Callscribe (or any Twilio-compatible) server.

Used by ``callscribe simulate`` and by the end-to-end tests. It never talks to Twilio.

What it does, in the order Twilio does it (see ``shared/reference/twilio-media-streams.md``):

1. ``POST {base_url}/voice`` — a form with the parameters Twilio always sends, Twilio's headers
   (``User-Agent: TwilioProxy/1.1``, ``I-Twilio-Idempotency-Token``) and, with an auth token,
   ``X-Twilio-Signature`` over the exact URL posted.
2. Reads the TwiML: ``<Connect><Stream>`` → bidirectional "connect" mode; ``<Start><Stream>``
   (e.g. ``track="both_tracks"`` before ``<Dial>``) → unidirectional "listen" mode.
3. Opens the WebSocket (``x-twilio-signature`` over the stream URL *as written in the TwiML*,
   no params) and sends ``connected``, ``start``, a ``media`` frame every 20 ms (160 μ-law
   bytes), ``dtmf`` (connect mode only), mark echoes, and finally ``stop`` + a normal close —
   compact JSON, Twilio's observed key order, numbers as strings.
4. Plays what the server sends (connect mode) on the stream clock: a FIFO of μ-law bytes and
   marks drained 160 bytes per 20 ms slot into ``SimResult.heard`` at index ``stream_ms * 8``.
5. ``POST {base_url}/status`` with ``CallStatus=completed``.

When the caller speaks and hangs up: ``SimConfig.speak_at_s`` / ``tail_s`` give fixed times;
``None`` makes the caller behave like a person on a real line (what ``callscribe simulate``
does by default): it listens to the greeting before its audio starts, and after its audio it
keeps the line open — sending silence, as a phone line does — until the assistant has finished
speaking (``wait_verdict``: nothing left in the playback buffer and nothing new for ``quiet_s``,
on the stream and the wall clock), at most ``max_wait_s`` each time. ``wait_for_call_files``
then polls ``GET /calls/{sid}`` until the server has written the call's files.

Reaching a local server: Twilio only connects to ``wss://``. When ``base_url`` is plain
``http://`` and the TwiML stream URL has the same host and port, the socket is opened with
``ws://`` instead (as a TLS-terminating proxy would); ``SimConfig.stream_url`` overrides the
address entirely. In both cases the signature is still computed over the TwiML URL, because
that is what Twilio signs.

Clock model (one 20 ms slot k at stream time ``ts_k = first_timestamp_ms + 20 k``): first the
caller's ear plays slot k from the FIFO (``heard[ts_k*8 : ts_k*8+160]``) and marks that
playback reached are echoed; then the inbound frame with ``timestamp = ts_k`` is sent. Audio
the server sends after that starts playing at ``max(ts_k + 20, end of FIFO)``. With
``speed > 0`` slot k is due at ``t0 + k*20ms/speed`` on the monotonic clock (no drift); with
``speed == 0`` slots run back to back, yielding to the event loop once per slot.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import email.utils
import json
import math
import os
import secrets
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit
from xml.etree import ElementTree as ET

import httpx
import numpy as np
import websockets
from websockets.asyncio.client import ClientConnection, connect

from app.audio.mulaw import decode as ulaw_decode
from app.audio.mulaw import encode as ulaw_encode
from app.twilio.signature import compute_signature

__all__ = [
    "SimConfig",
    "SimResult",
    "SimulatorError",
    "HandshakeError",
    "run_call",
    "parse_twiml",
    "load_wav_8k",
    "add_arguments",
    "main_from_args",
    "wait_verdict",
    "wait_for_call_files",
    "FilesNotReady",
]

RATE = 8000
FRAME_MS = 20
FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law
ULAW_SILENCE = 0xFF
MAX_BUFFER_BYTES = 10 * 60 * RATE  # Twilio: > 10 min buffered → 31931 "Media Discarded"
LOG_LIMIT = 100_000


class SimulatorError(RuntimeError):
    """The call could not be placed as Twilio would (bad webhook answer, TwiML, handshake…)."""


class HandshakeError(SimulatorError):
    """The WebSocket upgrade was refused or failed (Twilio error 31920 and friends)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class SimConfig:
    """One simulated call. Audio arrays are int16 mono 8 kHz (see ``load_wav_8k``)."""

    base_url: str  # e.g. http://127.0.0.1:8000 — where /voice and /status are
    caller_audio: np.ndarray | None  # the caller's voice (inbound track); None = silence
    outbound_audio: np.ndarray | None = None
    duration_s: float | None = None  # total call length: the call ends then, whatever the waits say
    # After the caller's audio: seconds of silence before hanging up; None = wait like a caller
    # who listens to the end: until the assistant has finished speaking (see ``wait_verdict``).
    tail_s: float | None = 1.0
    # When the caller's audio starts (stream seconds after the first frame); None = once the
    # assistant's greeting has finished (the same rule). Listen mode has no greeting: 0.
    speak_at_s: float | None = 0.0
    quiet_s: float = 2.0  # "finished": nothing left to play and the line quiet this long
    max_wait_s: float = 30.0  # cap on each wait (stream seconds)
    speed: float = 1.0
    auth_token: str | None = None
    call_sid: str | None = None  # default: random "CA" + 32 hex
    from_number: str = "+15005550006"
    to_number: str = "+15005550001"
    first_timestamp_ms: int = 120
    dtmf: list[tuple[float, str]] | tuple = ()
    stream_url: str | None = None
    gaps: list[tuple[float, float]] | tuple = ()
    send_stop: bool = True
    extra_params: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    status_callback: bool = True
    mode: str = "auto"  # "auto" (from TwiML), or "connect"/"listen" to insist on one
    account_sid: str | None = None  # default: random "AC" + 32 hex
    stream_sid: str | None = None  # default: random "MZ" + 32 hex
    http_timeout_s: float = 15.0  # Twilio's webhook timeout
    close_timeout_s: float = 5.0


@dataclass
class SimResult:
    """What happened on the call, as the caller and Twilio saw it."""

    call_sid: str
    stream_sid: str
    mode: str  # "connect" (bidirectional) or "listen" (<Start><Stream>)
    twiml: str
    frames_sent: int  # media messages sent (both tracks in listen mode)
    heard: np.ndarray  # int16 8 kHz, index = stream ms * 8: what the caller heard
    marks_echoed: list[str]  # every mark echoed, in order (played or cleared)
    marks_cleared: list[str]  # the subset echoed because of a clear
    clears: int
    closed_by_server: bool
    close_code: int | None
    close_reason: str | None
    media_received_bytes: int
    custom_parameters: dict
    account_sid: str = ""
    tracks: list[str] = field(default_factory=list)
    twiml_stream_url: str = ""  # URL from the TwiML (what was signed)
    connected_url: str = ""  # URL actually dialled
    messages_sent: int = 0  # every text frame, connected/start/stop included
    last_sequence_number: int = 0
    stop_sent: bool = False
    dtmf_sent: list[str] = field(default_factory=list)
    marks_received: list[str] = field(default_factory=list)
    # (name, stream ms when the server's mark arrived, stream ms when it was echoed, cleared?)
    mark_log: list[tuple[str, int, int, bool]] = field(default_factory=list)
    # (stream ms when a server media message arrived, stream ms its playback starts, bytes);
    # capped at LOG_LIMIT entries so a three-hour call does not hoard memory
    media_log: list[tuple[int, float, int]] = field(default_factory=list)
    clear_log: list[int] = field(default_factory=list)  # stream ms of each clear
    events_received: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # one line per kind, with a count
    warning_counts: dict[str, int] = field(default_factory=dict)
    stream_duration_ms: int = 0  # stream clock at hang-up
    speech_start_ms: int | None = None  # stream ms of the caller audio's first frame
    speech_end_ms: int | None = None  # stream ms just after its last frame
    # ("greeting" | "tail", stream ms waited, "quiet" | "max-wait" | "closed"): each wait for the assistant
    waits: list[tuple[str, int, str]] = field(default_factory=list)
    voice_status: int = 0
    status_callback_status: int | None = None

    @property
    def heard_seconds(self) -> float:
        return len(self.heard) / RATE


# --------------------------------------------------------------------------- helpers


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def _to_ulaw(audio: np.ndarray | None) -> bytes:
    if audio is None or len(audio) == 0:
        return b""
    a = np.asarray(audio)
    if a.ndim != 1:
        raise SimulatorError(f"audio must be mono 1-D int16 at 8 kHz, got shape {a.shape}")
    if a.dtype.kind == "f":
        a = np.clip(np.round(a * 32767.0), -32768, 32767)
    return ulaw_encode(a.astype(np.int32))


def _slot_range(at_s: float, length_s: float) -> range:
    start = max(0, round(at_s * 1000 / FRAME_MS))
    end = max(start, round((at_s + length_s) * 1000 / FRAME_MS))
    return range(start, end)


def _rfc2822_now() -> str:
    return email.utils.format_datetime(datetime.now(timezone.utc).replace(microsecond=0))


@dataclass
class TwimlStream:
    mode: str  # "connect" | "listen"
    url: str
    track: str  # inbound_track | outbound_track | both_tracks
    parameters: dict[str, str]
    name: str | None


def parse_twiml(twiml: str, webhook_url: str) -> TwimlStream:
    """Find the ``<Stream>`` Twilio would open in a TwiML document.

    ``<Connect><Stream>`` is bidirectional (connect mode, inbound track only);
    ``<Start><Stream track=…>`` is unidirectional (listen mode). The first one in document
    order wins. Raises ``SimulatorError`` for anything else.
    """
    try:
        root = ET.fromstring(twiml.strip().encode("utf-8"))
    except ET.ParseError as exc:
        raise SimulatorError(f"webhook answer is not XML TwiML ({exc}): {twiml[:200]!r}") from None
    if root.tag != "Response":
        raise SimulatorError(f"TwiML root must be <Response>, got <{root.tag}>")
    for verb in root:
        if verb.tag not in ("Connect", "Start"):
            continue
        stream = verb.find("Stream")
        if stream is None:
            continue
        url = (stream.get("url") or "").strip()
        if not url:
            raise SimulatorError("<Stream> has no url attribute (Twilio error 31923 Malformed URL)")
        url = urljoin(webhook_url, url)  # Twilio allows relative URLs
        params: dict[str, str] = {}
        for p in stream.findall("Parameter"):
            name = p.get("name")
            if name is None:
                raise SimulatorError("<Parameter> without a name attribute")
            params[name] = p.get("value", "")
        if verb.tag == "Connect":
            return TwimlStream("connect", url, "inbound_track", params, stream.get("name"))
        track = stream.get("track", "inbound_track")
        if track not in ("inbound_track", "outbound_track", "both_tracks"):
            raise SimulatorError(f"<Stream track={track!r}>: Twilio accepts inbound_track, outbound_track, both_tracks")
        return TwimlStream("listen", url, track, params, stream.get("name"))
    verbs = ", ".join(f"<{v.tag}>" for v in root) or "nothing"
    raise SimulatorError(
        f"TwiML has neither <Connect><Stream> nor <Start><Stream> (it has {verbs}); "
        "the simulator cannot stream this call"
    )


def _stream_target(twiml_url: str, base_url: str, override: str | None, warn: Callable[[str, str], None]) -> str:
    """The URL to dial for the stream (see module docstring on the ws:// downgrade)."""
    parts = urlsplit(twiml_url)
    if parts.scheme in ("http", "https"):  # relative URL resolved against the webhook
        parts = parts._replace(scheme="wss" if parts.scheme == "https" else "ws")
    if parts.scheme == "ws":
        warn("scheme", "stream URL uses ws:// — real Twilio accepts only wss:// (error 31922)")
    elif parts.scheme != "wss":
        raise SimulatorError(f"stream URL scheme {parts.scheme!r} not supported (Twilio error 31922): {twiml_url}")
    if parts.query:
        warn("query", "stream URL has a query string — Twilio does not support it; the simulator drops it")
        parts = parts._replace(query="")
    if parts.fragment:
        parts = parts._replace(fragment="")
    if override:
        return override
    base = urlsplit(base_url)
    if parts.scheme == "wss" and base.scheme == "http" and parts.netloc.lower() == base.netloc.lower():
        parts = parts._replace(scheme="ws")
    return urlunsplit(parts)


# --------------------------------------------------------------------------- waiting for the assistant


def wait_verdict(
    now_ms: float,
    now_wall: float,
    *,
    start_ms: float,
    start_wall: float,
    last_ms: float,
    last_wall: float,
    playing: bool,
    quiet_s: float,
    max_wait_s: float,
) -> str:
    """Has the assistant finished speaking, for a caller who started waiting at ``start_*``?

    ``last_*`` is the last sign of the assistant (audio or a mark arriving, audio playing),
    on the stream clock (ms) and the wall clock (s); ``playing`` is whether the caller's
    playback buffer still holds audio or marks. Returns

    - ``"quiet"``: nothing left to play and nothing new for ``quiet_s`` on *both* clocks —
      the stream clock because the server detects the end of a turn from the stream, the
      wall clock because it needs real time to transcribe and synthesise whatever the speed;
    - ``"max-wait"``: ``max_wait_s`` of stream time since the wait began (the caller gives up);
    - ``"idle"``: quiet on the stream clock but not yet on the wall clock — the server may be
      thinking, so the caller's line should run at real time (it is silence anyway);
    - ``"waiting"``: keep going at the call's speed.
    """
    since_ms = now_ms - max(start_ms, last_ms)
    since_wall = now_wall - max(start_wall, last_wall)
    if not playing and since_ms >= quiet_s * 1000 and since_wall >= quiet_s:
        return "quiet"
    if now_ms - start_ms >= max_wait_s * 1000:
        return "max-wait"
    if not playing and since_ms >= quiet_s * 1000:
        return "idle"
    return "waiting"


# --------------------------------------------------------------------------- the stream session


class _Session:
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
        # Playback FIFO: bytes (μ-law) and str (mark names). `fifo_bytes` counts unplayed audio.
        self.fifo: deque[bytes | str] = deque()
        self.head_offset = 0
        self.fifo_bytes = 0
        self.pending_marks: dict[str, list[int]] = {}  # name → arrival stream ms (FIFO per name)
        # The last sign of the assistant (audio or mark arriving, audio playing): stream ms, wall s.
        self.activity_ms = float(self.now_ms)
        self.activity_wall = 0.0
        self.heard = np.zeros(0, np.int16)  # grows as the call goes on; index = stream ms * 8

    # ---- sending

    def _warn(self, kind: str, text: str) -> None:
        _warn(self.res, kind, text)

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
                await self.ws.send(_dumps(msg))
            except websockets.ConnectionClosed as exc:
                self._on_closed(exc)
                return False
            self.res.messages_sent += 1
            self.res.last_sequence_number = self.seq
            return True

    async def send_connected_start(self) -> None:
        res = self.res
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"}, numbered=False)
        await self._send(
            lambda seq: {
                "event": "start",
                "sequenceNumber": str(seq),
                "start": {
                    "accountSid": res.account_sid,
                    "streamSid": res.stream_sid,
                    "callSid": res.call_sid,
                    "tracks": list(res.tracks),
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
                    "customParameters": dict(self.stream.parameters),
                },
                "streamSid": res.stream_sid,
            }
        )

    async def _send_media(self, track: str, ts: int, payload: bytes) -> None:
        self.chunks[track] += 1
        chunk = self.chunks[track]
        b64 = base64.b64encode(payload).decode("ascii")
        ok = await self._send(
            lambda seq: {
                "event": "media",
                "sequenceNumber": str(seq),
                "media": {"track": track, "chunk": str(chunk), "timestamp": str(ts), "payload": b64},
                "streamSid": self.res.stream_sid,
            }
        )
        if ok:
            self.res.frames_sent += 1

    async def _send_dtmf(self, digit: str) -> None:
        ok = await self._send(
            lambda seq: {
                "event": "dtmf",
                "streamSid": self.res.stream_sid,
                "sequenceNumber": str(seq),
                "dtmf": {"track": "inbound_track", "digit": digit},
            }
        )
        if ok:
            self.res.dtmf_sent.append(digit)

    async def _echo_mark(self, name: str, cleared: bool) -> None:
        waiting = self.pending_marks.get(name)
        arrived = waiting.pop(0) if waiting else self.now_ms
        self.res.marks_echoed.append(name)
        if cleared:
            self.res.marks_cleared.append(name)
        self.res.mark_log.append((name, arrived, self.now_ms, cleared))
        await self._send(
            lambda seq: {
                "event": "mark",
                "sequenceNumber": str(seq),
                "streamSid": self.res.stream_sid,
                "mark": {"name": name},
            }
        )

    async def send_stop(self) -> None:
        self.hangup = True
        ok = await self._send(
            lambda seq: {
                "event": "stop",
                "sequenceNumber": str(seq),
                "streamSid": self.res.stream_sid,
                "stop": {"accountSid": self.res.account_sid, "callSid": self.res.call_sid},
            }
        )
        self.res.stop_sent = ok

    # ---- playback (connect mode)

    def _play_slot(self, heard: np.ndarray, pos: int) -> list[str]:
        """Play 160 bytes of FIFO into ``heard[pos:]``; return marks that playback reached."""
        reached: list[str] = []
        need = FRAME_BYTES
        out = bytearray()
        while self.fifo:
            head = self.fifo[0]
            if isinstance(head, str):
                self.fifo.popleft()
                reached.append(head)
                continue
            if need == 0:
                break
            take = min(need, len(head) - self.head_offset)
            out += head[self.head_offset : self.head_offset + take]
            self.head_offset += take
            need -= take
            self.fifo_bytes -= take
            if self.head_offset >= len(head):
                self.fifo.popleft()
                self.head_offset = 0
        if out:
            end = min(len(heard), pos + len(out))
            if end > pos:
                heard[pos:end] = ulaw_decode(bytes(out[: end - pos]))
        return reached

    # ---- the call clock

    def _ensure_heard(self, n: int) -> None:
        if len(self.heard) < n:
            grown = np.zeros(max(n, 2 * len(self.heard)), np.int16)
            grown[: len(self.heard)] = self.heard
            self.heard = grown

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
            self._warn("dtmf-listen", "dtmf is only sent on bidirectional (<Connect>) streams; skipped")
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
            self._ensure_heard(pos + FRAME_BYTES)
            # 1. what the caller hears during [ts, ts+20)
            if self.bidirectional:
                playing = self.fifo_bytes > 0
                reached = self._play_slot(self.heard, pos)
                self.now_ms = ts + FRAME_MS
                if playing:
                    self._touch()
                for name in reached:
                    await self._echo_mark(name, cleared=False)
            else:
                a = k * FRAME_BYTES
                out_frame = outbound[a : a + FRAME_BYTES]
                if out_frame:
                    self.heard[pos : pos + len(out_frame)] = ulaw_decode(out_frame)
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
            k += 1
        if wait is not None:  # the server hung up (or the fixed length ran out) while we waited
            self._end_wait("greeting" if phase == "lead" else "tail", wait, "closed" if self.closed else "duration")
        self.res.stream_duration_ms = self.now_ms

    def _verdict(self, wait: tuple[int, float, float], now_wall: float) -> str:
        return wait_verdict(
            self.now_ms,
            now_wall,
            start_ms=wait[1],
            start_wall=wait[2],
            last_ms=self.activity_ms,
            last_wall=self.activity_wall,
            playing=bool(self.fifo),
            quiet_s=self.cfg.quiet_s,
            max_wait_s=self.cfg.max_wait_s,
        )

    def _end_wait(self, what: str, wait: tuple[int, float, float], how: str) -> None:
        waited = int(self.now_ms - wait[1])
        self.res.waits.append((what, waited, how))
        if how == "max-wait":
            if what == "greeting":
                self._warn("max-wait", f"the greeting was still going after --max-wait {self.cfg.max_wait_s:g} s; the caller spoke anyway")
            else:
                self._warn("max-wait", f"the assistant was still going after --max-wait {self.cfg.max_wait_s:g} s; the caller hung up anyway")

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
        if isinstance(message, bytes):
            self._warn("31950", "31950 Malformed Message: WebSocket binary frame (Twilio wants JSON text frames)")
            return
        try:
            msg = json.loads(message)
        except ValueError:
            self._warn("31951", "31951 Invalid Message: not JSON")
            return
        if not isinstance(msg, dict):
            self._warn("31951", "31951 Invalid Message: JSON is not an object")
            return
        event = msg.get("event")
        res.events_received[str(event)] = res.events_received.get(str(event), 0) + 1
        if event not in ("media", "mark", "clear"):
            self._warn("31951", f"31951 Invalid Message: unknown event {event!r}")
            return
        if msg.get("streamSid") != res.stream_sid:
            self._warn("31951", f"31951 Invalid Message: {event} with wrong or missing streamSid {msg.get('streamSid')!r}")
            return
        allowed = {"media": {"event", "streamSid", "media"}, "mark": {"event", "streamSid", "mark"}, "clear": {"event", "streamSid"}}
        extra = set(msg) - allowed[event]
        if extra:
            self._warn("31951-extra", f"31951 Invalid Message: extra field(s) {sorted(extra)} in {event} (processed anyway)")
        if not self.bidirectional:
            self._warn("unidirectional", f"server sent {event} on a unidirectional <Start><Stream>; Twilio ignores it")
            return
        if self.hangup:
            return  # the call is over; nothing plays any more
        self._touch()
        if event == "media":
            media = msg.get("media")
            payload = media.get("payload") if isinstance(media, dict) else None
            if not isinstance(payload, str):
                self._warn("31951", "31951 Invalid Message: media without media.payload string")
                return
            try:
                audio = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                self._warn("31951", "31951 Invalid Message: media.payload is not valid base64")
                return
            if audio[:4] in (b"RIFF", b"ID3\x03", b"ID3\x04", b"OggS", b"fLaC"):
                self._warn("header", "media.payload starts with a file header; Twilio plays it as noise")
            res.media_received_bytes += len(audio)
            if not audio:
                return
            if self.fifo_bytes + len(audio) > MAX_BUFFER_BYTES:
                self._warn("31931", "31931 Media Discarded: more than 10 minutes of audio buffered")
                return
            if len(res.media_log) < LOG_LIMIT:
                res.media_log.append((self.now_ms, self.now_ms + self.fifo_bytes / 8, len(audio)))
            self.fifo.append(audio)
            self.fifo_bytes += len(audio)
        elif event == "mark":
            mark = msg.get("mark")
            name = mark.get("name") if isinstance(mark, dict) else None
            if not isinstance(name, str):
                self._warn("31951", "31951 Invalid Message: mark without mark.name string")
                return
            res.marks_received.append(name)
            self.pending_marks.setdefault(name, []).append(self.now_ms)
            if self.fifo_bytes == 0:
                await self._echo_mark(name, cleared=False)  # nothing buffered: echoed at once
            else:
                self.fifo.append(name)
        else:  # clear
            res.clears += 1
            if len(res.clear_log) < LOG_LIMIT:
                res.clear_log.append(self.now_ms)
            pending = [item for item in self.fifo if isinstance(item, str)]
            self.fifo.clear()
            self.head_offset = 0
            self.fifo_bytes = 0
            for name in pending:
                await self._echo_mark(name, cleared=True)


def _warn(res: SimResult, kind: str, text: str) -> None:
    n = res.warning_counts.get(kind, 0)
    res.warning_counts[kind] = n + 1
    if n == 0:
        res.warnings.append(text)


# --------------------------------------------------------------------------- the call


def _webhook_params(cfg: SimConfig, call_sid: str, account_sid: str, status: str) -> dict[str, str]:
    params = {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": status,
        "Called": cfg.to_number,
        "CalledCity": "",
        "CalledCountry": "US",
        "CalledState": "",
        "CalledZip": "",
        "Caller": cfg.from_number,
        "CallerCity": "",
        "CallerCountry": "US",
        "CallerState": "",
        "CallerZip": "",
        "Direction": "inbound",
        "From": cfg.from_number,
        "FromCity": "",
        "FromCountry": "US",
        "FromState": "",
        "FromZip": "",
        "To": cfg.to_number,
        "ToCity": "",
        "ToCountry": "US",
        "ToState": "",
        "ToZip": "",
    }
    params.update(cfg.extra_params)
    return params


def _http_headers(cfg: SimConfig, url: str, params: dict[str, str]) -> dict[str, str]:
    headers = {
        "User-Agent": "TwilioProxy/1.1",
        "Content-Type": "application/x-www-form-urlencoded; charset=UTF-8",
        "Accept": "*/*",
        "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
    }
    if cfg.auth_token:
        headers["X-Twilio-Signature"] = compute_signature(url, params, cfg.auth_token)
    headers.update(cfg.headers)
    return headers


async def _post_form(client: httpx.AsyncClient, cfg: SimConfig, url: str, params: dict[str, str]) -> httpx.Response:
    body = urlencode(params)
    return await client.post(url, content=body.encode("utf-8"), headers=_http_headers(cfg, url, params))


async def run_call(cfg: SimConfig) -> SimResult:
    """Place one simulated call; return what happened. Raises ``SimulatorError`` on a failed setup."""
    if cfg.speed < 0:
        raise SimulatorError("speed must be >= 0")
    if cfg.first_timestamp_ms < 0:
        raise SimulatorError("first_timestamp_ms must be >= 0")
    for name in ("tail_s", "speak_at_s", "quiet_s", "max_wait_s", "duration_s"):
        value = getattr(cfg, name)
        if value is not None and not value >= 0:
            raise SimulatorError(f"{name} must be >= 0, got {value}")
    base_url = cfg.base_url.rstrip("/")
    call_sid = cfg.call_sid or _new_sid("CA")
    account_sid = cfg.account_sid or _new_sid("AC")
    stream_sid = cfg.stream_sid or _new_sid("MZ")
    voice_url = f"{base_url}/voice"

    inbound = _to_ulaw(cfg.caller_audio)
    outbound = _to_ulaw(cfg.outbound_audio)

    async with httpx.AsyncClient(timeout=cfg.http_timeout_s, trust_env=False) as client:
        try:
            resp = await _post_form(client, cfg, voice_url, _webhook_params(cfg, call_sid, account_sid, "ringing"))
        except httpx.HTTPError as exc:
            raise SimulatorError(f"POST {voice_url} failed: {exc!r} (Twilio error 11200)") from exc
        if resp.status_code != 200:
            raise SimulatorError(f"POST {voice_url} → HTTP {resp.status_code} (Twilio error 11200): {resp.text[:300]}")
        twiml = resp.text
        stream = parse_twiml(twiml, voice_url)
        if cfg.mode not in ("auto", stream.mode):
            raise SimulatorError(f"expected {cfg.mode} mode but the TwiML asks for {stream.mode}: {twiml[:300]}")
        tracks = {"inbound_track": ["inbound"], "outbound_track": ["outbound"], "both_tracks": ["inbound", "outbound"]}[stream.track]

        res = SimResult(
            call_sid=call_sid,
            stream_sid=stream_sid,
            mode=stream.mode,
            twiml=twiml,
            frames_sent=0,
            heard=np.zeros(0, np.int16),
            marks_echoed=[],
            marks_cleared=[],
            clears=0,
            closed_by_server=False,
            close_code=None,
            close_reason=None,
            media_received_bytes=0,
            custom_parameters=dict(stream.parameters),
            account_sid=account_sid,
            tracks=tracks,
            voice_status=resp.status_code,
        )
        if stream.mode == "connect" and outbound is not None and len(outbound):
            _warn(res, "outbound-connect", "outbound_audio is ignored in connect mode (Twilio streams only the inbound track)")
        res.twiml_stream_url = urlunsplit(urlsplit(stream.url)._replace(query="", fragment=""))
        target = _stream_target(stream.url, base_url, cfg.stream_url, lambda k, t: _warn(res, k, t))
        res.connected_url = target

        total_slots = None
        if cfg.duration_s is not None:
            total_slots = max(0, math.ceil(cfg.duration_s * 1000 / FRAME_MS - 1e-9))

        ws_headers = dict(cfg.headers)
        if cfg.auth_token:
            # Twilio signs the stream URL from the TwiML, lower-case header name, no params.
            ws_headers["x-twilio-signature"] = compute_signature(res.twiml_stream_url, None, cfg.auth_token)
        try:
            ws = await connect(
                target,
                additional_headers=ws_headers,
                user_agent_header=None,
                compression=None,
                proxy=None,
                open_timeout=10,
                ping_interval=None,
                close_timeout=cfg.close_timeout_s,
                max_size=16 * 2**20,
            )
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
            await _status_callback(client, cfg, res, base_url, 0)
            raise HandshakeError(
                f"WebSocket upgrade to {target} answered HTTP {status}, not 101 (Twilio error 31920)", status
            ) from exc
        except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            await _status_callback(client, cfg, res, base_url, 0)
            hint = " — pass stream_url/--stream-url to reach a local server" if urlsplit(target).scheme == "wss" else ""
            raise HandshakeError(f"WebSocket connection to {target} failed: {exc!r}{hint}") from exc

        session = _Session(cfg, ws, res, stream)
        receiver = asyncio.create_task(session.receive_loop())
        try:
            await session.send_connected_start()
            await session.run_clock(inbound, outbound, total_slots)
            if not session.closed:
                if cfg.send_stop:
                    await session.send_stop()
                    await ws.close()  # Twilio: stop, then a normal close
                else:
                    session.hangup = True
                    if ws.transport is not None:
                        ws.transport.abort()  # the caller's leg vanished: no stop, no close frame
            try:
                await asyncio.wait_for(receiver, timeout=cfg.close_timeout_s + 1)
            except asyncio.TimeoutError:
                _warn(res, "close-timeout", "server did not finish the close handshake in time")
        finally:
            if not receiver.done():
                receiver.cancel()
                try:
                    await receiver
                except (asyncio.CancelledError, Exception):
                    pass
            if ws.transport is not None and not ws.transport.is_closing():
                ws.transport.abort()

        end_ms = session.now_ms
        res.stream_duration_ms = end_ms
        heard = session.heard[: end_ms * RATE // 1000]
        res.heard = np.concatenate([heard, np.zeros(end_ms * RATE // 1000 - len(heard), np.int16)])
        await _status_callback(client, cfg, res, base_url, end_ms)
    return res


async def _status_callback(client: httpx.AsyncClient, cfg: SimConfig, res: SimResult, base_url: str, end_ms: int) -> None:
    if not cfg.status_callback:
        return
    seconds = int(round(end_ms / 1000))
    params = _webhook_params(cfg, res.call_sid, res.account_sid, "completed")
    params.update(
        {
            "CallDuration": str(seconds),
            "Duration": str(max(1, math.ceil(seconds / 60)) if seconds else 0),
            "Timestamp": _rfc2822_now(),
            "CallbackSource": "call-progress-events",
            "SequenceNumber": "0",
        }
    )
    url = f"{base_url}/status"
    try:
        resp = await _post_form(client, cfg, url, params)
        res.status_callback_status = resp.status_code
        if resp.status_code >= 400:
            _warn(res, "status", f"POST {url} → HTTP {resp.status_code} (Twilio would log a Debugger warning)")
    except httpx.HTTPError as exc:
        _warn(res, "status", f"POST {url} failed: {exc!r}")


# --------------------------------------------------------------------------- audio files


def load_wav_8k(path: str | os.PathLike[str]) -> np.ndarray:
    """Read any audio file soundfile can (any rate, channels, subtype) → mono int16 at 8 kHz."""
    import soundfile as sf

    from app.audio.resample import resample

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if rate != RATE:
        mono = resample(mono, int(rate), RATE)
    return np.clip(np.round(mono * 32767.0), -32768, 32767).astype(np.int16)


def _write_wav_8k(path: str | os.PathLike[str], audio: np.ndarray) -> None:
    import soundfile as sf

    sf.write(str(path), np.asarray(audio, np.int16), RATE, subtype="PCM_16")


# --------------------------------------------------------------------------- CLI


def _pairs(text: str, what: str) -> list[tuple[float, str]]:
    out = []
    for item in filter(None, (s.strip() for s in text.split(","))):
        at, sep, value = item.partition(":")
        if not sep:
            raise argparse.ArgumentTypeError(f"{what}: expected 'seconds:value', got {item!r}")
        try:
            out.append((float(at), value))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: bad time {at!r} in {item!r}") from None
    return out


def _dtmf_arg(text: str) -> list[tuple[float, str]]:
    pairs = _pairs(text, "--dtmf")
    for _, digit in pairs:
        if len(digit) != 1 or digit not in "0123456789*#ABCDabcd":
            raise argparse.ArgumentTypeError(f"--dtmf: {digit!r} is not a DTMF digit (0-9 * # A-D)")
    return pairs


def _gaps_arg(text: str) -> list[tuple[float, float]]:
    try:
        return [(at, float(length)) for at, length in _pairs(text, "--gaps")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gaps: expected 'at:length,…' in seconds, got {text!r}") from None


def _kv_arg(sep: str) -> Callable[[str], tuple[str, str]]:
    def parse(text: str) -> tuple[str, str]:
        key, found, value = text.partition(sep)
        if not found or not key.strip():
            raise argparse.ArgumentTypeError(f"expected NAME{sep}VALUE, got {text!r}")
        return key.strip(), value.strip() if sep == ":" else value

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``callscribe simulate`` (and its description and exit codes, unless the parser has its own)."""
    if not parser.description:
        parser.description = (
            "Place one call against a running server, exactly as Twilio would. By default the caller listens to the "
            "greeting, plays --wav, stays on the line until the assistant has finished its reply (at most --max-wait "
            "s), hangs up, and waits until the server has written the call's files, then prints where they are."
        )
    if not parser.epilog:
        parser.epilog = ("Exit status: 0 the call went through and its files are written; 1 the call could not be "
                         "placed; 2 unreadable audio; 3 the files did not appear within --files-timeout.")
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="server base URL where /voice and /status live (default %(default)s)")
    parser.add_argument("--wav", help="caller audio (inbound track), any rate/channels; default: silence")
    parser.add_argument("--wav-outbound", help="listen mode only: the other party's audio (outbound track)")
    parser.add_argument("--mode", choices=("auto", "connect", "listen"), default="auto", help="expected mode; auto = whatever the TwiML says")
    parser.add_argument("--speed", type=float, default=1.0, help="1 = real time, 10 = ten times faster, 0 = as fast as possible")
    parser.add_argument(
        "--tail", type=float, default=None, metavar="SECONDS",
        help="hang up this many seconds after the caller's audio ends (0 = right after speaking). Default: like a "
             "caller who listens to the end — keep the line open (silence) until the assistant has finished "
             "speaking: everything it sent has played and nothing new came for --quiet seconds; at most --max-wait",
    )
    parser.add_argument(
        "--speak-at", type=float, default=None, metavar="SECONDS",
        help="start the caller's audio this many seconds into the call (0 = at once, over the greeting). Default: "
             "once the assistant's greeting has finished, by the same rule as the default --tail (listen mode: at once)",
    )
    parser.add_argument("--quiet", type=float, default=2.0, metavar="SECONDS",
                        help="how long the line must stay quiet, with nothing left to play, for the assistant to count "
                             "as finished (default %(default)s; it needs time to answer the caller's last words)")
    parser.add_argument("--max-wait", type=float, default=30.0, metavar="SECONDS",
                        help="wait at most this long for the greeting, and again at the end (default %(default)s)")
    parser.add_argument("--duration", type=float,
                        help="total call length in seconds: the call ends then, whatever --tail says "
                             "(default: until the tail is over; 10 s without --wav)")
    parser.add_argument("--files-timeout", type=float, default=60.0, metavar="SECONDS",
                        help="after the call, wait this long for the server to have written the call's files "
                             "(polls GET /calls/{sid}); exit 3 if they are not there by then. 0 = do not wait "
                             "(default %(default)s)")
    parser.add_argument("--api-key", default=None,
                        help="the server's API_KEY, to ask it for the call's files (default: $API_KEY)")
    parser.add_argument("--auth-token", default=None, help="sign requests like Twilio (default: $TWILIO_AUTH_TOKEN; '' = unsigned)")
    parser.add_argument("--out", default="heard.wav", help="write what the caller heard here (8 kHz WAV; default %(default)s; '' to skip)")
    parser.add_argument("--call-sid", help="CallSid to use (default: random CA…)")
    parser.add_argument("--dtmf", type=_dtmf_arg, default=[], help='key presses at seconds into the call, e.g. "1.5:1,2.0:#" (connect mode only)')
    parser.add_argument("--gaps", type=_gaps_arg, default=[], help='frames not sent, e.g. "3.0:0.5" = a 0.5 s hole at 3 s')
    parser.add_argument("--no-stop", action="store_true", help="drop the socket at the end instead of sending stop")
    parser.add_argument("--no-status-callback", action="store_true", help="do not POST /status after the call")
    parser.add_argument("--stream-url", help="dial this WebSocket URL instead of the TwiML one (the TwiML URL is still signed)")
    parser.add_argument("--first-timestamp", type=int, default=120, help="media.timestamp of the first frame in ms (default %(default)s)")
    parser.add_argument("--header", type=_kv_arg(":"), action="append", default=[], metavar="NAME:VALUE", help="extra HTTP/WS header (repeatable), e.g. 'X-API-Key: k'")
    parser.add_argument("--param", type=_kv_arg("="), action="append", default=[], metavar="NAME=VALUE", help="extra webhook form parameter (repeatable)")
    parser.add_argument("--from", dest="from_number", default="+15005550006", help="caller number (default: Twilio test number %(default)s)")
    parser.add_argument("--to", dest="to_number", default="+15005550001", help="called number (default: Twilio test number %(default)s)")


def _auth_token(args: argparse.Namespace) -> str | None:
    # Read at run time, not when the parser is built, so --help never captures the secret.
    token = args.auth_token if args.auth_token is not None else os.environ.get("TWILIO_AUTH_TOKEN")
    return token or None


class FilesNotReady(RuntimeError):
    """``wait_for_call_files`` gave up: the server did not show the call as finalised in time."""


def _api_headers(headers: dict[str, str], api_key: str | None) -> dict[str, str]:
    out = dict(headers)
    if api_key:
        out["X-API-Key"] = api_key
    return out


def wait_for_call_files(
    base_url: str,
    call_sid: str,
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    interval_s: float = 0.2,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """Poll ``GET {base_url}/calls/{sid}`` until the call is ``finalized`` and its transcript complete.

    Raises ``FilesNotReady`` with a message saying why: still live or being finalised when the
    time ran out, unknown to the server, the API key missing or wrong, the server unreachable.
    """
    url = f"{base_url.rstrip('/')}/calls/{call_sid}"
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    with httpx.Client(timeout=10, trust_env=False, headers=headers or {}, transport=transport) as client:
        while True:
            try:
                resp = client.get(url)
            except httpx.HTTPError as exc:
                last = f"GET {url} failed: {exc!r}"
            else:
                try:
                    body = resp.json() if resp.status_code == 200 else {}
                except ValueError:
                    body = None
                if resp.status_code == 200 and not isinstance(body, dict):
                    last = "the answer is not a JSON object"
                elif resp.status_code == 200:
                    if body.get("state") == "finalized" and not body.get("transcript_pending"):
                        return body  # the transcript of the last turns is written a moment after the audio
                    last = (f"the call is still {body.get('state')!r}" if body.get("state") != "finalized"
                            else "the transcript of the call's last turns is still being made")
                elif resp.status_code in (401, 403):
                    raise FilesNotReady(
                        f"GET {url} → HTTP {resp.status_code}: the server wants its API key to show the call; "
                        "pass --api-key (or set $API_KEY)"
                    )
                elif resp.status_code == 404:
                    last = "the server does not know the call (HTTP 404)"
                else:
                    last = f"GET {url} → HTTP {resp.status_code}: {resp.text[:200]}"
            if time.monotonic() >= deadline:
                raise FilesNotReady(f"gave up waiting for the call's files after {timeout_s:g} s: {last}")
            time.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))


def _print_files(base_url: str, body: dict[str, Any]) -> None:
    result = body.get("result") or {}
    files = result.get("files") or {}
    names = [files[k] for k in ("conversation", "transcript", "summary", "json") if isinstance(files.get(k), str)]
    names += [n for k in ("tracks", "turn_clips") for n in files.get(k, []) if isinstance(n, str)]
    names += [n for n in (body.get("files") or {}) if n not in names]
    path = (result.get("audio") or {}).get("path")
    where = str(Path(path).parent) if path else None
    print(f"call files:    {where + ' (on the server)' if where else 'on the server'}; "
          f"each also at {base_url.rstrip('/')}/calls/{body.get('call_sid')}/files/<name>")
    for n in names:
        print(f"               {n}")


def main_from_args(args: argparse.Namespace) -> int:
    """Run one call from parsed ``simulate`` flags; print a summary.

    Exit codes: 0 the call went through and the server has its files; 1 the call could not be
    placed; 2 unreadable audio; 3 the call went through but its files did not appear in
    ``--files-timeout`` seconds (or the server would not say).
    """
    try:
        caller = load_wav_8k(args.wav) if args.wav else None
        outbound = load_wav_8k(args.wav_outbound) if getattr(args, "wav_outbound", None) else None
    except Exception as exc:  # soundfile raises several types; the message is what matters
        print(f"simulate: cannot read audio: {exc}", file=sys.stderr)
        return 2
    duration = args.duration
    if duration is None and caller is None and outbound is None:
        duration = 10.0
    cfg = SimConfig(
        base_url=args.url,
        caller_audio=caller,
        outbound_audio=outbound,
        duration_s=duration,
        tail_s=args.tail,
        speak_at_s=getattr(args, "speak_at", None),
        quiet_s=getattr(args, "quiet", 2.0),
        max_wait_s=getattr(args, "max_wait", 30.0),
        speed=args.speed,
        auth_token=_auth_token(args),
        call_sid=args.call_sid,
        from_number=getattr(args, "from_number", "+15005550006"),
        to_number=getattr(args, "to_number", "+15005550001"),
        first_timestamp_ms=getattr(args, "first_timestamp", 120),
        dtmf=list(args.dtmf or []),
        stream_url=args.stream_url,
        gaps=list(getattr(args, "gaps", None) or []),
        send_stop=not args.no_stop,
        extra_params=dict(getattr(args, "param", None) or []),
        headers=dict(getattr(args, "header", None) or []),
        status_callback=not getattr(args, "no_status_callback", False),
        mode=args.mode,
    )
    try:
        res = asyncio.run(run_call(cfg))
    except SimulatorError as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 1
    print(f"call sid:      {res.call_sid}")
    print(f"stream sid:    {res.stream_sid}")
    print(f"mode:          {res.mode} (tracks {', '.join(res.tracks)})  stream {res.connected_url}")
    print(f"frames sent:   {res.frames_sent}  ({res.stream_duration_ms / 1000:.2f} s of stream time)")
    if res.speech_start_ms is not None and (args.wav or getattr(args, "wav_outbound", None)):
        end = f" to {res.speech_end_ms / 1000:.2f} s" if res.speech_end_ms is not None else ""
        print(f"caller audio:  from {res.speech_start_ms / 1000:.2f} s{end} of stream time")
    for what, waited, how in res.waits:
        label = "the greeting" if what == "greeting" else "the assistant to finish"
        outcome = {"quiet": "it had", "max-wait": "gave up (--max-wait)", "closed": "the call ended",
                   "duration": "--duration ran out"}[how]
        print(f"waited:        {waited / 1000:.2f} s for {label}: {outcome}")
    print(f"received:      {res.media_received_bytes} bytes of audio ({res.media_received_bytes / RATE:.2f} s)")
    print(f"marks:         {len(res.marks_echoed)} echoed, {len(res.marks_cleared)} of them by clear; clears: {res.clears}")
    ended = "server closed the socket" if res.closed_by_server else ("stop sent" if res.stop_sent else "socket dropped")
    print(f"ended:         {ended}; close code {res.close_code} {res.close_reason or ''}".rstrip())
    if res.status_callback_status is not None:
        print(f"status cb:     HTTP {res.status_callback_status}")
    for w in res.warnings:
        print(f"warning:       {w}")
    if args.out:
        out = Path(args.out)
        _write_wav_8k(out, res.heard)
        print(f"heard audio:   {out} ({len(res.heard) / RATE:.2f} s)")
    timeout = getattr(args, "files_timeout", 0.0) or 0.0
    if timeout <= 0:
        return 0
    api_key = args.api_key if getattr(args, "api_key", None) is not None else os.environ.get("API_KEY")
    try:
        body = wait_for_call_files(cfg.base_url, res.call_sid, headers=_api_headers(cfg.headers, api_key or None),
                                   timeout_s=timeout)
    except FilesNotReady as exc:
        print(f"simulate: {exc}", file=sys.stderr)
        return 3
    _print_files(cfg.base_url, body)
    return 0


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m app.simulator", description="Simulate one Twilio call.")
    add_arguments(_parser)
    sys.exit(main_from_args(_parser.parse_args()))
