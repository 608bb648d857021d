"""GET /calls (a page of the call catalog, filtered and sorted), /calls/{sid}, and downloads of a call's files."""

from __future__ import annotations

import asyncio
from pathlib import PurePath
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from app.audio.formats import FORMATS
from app.recording.journal import read_journal
from app.recording.summary import iso
from app.recording.picture import picture_of
from app.recording.picture_svg import render_svg
from app.storage.catalog import MAX_LIMIT, MODES, SORT_KEYS, SOURCES, STATUSES, CatalogQueryError
from app.storage.paths import output_name, validate_sid
from app.web.deps import ApiKeyDep, Services, ServicesDep
from app.web.errors import ApiError, error_responses, not_recorded
from app.web.when import when

router = APIRouter(prefix="/calls", tags=["calls"], dependencies=[ApiKeyDep])

CATALOG_WAIT_S = 10.0  # a listing during the start-up rebuild waits this long for it, then shows what is there
_UNFINISHED = "the server stopped during this call; it is finalised at the next start (or `callscribe recover`)"

_SINCE = Annotated[str | None, Query(description="calls started at or after: 2025-07-13 or 2025-07-13T10:30:00Z "
                                                 "(no zone: UTC)")]
_UNTIL = Annotated[str | None, Query(description="calls started before this time; a date alone includes that day")]
_STATUS = Annotated[str | None, Query(description=f"one or more of {', '.join(STATUSES)}, comma-separated")]
_SOURCE = Annotated[str | None, Query(description=f"one of {', '.join(SOURCES)}")]
_MODE = Annotated[str | None, Query(description=f"one of {', '.join(MODES)} (listen: the fork-and-dial recorder)")]
_Q = Annotated[str | None, Query(description="words in the transcript (each must occur; a word's start matches)")]
_SORT = Annotated[str, Query(description=f"one of {', '.join(SORT_KEYS)}")]
_ORDER = Annotated[str, Query(description="desc (default) or asc")]
_LIMIT = Annotated[int, Query(description=f"rows a page, 1 to {MAX_LIMIT}")]
_OFFSET = Annotated[int, Query(description="rows to skip")]

_MEDIA = {"." + f.extension: f.media_type for f in FORMATS.values()} | {".txt": "text/plain; charset=utf-8",
                                                                        ".json": "application/json",
                                                                        ".svg": "image/svg+xml"}
# Our SVG has no script and loads nothing; opened on its own it still may not run or fetch anything.
_SVG_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
                "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def _state(services: Services, sid: str) -> str:
    """`live` while any worker records (or is finalising) the call: this one's registry, or the
    coordinator's owner test for the others. A call another host finished (no folder here) is
    `finalized` when its committed result is there (S3)."""
    if services.store.is_finalized(sid):
        return "finalized"
    if sid in services.registry.live or services.coordinator.is_live(sid):
        return "live"
    if services.store.has_started(sid):
        return "unfinished"
    if _committed(services, sid):
        return "finalized"
    return "pending"


def _committed(services: Services, sid: str) -> bool:
    """Whether the call has a result (another host's, in S3), without reading it; S3 away: no."""
    try:
        return services.store.result_modified(sid) is not None
    except OSError:  # S3Unavailable
        return False


def _in_progress(services: Services, sid: str, state: str) -> dict:
    """Mode and start time of a call still in progress: this worker's live call, or the journal."""
    call = services.registry.live.get(sid)
    if call is not None:
        return {"mode": call.mode, "started_at": iso(call.started_at)}
    if state in ("live", "unfinished"):
        journal = read_journal(services.store.files(sid).journal)
        start = next((r for r in journal if r.get("t") == "start"), {})
        if not start and (row := services.store.catalog.get(sid)) is not None:  # another host's call: its row
            return {"mode": row["mode"], "started_at": iso(row["started_at"]) if row["started_at"] else None}
        return {"mode": start.get("mode"), "started_at": iso(start["wall"]) if start.get("wall") else None}
    return {}


def _links(sid: str, files: dict[str, Any]) -> dict[str, str]:
    names = [n for n in files.values() if isinstance(n, str)] + files.get("tracks", []) + files.get("turn_clips", [])
    return {n: f"/calls/{sid}/files/{n}" for n in names}


def _listed(services: Services, row: dict[str, Any]) -> dict:
    """A catalog row as the listing shows it. A finished row is what it says; a live (or failed) one
    is checked, as `/calls/{sid}` checks it: a live row whose call nobody records any more is a call
    a crash left unfinished."""
    sid, status, why = row["sid"], row["status"], row["status_reason"]
    state = "finalized" if status in ("finalized", "recovered") else _state(services, sid)
    state = "unfinished" if state == "pending" else state  # it started: the catalog has it
    if status == "live" and state != "live":
        status, why = ("finalized", None) if state == "finalized" else ("unfinished", _UNFINISHED)
    stamp = {k: iso(row[k]) if row[k] is not None else None for k in ("started_at", "completed_at")}
    return {"call_sid": sid, "state": state, "status": status, "status_reason": why, "mode": row["mode"],
            "source": row["source"], **stamp, "duration_s": row["duration_s"], "format": row["format"],
            "size_bytes": row["size_bytes"], "from_last4": row["from_last4"], "turns": row["turns"],
            "barge_ins": row["barge_ins"], "latency_ms": row["latency_ms"], "end_reason": row["end_reason"],
            "warnings": row["warnings"], "recovered": row["recovered"],
            "transcript_pending": row["transcript_pending"], "files": _links(sid, row["files"])}


