"""WS /media-stream: the Twilio edge. Accept → iterate → dispatch → finally finish.

μ-law exists only here: frames are decoded into PCM16 before they reach the call's session,
and the assistant's PCM is encoded on the way out (`TwilioTransport`, app/web/twilio_transport.py).
The sans-I/O protocol (app.twilio.protocol) parses Twilio's frames and makes ours, owning the streamSid.

On `callscribe serve` media frames are recorded in the WebSocket protocol's callback (``_take_frame``).

Bad input on this socket is answered on this socket only: a bad message is skipped with one
log line per kind (as Twilio's 31950/31951 warnings do); a stream that cannot go on is closed
with a code and a reason. Either way the call's recording is finalised, and other calls never
notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from app import close_codes
from app.agent.transcriber import TranscriberIO
from app.audio import mulaw
from app.call.end import EndReason
from app.call.registry import CallRefused
from app.call.session import CallLimits, CallSession
from app.call.transport import CallInfo
from app.cancellation import within
from app.twilio.events import Dtmf, Mark, Media, SendClear, SendMark, SendMedia, Start, Stop
from app.twilio.protocol import ProtocolError, ProtocolWarning, SendRefused, StreamProtocol
from app.twilio.signature import validate
from app.web.deps import Services
from app.web.own_task import run_in_own_task
from app.web.twilio_transport import RATE, TwilioTransport
from app.web.ws_protocol import FRAME_SINK
from app.web.twilio_routes import FROM_LAST4_PARAM, stream_token, streamed_last4

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


class _MediaStreamRoute:
    """The route as a plain ASGI app: Starlette's WebSocket serves the handshake and the close, while
    the frames are read and written with the raw ASGI calls, without its per-message wrapper (a
    few per cent of the event loop at 100 messages a second per call, measured with py-spy)."""

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await media_stream(WebSocket(scope, receive, send), receive, send)


router.add_websocket_route("/media-stream", _MediaStreamRoute())


async def media_stream(ws: WebSocket, receive=None, send=None) -> None:  # type: ignore[no-untyped-def]
    """Handle one Media Stream. ``receive``/``send``: the raw ASGI calls (default: the WebSocket's)."""
    services: Services = ws.app.state.services
    settings = services.settings
    if settings.twilio_auth_token:
        sig = ws.headers.get("x-twilio-signature", "")
        if "?" in str(ws.url) or not validate(_handshake_url(services, ws), {}, sig, settings.twilio_auth_token):
            log.warning("refused a media-stream handshake: missing or wrong x-twilio-signature")
            await ws.close(code=close_codes.POLICY)  # before accept: the upgrade is answered 403
            return
    await ws.accept()
    shell = _StreamShell(ws, services, receive or ws.receive, send)
    try:
        await run_in_own_task(shell.run())
    finally:
        if shell.call is not None:
            # Finalise even if this handler is cancelled (shutdown): the shielded task goes on; drain waits for it.
            task = services.registry.spawn(services.registry.finish(shell.call, shell.reason))
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)


