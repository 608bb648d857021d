"""One simulated call from ring to hang-up: ``run_call``.

In Twilio's order: the voice webhook (``webhooks.post_voice``); the TwiML read
(``twiml.parse_twiml``) and the stream URL chosen (``twiml.stream_target``); the WebSocket
opened with Twilio's signature (a refused or failed upgrade is a ``HandshakeError``, after a
status callback of 0 s, as Twilio would post); the stream run (``stream.StreamSession``); then
``stop`` and a normal close — or, with ``send_stop=False``, the socket dropped as when the
caller's leg vanishes; and last the status callback with the call's duration. ``SimResult``
gathers what the caller and Twilio saw.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from urllib.parse import urlsplit

import httpx
import numpy as np
import websockets
from websockets.asyncio.client import connect

from app.audio.mulaw import encode as ulaw_encode
from app.cancellation import within
from app.simulator.config import FRAME_MS, RATE, SimConfig, SimResult
from app.simulator.errors import HandshakeError, SimulatorError
from app.simulator.stream import StreamSession
from app.simulator.twiml import parse_twiml, stream_target
from app.simulator.webhooks import post_voice, status_callback, stream_headers

__all__ = ["run_call"]


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _to_ulaw(audio: np.ndarray | None) -> bytes:
    if audio is None or len(audio) == 0:
        return b""
    a = np.asarray(audio)
    if a.ndim != 1:
        raise SimulatorError(f"audio must be mono 1-D int16 at 8 kHz, got shape {a.shape}")
    if a.dtype.kind == "f":
        a = np.clip(np.round(a * 32767.0), -32768, 32767)
    return ulaw_encode(a.astype(np.int32))


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
        resp = await post_voice(client, cfg, voice_url, call_sid, account_sid)
        twiml = resp.text
        stream = parse_twiml(twiml, voice_url)
        if cfg.mode not in ("auto", stream.mode):
            raise SimulatorError(f"expected {cfg.mode} mode but the TwiML asks for {stream.mode}: {twiml[:300]}")

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
            tracks=stream.tracks,
            voice_status=resp.status_code,
        )
        if stream.mode == "connect" and outbound is not None and len(outbound):
            res.warn("outbound-connect", "outbound_audio is ignored in connect mode (Twilio streams only the inbound track)")
        res.twiml_stream_url = stream.signed_url
        target = stream_target(stream.url, base_url, cfg.stream_url, res.warn)
        res.connected_url = target

        total_slots = None
        if cfg.duration_s is not None:
            total_slots = max(0, math.ceil(cfg.duration_s * 1000 / FRAME_MS - 1e-9))

        try:
            ws = await connect(
                target,
                additional_headers=stream_headers(cfg, res.twiml_stream_url),
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
            await status_callback(client, cfg, res, base_url, 0)
            raise HandshakeError(
                f"WebSocket upgrade to {target} answered HTTP {status}, not 101 (Twilio error 31920)", status
            ) from exc
        except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake, websockets.InvalidURI) as exc:
            await status_callback(client, cfg, res, base_url, 0)
            hint = " — pass stream_url/--stream-url to reach a local server" if urlsplit(target).scheme == "wss" else ""
            raise HandshakeError(f"WebSocket connection to {target} failed: {exc!r}{hint}") from exc

        session = StreamSession(cfg, ws, res, stream)
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
                await within(receiver, cfg.close_timeout_s + 1)
            except asyncio.TimeoutError:
                res.warn("close-timeout", "server did not finish the close handshake in time")
        finally:
            if not receiver.done():
                receiver.cancel()
                try:
                    await receiver
                except asyncio.CancelledError:
                    pass  # we cancelled it: the call is over and its socket is being dropped
                except Exception as exc:  # it failed while being stopped: say so, the result stands
                    res.warn("receiver-error", f"the receiver failed while the call ended: {exc!r}")
            if ws.transport is not None and not ws.transport.is_closing():
                ws.transport.abort()

        end_ms = session.now_ms
        res.stream_duration_ms = end_ms
        res.heard = session.heard.until(end_ms * RATE // 1000)
        await status_callback(client, cfg, res, base_url, end_ms)
    return res
