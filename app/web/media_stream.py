"""WS /media-stream: accept → iterate → dispatch → finally finish. No audio math, no JSON here.

Bad input on this socket is answered on this socket only: a bad message is skipped with one
log line per kind (as Twilio's 31950/31951 warnings do); a stream that cannot go on is closed
with a code and a reason. Either way the call's recording is finalised, and other calls never
notice.
"""

from __future__ import annotations

import asyncio
import hmac
import logging

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from app.agent.transcriber import TranscriberIO
from app.recording.live import LiveCall, tone
from app.recording.registry import CallRefused
from app.twilio.events import Connected, Dtmf, Mark, Media, Start, Stop
from app.twilio.protocol import ProtocolError, ProtocolWarning, StreamProtocol
from app.twilio.signature import validate
from app.web.deps import Services
from app.web.twilio_routes import stream_token

router = APIRouter()
log = logging.getLogger("callscribe.stream")

MAX_WARNINGS = 200  # invalid messages tolerated on one stream before it is closed as hostile
# Twilio sends `connected` and `start` right after the upgrade; a socket that has not started a
# call by then is closed, so idle sockets cannot pile up (they count against no call limit).
START_TIMEOUT_S = 10.0


def wall_limit_s(max_call_seconds: float) -> float:
    """Wall-clock life of a started stream: MAX_CALL_SECONDS (stream clock) plus a little grace.

    The stream clock stops when Twilio stops sending media (or a client sends only marks, or
    nothing), so MAX_CALL_SECONDS alone would not end such a stream; this does.
    """
    return max_call_seconds + min(60.0, 3.0 + 0.1 * max_call_seconds)


def _handshake_url(services: Services, ws: WebSocket) -> str:
    base = services.settings.public_base_url
    if base:
        return "wss" + base[base.index("://"):] + ws.url.path
    return str(ws.url).split("?")[0]


@router.websocket("/media-stream")
async def media_stream(ws: WebSocket) -> None:
    services: Services = ws.app.state.services
    settings = services.settings
    if settings.twilio_auth_token:
        sig = ws.headers.get("x-twilio-signature", "")
        if "?" in str(ws.url) or not validate(_handshake_url(services, ws), {}, sig, settings.twilio_auth_token):
            log.warning("refused a media-stream handshake: missing or wrong x-twilio-signature")
            await ws.close(code=1008)  # before accept: the upgrade is answered 403
            return
    await ws.accept()
    shell = _StreamShell(ws, services)
    try:
        await shell.run()
    finally:
        if shell.call is not None:
            # Finalise even if this handler is being cancelled (server shutdown).
            task = services.registry.spawn(services.registry.finish(shell.call, shell.reason))
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                pass


