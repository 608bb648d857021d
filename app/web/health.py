"""GET /healthz (liveness), GET /readyz (readiness) and GET /metrics (Prometheus text format).

A load balancer uses both: /healthz answers 200 while the process serves, whatever else is away
(restarting a process would not bring Redis back, and its calls in progress go on); /readyz
answers 503, with the reasons, while this process cannot take new calls: it is draining (shutting
down), or the coordination service it needs (Redis, when REDIS_URL is set) is out of reach.
"""

from __future__ import annotations

import os

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from app.web.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(services: ServicesDep) -> dict:
    agent = services.agent_factory
    # `pid`: which worker answered (`callscribe serve --workers N`); `live_calls` are that worker's.
    out = {"status": "ok", "pid": os.getpid(), "live_calls": len(services.registry.live),
           "assistant": None if agent is None else ("ready" if getattr(agent, "ready", True) else "loading")}
    host = getattr(services.coordinator, "host_id", None)
    return out if host is None else out | {"host": host}  # with Redis: this process's HOST_ID


@router.get("/readyz", responses={503: {"description": "not ready: the reasons say why"}})
async def readyz(services: ServicesDep) -> JSONResponse:
    reasons = []
    if services.registry.draining:
        reasons.append("draining: the server is shutting down")
    coordination = await services.coordinator.check()
    if coordination is not None:
        reasons.append(coordination)
    if reasons:
        return JSONResponse({"ready": False, "reasons": reasons}, status_code=503)
    return JSONResponse({"ready": True})


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
    coordinator = services.coordinator
    if hasattr(coordinator, "claimed_count"):  # Redis: this host's view of the cluster
        rows += [
            ("callscribe_redis_up", "gauge", "Redis reachable from this process (1) or not (0)",
             int(coordinator.reachable)),
            ("callscribe_orphans_claimed_total", "counter", "Calls of dead hosts claimed by this process",
             coordinator.claimed_count),
        ]
    if r.uploads is not None:  # S3: segments, bytes, PUT CPU, failures, backlog, commits
        rows += r.uploads.metric_rows()
    out = []
    for name, kind, help_, value in rows:
        out += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", f"{name} {value}"]
    return "\n".join(out) + "\n"
