"""Benchmark `hangup`: hang-up → all files ready (mp3) for 1/10/60-minute calls, ours (incremental
export in encoder processes) vs (a) the same server exporting from the masters at hang-up
(EXPORT_INTERVAL_S=0); the pydub-at-hang-up baseline comes from suites/baselines.py.

Issue 13's setting: the 60x call with 50 real-time calls beside it (`ours_beside_50`, one
bench/loadgen.py process), against the same server encoding on its own threads
(`threads_beside_50`, ENCODER_PROCESSES=0), and both without the load (`ours_no_tail`,
`threads_no_tail`), all in the same run. The 50 calls' frames are counted in their masters
afterwards (`beside_frames_lost`): encoding must not cost frames."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

from common import BENCH, OUT, ROOT, Server, log, spread
from suites.calls import one_call, warm_up
from suites.concurrency import count_recorded

BESIDE = 50  # real-time calls beside the 60x one


def cpu_split(pid: int) -> tuple[float, float]:
    """CPU seconds of the serving process itself, and of the processes under it (its encoder processes)."""
    try:
        import psutil

        root = psutil.Process(pid)
        t = root.cpu_times()
        own = t.user + t.system
        kids = 0.0
        for p in root.children(recursive=True):
            try:
                c = p.cpu_times()
                kids += c.user + c.system
            except psutil.Error:
                pass
        return own, kids
    except Exception:
        return float("nan"), float("nan")


class Beside:
    """`n` paced real-time calls (bench/loadgen.py) streaming for `seconds` after a 2 s ramp."""

    def __init__(self, server: Server, n: int, seconds: float, tag: str) -> None:
        self.server = server
        self.ramp, self.settle = 2.0, 1.0
        self.proc = subprocess.Popen(
            [sys.executable, str(BENCH / "loadgen.py"), "--port", str(server.port), "--calls", str(n),
             "--total", str(n), "--ramp", str(self.ramp), "--settle", str(self.settle), "--window", str(seconds)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            stderr=open(OUT / "logs" / f"loadgen-hangup-{tag}.log", "w"), env=os.environ | {"PYTHONPATH": str(ROOT)})
        line = self.proc.stdout.readline()
        if not line.startswith("READY"):
            raise RuntimeError(f"load generator did not start: {line!r}")
        self.t_go = time.monotonic() + 0.3
        self.t_end = self.t_go + self.ramp + self.settle + seconds + 0.5
        self.proc.stdin.write(f"GO {self.t_go!r}\n")
        self.proc.stdin.flush()

    async def running(self) -> None:
        """Once every call streams."""
        await asyncio.sleep(max(0.0, self.t_go + self.ramp + self.settle - time.monotonic()))

    async def result(self) -> dict:
        out, _ = await asyncio.to_thread(self.proc.communicate, timeout=600)
        line = [x for x in out.splitlines() if x.startswith("RESULT ")]
        if not line:
            raise RuntimeError("load generator gave no result")
        res = json.loads(line[-1][7:])
        calls = res["calls"]
        sids = [c["sid"] for c in calls]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(self.server.finalized(s) for s in sids):
            await asyncio.sleep(0.1)
        lost = 0
        for c in calls:
            got = count_recorded(self.server, c["sid"], {"inbound": c["sent_in"], "outbound": c["sent_out"]})
            lost += (c["sent_in"] - got["inbound"]) + (c["sent_out"] - got["outbound"])
        return {"beside_calls": res["placed"], "beside_failed": res["failed_count"],
                "beside_early_close": sum(1 for c in calls if c["early_close"]), "beside_frames_lost": lost,
                "beside_gen_lateness_p99_ms": res["gen_lateness_ms"].get("p99")}


def _merge_repeats(rows: list[dict]) -> dict:
    """One hang-up figure over its repeats: the first run's fields, `ready_s` = the median, plus spread."""
    sp = spread([r["ready_s"] for r in rows])
    out = dict(rows[0])
    out.pop("repeat", None)
    out.update({"ready_s": sp["median"], "ready_s_min": sp["min"], "ready_s_max": sp["max"],
                "ready_s_runs": sp["runs"], "repeats": len(rows),
                "duration_ok": all(r["duration_ok"] for r in rows),
                "end_reasons": sorted({str(r["end_reason"]) for r in rows}),
                "speed_x_runs": [r.get("speed_x") for r in rows],
                "server_process_cpu_s_runs": [r.get("server_process_cpu_s") for r in rows],
                "encoder_processes_cpu_s_runs": [r.get("encoder_processes_cpu_s") for r in rows],
                "server_finalize_s_runs": [r["server_finalize_s"] for r in rows]})
    if "beside_frames_lost" in rows[0]:
        out["beside_frames_lost_runs"] = [r["beside_frames_lost"] for r in rows]
        out["beside_live_at_hangup_runs"] = [r["beside_live_at_hangup"] for r in rows]
    return out


