"""GET /calls, /calls/{sid}, and downloads of a call's files."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from app.audio.formats import FORMATS
from app.recording.store import CallNotFound, validate_sid
from app.web.deps import ApiKeyDep, Services, ServicesDep

router = APIRouter(prefix="/calls", tags=["calls"], dependencies=[ApiKeyDep])

_MEDIA = {"." + f.extension: f.media_type for f in FORMATS.values()} | {".txt": "text/plain; charset=utf-8",
                                                                        ".json": "application/json"}


def _state(services: Services, sid: str) -> str:
    if sid in services.registry.live:
        return "live"
    if services.store.is_finalized(sid):
        return "finalized"
    if services.store.has_started(sid):
        return "unfinished"
    return "pending"


def _public(services: Services, sid: str, full: bool) -> dict:
    result = services.store.read_result(sid) or {}
    files = result.get("files", {})
    names = [n for n in files.values() if isinstance(n, str)] + files.get("tracks", []) + files.get("turn_clips", [])
    links = {n: f"/calls/{sid}/files/{n}" for n in names}
    base = {"call_sid": sid, "state": _state(services, sid), "mode": result.get("mode"),
            "started_at": result.get("started_at"), "completed_at": result.get("completed_at"),
            "duration_s": result.get("duration_s"), "format": (result.get("audio") or {}).get("format"),
            "recovered": result.get("recovered", False), "files": links}
    if full:
        base["result"] = result
    return base


@router.get("")
async def list_calls(services: ServicesDep) -> dict:
    data = [_public(services, sid, False) for sid in services.store.list_sids()]
    data = [d for d in data if d["state"] != "pending"]
    data.sort(key=lambda d: d.get("started_at") or "", reverse=True)
    return {"data": data, "count": len(data)}


@router.get("/{call_sid}")
async def get_call(call_sid: str, services: ServicesDep) -> dict:
    validate_sid(call_sid)
    state = _state(services, call_sid)
    if state == "pending" and services.store.read_result(call_sid) is None:
        raise CallNotFound(f"no call {call_sid} has been recorded")
    return _public(services, call_sid, True)


@router.get("/{call_sid}/files/{name}")
async def download(call_sid: str, name: str, services: ServicesDep) -> FileResponse:
    path = services.store.resolve_download(call_sid, name)
    return FileResponse(path, media_type=_MEDIA.get(path.suffix, "application/octet-stream"), filename=path.name)
