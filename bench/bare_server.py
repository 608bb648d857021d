"""The bare baseline: a FastAPI WebSocket endpoint that only parses each Twilio message and counts.

Same stack and settings as `callscribe serve` (app/serving.py: uvloop, httptools, websockets-sansio;
the same max message; INFO logging), same `POST /voice` → TwiML-with-token step, so the load generator treats both servers
alike. Per frame it does `json.loads`, a count and the lateness probe (bench/probe.py). Nothing is
decoded, placed, written or encoded: the ceiling of this endpoint is what the socket stack alone
allows on this machine.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import probe  # noqa: E402
from probe import bench_stack  # noqa: E402
import uvicorn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app.serving import uvicorn_options  # noqa: E402
from app.web.ws_protocol import FRAME_SINK  # noqa: E402
from fastapi import FastAPI, Request, Response, WebSocket  # noqa: E402

app = FastAPI()
COUNTS: dict[str, dict[str, int]] = {}
LIVE = {"n": 0}


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok", "live_calls": LIVE["n"]}


@app.post("/voice")
async def voice(request: Request) -> Response:
    form = await request.form()
    sid = str(form.get("CallSid", ""))
    token = secrets.token_hex(16)
    body = ('<?xml version="1.0" encoding="UTF-8"?><Response><Start><Stream url="ws://%s/media-stream" '
            'name="callscribe" track="both_tracks"><Parameter name="token" value="%s" />'
            '<Parameter name="callSid" value="%s" /></Stream></Start><Dial>+15005550006</Dial></Response>'
            % (request.url.netloc, token, sid))
    return Response(body, media_type="text/xml")


@app.get("/stats")
async def stats() -> dict:
    return {"counts": COUNTS, "live": LIVE["n"]}


@app.get("/bench/lat")
async def lat(reset: int = 0) -> dict:
    return probe.stats(bool(reset))


# BENCH_BARE_SINK=1 (the `bare_sink` diagnostic): media messages are taken through the frame sink of
# `callscribe serve`'s WebSocket protocol (app/web/ws_protocol.py), as /media-stream takes them, and
# only parsed, counted and timed: the floor of that transport, to set our recording path beside.
USE_SINK = os.environ.get("BENCH_BARE_SINK") == "1"


@app.websocket("/media-stream")
async def media_stream(ws: WebSocket) -> None:
    await ws.accept()
    LIVE["n"] += 1
    sid = None
    t0 = None
    counts = {"inbound": 0, "outbound": 0}
    waiting = False

    def on_media(m: dict) -> None:
        counts[m["track"]] += 1
        if t0 is not None:
            probe.record(t0, int(m["timestamp"]))

    def sink(text: str) -> bool:
        if not waiting:
            return False
        ev = json.loads(text)
        if ev.get("event") != "media":
            return False
        on_media(ev["media"])
        return True

    set_sink = ws.scope.get("extensions", {}).get(FRAME_SINK) if USE_SINK else None
    if set_sink is not None:
        set_sink(sink)
    try:
        while True:
            waiting = True
            msg = await ws.receive()
            waiting = False
            if msg["type"] == "websocket.disconnect":
                return
            ev = json.loads(msg.get("text") or "{}")
            kind = ev.get("event")
            if kind == "media":
                on_media(ev["media"])
            elif kind == "start":
                sid = ev["start"]["callSid"]
                v = ev["start"].get("customParameters", {}).get("bench_t0")
                t0 = float(v) if v else None
                COUNTS[sid] = counts
            elif kind == "stop":
                break
        await ws.close()
    finally:
        if set_sink is not None:
            set_sink(None)
        LIVE["n"] -= 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    uvicorn.run(app, **bench_stack(uvicorn_options(host=args.host, port=args.port, max_ws_message_bytes=32 * 1024,
                                                   log_level="info", graceful_timeout=20,
                                                   forwarded_allow_ips="127.0.0.1")))


if __name__ == "__main__":
    main()