def run(args, R: dict, pin, pout) -> None:
    """Each figure is the median of `--repeats` calls. Both servers run side by side and every repeat
    goes through ours (60x + tail), ours (pure 60x) and (a) in turn, so background load hits all alike."""
    lengths = [1] if args.quick else [1, 10, 60]
    tail = 5.0 if args.quick else 10.0
    reps = args.repeats
    out: dict = {"lengths": lengths, "tail_s": tail, "pace_x": 60, "repeats": reps}
    # HANGUP_LENGTHS=10 (say): only these lengths, when a run must be short (the lengths are recorded).
    only = [int(x) for x in os.environ.get("HANGUP_LENGTHS", "").split(",") if x.strip()]
    if only:
        lengths = [m for m in lengths if m in only] or only
    issue13 = [] if args.quick else [m for m in (10, 60) if not only or m in only]
    busy_core = os.environ.get("HANGUP_BUSY_CORE") == "1"
    out["lengths"] = lengths
    plans = {"ours": [(m, 60.0, tail) for m in lengths],
             "ours_no_tail": [(m, 60.0, 0.0) for m in issue13],
             "threads_no_tail": [(m, 60.0, 0.0) for m in issue13],
             "ours_beside_50": [(m, 60.0, 0.0) for m in issue13],
             "threads_beside_50": [(m, 60.0, 0.0) for m in issue13],
             # encoder processes at nice 0 instead of ENCODER_NICE=5 (the 60-min case only)
             "ours_nice0_beside_50": [(m, 60.0, 0.0) for m in issue13 if m == 60],
             # HANGUP_BUSY_CORE=1: also with one core kept busy by a spinning process (the load generators
             # of the machine that showed the starvation), 60-min case only
             "ours_beside_50_busy_core": [(m, 60.0, 0.0) for m in issue13 if m == 60 and busy_core],
             "threads_beside_50_busy_core": [(m, 60.0, 0.0) for m in issue13 if m == 60 and busy_core],
             # faster than 60x: as fast as the socket takes it (the tail left at hang-up)
             "ours_unpaced": [(m, None, 0.0) for m in issue13 if m == 60],
             "threads_unpaced": [(m, None, 0.0) for m in issue13 if m == 60],
             "masters_at_hangup": [(m, None, tail) for m in lengths]}
    out["beside_calls"] = BESIDE
    series = [k for k in os.environ.get("HANGUP_SERIES", "").split(",") if k]  # only these (a short run)
    if series:
        plans = {k: (v if k in series else []) for k, v in plans.items()}

    inc = Server("app", {"EXPORT_INTERVAL_S": "5"}, name="hangup-incremental")
    thr = Server("app", {"EXPORT_INTERVAL_S": "5", "ENCODER_PROCESSES": "0"}, name="hangup-threads")
    mas = Server("app", {"EXPORT_INTERVAL_S": "0"}, name="hangup-masters")
    nice0 = Server("app", {"EXPORT_INTERVAL_S": "5", "ENCODER_NICE": "0"}, name="hangup-nice0")
    server_of = {"ours": inc, "ours_no_tail": inc, "ours_beside_50": inc, "ours_unpaced": inc,
                 "masters_at_hangup": mas, "threads_no_tail": thr, "threads_beside_50": thr, "threads_unpaced": thr,
                 "ours_nice0_beside_50": nice0, "ours_beside_50_busy_core": inc, "threads_beside_50_busy_core": thr}
    servers = [s for s in (inc, thr, mas, nice0) if any(plans[k] for k, v in server_of.items() if v is s)]

    async def body() -> dict[str, dict[str, list[dict]]]:
        for s in servers:
            await warm_up(s, pin, pout)
        runs: dict[str, dict[str, list[dict]]] = {k: {} for k in plans}
        for rep in range(1, reps + 1):
            load = os.getloadavg()[0]
            for key, plan in plans.items():
                server = server_of[key]
                for minutes, speed, tl in plan:
                    beside = spin = None
                    if key.endswith("_busy_core"):
                        spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
                    if "_beside_50" in key:  # they stream for the 60x call's length and some
                        beside = Beside(server, BESIDE, minutes * 60 / speed * 1.3 + 10, f"{key}-{minutes}-{rep}")
                        await beside.running()
                    try:
                        own0, kids0 = cpu_split(server.pid)
                        r = await one_call(server, minutes, speed, tl, pin, pout)
                        own1, kids1 = cpu_split(server.pid)
                    finally:
                        if spin is not None:
                            spin.kill()
                            spin.wait()
                    # CPU of the whole call, stream to files (and of the calls beside it, if any)
                    r["server_process_cpu_s"] = round(own1 - own0, 2)
                    r["encoder_processes_cpu_s"] = round(kids1 - kids0, 2)
                    if beside is not None:
                        r["beside_live_at_hangup"] = time.monotonic() < beside.t_end - 1.0
                        r.update(await beside.result())
                    r["repeat"], r["loadavg_1m"] = rep, round(load, 2)
                    log(f"  [{rep}/{reps}] {key} ({server.name}): {minutes:g}-min call, "
                        f"{'unpaced' if not speed else f'{speed:g}x'}"
                        f"{f' + {tl:g} s real-time tail' if tl else ''}"
                        f"{f' beside {BESIDE} real-time calls' if beside else ''}: files ready {r['ready_s']} s "
                        f"after stop (server finalize {r['server_finalize_s']} s; streamed at {r['speed_x']}x; "
                        f"CPU {r['server_process_cpu_s']} s serving process + {r['encoder_processes_cpu_s']} s "
                        f"encoder processes"
                        + (f"; beside: {r['beside_frames_lost']} frames lost, live at hang-up "
                           f"{r['beside_live_at_hangup']}" if beside else "") + ")")
                    runs[key].setdefault(str(minutes), []).append(r)
        return runs

    try:
        for s in servers:
            s.start()
        runs = asyncio.run(body())
    finally:
        for s in servers:
            s.stop()
    for key, by_len in runs.items():
        out[key] = {m: _merge_repeats(rows) for m, rows in by_len.items()}
        for m, r in out[key].items():
            if reps > 1:
                log(f"  {key}, {m} min: median {r['ready_s']} s (min {r['ready_s_min']}, max {r['ready_s_max']}; "
                    f"{reps} repeats)")
    for m in issue13:
        ours, base = out["ours_beside_50"].get(str(m), {}), out["threads_beside_50"].get(str(m), {})
        alone, alone_base = out["ours_no_tail"].get(str(m), {}), out["threads_no_tail"].get(str(m), {})
        log(f"  issue 13, {m}-min call at 60x beside {BESIDE} real-time calls: files ready {ours.get('ready_s')} s "
            f"(encoder processes) vs {base.get('ready_s')} s (threads, ENCODER_PROCESSES=0); alone: "
            f"{alone.get('ready_s')} s vs {alone_base.get('ready_s')} s")
    for m, r in out.get("ours_beside_50_busy_core", {}).items():
        base = out.get("threads_beside_50_busy_core", {}).get(m, {})
        log(f"  issue 13, {m}-min call at 60x beside {BESIDE} real-time calls, one core kept busy: files ready "
            f"{r.get('ready_s')} s (encoder processes) vs {base.get('ready_s')} s (threads)")
    for m, r in out.get("ours_unpaced", {}).items():
        base = out.get("threads_unpaced", {}).get(m, {})
        log(f"  issue 13, {m}-min call unpaced (~{r.get('speed_x')}x): files ready {r.get('ready_s')} s (encoder "
            f"processes) vs {base.get('ready_s')} s (threads, at ~{base.get('speed_x')}x)")
    R["hangup"] = out
