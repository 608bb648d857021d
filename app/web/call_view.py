"""GET /calls/{sid}/view (a call's page) and GET /calls/{sid}/live (the call as it happens, SSE).

The page is plain HTML, CSS and an ES module in app/web/static/dashboard/ (``call.html``, and
``call.js``, ``call.css`` and the shared ``dashboard.css`` from ``/dashboard/assets/``), rendered
like every dashboard page (app.web.dashboard: the login redirect, ``data-auth``, the strict
Content-Security-Policy: nothing from another host). The route fills in ``data-sid`` on
``<main>``; everything else the page reads from ``GET /calls/{sid}``, ``GET /calls/{sid}/timeline.svg``
and, while the call is live, this module's event stream.

**The event stream** reads the call's folder, never this process's memory, so it works whichever
worker records the call (``serve --workers N`` shares the folder). Every ``POLL_S`` it reads the
journal's new bytes (from the offset already sent; a partial last line waits for its newline) and
sends each record of a kind in ``KINDS`` as ``event: <kind>`` with the record as JSON ``data``
and ``id:`` = the journal offset after it (a reconnecting ``EventSource`` sends it back as
``Last-Event-ID`` and the stream resumes there). About once a second it sends ``progress``
(``{"samples", "rate", "seconds"}``: the call's length so far, from the inbound master's size; a
browser call's clock is the wall's) and, per lane whose speech changed, ``spans``
(``{"lane", "from", "spans": [[a, b], ...]}``: the lane's spans starting at or after ``from`` are
replaced by these; found from the masters' loudness by ``picture.speech_spans``, as the finished
picture is, re-reading only the last seconds). When the call is finalised it sends what is left,
then ``ended`` and closes. A call whose recorder is gone unfinished (the server stopped) gets
``unfinished`` and a close. Comments (``: ping``) keep idle connections open. A stream lives at
most as long as the longest call plus ``FINALIZE_MARGIN_S``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from app.recording.picture import speech_spans
from app.recording.track import track_rate, track_samples
from app.storage.paths import CallFiles, source_of, validate_sid
from app.web.dashboard import render_page
from app.web.deps import ApiKeyDep, DashboardLoginDep, Services, ServicesDep
from app.web.errors import error_responses, not_recorded
from app.web.media_stream import wall_limit_s

__all__ = ["router", "KINDS", "LiveTail"]

router = APIRouter(tags=["dashboard"])

KINDS = frozenset({"start", "turn", "dtmf", "clear", "hangup_cut", "disconnected", "reconnected", "stop"})
_START_FIELDS = ("t", "wall", "mode", "source", "rate", "tracks", "from_last4")  # not the account or params

POLL_S = 0.4  # journal reads
PROGRESS_S = 1.0  # progress and spans
LIVENESS_S = 5.0  # is anyone still recording the call?
PING_S = 15.0  # a comment on an otherwise idle stream
FINALIZE_MARGIN_S = 120.0  # after the longest call: its finalisation
READ_MAX = 256 * 1024  # journal bytes read per poll: a long backlog is sent over several
LINE_MAX = 1024 * 1024  # a journal line longer than this is skipped (memory stays bounded)
LOOKBACK_S = 2.0  # speech is re-read from this far back (or the last span's start), so spans agree

_SID = 'data-sid=""'  # on call.html's <main>: the route fills it in
_LOGIN = {303: {"description": "to /login?next=… when API_KEY is set and there is no session"}}


# ---------------------------------------------------------------------------------- the page
@router.get("/calls/{call_sid}/view", response_class=HTMLResponse, responses=error_responses(400, 404) | _LOGIN,
            summary="A call's page: player, transcript in sync, timeline, figures, downloads; live calls update")
def call_view(call_sid: str, request: Request, login: DashboardLoginDep) -> Response:
    """A sync route: the file reads run on the threadpool."""
    if login is not None:
        return login
    validate_sid(call_sid)
    store = request.app.state.services.store
    if not store.has_started(call_sid) and store.read_result(call_sid) is None:
        raise not_recorded(call_sid)
    return render_page(request, "call.html", {_SID: f'data-sid="{call_sid}"'})


# ---------------------------------------------------------------------------------- reading the call
def _sse(event: str, data: Any, ident: int | None = None) -> str:
    head = f"id: {ident}\n" if ident is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'), ensure_ascii=False)}\n\n"


@dataclass
class _Lane:
    """One lane's speech as sent so far: only its recent spans are kept (memory is flat)."""

    name: str
    master: Path
    recent: list[tuple[int, int]] = field(default_factory=list)  # the spans that may still change
    scanned: int = 0  # samples read up to


