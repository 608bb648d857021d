"""GET /healthz (liveness) and GET /metrics (Prometheus text format)."""

from __future__ import annotations

import os

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from app.web.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(services: ServicesDep) -> dict:
    agent = services.agent_factory
    # `pid`: which worker answered (`callscribe serve --workers N`); `live_calls` are that worker's.
    return {"status": "ok", "pid": os.getpid(), "live_calls": len(services.registry.live),
            "assistant": None if agent is None else ("ready" if getattr(agent, "ready", True) else "loading")}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(services: ServicesDep) -> str:
    r = services.registry
    frames = sum(c.recorder.stats["inbound"].frames + c.recorder.stats["outbound"].frames for c in r.live.values())
    rows = [
        ("callscribe_live_calls", "gauge", "Calls being recorded now", len(r.live)),
        ("callscribe_calls_finalized_total", "counter", "Calls finalised by this process", r.finalized_count),
        ("callscribe_calls_recovered_total", "counter", "Calls recovered after a crash", r.recovered_count),
        ("callscribe_calls_refused_total", "counter", "Streams refused (limits, duplicates)", r.refused_count),
        ("callscribe_live_frames", "gauge", "Frames placed in live calls", frames),
        ("callscribe_last_finalize_seconds", "gauge", "Hang-up to files, last call", r.last_finalize_seconds or 0),
    ]
    out = []
    for name, kind, help_, value in rows:
        out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return "\n".join(out) + "\n"