class _StreamShell:
    def __init__(self, ws: WebSocket, services: Services, receive=None, send=None) -> None:  # type: ignore[no-untyped-def]
        self.ws = ws
        self._receive = receive or ws.receive
        self._send_raw = send
        self.services = services
        self.proto = StreamProtocol()
        self.call: CallSession | None = None
        self.reason: EndReason = EndReason.CALLER_DISCONNECTED
        self.warnings = 0
        self.kinds: dict[str, int] = {}
        self.journaled: set[str] = set()
        self._closed = False
        self._closing: asyncio.Future[None] | None = None
        self._send_dead = False
        self.greet_pending = False
        self._greeting: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._set_sink = ws.scope.get("extensions", {}).get(FRAME_SINK)  # app/web/ws_protocol.py, if served so
        self._waiting = False
        self._limit = services.settings.max_ws_message_bytes

    async def send_command(self, command: SendMedia | SendMark | SendClear) -> None:
        try:
            text = self.proto.send(command)
        except SendRefused:
            return  # Twilio said stop: nothing more goes out on this stream
        await self.send(text)

    async def send(self, text: str) -> None:
        if not self._closed and not self._send_dead and self.ws.application_state == WebSocketState.CONNECTED:
            try:
                if self._send_raw is not None:
                    await self._send_raw({"type": "websocket.send", "text": text})
                else:
                    await self.ws.send_text(text)
            except (WebSocketDisconnect, RuntimeError, OSError):  # uvicorn's ClientDisconnected is an OSError
                # The client is closing (e.g. Twilio's close right after `stop`): stop sending, but
                # keep reading what it already sent — the `stop` may still be in the queue.
                self._send_dead = True

    async def close(self, code: int, reason: str) -> None:
        self.start_close(code, reason)

    def start_close(self, code: int, reason: str) -> None:
        """Start the close handshake and return at once. The read loop goes on reading (and
        dropping) what the client still sends until its close frame arrives: a client that was
        mid-flood would otherwise stall the handshake behind the full receive queue until the
        WebSocket layer's close timeout."""
        if self._closed:
            return
        self._closed = True
        if code == close_codes.GOING_AWAY and self.call is not None and not self.call.end_reason:
            self.reason = EndReason.SERVER_SHUTDOWN
        self._closing = asyncio.ensure_future(self._send_close(code, reason[:120]))

    async def _send_close(self, code: int, reason: str) -> None:
        try:
            await self.ws.close(code=code, reason=reason)
        except (RuntimeError, OSError, WebSocketDisconnect) as exc:  # the client is gone already
            log.debug("stream: close after the client left (%s)", type(exc).__name__)

    def _arm(self, seconds: float, reason: EndReason, code: int, message: str) -> None:
        """Close this socket after `seconds` unless re-armed or the stream ends first (no per-frame cost)."""
        if self._timer is not None:
            self._timer.cancel()

        def expire() -> None:
            if self._closed:
                return
            log.warning("stream %s: %s; closing", self.call.sid if self.call else "(before start)", reason)
            self.reason = reason
            self.start_close(code, message)

        self._timer = asyncio.get_running_loop().call_later(seconds, expire)

    async def run(self) -> None:
        self._arm(START_TIMEOUT_S, EndReason.NO_START, close_codes.POLICY,
                  f"no valid start message within {START_TIMEOUT_S:.0f} s")
        if self._set_sink is not None:
            self._set_sink(self._take_frame)
        try:
            await self._run()
        finally:
            self._waiting = False
            if self._set_sink is not None:
                self._set_sink(None)
            if self._timer is not None:
                self._timer.cancel()
            if self.call is not None:
                self.call.line_closed()  # a greeting not sent yet never will be
            if self._greeting is not None:  # the chime: a few loop passes; its turn goes in before the call ends
                try:
                    with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                        await within(asyncio.shield(self._greeting), 5)
                except Exception:
                    log.exception("stream %s: the greeting failed", self.call.sid if self.call else "-")
            if self._closing is not None:
                try:
                    await within(asyncio.shield(self._closing), 15)
                except (asyncio.TimeoutError, asyncio.CancelledError):
                    log.info("stream %s: the close handshake did not complete", self.call.sid if self.call else "-")

    async def _run(self) -> None:
        limit = self._limit
        receive = self._receive
        receive_event = self.proto.receive
        while True:
            self._waiting = True  # the sink may take frames only while the loop waits: their order holds
            try:
                msg = await receive()
            except (RuntimeError, WebSocketDisconnect):
                return
            finally:
                self._waiting = False
            if msg["type"] == "websocket.disconnect":
                code = msg.get("code")
                if self.call is not None and self.call.end_reason:
                    self.reason = self.call.end_reason
                elif self._closed:
                    pass  # we closed it, and self.reason says why
                elif code in (close_codes.GOING_AWAY, close_codes.SERVICE_RESTART):  # our server is stopping
                    self.reason = EndReason.SERVER_SHUTDOWN
                return
            if self._closed:
                continue  # closing: drain until the client's close frame
            data = msg.get("text")
            if data is None:
                data = msg.get("bytes") or b""
            if len(data) > limit:
                self.reason = EndReason.MESSAGE_TOO_LARGE
                await self.close(close_codes.TOO_BIG,
                                 f"message of {len(data)} bytes exceeds MAX_WS_MESSAGE_BYTES={limit}")
                continue
            try:
                event = receive_event(data)
            except ProtocolWarning as w:
                self.warnings += 1
                if self._first_of_kind(w):
                    log.warning("stream %s: skipped a bad message (%s); further ones of this kind are counted",
                                self.call.sid if self.call else "(before start)", w)
                if self.warnings > MAX_WARNINGS:
                    log.warning("stream %s: more than %d invalid messages; closing",
                                self.call.sid if self.call else "(before start)", MAX_WARNINGS)
                    self.reason = EndReason.TOO_MANY_INVALID
                    await self.close(close_codes.POLICY, f"more than {MAX_WARNINGS} invalid messages")
                continue
            except ProtocolError as e:
                log.warning("stream %s: protocol error, closing (%s)", self.call.sid if self.call else "-", e)
                self.reason = EndReason.PROTOCOL_ERROR
                if self.call is not None:
                    self.call.recorder.event("error", what="protocol error", detail=str(e))
                await self.close(e.close_code, str(e))
                continue
            except Exception as e:  # a parser bug must cost this stream only, with a reason, not a traceback
                log.error("stream %s: could not parse a message (%s); closing",
                          self.call.sid if self.call else "-", type(e).__name__)
                self.reason = EndReason.INTERNAL_PARSE_ERROR
                await self.close(close_codes.INTERNAL, "internal error parsing a message")
                continue
            if event.__class__ is Media:  # the per-frame path, 50 a second a track: no coroutine per frame
                call = self.call
                if call is not None and self._record(call, event):
                    if self.greet_pending or call.end_reason is not None:
                        if not await self._after_media(call) and not self._closed:
                            return
                continue
            if not await self.dispatch(event) and not self._closed:
                return  # stop: the caller hung up, Twilio closes the socket

    def _take_frame(self, text: str) -> bool:
        """The frame sink: record a valid media frame of a started call now, in the WebSocket
        protocol's callback (True). Anything else (before the start, the greeting's first frame, an
        oversized or invalid message, another event) is left to the loop, queued in order (False)."""
        if not self._waiting:
            return False
        if self._closed:
            return True  # closing: dropped until the client's close frame, as the loop does
        call = self.call
        if call is None or self.greet_pending or len(text) > self._limit:
            return False
        event = self.proto.receive_media(text)
        if event is None:
            return False
        if self._record(call, event):
            self._close_at_longest_call(call)
        return True

    def _record(self, call: CallSession, event: Media) -> bool:
        """Record one media frame; False when that failed (a bug, or storage gone): the stream is
        then closed with 1011 and a reason, and the call finalised with what it has."""
        try:
            call.on_audio(event.track, event.timestamp, mulaw.decode_bytes(event.payload))
            return True
        except Exception:
            if not self._closed:
                log.exception("stream %s: recording a frame failed; closing", call.sid)
                self.reason = EndReason.INTERNAL_ERROR
                self.start_close(close_codes.INTERNAL, str(EndReason.INTERNAL_ERROR))
            return False

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
        """Handle one event other than media (handled in ``_run``, per frame); False ends the loop."""
        if isinstance(ev, Start):
            return await self.on_start(ev)
        if isinstance(ev, Mark):
            if self.call is not None:
                self.call.on_mark(ev.name)
            return True
        if isinstance(ev, Dtmf):
            if self.call is not None:
                self.call.on_dtmf(ev.digit)
            return True
        if isinstance(ev, Stop):
            self.reason = EndReason.CALLER_HUNG_UP
            if self.call is not None and self.call.end_reason:
                self.reason = self.call.end_reason
            return False
        return True  # connected

    async def _after_media(self, call: CallSession) -> bool:
        """What the first frame (the greeting) or the call's limit asks for after a frame; False ends the loop."""
        # The greeting is spoken out of this loop, which goes on reading the frames that came in
        # meanwhile: it is placed after them (CallSession.play).
        if self.greet_pending:
            self.greet_pending = False
            if call.agent is not None:
                self.services.registry.spawn(call.agent.start())
            else:
                self._greeting = self.services.registry.spawn(call.play_chime())
        return not self._close_at_longest_call(call)

    def _close_at_longest_call(self, call: CallSession) -> bool:
        """Close the stream once the call reached MAX_CALL_SECONDS (its clock); True when it did."""
        if call.end_reason is EndReason.LONGEST_CALL:
            self.reason = call.end_reason
            self.start_close(close_codes.NORMAL, "call reached MAX_CALL_SECONDS")
        return call.end_reason is EndReason.LONGEST_CALL

    async def on_start(self, ev: Start) -> bool:
        s = self.services
        expected = stream_token(s.stream_secret, ev.call_sid)
        given = ev.custom_parameters.get("token", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            log.warning("stream refused: start.customParameters.token does not match a call the webhook answered")
            self.reason = EndReason.REFUSED
            await self.close(close_codes.POLICY, "unknown call: no valid stream token (open streams through POST /voice)")
            return False
        try:
            lock = s.registry.admit(ev.call_sid)
        except CallRefused as e:
            log.warning("stream for call %s refused: %s", ev.call_sid, e)
            await self.close(e.close_code, str(e))
            return False
        mode = "listen" if "outbound" in ev.tracks else "assistant"
        st = s.settings
        info = CallInfo(sid=ev.call_sid, mode=mode, rate=RATE, source="phone", stream_id=ev.stream_sid,
                        account_id=ev.account_sid, tracks=tuple(ev.tracks),
                        params=tuple(k for k in ev.custom_parameters if k not in ("token", FROM_LAST4_PARAM)),
                        from_last4=streamed_last4(ev.custom_parameters))
        limits = CallLimits(reorder_window_ms=st.reorder_window_ms, max_clock_jump_s=st.max_clock_jump_s,
                            max_call_seconds=st.max_call_seconds, export_interval_s=st.export_interval_s,
                            master_writes=st.master_writes)
        try:
            call = CallSession(info, TwilioTransport(self), store=s.store, lock=lock, opts=s.opts,
                               executor=s.registry.executor, limits=limits, events=s.events,
                               chunk_bytes=s.chunk_bytes)
        except OSError as exc:
            lock.release()
            log.error("call %s: cannot create its recording (%s)", ev.call_sid, exc.strerror or exc)
            await self.close(close_codes.INTERNAL, "cannot record this call (storage error)")
            return False
        self.call = call
        s.registry.add(call)
        self._arm(wall_limit_s(st.max_call_seconds), EndReason.LONGEST_CALL_WALL, close_codes.NORMAL,
                  "call reached MAX_CALL_SECONDS")
        log.info("call %s: stream started (%s mode)", call.sid, mode)
        if mode == "assistant":
            if s.agent_factory is not None and st.greeting == "assistant":
                call.agent = s.agent_factory(call)
            # The greeting waits for the first caller frame: only then is the stream clock known
            # (Twilio's first timestamp is ~100-160 ms, not 0), so the recording places it where it plays.
            self.greet_pending = st.greeting != "none" or call.agent is not None
        if call.agent is None and st.transcribe and s.agent_factory is not None:
            tracks = ("inbound", "outbound") if mode == "listen" else ("inbound",)
            io = TranscriberIO(read=call.read_track, settled=call.settled_sample, now=call.stream_sample,
                               add_turn=call.add_turn)
            call.transcriber = s.agent_factory.transcriber(io, tracks)
            s.registry.spawn(call.transcriber.start())
        return True
