"""GET /calls, /calls/{sid}, and downloads of a call's files."""

from __future__ import annotations

from pathlib import PurePath

from fastapi import APIRouter, Response
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask

from app.audio.formats import FORMATS
from app.recording.journal import read_journal
from app.recording.summary import iso
from app.storage.paths import validate_sid
from app.web.deps import ApiKeyDep, Services, ServicesDep
from app.web.errors import error_responses, not_recorded

router = APIRouter(prefix="/calls", tags=["calls"], dependencies=[ApiKeyDep])

_MEDIA = {"." + f.extension: f.media_type for f in FORMATS.values()} | {".txt": "text/plain; charset=utf-8",
                                                                        ".json": "application/json"}


def _state(services: Services, sid: str) -> str:
    """`live` while any worker records (or is finalising) the call: this one's registry, or the
    coordinator's owner test for the others."""
    if services.store.is_finalized(sid):
        return "finalized"
    if sid in services.registry.live or services.coordinator.is_live(sid):
        return "live"
    if services.store.has_started(sid):
        return "unfinished"
    return "pending"


def _in_progress(services: Services, sid: str, state: str) -> dict:
    """Mode and start time of a call still in progress: this worker's live call, or the journal."""
    call = services.registry.live.get(sid)
    if call is not None:
        return {"mode": call.mode, "started_at": iso(call.started_at)}
    if state in ("live", "unfinished"):
        journal = read_journal(services.store.files(sid).journal)
        start = next((r for r in journal if r.get("t") == "start"), {})
        return {"mode": start.get("mode"), "started_at": iso(start["wall"]) if start.get("wall") else None}
    return {}


def _public(services: Services, sid: str, full: bool) -> dict:
    state = _state(services, sid)
    result = services.store.read_result(sid) or {}
    known = result or _in_progress(services, sid, state)
    files = result.get("files", {})
    names = [n for n in files.values() if isinstance(n, str)] + files.get("tracks", []) + files.get("turn_clips", [])
    links = {n: f"/calls/{sid}/files/{n}" for n in names}
    base = {"call_sid": sid, "state": state, "mode": known.get("mode"),
            "started_at": known.get("started_at"), "completed_at": result.get("completed_at"),
            "duration_s": result.get("duration_s"), "format": (result.get("audio") or {}).get("format"),
            "recovered": result.get("recovered", False),
            "transcript_pending": bool(result.get("transcript_pending")), "files": links}
    if full:
        base["result"] = result
    return base


@router.get("", responses=error_responses(401))
@router.head("", include_in_schema=False)
async def list_calls(services: ServicesDep) -> dict:
    data = [_public(services, sid, False) for sid in services.store.list_sids()]
    data = [d for d in data if d["state"] != "pending"]
    data.sort(key=lambda d: d.get("started_at") or "", reverse=True)
    return {"data": data, "count": len(data)}


@router.get("/{call_sid}", responses=error_responses(400, 401, 404))
@router.head("/{call_sid}", include_in_schema=False)
async def get_call(call_sid: str, services: ServicesDep) -> dict:
    validate_sid(call_sid)
    state = _state(services, call_sid)
    if state == "pending" and services.store.read_result(call_sid) is None:
        raise not_recorded(call_sid)
    return _public(services, call_sid, True)


@router.get("/{call_sid}/files/{name}", responses=error_responses(400, 401, 404))
@router.head("/{call_sid}/files/{name}", include_in_schema=False)
async def download(call_sid: str, name: str, services: ServicesDep) -> Response:
    info = services.artefacts.stat(call_sid, name)
    media_type = _MEDIA.get(PurePath(info.name).suffix, "application/octet-stream")
    if info.path is not None:  # a local file: sent as it is (ranges, HEAD, sendfile)
        return FileResponse(info.path, media_type=media_type, filename=info.name)
    stream = services.artefacts.open(call_sid, name)
    return StreamingResponse(iter(lambda: stream.read(65536), b""), media_type=media_type,
                             headers={"content-length": str(info.size)},
                             background=BackgroundTask(stream.close))
