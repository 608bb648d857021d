"""GET /audio/formats and POST /audio/set-format/{call_sid}: one registry, validated choices."""

from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Request

from app.audio.formats import FORMATS, get_format, mp3_plan
from app.config import parse_bitrate
from app.recording.finalize import finalize_call
from app.recording.store import validate_sid
from app.web.deps import ApiKeyDep, ServicesDep
from app.web.errors import ApiError

router = APIRouter(prefix="/audio", tags=["audio"])


@router.get("/formats")
async def formats(services: ServicesDep) -> dict:
    s = services.settings
    plan = mp3_plan(s.output_sample_rate, s.mp3_kbps)
    rate_factor = s.output_sample_rate / 8000
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
            "channels": s.recording_channels,
            "mp3": {"requested_kbps": s.mp3_kbps, "used_kbps": plan.used_kbps, "max_kbps": plan.max_kbps,
                    "note": plan.note}}


async def _read_choice(request: Request) -> tuple[str, str | None]:
    fmt = request.query_params.get("format")
    bitrate = request.query_params.get("bitrate")
    body = await request.body()
    if body.strip():
        try:
            data = json.loads(body)
        except ValueError:
            raise ApiError(400, 'body is not JSON: send {"format": "wav"} (optionally "bitrate": "64k") or ?format=wav')
        if not isinstance(data, dict):
            raise ApiError(400, 'body must be a JSON object like {"format": "wav"}')
        fmt = data.get("format", fmt)
        bitrate = data.get("bitrate", bitrate)
    if not fmt or not isinstance(fmt, str):
        raise ApiError(422, f'no format given: send {{"format": "<name>"}} or ?format=<name>; accepted: '
                            f'{", ".join(sorted(FORMATS))}', accepted=sorted(FORMATS))
    return fmt, None if bitrate in (None, "") else str(bitrate)


@router.post("/set-format/{call_sid}", dependencies=[ApiKeyDep])
async def set_format(call_sid: str, request: Request, services: ServicesDep) -> dict:
    validate_sid(call_sid)
    fmt_name, bitrate_raw = await _read_choice(request)
    fmt = get_format(fmt_name)
    kbps = None
    if bitrate_raw is not None:
        if fmt.name != "mp3":
            raise ApiError(422, f"bitrate applies to mp3 only, not {fmt.name}")
        try:
            kbps = parse_bitrate(bitrate_raw)
        except ValueError as e:
            raise ApiError(422, str(e))
        if not kbps or not 8 <= kbps <= 320:
            raise ApiError(422, "bitrate must be between 8k and 320k")
    store, registry = services.store, services.registry
    note = mp3_plan(services.settings.output_sample_rate, kbps or services.settings.mp3_kbps).note if fmt.name == "mp3" else None
    base = {"call_sid": call_sid, "format": fmt.name, "bitrate_kbps": kbps, "settings": note}
    if call_sid in registry.live:
        store.set_format(call_sid, fmt.name, kbps)
        return base | {"state": "live", "message": "applied now; the file is ready at hang-up"}
    if store.is_finalized(call_sid):
        d = store.call_dir(call_sid)
        if not (d / "inbound.wav").exists():
            raise ApiError(409, "this call's masters were not kept (KEEP_MASTERS=false), so it cannot be re-exported")
        loop = asyncio.get_running_loop()

        def reexport() -> dict:
            lock = store.lock(call_sid, blocking=True)
            try:
                store.set_format(call_sid, fmt.name, kbps)
                prev = store.read_result(call_sid) or {}
                return finalize_call(store, call_sid, services.opts, recovered=bool(prev.get("recovered")),
                                     end_reason=prev.get("end_reason"))
            finally:
                lock.release()

        result = await loop.run_in_executor(registry.executor, reexport)
        return base | {"state": "exported", "message": "re-exported from the kept masters",
                       "file": result["files"].get("conversation"), "bytes": result["audio"].get("bytes")}
    store.set_format(call_sid, fmt.name, kbps)
    if store.has_started(call_sid):
        return base | {"state": "live", "message": "call in progress on another worker: applied at hang-up"}
    return base | {"state": "pending", "message": "kept; applied when this call starts"}