class _StreamShell:
    def __init__(self, ws: WebSocket, services: Services) -> None:
        self.ws = ws
        self.services = services
        self.proto = StreamProtocol()
        self.call: LiveCall | None = None
        self.reason = "caller disconnected without stop"
        self.warnings = 0
        self.kinds: dict[str, int] = {}
        self.journaled: set[str] = set()
        self._closed = False
        self._closing: asyncio.Future | None = None
        self._send_dead = False
        self.greet_pending = False
        self._timer: asyncio.TimerHandle | None = None

    async def send(self, text: str) -> None:
        if not self._closed and not self._send_dead and self.ws.application_state == WebSocketState.CONNECTED:
            try:
                await self.ws.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError):
                # The client is closing (e.g. Twilio's close right after `stop`): stop sending, but
                # keep reading what it already sent — the `stop` may still be in the queue.
                self._send_dead = True

    async def close(self, code: int, reason: str) -> None:
        """Start the close handshake and return at once. The read loop goes on reading (and
        dropping) what the client still sends until its close frame arrives: a client that was
        mid-flood would otherwise stall the handshake behind the full receive queue until the
        WebSocket layer's close timeout."""
        if self._closed:
            return
        self._closed = True
        if code == 1001 and self.call is not None and not self.call.end_reason:
            self.reason = "server shutdown"
        self._closing = asyncio.ensure_future(self._send_close(code, reason[:120]))

    async def _send_close(self, code: int, reason: str) -> None:
        try:
            await self.ws.close(code=code, reason=reason)
        except Exception:  # the client is gone already
            pass

    def _arm(self, seconds: float, reason: str, code: int, message: str) -> None:
        """Close this socket after `seconds` unless re-armed or the stream ends first (no per-frame cost)."""
        if self._timer is not None:
            self._timer.cancel()

        def expire() -> None:
            if self._closed:
                return
            log.warning("stream %s: %s; closing", self.call.sid if self.call else "(before start)", reason)
            self.reason = reason
            self.services.registry.spawn(self.close(code, message))

        self._timer = asyncio.get_running_loop().call_later(seconds, expire)

    async def run(self) -> None:
        self._arm(START_TIMEOUT_S, "no start message in time", 1008,
                  f"no valid start message within {START_TIMEOUT_S:.0f} s")
        try:
            await self._run()
        finally:
            if self._timer is not None:
                self._timer.cancel()
            if self._closing is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._closing), 15)
                except (Exception, asyncio.CancelledError):
                    pass

    async def _run(self) -> None:
        limit = self.services.settings.max_ws_message_bytes
        while True:
            try:
                msg = await self.ws.receive()
            except (RuntimeError, WebSocketDisconnect):
                return
            if msg["type"] == "websocket.disconnect":
                code = msg.get("code")
                if self.call is not None and self.call.end_reason:
                    self.reason = self.call.end_reason
                elif self._closed:
                    pass  # we closed it, and self.reason says why
                elif code in (1001, 1012):  # our server is going away (SIGTERM)
                    self.reason = "server shutdown"
                return
            if self._closed:
                continue  # closing: drain until the client's close frame
            data = msg.get("text")
            if data is None:
                data = msg.get("bytes") or b""
            if len(data) > limit:
                self.reason = "message too large"
                await self.close(1009, f"message of {len(data)} bytes exceeds MAX_WS_MESSAGE_BYTES={limit}")
                continue
            try:
                event = self.proto.receive(data)
            except ProtocolWarning as w:
                self.warnings += 1
                if self._first_of_kind(w):
                    log.warning("stream %s: skipped a bad message (%s); further ones of this kind are counted",
                                self.call.sid if self.call else "(before start)", w)
                if self.warnings > MAX_WARNINGS:
                    log.warning("stream %s: more than %d invalid messages; closing",
                                self.call.sid if self.call else "(before start)", MAX_WARNINGS)
                    self.reason = "too many invalid messages"
                    await self.close(1008, f"more than {MAX_WARNINGS} invalid messages")
                continue
            except ProtocolError as e:
                log.warning("stream %s: protocol error, closing (%s)", self.call.sid if self.call else "-", e)
                self.reason = f"protocol error: {e}"
                await self.close(e.close_code, str(e))
                continue
            except Exception as e:  # a parser bug must cost this stream only, with a reason, not a traceback
                log.error("stream %s: could not parse a message (%s); closing",
                          self.call.sid if self.call else "-", type(e).__name__)
                self.reason = "internal error parsing a message"
                await self.close(1011, "internal error parsing a message")
                continue
            if not await self.dispatch(event) and not self._closed:
                return  # stop: the caller hung up, Twilio closes the socket

    def _first_of_kind(self, w: ProtocolWarning) -> bool:
        """Count a skipped message; True the first time its kind is seen on this stream (log it then).
        The first of each kind also goes into the call's journal."""
        first = w.kind not in self.kinds
        self.kinds[w.kind] = self.kinds.get(w.kind, 0) + 1
        if self.call is not None and w.kind not in self.journaled:
            self.journaled.add(w.kind)
            self.call.recorder.event("warning", what=w.kind, message=str(w))
        return first

    async def dispatch(self, ev: object) -> bool:
        """Handle one event; False ends the loop."""
        if isinstance(ev, Media):
            if self.call is not None:
                self.call.on_media(ev)
                if self.greet_pending:
                    self.greet_pending = False
                    await self.greet()
                if self.call.end_reason == "longest call reached":
                    self.reason = self.call.end_reason
                    await self.close(1000, "call reached MAX_CALL_SECONDS")
                    return False
            return True
        if isinstance(ev, Start):
            return await self.on_start(ev)
        if isinstance(ev, Mark):
            if self.call is not None:
                self.call.on_mark(ev)
            return True
        if isinstance(ev, Dtmf):
            if self.call is not None:
                self.call.on_dtmf(ev)
            return True
        if isinstance(ev, Stop):
            self.reason = "caller hung up (stop)"
            if self.call is not None and self.call.end_reason:
                self.reason = self.call.end_reason
            return False
        if isinstance(ev, Connected):
            return True
        return True

    async def on_start(self, ev: Start) -> bool:
        s = self.services
        expected = stream_token(s.stream_secret, ev.call_sid)
        given = ev.custom_parameters.get("token", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            log.warning("stream refused: start.customParameters.token does not match a call the webhook answered")
            self.reason = "refused"
            await self.close(1008, "unknown call: no valid stream token (open streams through POST /voice)")
            return False
        try:
            lock = s.registry.admit(ev.call_sid)
        except CallRefused as e:
            log.warning("stream for call %s refused: %s", ev.call_sid, e)
            await self.close(e.close_code, str(e))
            return False
        mode = "listen" if "outbound" in ev.tracks else "assistant"
        st = s.settings
        try:
            call = LiveCall(ev, mode=mode, store=s.store, lock=lock, opts=s.opts, executor=s.registry.executor,
                            send=self.send, close=self.close, reorder_window_ms=st.reorder_window_ms,
                            max_clock_jump_s=st.max_clock_jump_s, max_call_seconds=st.max_call_seconds,
                            export_interval_s=st.export_interval_s, events=s.events, chunk_bytes=s.chunk_bytes)
        except OSError as exc:
            lock.release()
            log.error("call %s: cannot create its recording (%s)", ev.call_sid, exc.strerror or exc)
            await self.close(1011, "cannot record this call (storage error)")
            return False
        self.call = call
        s.registry.add(call)
        self._arm(wall_limit_s(st.max_call_seconds), "longest call reached (wall clock)", 1000,
                  "call reached MAX_CALL_SECONDS")
        log.info("call %s: stream started (%s mode)", call.sid, mode)
        if mode == "assistant":
            if s.agent_factory is not None and st.greeting == "assistant":
                call.agent = s.agent_factory(call)
            # The greeting waits for the first caller frame: only then is the stream clock known
            # (Twilio's first timestamp is ~100-160 ms, not 0), so the recording places it where it plays.
            self.greet_pending = st.greeting != "none" or call.agent is not None
        if call.agent is None and st.transcribe and s.agent_factory is not None \
                and hasattr(s.agent_factory, "transcriber"):
            tracks = ("inbound", "outbound") if mode == "listen" else ("inbound",)
            io = TranscriberIO(read=call.read_track, settled=call.settled_sample, now=call.stream_sample,
                               add_turn=call.add_turn)
            call.transcriber = s.agent_factory.transcriber(io, tracks)
            s.registry.spawn(call.transcriber.start())
        return True

    async def greet(self) -> None:
        call = self.call
        assert call is not None
        if call.agent is not None:
            self.services.registry.spawn(call.agent.start())
            return
        span = await call.play(tone())
        await call.mark("greeting")
        if span is not None:
            call.add_turn("assistant", "(greeting chime)", *span)
