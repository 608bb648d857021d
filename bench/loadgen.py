"""Load generator process: many paced Twilio listen-mode calls (both tracks, 100 messages/s per call).

Protocol with bench/run.py: the generator places its calls (POST /voice, WebSocket handshake),
prints `READY <ok> <failed>`, reads `GO <monotonic t_go>` on stdin, then streams. Call `i` of the
whole step (`--offset` + local index, out of `--total`) starts at `t_go + ramp × i / total` (calls
start spread over the ramp, and their 20 ms phases are spread, as independent calls are). From its
start a call sends one inbound and one outbound frame every 20 ms until `t_go + ramp + settle +
window + 0.5`, then `stop` and a close frame. It prints `RESULT <json>`: what each call sent, how
it ended, and the generator's own lateness (time from a frame being due to it being written) for
frames due inside the measurement window.

One periodic loop (2 ms ticks over 10 phase buckets) drives every connection: no task per call,
so the generator stays cheap. Writes never block (asyncio buffers), so a slow server shows up as
server-side lateness, not as a slower sender.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import FIRST_TS, LeanCall, load_payloads, percentiles  # noqa: E402

TICK = 0.002
SLOT = 0.020
BUCKETS = 10


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--calls", type=int, required=True)
    ap.add_argument("--offset", type=int, default=0)
    ap.add_argument("--total", type=int, required=True)
    ap.add_argument("--ramp", type=float, default=2.0)
    ap.add_argument("--settle", type=float, default=1.0)
    ap.add_argument("--window", type=float, default=20.0)
    args = ap.parse_args()

    pin, pout = load_payloads()
    calls = [LeanCall(args.host, args.port) for _ in range(args.calls)]
    failed: list[str] = []
    sem = asyncio.Semaphore(32)

    async def setup(c: LeanCall) -> None:
        async with sem:
            try:
                await c.webhook()
                await c.connect()
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                failed.append(f"{type(exc).__name__}: {str(exc)[:120]}")
                c.writer = None

    await asyncio.gather(*(setup(c) for c in calls))
    live = [c for c in calls if c.writer is not None]
    print(f"READY {len(live)} {len(failed)}", flush=True)
    loop = asyncio.get_running_loop()
    line = await loop.run_in_executor(None, sys.stdin.readline)
    t_go = float(line.split()[1])
    t_end = t_go + args.ramp + args.settle + args.window + 0.5
    m_from = t_go + args.ramp + args.settle
    m_to = m_from + args.window

    buckets: list[list[LeanCall]] = [[] for _ in range(BUCKETS)]
    started: set[int] = set()
    for i, c in enumerate(live):
        gi = args.offset + i
        start = t_go + args.ramp * gi / max(1, args.total)
        c.t0 = start - FIRST_TS / 1000  # when stream time 0 was due (frame k is due at start + 20k ms)
        c.n_slots = max(1, int((t_end - start) / SLOT))  # type: ignore[attr-defined]
        c.start_at = start  # type: ignore[attr-defined]
        # the first tick at or after the call's due times (tick b runs at t_go + b·TICK + q·SLOT)
        buckets[(int(((start - t_go) % SLOT) / TICK) + 1) % BUCKETS].append(c)

    lateness: list[float] = []
    early_close: dict[str, int | None] = {}
    cpu0 = cpu1 = None
    j = 0
    remaining = len(live)
    while time.monotonic() < t_go:
        await asyncio.sleep(t_go - time.monotonic())
    while remaining > 0:
        now = time.monotonic()
        if cpu0 is None and now >= m_from:
            cpu0 = time.process_time()
        if cpu1 is None and now >= m_to:
            cpu1 = time.process_time()
        for c in buckets[j % BUCKETS]:
            if c.next_slot >= c.n_slots:  # type: ignore[attr-defined]
                continue
            if now < c.start_at:  # type: ignore[attr-defined]
                continue
            if c.closed.is_set():
                early_close[c.sid] = c.close_code
                c.next_slot = c.n_slots  # type: ignore[attr-defined]
                remaining -= 1
                continue
            id_ = id(c)
            head = b""
            if id_ not in started:
                started.add(id_)
                head = c.start_bytes(extra={"bench_t0": repr(c.t0)})
            due0 = c.t0 + (FIRST_TS + 20 * c.next_slot) / 1000
            last = min(c.n_slots, int((now - c.start_at) / SLOT + 1e-6) + 1)  # type: ignore[attr-defined]
            if last <= c.next_slot:
                continue
            if m_from <= due0 < m_to:
                lateness.append(now - due0)
            c.write(head + c.media_bytes(c.next_slot, last, pin, pout))
            if c.next_slot >= c.n_slots:  # type: ignore[attr-defined]
                remaining -= 1
        j += 1
        delay = t_go + j * TICK - time.monotonic()
        await asyncio.sleep(delay if delay > 0 else 0)
    if cpu1 is None:
        cpu1 = time.process_time()
    if cpu0 is None:
        cpu0 = cpu1
    t_stop = time.monotonic()
    for c in live:
        if not c.closed.is_set():
            c.write(c.stop_bytes())
    await asyncio.gather(*(c.finish(120) for c in live))
    res = {
        "placed": len(live), "failed_setup": failed[:5], "failed_count": len(failed),
        "calls": [{"sid": c.sid, "sent_in": c.sent["inbound"], "sent_out": c.sent["outbound"],
                   "close_code": c.close_code, "early_close": c.sid in early_close} for c in live],
        "gen_lateness_ms": {k: (round(v * 1000, 3) if isinstance(v, float) else v)
                            for k, v in percentiles(lateness).items()},
        "gen_cpu_s": round(cpu1 - cpu0, 3), "window_s": args.window,
        "close_wait_s": round(time.monotonic() - t_stop, 3),
    }
    print("RESULT " + json.dumps(res), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
