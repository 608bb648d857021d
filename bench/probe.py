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
    now = time.monotonic()
    LAT.append(now - t0 - timestamp_ms / 1000.0)
    if DUMP is not None:
        DUMP.append(now)
        DUMP.append(now - t0 - timestamp_ms / 1000.0)


DUMP: array | None = None  # with several worker processes: (time, lateness) pairs flushed to files


def dump_to(folder: str) -> None:
    """Several workers (serve_probe.py --workers N): each flushes its (monotonic time, lateness) pairs to
    `folder/<pid>.f64` every 0.25 s; `read_dumps` merges them for a window of time."""
    import os
    import threading

    global DUMP
    DUMP = array("d")
    path = os.path.join(folder, f"{os.getpid()}.f64")

    def flush() -> None:
        while True:
            time.sleep(0.25)
            n = len(DUMP) // 2 * 2
            if n:
                chunk = DUMP[:n]
                del DUMP[:n]
                with open(path, "ab") as f:
                    chunk.tofile(f)

    threading.Thread(target=flush, name="bench-probe-dump", daemon=True).start()


def read_dumps(folder: str, t_from: float, t_to: float) -> dict:
    """Lateness statistics (ms) of every worker's frames handled between t_from and t_to (monotonic)."""
    import glob

    parts = [np.fromfile(f, dtype=np.float64).reshape(-1, 2) for f in glob.glob(f"{folder}/*.f64")]
    a = np.concatenate(parts) if parts else np.zeros((0, 2))
    v = a[(a[:, 0] >= t_from) & (a[:, 0] < t_to), 1] * 1000.0
    out = {"n": int(len(v)), "window_s": round(t_to - t_from, 3), "workers": len(parts)}
    if len(v):
        for p in (50, 90, 99, 99.9):
            out[f"p{p:g}_ms"] = round(float(np.percentile(v, p)), 3)
        out["max_ms"] = round(float(v.max()), 3)
        out["mean_ms"] = round(float(v.mean()), 3)
    return out


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
