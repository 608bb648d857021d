"""The HTTP half of a call, as Twilio makes it: the voice webhook, the status callback, signatures.

1. ``POST {base_url}/voice`` (``post_voice``) — a form with the parameters Twilio always sends,
   Twilio's headers (``User-Agent: TwilioProxy/1.1``, ``I-Twilio-Idempotency-Token``) and, with
   an auth token, ``X-Twilio-Signature`` over the exact URL posted. Anything but HTTP 200 is
   Twilio's error 11200 and the call is not placed.
2. The WebSocket upgrade is signed too (``stream_headers``): ``x-twilio-signature`` over the
   stream URL *as written in the TwiML*, lower-case header name, no params.
3. ``POST {base_url}/status`` (``status_callback``) with ``CallStatus=completed`` and the call's
   duration once it is over; a failure is only a warning, as in Twilio's Debugger.
"""

from __future__ import annotations

import email.utils
import math
import uuid
from datetime import datetime, timezone
from urllib.parse import urlencode

import httpx

from app.simulator.config import SimConfig, SimResult
from app.simulator.errors import SimulatorError
from app.twilio.signature import compute_signature

__all__ = ["post_voice", "status_callback", "stream_headers"]


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


def _rfc2822_now() -> str:
    return email.utils.format_datetime(datetime.now(timezone.utc).replace(microsecond=0))


async def post_voice(client: httpx.AsyncClient, cfg: SimConfig, voice_url: str, call_sid: str,
                     account_sid: str) -> httpx.Response:
    """The call rings: POST the voice webhook; its answer (HTTP 200) holds the TwiML.

    Raises ``SimulatorError`` (Twilio error 11200) when the request fails or the answer is not 200.
    """
    try:
        resp = await _post_form(client, cfg, voice_url, _webhook_params(cfg, call_sid, account_sid, "ringing"))
    except httpx.HTTPError as exc:
        raise SimulatorError(f"POST {voice_url} failed: {exc!r} (Twilio error 11200)") from exc
    if resp.status_code != 200:
        raise SimulatorError(f"POST {voice_url} → HTTP {resp.status_code} (Twilio error 11200): {resp.text[:300]}")
    return resp


def stream_headers(cfg: SimConfig, signed_url: str) -> dict[str, str]:
    """Headers of the WebSocket upgrade: ``cfg.headers`` and, with an auth token, Twilio's signature."""
    headers = dict(cfg.headers)
    if cfg.auth_token:
        # Twilio signs the stream URL from the TwiML, lower-case header name, no params.
        headers["x-twilio-signature"] = compute_signature(signed_url, None, cfg.auth_token)
    return headers


async def status_callback(client: httpx.AsyncClient, cfg: SimConfig, res: SimResult, base_url: str,
                          end_ms: int) -> None:
    """The call is over: POST ``CallStatus=completed`` (unless ``cfg.status_callback`` is off)."""
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
            res.warn("status", f"POST {url} → HTTP {resp.status_code} (Twilio would log a Debugger warning)")
    except httpx.HTTPError as exc:
        res.warn("status", f"POST {url} failed: {exc!r}")
