"""Frame-lateness probe shared by serve_probe.py (the app) and bare_server.py.

The load generator puts `bench_t0` (its CLOCK_MONOTONIC time at which stream time 0 was due) in
`start.customParameters`. CLOCK_MONOTONIC is system-wide on Linux, so the server can compute, for
every media frame, `lateness = now − (bench_t0 + media.timestamp / 1000)` right after it has handled
the frame: the time from the frame being due at the sender to the server having placed it (the
sender's own lateness, the socket, the server's queueing and its handling). Cost: one clock read and
one array append per frame.
"""

from __future__ import annotations

import time
from array import array

import numpy as np  # imported at start-up: a lazy import on the first stats call would stall the loop

LAT = array("d")
STATE = {"since": time.monotonic()}


def record(t0: float, timestamp_ms: int) -> None:
    LAT.append(time.monotonic() - t0 - timestamp_ms / 1000.0)


def stats(reset: bool) -> dict:
    v = np.frombuffer(LAT, dtype=np.float64) * 1000.0 if len(LAT) else np.zeros(0)
    out = {"n": int(len(v)), "window_s": round(time.monotonic() - STATE["since"], 3)}
    if len(v):
        for p in (50, 90, 99, 99.9):
            out[f"p{p:g}_ms"] = round(float(np.percentile(v, p)), 3)
        out["max_ms"] = round(float(v.max()), 3)
        out["mean_ms"] = round(float(v.mean()), 3)
    if reset:
        del LAT[:]
        STATE["since"] = time.monotonic()
    return out


def bench_stack(options: dict) -> dict:
    """uvicorn options with the stack of app/serving.py, or (experiments and same-run baselines of an
    older stack) the one named by BENCH_STACK="loop,http,ws", e.g. "asyncio,h11,websockets"."""
    import os

    chosen = os.environ.get("BENCH_STACK", "")
    if chosen:
        loop, http, ws = chosen.split(",")
        options = options | {"loop": loop, "http": http, "ws": ws}
    return options
