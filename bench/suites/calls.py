"""Driving one call through a real server with the lean client: paced sending, waiting for the files."""

from __future__ import annotations

import asyncio
import os
import time

from common import FIRST_TS, LeanCall, Server


async def pace(c: LeanCall, k0: int, k1: int, speed: float | None, pin, pout) -> None:
    """Send slots [k0, k1) of one call: as fast as the socket takes them (speed None) or at `speed`× real time."""
    if not speed:
        k = k0
        while k < k1:
            k2 = min(k1, k + 250)
            c.write(c.media_bytes(k, k2, pin, pout))
            await c.drain()
            k = k2
        return
    t_start = time.monotonic()
    k = k0
    while k < k1:
        due = min(k1, k0 + int((time.monotonic() - t_start) * speed / 0.02) + 1)
        if due > k:
            c.write(c.media_bytes(k, due, pin, pout))
            k = due
            await c.drain()
        delay = t_start + (k - k0) * 0.02 / speed - time.monotonic()
        await asyncio.sleep(max(delay, 0.005 if speed > 10 else 0.0))


def fsync_masters(server: Server, sid: str) -> None:
    """What the kernel's 30 s writeback would have done to the masters during a real-time call."""
    for t in ("inbound", "outbound"):
        p = server.responses / ".calls" / sid / f"{t}.wav"
        try:
            fd = os.open(p, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)
        except OSError:
            pass


async def wait_finalized(server: Server, sids: list[str], t_stop: float, timeout: float) -> dict[str, float]:
    ready: dict[str, float] = {}
    deadline = t_stop + timeout
    while len(ready) < len(sids) and time.monotonic() < deadline:
        for s in sids:
            if s not in ready and server.finalized(s):
                ready[s] = time.monotonic() - t_stop
        await asyncio.sleep(0.002)
    return ready


async def one_call(server: Server, minutes: float, speed: float | None, tail_s: float, pin, pout) -> dict:
    c = LeanCall(server.host, server.port)
    await c.webhook()
    await c.connect()
    c.write(c.start_bytes())
    K = int(minutes * 3000)
    Kt = min(K, int(tail_s * 50))
    t0 = time.monotonic()
    await pace(c, 0, K - Kt, speed, pin, pout)
    if Kt:
        fsync_masters(server, c.sid)
        await pace(c, K - Kt, K, 1.0, pin, pout)
    await c.drain()
    stream_wall = time.monotonic() - t0
    t_stop = time.monotonic()
    c.write(c.stop_bytes())
    if server.finalized(c.sid):
        raise RuntimeError(f"call {c.sid} was finalised before stop was sent: {(server.read_result(c.sid) or {}).get('end_reason')}")
    ready = await wait_finalized(server, [c.sid], t_stop, 600)
    res = server.read_result(c.sid) or {}
    await c.finish(10)
    expect = round((FIRST_TS + 20 * K) / 1000, 3)
    audio = res.get("audio", {})
    return {"minutes": minutes, "ready_s": round(ready.get(c.sid, float("nan")), 3),
            "server_finalize_s": res.get("stats", {}).get("finalize_seconds"),
            "duration_s": res.get("duration_s"), "duration_ok": res.get("duration_s") == expect,
            "end_reason": res.get("end_reason"),
            "format": audio.get("format"), "bytes": audio.get("bytes"), "settings": audio.get("settings"),
            "stream_wall_s": round(stream_wall, 2), "speed_x": round(minutes * 60 / max(stream_wall, 1e-9), 1)}


async def warm_up(server: Server, pin, pout) -> None:
    """One short call so lazy imports and first-use costs are not charged to a measured call."""
    await one_call(server, 0.1, None, 0, pin, pout)
