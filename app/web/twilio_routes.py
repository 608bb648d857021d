"""Twilio's HTTP side: the voice webhook (→ TwiML) and the call status callback."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re

from fastapi import APIRouter, Request, Response

from app.recording.journal import append_once
from app.storage.paths import SID_RE
from app.twilio import twiml
from app.twilio.signature import validate
from app.web.deps import Services, ServicesDep
from app.web.errors import ApiError

router = APIRouter(tags=["twilio"])
log = logging.getLogger("callscribe.twilio")

FROM_LAST4_PARAM = "fromLast4"  # the stream parameter carrying the caller's number's last four digits


def public_url(services: Services, request: Request, scheme: str | None = None) -> str:
    """The URL Twilio used, rebuilt from PUBLIC_BASE_URL when set (behind a proxy), else from the request."""
    base = services.settings.public_base_url
    path = request.url.path
    query = request.url.query
    if base:
        url = base + path
        if scheme:
            url = scheme + url[url.index("://"):]
    else:
        url = str(request.url.replace(query="")).split("?")[0]
        if scheme:
            url = scheme + url[url.index("://"):]
    return url + (f"?{query}" if query else "")


def stream_url(services: Services, request: Request) -> str:
    base = services.settings.public_base_url
    if base:
        return "wss" + base[base.index("://"):] + "/media-stream"
    scheme = "wss" if request.url.scheme == "https" else "ws"
    return f"{scheme}://{request.url.netloc}/media-stream"


def from_last4(number: str) -> str | None:
    """The last four digits of the caller's number (Twilio's `From`), or None when it is not a
    number ("anonymous", "client:alice"). Only these four digits go on, to the stream's `start` and
    so to the call's journal, JSON and catalog row: never the number."""
    digits = re.sub(r"[^0-9]", "", number)
    return digits[-4:] if re.fullmatch(r"\+?[0-9 ().-]+", number) and len(digits) >= 4 else None


def streamed_last4(custom_parameters: dict[str, str]) -> str | None:
    """The four digits the webhook handed to the stream, when that is all the parameter holds."""
    value = custom_parameters.get(FROM_LAST4_PARAM)
    return value if isinstance(value, str) and re.fullmatch(r"[0-9]{4}", value) else None


def stream_token(secret: bytes, call_sid: str) -> str:
    """Per-call token: issued in the (signed) webhook, required in the stream's `start`."""
    return hmac.new(secret, call_sid.encode(), hashlib.sha256).hexdigest()[:32]


async def _signed_form(services: Services, request: Request) -> dict[str, str]:
    form = await request.form()
    params = {k: str(v) for k, v in form.multi_items()}
    token = services.settings.twilio_auth_token
    if token:
        sig = request.headers.get("x-twilio-signature", "")
        multi: dict[str, list[str]] = {}
        for k, v in form.multi_items():
            multi.setdefault(k, []).append(str(v))
        if not validate(public_url(services, request), multi, sig, token):
            log.warning("refused %s: missing or wrong X-Twilio-Signature", request.url.path)
            raise ApiError(403, "invalid Twilio signature: this endpoint only accepts requests signed by Twilio "
                                "(X-Twilio-Signature over PUBLIC_BASE_URL + path and the form parameters)")
    return params


@router.post("/voice")
async def voice(request: Request, services: ServicesDep) -> Response:
    params = await _signed_form(services, request)
    sid = params.get("CallSid", "")
    if not SID_RE.match(sid) or not sid.startswith("CA"):
        raise ApiError(400, "CallSid form field missing or invalid: expected 'CA' followed by 32 lowercase hex digits")
    s = services.settings
    busy = services.registry.busy() if services.registry else None
    if busy is not None:
        log.warning("call refused at webhook: %s", busy)
        body = twiml.say_and_hangup("Sorry, all our lines are busy. Please call again later.")
        return Response(body, media_type="text/xml")
    stream_params = {"token": stream_token(services.stream_secret, sid), "callSid": sid}
    last4 = from_last4(params.get("From", ""))
    if last4:
        stream_params[FROM_LAST4_PARAM] = last4
    url = stream_url(services, request)
    if s.call_mode == "listen":
        body = twiml.listen_and_dial(url, stream_params, s.forward_to or "")
    else:
        body = twiml.connect_stream(url, stream_params)
    return Response(body, media_type="text/xml")


@router.post("/status", status_code=204)
async def status(request: Request, services: ServicesDep) -> Response:
    params = await _signed_form(services, request)
    sid = params.get("CallSid", "")
    if not SID_RE.match(sid):
        raise ApiError(400, "CallSid form field missing or invalid: expected 'CA' followed by 32 lowercase hex digits")
    if services.store.has_started(sid):
        # Only these fields are kept: never the caller's or the called number.
        keep = {k: params[k][:64] for k in ("CallStatus", "CallDuration", "Timestamp", "SequenceNumber",
                                            "SipResponseCode") if k in params}
        try:
            append_once(services.store.files(sid).status, "status", **keep)
        except OSError as exc:  # e.g. a full disk: say so (Twilio logs the 503), keep serving
            log.error("call %s: could not store the status callback (%s)", sid, exc.strerror or type(exc).__name__)
            raise ApiError(503, f"could not store the status callback: {exc.strerror or type(exc).__name__}")
    return Response(status_code=204)
