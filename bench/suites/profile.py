"""Benchmark `profile`: py-spy on `callscribe serve` under paced load; where the event loop's time goes."""

from __future__ import annotations

import re
from pathlib import Path

from common import OUT, log
from suites.concurrency import concurrency_step


CATS = [  # (label, substring of the frame's file), leaf first: the nearest known frame owns the sample
    ("json.loads (stdlib)", "json/"),
    ("ours: Twilio parse (app/twilio)", "app/twilio/"),
    ("ours: μ-law decode (app/audio/mulaw)", "app/audio/mulaw"),
    ("ours: place + pwrite (recorder/timeline/track)", "app/recording/recorder"),
    ("ours: place + pwrite (recorder/timeline/track)", "app/recording/timeline"),
    ("ours: place + pwrite (recorder/timeline/track)", "app/recording/track"),
    ("ours: export/encode (export, soundfile, soxr)", "app/recording/export"),
    ("ours: export/encode (export, soundfile, soxr)", "soundfile"),
    ("ours: export/encode (export, soundfile, soxr)", "app/audio/resample"),
    ("ours: finalize/journal/store", "app/recording/"),
    ("ours: live call + WS shell (live, media_stream)", "app/call/"),
    ("ours: live call + WS shell (live, media_stream)", "app/web/"),
    ("websockets framing (server)", "websockets/"),
    ("uvicorn ASGI glue", "uvicorn/"),
    ("starlette/fastapi WebSocket", "starlette/"),
    ("starlette/fastapi WebSocket", "fastapi/"),
    ("asyncio/uvloop loop (incl. native socket I/O, callbacks)", "asyncio/"),
]


def summarize_profile(path: Path) -> dict:
    line_re = re.compile(r"^thread \((\d+)\): ?([^;]*);(.*) (\d+)$")
    loop_cat: dict[str, int] = {}
    thread_tot: dict[str, int] = {}
    leaf: dict[str, int] = {}
    total = 0
    loop_total = 0
    for line in path.read_text().splitlines():
        m = line_re.match(line)
        if not m:
            continue
        _, tname, stack, cnt = m.groups()
        cnt = int(cnt)
        frames = stack.split(";")
        total += cnt
        kind = "export worker threads" if "export" in tname else ("event loop (MainThread)" if "MainThread" in tname
                                                                   else tname or "other")
        thread_tot[kind] = thread_tot.get(kind, 0) + cnt
        lf = re.sub(r":\d+\)$", ")", frames[-1])
        leaf[lf] = leaf.get(lf, 0) + cnt
        if kind.startswith("event loop"):
            loop_total += cnt
            cat = "other"
            for fr in reversed(frames):
                hit = next((lbl for lbl, sub in CATS if sub in fr), None)
                if hit:
                    cat = hit
                    break
            loop_cat[cat] = loop_cat.get(cat, 0) + cnt
    top_leaf = sorted(leaf.items(), key=lambda kv: -kv[1])[:15]
    return {
        "samples": total,
        "threads_pct": {k: round(100 * v / max(1, total), 1) for k, v in sorted(thread_tot.items(), key=lambda kv: -kv[1])},
        "event_loop_pct": {k: round(100 * v / max(1, loop_total), 1) for k, v in sorted(loop_cat.items(), key=lambda kv: -kv[1])},
        "top_leaf_pct": [(k, round(100 * v / max(1, total), 1)) for k, v in top_leaf],
    }


def run(args, R: dict) -> None:
    n, window = (20, 5.0) if args.quick else (100, 12.0)
    log(f"  py-spy on `callscribe serve` (no probe) with {n} paced calls for {window:g} s")
    step = concurrency_step("app", n, window, 1.0, 1.0, profile_s=window)
    prof = summarize_profile(OUT / "profile_raw.txt") if (OUT / "profile_raw.txt").exists() else {}
    R["profile"] = {"calls": n, "window_s": window, "server_cpu_cores": step["server_cpu_cores"],
                    "server_cpu_us_per_msg": step["server_cpu_us_per_msg"], "frames_lost": step["frames_lost"],
                    "tool": "py-spy (bench/.venv-tools), --nonblocking --rate 250", **prof}
