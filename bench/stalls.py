"""Diagnostic (BENCH_STALL_LOG=FILE): where the serving loop is when it parses no frame for a while.

`beat()` is called by the probe for every frame parsed (the loop thread). A watchdog thread wakes
every millisecond; when no frame was parsed for STALL_MS it samples the loop thread's Python stack
(sys._current_frames) until frames flow again. The collector's passes are timed by generation
(gc.callbacks). Every 2 s the figures go to FILE as one JSON line: stalls (start, length, samples),
the stacks seen during stalls with their counts, and the collector's passes.
"""

from __future__ import annotations

import collections
import gc
import json
import sys
import threading
import time

STALL_MS = 8.0

_last = 0.0
_loop_tid: int | None = None
_stacks: collections.Counter = collections.Counter()
_stalls: list[tuple[float, float, int]] = []
_gcs: list[tuple[int, float, float, int]] = []
_gc_t0 = 0.0
_lock = threading.Lock()


def beat() -> None:
    global _last, _loop_tid
    _last = time.perf_counter()
    if _loop_tid is None:
        _loop_tid = threading.get_ident()


def _on_gc(phase: str, info: dict) -> None:
    global _gc_t0
    if threading.get_ident() != _loop_tid:
        return
    if phase == "start":
        _gc_t0 = time.perf_counter()
    else:
        t1 = time.perf_counter()
        _gcs.append((info["generation"], _gc_t0, (t1 - _gc_t0) * 1e3, info.get("collected", 0)))


def _stack(frame, depth: int = 10) -> str:
    out = []
    while frame is not None and len(out) < depth:
        co = frame.f_code
        fn = co.co_filename.rsplit("/", 2)
        out.append(f"{'/'.join(fn[-2:])}:{frame.f_lineno}:{co.co_name}")
        frame = frame.f_back
    return " < ".join(out)


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each thread of this process, by Python thread name."""
    import os

    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            f = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(tid), f"native-{tid}")
        out[name] = out.get(name, 0.0) + (int(f[11]) + int(f[12])) / tick
    return out


def _watch(path: str) -> None:
    cpu0 = _thread_cpu()
    in_stall = None
    samples = 0
    last_dump = time.perf_counter()
    while True:
        time.sleep(0.001)
        now = time.perf_counter()
        if _loop_tid is not None and _last and (now - _last) * 1e3 > STALL_MS:
            if in_stall is None:
                in_stall, samples = _last, 0
            f = sys._current_frames().get(_loop_tid)
            _stacks[_stack(f)] += 1
            samples += 1
        elif in_stall is not None:
            _stalls.append((in_stall, (now - in_stall) * 1e3, samples))
            in_stall = None
        if now - last_dump > 2.0:
            last_dump = now
            cpu1 = _thread_cpu()
            line = {"t": now, "stalls": _stalls[:], "gc": _gcs[:],
                    "stacks": _stacks.most_common(40),
                    "cpu": {k: round(v - cpu0.get(k, 0.0), 2) for k, v in cpu1.items() if v - cpu0.get(k, 0.0) > 0}}
            cpu0 = cpu1
            _stalls.clear()
            _gcs.clear()
            _stacks.clear()
            with open(path, "a") as fh:
                fh.write(json.dumps(line) + "\n")


def install(path: str) -> None:
    gc.callbacks.append(_on_gc)
    threading.Thread(target=_watch, args=(path,), name="bench-stalls", daemon=True).start()
