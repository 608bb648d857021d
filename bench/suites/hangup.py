"""Benchmark `hangup`: hang-up → all files ready (mp3) for 1/10/60-minute calls, ours (incremental
export) vs (a) the same server exporting from the masters at hang-up (EXPORT_INTERVAL_S=0); the
pydub-at-hang-up baseline comes from suites/baselines.py."""

from __future__ import annotations

import asyncio
import os

from common import Server, log, spread
from suites.calls import one_call, warm_up


def _merge_repeats(rows: list[dict]) -> dict:
    """One hang-up figure over its repeats: the first run's fields, `ready_s` = the median, plus spread."""
    sp = spread([r["ready_s"] for r in rows])
    out = dict(rows[0])
    out.pop("repeat", None)
    out.update({"ready_s": sp["median"], "ready_s_min": sp["min"], "ready_s_max": sp["max"],
                "ready_s_runs": sp["runs"], "repeats": len(rows),
                "duration_ok": all(r["duration_ok"] for r in rows),
                "end_reasons": sorted({str(r["end_reason"]) for r in rows}),
                "server_finalize_s_runs": [r["server_finalize_s"] for r in rows]})
    return out


def run(args, R: dict, pin, pout) -> None:
    """Each figure is the median of `--repeats` calls. Both servers run side by side and every repeat
    goes through ours (60x + tail), ours (pure 60x) and (a) in turn, so background load hits all alike."""
    lengths = [1] if args.quick else [1, 10, 60]
    tail = 5.0 if args.quick else 10.0
    reps = args.repeats
    out: dict = {"lengths": lengths, "tail_s": tail, "pace_x": 60, "repeats": reps}
    plans = {"ours": [(m, 60.0, tail) for m in lengths],
             "ours_no_tail": [] if args.quick else [(m, 60.0, 0.0) for m in (10, 60)],
             "masters_at_hangup": [(m, None, tail) for m in lengths]}

    inc = Server("app", {"EXPORT_INTERVAL_S": "5"}, name="hangup-incremental")
    mas = Server("app", {"EXPORT_INTERVAL_S": "0"}, name="hangup-masters")
    server_of = {"ours": inc, "ours_no_tail": inc, "masters_at_hangup": mas}

    async def body() -> dict[str, dict[str, list[dict]]]:
        await warm_up(inc, pin, pout)
        await warm_up(mas, pin, pout)
        runs: dict[str, dict[str, list[dict]]] = {k: {} for k in plans}
        for rep in range(1, reps + 1):
            load = os.getloadavg()[0]
            for key, plan in plans.items():
                server = server_of[key]
                for minutes, speed, tl in plan:
                    r = await one_call(server, minutes, speed, tl, pin, pout)
                    r["repeat"], r["loadavg_1m"] = rep, round(load, 2)
                    log(f"  [{rep}/{reps}] {server.name}: {minutes:g}-min call, "
                        f"{'unpaced' if not speed else f'{speed:g}x'}"
                        f"{f' + {tl:g} s real-time tail' if tl else ''}: files ready {r['ready_s']} s after stop "
                        f"(server finalize {r['server_finalize_s']} s)")
                    runs[key].setdefault(str(minutes), []).append(r)
        return runs

    try:
        inc.start()
        mas.start()
        runs = asyncio.run(body())
    finally:
        inc.stop()
        mas.stop()
    for key, by_len in runs.items():
        out[key] = {m: _merge_repeats(rows) for m, rows in by_len.items()}
        for m, r in out[key].items():
            if reps > 1:
                log(f"  {key}, {m} min: median {r['ready_s']} s (min {r['ready_s_min']}, max {r['ready_s_max']}; "
                    f"{reps} repeats)")
    R["hangup"] = out
