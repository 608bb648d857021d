"""GET /audio/formats and POST /audio/set-format/{call_sid}: one registry, validated choices."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

from fastapi import APIRouter, Query, Request

from app.audio.formats import FORMATS, choose_format, mp3_plan
from app.micdrop.protocol import RATE as BROWSER_RATE
from app.recording.finalize import finalize_call
from app.storage.coordination import FormatChoice
from app.storage.paths import source_of, validate_sid
from app.storage.store import CallStore
from app.web.deps import ApiKeyDep, ServicesDep
from app.web.errors import ApiError, error_responses, not_recorded

router = APIRouter(prefix="/audio", tags=["audio"])

NATIVE_RATES = {"phone": 8000, "browser": BROWSER_RATE}  # Hz of each source's masters (Twilio: 8 kHz μ-law)


def output_rate(services, source: str) -> int:
    """The rate a call's files are written at: OUTPUT_SAMPLE_RATE, else the call's native rate."""
    return services.settings.output_sample_rate or NATIVE_RATES[source]


@router.get("/formats")
@router.head("/formats", include_in_schema=False)
async def formats(services: ServicesDep) -> dict:
    s = services.settings
    rate = output_rate(services, "phone")
    plan = mp3_plan(rate, s.mp3_kbps)
    rate_factor = rate / 8000
    out = []
    for f in FORMATS.values():
        kbps = f.typical_kbps_8k_mono * (rate_factor if f.lossless else 1)
        if f.name == "mp3":
            kbps = plan.used_kbps
        out.append({
            "name": f.name, "extension": f.extension, "description": f.description, "lossless": f.lossless,
            "media_type": f.media_type,
            "typical_size_per_minute_kb": {"mono": round(kbps * 60 / 8, 1),
                                           "stereo": round(kbps * (2 if f.name != "mp3" else 1) * 60 / 8, 1)},
            "options": f.options, "default": f.name == s.default_audio_format,
        })
    return {"formats": out, "default": s.default_audio_format, "sample_rate": s.output_sample_rate,
            "native_rates": NATIVE_RATES,
            "channels": s.recording_channels,
            "mp3": {"requested_kbps": s.mp3_kbps, "used_kbps": plan.used_kbps, "max_kbps": plan.max_kbps,
                    "note": plan.note}}


_FIELDS = ("format", "bitrate")
_JSON_TYPES = ((bool, "a boolean"), (int, "a number"), (float, "a number"), (str, "a string"), (list, "an array"),
               (dict, "an object"), (type(None), "null"))
_BODY_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "properties": {
        "format": {"type": "string", "enum": sorted(FORMATS),
                   "description": "a name from GET /audio/formats (or ?format=)"},
        "bitrate": {"anyOf": [{"type": "string", "examples": ["64k"]}, {"type": "integer", "examples": [64]}],
                    "description": "mp3 only: kbps, 8k to 320k (capped by the sample rate); default MP3_BITRATE"},
    },
    "examples": [{"format": "wav"}, {"format": "mp3", "bitrate": "64k"}],
}
_OPENAPI_BODY = {"requestBody": {"required": False, "description": "the choice; or send it as ?format= and ?bitrate=",
                                 "content": {"application/json": {"schema": _BODY_SCHEMA}}}}


def _json_type(value: object) -> str:
    return next((name for t, name in _JSON_TYPES if isinstance(value, t)), type(value).__name__)


async def _read_choice(request: Request, fmt: str | None, bitrate: str | None) -> tuple[str, str | int | None]:
    """The format and bitrate from the JSON body, else from the query; each checked for its type."""
    body = await request.body()
    if body.strip():
        try:
            data = json.loads(body)
        except ValueError:
            raise ApiError(400, 'body is not JSON: send {"format": "wav"} (optionally "bitrate": "64k") or ?format=wav')
        if not isinstance(data, dict):
            raise ApiError(400, f'body must be a JSON object like {{"format": "wav"}}, not {_json_type(data)}')
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise ApiError(422, f"unknown field(s) {', '.join(map(repr, unknown))}; accepted: format, bitrate")
        if "format" in data and not isinstance(data["format"], str):
            raise ApiError(422, f'format must be a string, not {_json_type(data["format"])}; accepted: '
                                f'{", ".join(sorted(FORMATS))}', accepted=sorted(FORMATS))
        b = data.get("bitrate")
        if "bitrate" in data and (isinstance(b, bool) or not isinstance(b, (str, int))):
            raise ApiError(422, f'bitrate must be a string like "64k" or a whole number of kbps like 64, '
                                f'not {_json_type(b)}')
        fmt = data.get("format", fmt)
        bitrate = data.get("bitrate", bitrate)
    if not fmt:
        raise ApiError(422, f'no format given: send {{"format": "<name>"}} or ?format=<name>; accepted: '
                            f'{", ".join(sorted(FORMATS))}', accepted=sorted(FORMATS))
    return fmt, bitrate


def reexport_check(store: CallStore, sid: str) -> None:
    """A call can be (re-)exported only from its kept masters: else 404 (never recorded) or 409.

    The one rule for set-format after a call and for `callscribe export`.
    """
    if store.masters_kept(sid):
        return
    if store.is_finalized(sid) or store.read_result(sid) is not None:
        raise ApiError(409, "this call's masters were not kept (KEEP_MASTERS=false), so it cannot be re-exported")
    raise not_recorded(sid)


_FORMAT_Q = Query(alias="format", description="format name, if not in the JSON body", examples=["wav"])
_BITRATE_Q = Query(alias="bitrate", description="mp3 only: kbps like 64k, if not in the JSON body", examples=["64k"])


@router.post("/set-format/{call_sid}", dependencies=[ApiKeyDep], openapi_extra=_OPENAPI_BODY,
             responses=error_responses(400, 401, 409, 413, 422))
async def set_format(call_sid: str, request: Request, services: ServicesDep,
                     fmt_q: Annotated[str | None, _FORMAT_Q] = None,
                     bitrate_q: Annotated[str | None, _BITRATE_Q] = None) -> dict:
    """Choose a call's format: before the call (kept), during it (applied at hang-up, by whichever
    worker records it), or after it (re-exported from the kept masters)."""
    validate_sid(call_sid)
    fmt, kbps = choose_format(*await _read_choice(request, fmt_q, bitrate_q))
    store, registry, coordinator = services.store, services.registry, services.coordinator
    choice = FormatChoice(fmt.name, kbps)
    note = mp3_plan(output_rate(services, source_of(call_sid)), kbps or services.settings.mp3_kbps).note if fmt.name == "mp3" else None
    base = {"call_sid": call_sid, "format": fmt.name, "bitrate_kbps": kbps, "settings": note}
    if call_sid in registry.live:
        coordinator.set_format(call_sid, choice)
        return base | {"state": "live", "message": "applied now; the file is ready at hang-up"}
    if store.is_finalized(call_sid):
        reexport_check(store, call_sid)
        loop = asyncio.get_running_loop()

        def reexport() -> dict:
            lock = coordinator.acquire(call_sid, wait=True)
            assert lock is not None  # waiting, it is ours once whoever held it is done
            try:
                coordinator.set_format(call_sid, choice)
                prev = store.read_result(call_sid) or {}
                result = finalize_call(store, call_sid, services.opts, recovered=bool(prev.get("recovered")),
                                       end_reason=prev.get("end_reason"))
                registry.publish_again(call_sid, recovered=bool(prev.get("recovered")))  # S3: the new set
                return result
            finally:
                lock.release()

        result = await loop.run_in_executor(registry.executor, reexport)
        return base | {"state": "exported", "message": "re-exported from the kept masters",
                       "file": result["files"].get("conversation"), "bytes": result["audio"].get("bytes")}
    coordinator.set_format(call_sid, choice)
    if coordinator.is_live(call_sid):
        return base | {"state": "live", "message": "call in progress on another worker: applied at hang-up"}
    if store.has_started(call_sid):  # nobody records it and it was never finalised: a crash left it
        return base | {"state": "unfinished", "message": "the call was left unfinished (the server stopped "
                                                         "during it): applied when it is recovered"}
    return base | {"state": "pending", "message": "kept; applied when this call starts"}