def _public(services: Services, sid: str, full: bool) -> dict:
    state = _state(services, sid)
    result = services.store.read_result(sid) or {}
    known = result or _in_progress(services, sid, state)
    links = _links(sid, result.get("files", {}))
    base = {"call_sid": sid, "state": state, "mode": known.get("mode"),
            "started_at": known.get("started_at"), "completed_at": result.get("completed_at"),
            "duration_s": result.get("duration_s"), "format": (result.get("audio") or {}).get("format"),
            "recovered": result.get("recovered", False),
            "transcript_pending": bool(result.get("transcript_pending")), "files": links}
    if full:
        base["result"] = result
    return base


@router.get("", responses=error_responses(401, 422))
@router.head("", include_in_schema=False)
async def list_calls(services: ServicesDep, since: _SINCE = None, until: _UNTIL = None, status: _STATUS = None,
                     source: _SOURCE = None, mode: _MODE = None, q: _Q = None, sort: _SORT = "started_at",
                     order: _ORDER = "desc", limit: _LIMIT = 50, offset: _OFFSET = 0) -> dict:
    """The recorded calls, newest first: one page from the catalog, with the number that match."""
    if order not in ("asc", "desc"):
        raise ApiError(422, f"order {order!r} is not accepted; accepted: asc, desc")
    start, end = when(since, "since"), when(until, "until")
    if start is not None and end is not None and start >= end:
        raise ApiError(422, f"since ({since}) must be before until ({until})")
    ready = services.catalog_ready
    if isinstance(ready, asyncio.Future) and not ready.done():  # the catalog is being rebuilt at start-up
        await asyncio.wait([ready], timeout=CATALOG_WAIT_S)
    def page() -> tuple[list[dict], int]:  # off the event loop: SQLite, and a lock test for live rows
        rows, total = services.store.catalog.query(
            since=start, until=end, status=status.split(",") if status else None, source=source, mode=mode, text=q,
            sort=sort, descending=order == "desc", limit=limit, offset=offset)
        return [_listed(services, row) for row in rows], total

    try:
        data, total = await run_in_threadpool(page)
    except CatalogQueryError as exc:
        raise ApiError(422, str(exc)) from None
    return {"data": data, "count": len(data), "total": total, "limit": limit, "offset": offset}


@router.get("/{call_sid}", responses=error_responses(400, 401, 404))
@router.head("/{call_sid}", include_in_schema=False)
async def get_call(call_sid: str, services: ServicesDep) -> dict:
    validate_sid(call_sid)

    def describe() -> dict:  # off the event loop: the result may come from S3, the state from Redis
        state = _state(services, call_sid)
        if state == "pending" and services.store.read_result(call_sid) is None:
            raise not_recorded(call_sid)
        return _public(services, call_sid, True)

    return await run_in_threadpool(describe)


@router.get("/{call_sid}/timeline.svg", responses=error_responses(400, 401, 404),
            response_class=Response, summary="The picture of a call (who spoke when), live or recorded")
async def timeline(call_sid: str, services: ServicesDep) -> Response:
    """The call's timeline picture: the file written at finalisation when there is one, else drawn
    now from the call's masters and journal (a live call: what has been recorded so far)."""
    validate_sid(call_sid)
    name = output_name(call_sid, "timeline")
    body = await run_in_threadpool(services.artefacts.read_text, name) if services.store.is_finalized(call_sid) else None
    if body is not None:
        return Response(body, media_type="image/svg+xml", headers=_SVG_HEADERS)
    folder = services.store.files(call_sid).folder
    if not services.store.has_started(call_sid):
        raise not_recorded(call_sid)
    result = services.store.read_result(call_sid) or {}
    body = await run_in_threadpool(lambda: render_svg(picture_of(folder, result)))
    return Response(body, media_type="image/svg+xml", headers=_SVG_HEADERS)


@router.get("/{call_sid}/files/{name}", responses=error_responses(400, 401, 404))
@router.head("/{call_sid}/files/{name}", include_in_schema=False)
async def download(call_sid: str, name: str, services: ServicesDep) -> Response:
    info = await run_in_threadpool(services.artefacts.stat, call_sid, name)  # S3 on another host's call
    media_type = _MEDIA.get(PurePath(info.name).suffix, "application/octet-stream")
    if info.path is not None:  # a local file: sent as it is (ranges, HEAD, sendfile)
        return FileResponse(info.path, media_type=media_type, filename=info.name)
    stream = await run_in_threadpool(services.artefacts.open, call_sid, name)
    return StreamingResponse(iter(lambda: stream.read(65536), b""), media_type=media_type,
                             headers={"content-length": str(info.size)},
                             background=BackgroundTask(stream.close))
