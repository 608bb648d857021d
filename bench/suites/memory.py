"""Benchmarks `memory` and `cpu` (ours): server RSS per call after 1/10/60 minutes of audio with N
concurrent calls, and the server's CPU per call-minute over the whole recording path."""

from __future__ import annotations

import asyncio
import statistics
import time

from common import FIRST_TS, LeanCall, Server, cpu_precise, log
from suites.calls import wait_finalized, warm_up


def rss_file_mb(pid: int) -> float:
    """File-backed pages mapped into the process (RssFile + RssShmem): shared page cache, not its own memory."""
    total = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("RssFile:", "RssShmem:")):
                total += int(line.split()[1])
    return total * 1024 / 1e6  # MB, as the RSS figures


def run(args, R: dict, pin, pout) -> None:
    n = 2 if args.quick else 10
    checkpoints = [1, 2] if args.quick else [1, 10, 60]
    server = Server("app", {"EXPORT_INTERVAL_S": "5"}, name="memory").start()

    def rss_samples(k: int = 5, gap: float = 0.2) -> list[float]:
        v = []
        for _ in range(k):
            v.append(server.rss_cpu()[0] / 1e6)
            time.sleep(gap)
        return v

    async def body() -> dict:
        await warm_up(server, pin, pout)
        await asyncio.sleep(1.0)
        base = statistics.median(rss_samples())
        base_file = rss_file_mb(server.pid)
        cpu0 = cpu_precise(server.pid)
        calls = [LeanCall(server.host, server.port) for _ in range(n)]
        for c in calls:
            await c.webhook()
            await c.connect()
            c.write(c.start_bytes())
        await asyncio.sleep(1.0)
        r0 = rss_samples()
        points = [{"minutes": 0, "rss_mb": round(statistics.median(r0), 2),
                   "per_call_mb": round((statistics.median(r0) - base) / n, 3)}]
        K = 0
        t0 = time.monotonic()
        for m in checkpoints:
            target = m * 3000
            while K < target:
                K2 = min(target, K + 250)
                for c in calls:
                    c.write(c.media_bytes(K, K2, pin, pout))
                await asyncio.gather(*(c.drain() for c in calls))
                K = K2
            want = n * 2 * K
            deadline = time.monotonic() + 300
            while server.metric("callscribe_live_frames") < want and time.monotonic() < deadline:
                if server.metric("callscribe_live_calls") < n:
                    raise RuntimeError(f"calls ended before stop: {[(server.read_result(c.sid) or {}).get('end_reason') for c in calls]}")
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            v = rss_samples()
            med = statistics.median(v)
            mapped = rss_file_mb(server.pid) - base_file
            points.append({"minutes": m, "rss_mb": round(med, 2), "rss_max_mb": round(max(v), 2),
                           "per_call_mb": round((med - base) / n, 3),
                           # of which file pages mapped into the server (the masters' windows: page cache)
                           "per_call_mapped_file_mb": round(mapped / n, 3),
                           "cpu_s": round(cpu_precise(server.pid) - cpu0, 2),
                           "wall_s": round(time.monotonic() - t0, 1)})
            log(f"  {n} calls at {m} min of audio: server RSS {med:.1f} MB → {(med - base) / n:.3f} MB per call "
                f"(of which {mapped / n:.3f} MB mapped master windows, page cache)")
        stream_wall = time.monotonic() - t0
        t_stop = time.monotonic()
        for c in calls:
            c.write(c.stop_bytes())
        ready = await wait_finalized(server, [c.sid for c in calls], t_stop, 600)
        cpu1 = cpu_precise(server.pid)
        await asyncio.gather(*(c.finish(30) for c in calls))
        await asyncio.sleep(1.0)
        after = statistics.median(rss_samples())
        results = [server.read_result(c.sid) or {} for c in calls]
        M = checkpoints[-1]
        return {
            "calls": n, "checkpoints": checkpoints, "base_rss_mb": round(base, 2), "points": points,
            "rss_after_mb": round(after, 2), "stream_wall_s": round(stream_wall, 1),
            "speed_x": round(M * 60 / stream_wall, 1),
            "hangup_ready_s": {"max": round(max(ready.values()), 3) if ready else None,
                               "median": round(statistics.median(ready.values()), 3) if ready else None,
                               "finalized": len(ready)},
            "durations_ok": all(r.get("duration_s") == round((FIRST_TS + 20 * M * 3000) / 1000, 3) for r in results),
            "dropped_frames": sum(r.get("stats", {}).get("dropped_frames", 0) for r in results),
            "end_reasons": sorted({str(r.get("end_reason")) for r in results}),
            "cpu_s": round(cpu1 - cpu0, 2), "call_minutes": n * M,
            "cpu_per_call_min_s": round((cpu1 - cpu0) / (n * M), 5),
            "us_per_message": round((cpu1 - cpu0) / (n * M * 6000) * 1e6, 2),
        }

    try:
        R["memory_ours"] = asyncio.run(body())
    finally:
        server.stop()
