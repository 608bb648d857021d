"""WS /web-call: browser calls (the Micdrop protocol), and POST /web-call/tokens.

Accept first, then decide: the client's first frame is its params (within 3 s); a refusal is a
close with the protocol's code and a reason (4400 bad params, 4401 unauthorised, 4404 an ended
call), because a refused upgrade looks like 1006 to the browser, which then retries forever.

A browser call is a ``CallSession`` like a phone call, at 16 kHz on the speech-only clock, with
a ``MicdropTransport``. Its id is ``WB`` + 32 hex digits: derived from the page's ``callId``
param when there is one (so a reconnect that re-sends the same params finds the same call), or
random. A socket that drops without a hang-up (anything but 1000, 1001 or 1005) leaves the call
waiting ``WEB_CALL_RESUME_S`` for a reconnect with the same callId and the same authorization;
after that it is finalised, and its summary says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time

from fastapi import APIRouter, WebSocket

from app import close_codes
from app.agent.transcriber import TranscriberIO
from app.call.end import EndReason
from app.call.registry import CallRefused
from app.call.session import CallLimits, CallSession
from app.call.transport import CallInfo
from app.cancellation import within
from app.micdrop import protocol as micdrop
from app.micdrop.protocol import Audio, Command, Ignored, MicdropError, MicdropProtocol, Params
from app.recording.timeline import SpeechOnlyClock
from app.web import web_call_tokens as tokens
from app.web.browser_calls import CALL_ID, BrowserCall, BrowserCalls, call_sid, digest
from app.web.deps import ApiKeyDep, Services, ServicesDep
from app.web.micdrop_transport import MicdropTransport, Socket
from app.web.own_task import run_in_own_task
from app.web.web_call_socket import WebCallSocket

__all__ = ["router", "warn_if_open"]

router = APIRouter()
log = logging.getLogger("callscribe.webcall")

HANG_UP_CODES = {close_codes.NORMAL, close_codes.GOING_AWAY, 1005}  # the client's stop(), a closed tab
MAX_WARNINGS = 200  # unknown frames tolerated on one socket before it is closed as hostile
# At StartSpeaking the client sends the audio it queued while its detector made up its mind,
# all at once, then one live chunk every ~100 ms. Frames arriving within this long of a turn's
# first one are that queue: placed together, ending when they arrived (they were spoken before).
BATCH_S = 0.025


def warn_if_open(services: Services) -> None:
    if not services.settings.api_key:
        log.warning("API_KEY is not set: browser calls (WS /web-call) are open to anyone who can reach this "
                    "server, and each one runs the assistant and is recorded. Set API_KEY in production.")


# ---------------------------------------------------------------------------------- tokens
@router.post("/web-call/tokens", dependencies=[ApiKeyDep], tags=["browser calls"], status_code=201)
async def mint_token(services: ServicesDep) -> dict:
    """A single-use token a browser puts in its params (``"authorization": "<token>"``) instead of
    the API key: your backend asks for one and hands it to the page. It expires after
    WEB_CALL_TOKEN_TTL_S seconds unless a call has started with it (that call's reconnects may
    present it again)."""
    ttl = services.settings.web_call_token_ttl_s
    token, expires = tokens.mint(services.stream_secret, ttl)
    return {"token": token, "expires_in_s": ttl, "expires_at": expires,
            "params": {"authorization": token}, "url": "/web-call"}


# ---------------------------------------------------------------------------------- the socket
@router.websocket("/web-call")
async def web_call(ws: WebSocket) -> None:
    services: Services = ws.app.state.services
    await ws.accept()  # always: a refused upgrade makes the client retry forever
    shell = _WebCallShell(ws, services)
    try:
        await run_in_own_task(shell.run())
    finally:
        await shell.after()


class _WebCallShell(WebCallSocket):
    def __init__(self, ws: WebSocket, services: Services) -> None:
        super().__init__(ws)
        self.services = services
        self.calls: BrowserCalls = services.web_calls
        self.proto = MicdropProtocol()
        self.bc: BrowserCall | None = None
        self.socket_id = self.calls.next_socket()
        self.warnings = 0
        self.ending = False
        self._batch: list[bytes] | None = None  # a turn's first frames, placed together
        self._batch_at = 0.0  # when its last frame arrived (call seconds)
        self._batch_timer: asyncio.TimerHandle | None = None

    # --- the loop ---
    async def run(self) -> None:
        settings = self.services.settings
        origin = self.ws.headers.get("origin", "").rstrip("/")
        if settings.origins and origin not in settings.origins:
            await self.refuse(micdrop.UNAUTHORIZED, "this page's origin may not open browser calls (ALLOWED_ORIGINS)")
            return
        try:
            first = await within(self._receive(), micdrop.PARAMS_TIMEOUT_S)
        except asyncio.TimeoutError:
            await self.refuse(micdrop.BAD_REQUEST, f"missing params: send a JSON object as the first text frame "
                                                   f"within {micdrop.PARAMS_TIMEOUT_S:.0f} s")
            return
        if first is None:
            return
        try:
            params = self.proto.receive(first)
        except MicdropError as e:
            await self.refuse(e.code, str(e))
            return
        assert isinstance(params, Params)
        if not await self.start(params):
            return
        await self.loop()

    async def start(self, params: Params) -> bool:
        s = self.services
        st = s.settings
        call_id = params.public.get("callId")
        if call_id is not None and not (isinstance(call_id, str) and CALL_ID.match(call_id)):
            await self.refuse(micdrop.BAD_REQUEST, "params.callId must be 16 to 64 letters, digits, - or _")
            return False
        nonce = await self.authorize(params.authorization)
        if nonce is False:
            return False
        sid = call_sid(s.stream_secret, call_id if isinstance(call_id, str) else None)
        auth = digest(params.authorization)
        bc = self.calls.calls.get(sid)
        if bc is not None:
            return await self.resume(bc, auth)
        if s.store.is_finalized(sid) or sid in s.registry.live:
            await self.refuse(micdrop.NOT_FOUND, "this call has ended; start a new call (a new callId)")
            return False
        if s.coordinator.is_live(sid):
            # Another worker holds it (a reconnect that landed elsewhere): the client retries in 1 s.
            await self.refuse(close_codes.INTERNAL, "this call continues on another worker; reconnecting")
            return False
        if isinstance(nonce, str) and not s.coordinator.use_once(nonce, sid, st.web_call_token_ttl_s):
            await self.refuse(micdrop.UNAUTHORIZED, "this browser-call token was already used by another call")
            return False
        try:
            lock = s.registry.admit(sid)
        except CallRefused as e:
            await self.refuse(e.close_code if e.close_code == close_codes.TRY_AGAIN else micdrop.NOT_FOUND, str(e))
            return False
        t0 = time.monotonic()
        clock = SpeechOnlyClock(rate=micdrop.RATE, wall=lambda: time.monotonic() - t0)
        transport = MicdropTransport(clock.now)
        info = CallInfo(sid=sid, mode="assistant", rate=micdrop.RATE, source="browser",
                        tracks=("inbound",), params=tuple(sorted(params.public)))
        limits = CallLimits(max_call_seconds=st.max_call_seconds, export_interval_s=st.export_interval_s,
                            master_writes=st.master_writes)
        try:
            call = CallSession(info, transport, store=s.store, lock=lock, opts=s.opts, executor=s.registry.executor,
                               limits=limits, clock=clock, events=s.events, chunk_bytes=s.chunk_bytes)
        except OSError as exc:
            lock.release()
            log.error("browser call %s: cannot create its recording (%s)", sid, exc.strerror or exc)
            await self.refuse(close_codes.INTERNAL, "cannot record this call (storage error)")
            return False
        transport.on_mark = call.on_mark
        call.journal_event("params", values=params.public, client=self.ws.headers.get("user-agent", "")[:120],
                           origin=self.ws.headers.get("origin", ""))
        self.bc = bc = BrowserCall(call, transport, auth, t0=t0)
        self.calls.calls[sid] = bc
        s.registry.add(call)
        self.attach(resumed=False)
        log.info("browser call %s: started", sid)
        await self.greet()
        return True

    async def authorize(self, authorization: str | None) -> str | bool | None:
        """None: allowed (no key set, or the key itself); a nonce: a valid token to claim; False: refused."""
        settings = self.services.settings
        if not settings.api_key:
            return None
        given = authorization or ""
        if given.startswith("Bearer "):
            if hmac.compare_digest(given[7:].encode(), settings.api_key.encode()):
                return None
            await self.refuse(micdrop.UNAUTHORIZED, "unauthorised: wrong API key")
            return False
        if given.startswith(tokens.PREFIX):
            try:
                nonce, _ = tokens.check(self.services.stream_secret, given)
                return nonce
            except tokens.TokenError as e:
                # A call that started with it may still reconnect with it after it expired.
                if "expired" in str(e) and any(bc.auth == digest(given) for bc in self.calls.calls.values()):
                    return None
                await self.refuse(micdrop.UNAUTHORIZED, f"unauthorised: {e}")
                return False
        await self.refuse(micdrop.UNAUTHORIZED, 'unauthorised: params need "authorization": "Bearer <API_KEY>" '
                                                "or a token from POST /web-call/tokens")
        return False

    async def resume(self, bc: BrowserCall, auth: str) -> bool:
        if not hmac.compare_digest(bc.auth, auth) or bc.finishing:
            await self.refuse(micdrop.UNAUTHORIZED if not bc.finishing else micdrop.NOT_FOUND,
                              "unauthorised for this call" if not bc.finishing else "this call has ended")
            return False
        if bc.resume_timer is not None:
            bc.resume_timer.cancel()
            bc.resume_timer = None
        if bc.transport.attached:  # the old socket is half-open (its drop not seen yet): this one replaces it
            await bc.transport.close_socket(close_codes.NORMAL, "replaced by a newer connection to this call")
        self.bc = bc
        bc.reconnects += 1
        bc.call.journal_event("reconnected", at_ms=bc.call.recorder.ms(bc.call.stream_sample()),
                              reconnects=bc.reconnects)
        log.info("browser call %s: resumed (reconnect %d)", bc.call.sid, bc.reconnects)
        self.attach(resumed=True)
        bc.transport.no_reply()  # the client may still be "processing": no old answer is coming
        return True

    def attach(self, *, resumed: bool) -> None:
        bc = self.bc
        assert bc is not None
        bc.socket_id = self.socket_id
        bc.transport.attach(Socket(self._send_text, self._send_bytes, self._close))
        sid = bc.call.sid
        info = {"sid": sid, "resumed": resumed, "recording": f"/calls/{sid}/view"}  # its page on the dashboard
        bc.transport.notice("Call " + json.dumps(info, separators=(",", ":")))

    async def greet(self) -> None:
        s = self.services
        call = self.bc.call  # type: ignore[union-attr]
        greeting = s.settings.greeting
        if s.agent_factory is not None and greeting == "assistant":
            call.agent = s.agent_factory(call, micdrop.RATE, turns_from_client=True)
            s.registry.spawn(call.agent.start())
            return
        if s.agent_factory is not None and s.settings.transcribe:
            io = TranscriberIO(read=call.read_track, settled=call.settled_sample, now=call.stream_sample,
                               add_turn=call.add_turn)
            call.transcriber = s.agent_factory.transcriber(io, ("inbound",))
            s.registry.spawn(call.transcriber.start())
        if greeting == "tone":
            await call.play_chime()
        else:
            call.no_reply()

    async def loop(self) -> None:
        bc = self.bc
        assert bc is not None
        call, transport = bc.call, bc.transport
        limit = self.services.settings.max_ws_message_bytes
        while True:
            frame = await self._receive()
            if frame is None:
                return
            if self.closed_by_us or bc.socket_id != self.socket_id:
                continue  # closing (or replaced): drain until the client's close frame
            if len(frame) > limit:
                call.journal_event("warning", what="frame too large", bytes=len(frame))
                call.end_reason = EndReason.MESSAGE_TOO_LARGE
                await self.refuse(micdrop.BAD_REQUEST, f"frame of {len(frame)} bytes exceeds "
                                                       f"MAX_WS_MESSAGE_BYTES={limit} (send ~100 ms chunks)")
                return
            ev = self.proto.receive(frame)
            if not isinstance(ev, Audio):
                self._place_batch()
            if isinstance(ev, Audio):
                self._audio(ev.pcm)
                if call.end_reason is EndReason.LONGEST_CALL and not self.ending:
                    self.ending = True
                    await transport.close(close_codes.NORMAL, "call reached MAX_CALL_SECONDS")
            elif ev is Command.START_SPEAKING:
                transport.caller_speaking(True)
                call.caller_started()
                self._batch = []
            elif ev is Command.STOP_SPEAKING:
                transport.caller_speaking(False)
                call.caller_stopped()
            elif ev is Command.MUTE:
                transport.caller_speaking(False)
                call.journal_event("paused", at_ms=call.recorder.ms(call.stream_sample()))
                call.connection_lost("paused")  # the client stops playing and drops what comes
            elif isinstance(ev, Ignored):
                self.warnings += 1
                if self.warnings == 1:
                    call.journal_event("warning", what="ignored frame", why=ev.why)
                if self.warnings > MAX_WARNINGS:
                    call.end_reason = EndReason.TOO_MANY_INVALID
                    await self.refuse(micdrop.BAD_REQUEST, f"more than {MAX_WARNINGS} frames that mean nothing "
                                                           "(audio outside a turn, unknown text)")
                    return

    def _audio(self, pcm: bytes) -> None:
        bc = self.bc
        assert bc is not None
        at = time.monotonic() - bc.t0
        if self._batch is None:
            bc.call.on_audio("inbound", at, pcm)
            return
        self._batch.append(pcm)
        self._batch_at = at
        if self._batch_timer is None:
            self._batch_timer = asyncio.get_running_loop().call_later(BATCH_S, self._place_batch)

    def _place_batch(self) -> None:
        """The turn's first frames, as one chunk ending when the last of them arrived."""
        if self._batch_timer is not None:
            self._batch_timer.cancel()
            self._batch_timer = None
        batch, self._batch = self._batch, None
        if batch and self.bc is not None and not self.bc.call.ended:
            self.bc.call.on_audio("inbound", self._batch_at, b"".join(batch))

    async def after(self) -> None:
        """The socket is gone: hang up, or wait for a reconnect."""
        bc = self.bc
        if bc is None or bc.socket_id != self.socket_id:
            return  # refused, or a newer socket has the call
        self._place_batch()
        bc.transport.detach()
        call = bc.call
        code = self.close_code
        if call.end_reason is not None or self.closed_by_us or code in HANG_UP_CODES or call.ended:
            reason = call.end_reason or (EndReason.BROWSER_HUNG_UP if code in HANG_UP_CODES
                                         else EndReason.CALLER_DISCONNECTED)
            log.info("browser call %s: ended (%s, close code %s)", call.sid, reason, code)
            await self.finish(bc, reason)
            return
        wait = self.services.settings.web_call_resume_s
        call.connection_lost()
        call.journal_event("disconnected", code=code, at_ms=call.recorder.ms(call.stream_sample()),
                           waits_s=wait)
        log.info("browser call %s: socket dropped (%s); waiting %d s for a reconnect", call.sid, code, wait)
        loop = asyncio.get_running_loop()
        bc.resume_timer = loop.call_later(
            wait, lambda: self.services.registry.spawn(self.finish(bc, EndReason.BROWSER_LOST)))

    async def finish(self, bc: BrowserCall, reason: EndReason) -> None:
        if bc.finishing:
            return
        bc.finishing = True
        if bc.resume_timer is not None:
            bc.resume_timer.cancel()
        await bc.transport.stop()
        registry = self.services.registry
        task = registry.spawn(registry.finish(bc.call, reason))
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(task)
        finally:
            self.calls.calls.pop(bc.call.sid, None)