@dataclass
class LiveTail:
    """A live call's folder, read on from where the last read stopped. Sync (file reads): the
    stream calls it on the threadpool. Each method returns SSE text blocks."""

    files: CallFiles
    sid: str
    offset: int = 0  # journal bytes sent
    max_seconds: float = 4 * 3600
    rate: int = 0  # the masters' rate, once known
    start: dict[str, Any] = field(default_factory=dict)
    stop: dict[str, Any] | None = None
    lanes: list[_Lane] = field(default_factory=list)
    _partial: bytes = b""
    _skipping: bool = False  # inside an over-long line: drop bytes up to its newline

    # -- the journal
    def journal(self) -> list[str]:
        """New complete records since the last call (at most READ_MAX bytes' worth)."""
        try:
            fd = os.open(self.files.journal, os.O_RDONLY)
        except FileNotFoundError:
            return []
        try:
            data = os.pread(fd, READ_MAX, self.offset + len(self._partial))
        finally:
            os.close(fd)
        if not data:
            return []
        out: list[str] = []
        base = self.offset  # journal offset of self._partial's first byte
        buf = self._partial + data
        pos = 0
        while (nl := buf.find(b"\n", pos)) >= 0:
            line, pos = buf[pos:nl], nl + 1
            if self._skipping:
                self._skipping = False
                continue
            event = self._record(line)
            if event is not None:
                out.append(_sse(event[0], event[1], base + pos))
        self.offset = base + pos
        self._partial = buf[pos:]
        if len(self._partial) > LINE_MAX:  # no record is this long: drop it, and the rest of it
            self.offset += len(self._partial)
            self._partial, self._skipping = b"", True
        return out

    def _record(self, line: bytes) -> tuple[str, dict[str, Any]] | None:
        try:
            rec = json.loads(line)
        except ValueError:
            return None
        if not isinstance(rec, dict) or rec.get("t") not in KINDS:
            return None
        kind = rec["t"]
        if kind == "start":
            self.start = self.start or rec
            rec = {k: rec[k] for k in _START_FIELDS if k in rec}
        elif kind == "stop":
            self.stop = rec
        return kind, rec

    # -- length and speech
    def _rate(self) -> int:
        if not self.rate:
            default = int(self.start.get("rate") or (16000 if source_of(self.sid) == "browser" else 8000))
            inbound = self.files.master("inbound")
            self.rate = track_rate(inbound, default) if inbound.exists() else default
        return self.rate

    def samples(self) -> int:
        """The call's length so far: its stop record's, else the inbound master's (a browser call,
        whose caller audio arrives only while the caller speaks: at least the time since it started)."""
        rate = self._rate()
        if self.stop and isinstance(self.stop.get("samples"), int):
            return self.stop["samples"]
        n = track_samples(self.files.master("inbound"))
        wall = self.start.get("wall")
        if (self.start.get("source") or source_of(self.sid)) == "browser" and isinstance(wall, (int, float)):
            n = max(n, round(min(time.time() - wall, self.max_seconds) * rate))
        return n

    def progress(self) -> list[str]:
        """`progress`, then a `spans` event for each lane whose speech changed."""
        rate, n = self._rate(), self.samples()
        out = [_sse("progress", {"samples": n, "rate": rate, "seconds": round(n / rate, 3)})]
        if not self.lanes and self.start:
            other = "assistant" if self.start.get("mode", "assistant") == "assistant" else "other party"
            self.lanes = [_Lane("caller", self.files.master("inbound")), _Lane(other, self.files.master("outbound"))]
        for lane in self.lanes:
            spans = self._spans(lane, rate, n)
            if spans is not None:
                out.append(_sse("spans", {"lane": lane.name, "from": spans[0], "spans": spans[1]}))
        return out

    def _spans(self, lane: _Lane, rate: int, end: int) -> tuple[int, list[list[int]]] | None:
        """The lane's spans from a point on, or None when nothing new was read. The point is
        LOOKBACK_S before what was read (window-aligned, as speech_spans' windows are), moved back
        to the start of any span that reaches it (or ends within the merging gap of it): what
        lies before it cannot change any more. The outbound master runs ahead (queued replies):
        it is read to `end`, the call's now, only; one that is shorter is read to its end, and
        on from there when it grows (its last window was short, and may yet change)."""
        end = min(end, track_samples(lane.master))
        if end <= lane.scanned:
            return None
        win, gap = max(1, rate // 20), rate // 4  # speech_spans' 50 ms windows and 250 ms merging gap
        start = max(0, lane.scanned - round(LOOKBACK_S * rate))
        start -= start % win
        for a, b in lane.recent:
            if b >= start - gap:
                start = min(start, a)
        found = speech_spans(lane.master, rate, start=start, end=end)
        lane.scanned = end
        keep_from = end - round(LOOKBACK_S * rate) - 2 * gap
        lane.recent = [s for s in lane.recent if s[0] < start and s[1] >= keep_from] + \
            [s for s in found if s[1] >= keep_from]
        return start, [[a, b] for a, b in found]


# ---------------------------------------------------------------------------------- the stream
async def _events(request: Request, services: Services, tail: LiveTail) -> AsyncIterator[str]:
    sid, store, registry = tail.sid, services.store, services.registry
    limit = time.monotonic() + wall_limit_s(services.settings.max_call_seconds) + FINALIZE_MARGIN_S

    def poll(progress: bool, check: bool) -> tuple[list[str], bool, bool]:
        """New events; whether the call is finalised; whether it is orphaned (with `check`: nobody
        records or finalises it, and it is not finalised: the server stopped during it)."""
        finalized = store.is_finalized(sid)  # before the read: what was journaled before the marker is read now
        out = tail.journal()
        if progress or finalized:
            out += tail.progress()
        # The owner holds the call's lock until its finalised marker is written, so a call that
        # is neither owned nor (looking again, after the lock test) finalised is an orphan.
        orphan = check and not finalized and sid not in registry.live and not services.coordinator.is_live(sid) \
            and not store.is_finalized(sid)
        return out, finalized, orphan

    yield "retry: 2000\n\n"
    sent = last_progress = time.monotonic()
    last_check = -LIVENESS_S
    while time.monotonic() < limit:
        now = time.monotonic()
        progress, check = now - last_progress >= PROGRESS_S, now - last_check >= LIVENESS_S
        out, finalized, orphan = await run_in_threadpool(poll, progress, check)
        last_progress = now if progress else last_progress
        last_check = now if check else last_check
        for block in out:
            yield block
        if out:
            sent = now
        if finalized:
            while more := await run_in_threadpool(tail.journal):  # a backlog longer than one read
                for block in more:
                    yield block
            yield _sse("ended", {"state": "finalized"})
            return
        if orphan:
            yield _sse("unfinished", {"state": "unfinished", "message": "nobody is recording this call any more: "
                                      "the server stopped during it, and it is finalised at its next start "
                                      "(or by `callscribe recover`)"})
            return
        if now - sent >= PING_S:
            yield ": ping\n\n"
            sent = now
        if await request.is_disconnected():
            return
        await asyncio.sleep(POLL_S)
    yield _sse("timeout", {"message": "this stream outlived the longest possible call; reload the page"})


@router.get("/calls/{call_sid}/live", dependencies=[ApiKeyDep], response_class=StreamingResponse,
            responses=error_responses(400, 401, 404), summary="A call as it happens: server-sent events")
async def live_events(call_sid: str, request: Request, services: ServicesDep,
                      last_event_id: Annotated[str | None, Header()] = None) -> StreamingResponse:
    """`turn`, `dtmf`, `clear`, … as the journal gets them; `progress` and `spans` about once a
    second; `ended` once the call is finalised (then the stream closes)."""
    validate_sid(call_sid)
    store = services.store
    if not await run_in_threadpool(lambda: store.has_started(call_sid) or store.is_finalized(call_sid)):
        raise not_recorded(call_sid)
    offset = int(last_event_id) if last_event_id and last_event_id.isdigit() and len(last_event_id) < 16 else 0
    tail = LiveTail(store.files(call_sid), call_sid, max_seconds=services.settings.max_call_seconds)
    if offset:
        tail = await run_in_threadpool(_resumed, tail, offset)
    return StreamingResponse(_events(request, services, tail), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _resumed(tail: LiveTail, offset: int) -> LiveTail:
    """A reconnection: read the journal's head for the start record (rate, mode), then go on from
    `offset` (the id of the last event the client got), which must fall on a line's end."""
    try:
        with open(tail.files.journal, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if offset > size:
                return tail
            f.seek(offset - 1)
            if f.read(1) != b"\n":
                return tail
            f.seek(0)
            head = f.readline(LINE_MAX)
    except OSError:
        return tail
    tail._record(head.rstrip(b"\n"))
    tail.offset = offset
    return tail
