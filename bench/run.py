"""Callscribe benchmark suite: `python bench/run.py` (or `make bench`), `--quick` for a smoke run.

Every figure is printed beside its baseline measured in the same run, written to
bench/out/results.json (+ bench/out/summary.md), and plotted to bench/out/memory_cpu.png.

Benchmarks (`--bench NAME[,NAME…]`, default all but `assistant`):
  hangup       hang-up → all files ready (mp3), 1/10/60-minute calls: ours (incremental export)
               vs (a) export from the masters at hang-up (EXPORT_INTERVAL_S=0) vs (b) pydub at hang-up
  memory       server RSS per call after 1/10/60 minutes of audio, N concurrent calls, vs pipecat's
               AudioBufferProcessor fed the same frames (also yields `cpu`)
  cpu          CPU per call-minute of the whole recording path vs pipecat serializer + ABP + encode
  concurrency  paced listen-mode calls (100 messages/s each) one worker holds with 0 frames lost and
               p99 frame lateness < 50 ms, vs a bare FastAPI WebSocket endpoint (bench/bare_server.py)
  profile      py-spy on the server under paced load: hot spots; json.loads vs orjson.loads
  wer          word error rate: our voice (hibari) and real human speech, each through 8 kHz μ-law, heard
               by our Whisper tiny.en (bench/wer.py)
  assistant    (only with --assistant) assistant response latency by stage from call JSONs

Wall-clock figures that background load moves (the concurrency ceilings, hang-up times) are the median
of `--repeats` runs (default 3, 1 with --quick), printed with their min–max; the concurrency ceilings
come with the CPU per message, which load moves far less. The machine's load (load average, CPU used by
other processes, CPU steal) is recorded for the run and for each benchmark, so a noisy run shows.

Servers are real `python -m app.cli serve` processes on 127.0.0.1 (the concurrency test runs the
same app through bench/serve_probe.py, which adds a frame-lateness probe). Baselines run in
bench/.venv-baselines, plotting/profiling in bench/.venv-tools; both are created by this script.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (  # noqa: E402
    BENCH, FIRST_TS, OUT, ROOT, WORK, LeanCall, Server, cpu_precise, load_payloads, prepare_audio,
)

ALL = ["wer", "hangup", "memory", "cpu", "concurrency", "profile"]
VENV_BASELINES = BENCH / ".venv-baselines"
VENV_TOOLS = BENCH / ".venv-tools"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- venvs


def ensure_venv(path: Path, reqs: Path) -> Path:
    """Create `path` with `python -m venv` and pip-install `reqs` (pinned); skipped when up to date."""
    py = path / "bin" / "python"
    stamp = path / ".bench-stamp"
    want = reqs.read_text()
    if py.exists() and stamp.exists() and stamp.read_text() == want:
        return py
    log(f"creating {path.relative_to(ROOT)} from {reqs.name} (first run only)")
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(reqs)],
                   check=True)
    stamp.write_text(want)
    return py


def run_json(cmd: list[str], timeout: float, env: dict | None = None) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                       env=(os.environ | (env or {})))
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({r.returncode}): {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- machine


def machine() -> dict:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    from importlib.metadata import version

    vers = {}
    for p in ("fastapi", "starlette", "uvicorn", "websockets", "numpy", "soundfile", "soxr"):
        try:
            vers[p] = version(p)
        except Exception:
            vers[p] = "?"
    return {"cpu_model": model, "cores": os.cpu_count(), "ram_gib": round(mem / 2**30, 1),
            "python": platform.python_version(), "kernel": platform.release(), "versions": vers,
            "loadavg_start": os.getloadavg()}


# --------------------------------------------------------------------------- background load

_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def _proc_stat_cpu() -> dict[str, int] | None:
    """The machine-wide `cpu` line of /proc/stat in clock ticks (steal only where the kernel reports it)."""
    try:
        with open("/proc/stat") as f:
            parts = f.readline().split()
    except OSError:
        return None
    if not parts or parts[0] != "cpu":
        return None
    vals = [int(x) for x in parts[1:1 + len(_STAT_FIELDS)]]
    return dict(zip(_STAT_FIELDS, vals))


def _own_cpu_s() -> float:
    """CPU seconds of this process and of every child it has reaped (servers, load generators, baselines)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def load_snapshot() -> dict:
    return {"t": time.monotonic(), "loadavg": [round(x, 2) for x in os.getloadavg()], "stat": _proc_stat_cpu(),
            "own_cpu_s": _own_cpu_s()}


def load_between(a: dict, b: dict) -> dict:
    """What the machine did between two snapshots, so a reader can tell a noisy run.

    background_cores: machine-wide busy CPU minus the CPU of the bench's own process tree (this
    process and its reaped children), per second of wall time, i.e. how many cores other people's
    work took. steal_pct: CPU time the hypervisor gave to other guests (/proc/stat `steal`)."""
    out: dict = {"wall_s": round(b["t"] - a["t"], 1), "loadavg_before": a["loadavg"], "loadavg_after": b["loadavg"]}
    sa, sb = a.get("stat"), b.get("stat")
    wall = b["t"] - a["t"]
    if sa and sb and wall > 0:
        hz = os.sysconf("SC_CLK_TCK")
        d = {k: sb[k] - sa[k] for k in sa if k in sb}
        total = sum(d.values()) or 1
        busy_s = sum(d.get(k, 0) for k in ("user", "nice", "system", "irq", "softirq")) / hz
        own = b["own_cpu_s"] - a["own_cpu_s"]
        out["machine_busy_cores"] = round(busy_s / wall, 2)
        out["bench_cores"] = round(own / wall, 2)
        out["background_cores"] = round(max(0.0, busy_s - own) / wall, 2)
        if "steal" in d:
            out["steal_pct"] = round(100 * d["steal"] / total, 2)
        out["iowait_pct"] = round(100 * d.get("iowait", 0) / total, 2)
    return out


def describe_load(L: dict, cores: int | None) -> str:
    s = (f"load average (1 min) {L['loadavg_before'][0]:.2f} before, {L['loadavg_after'][0]:.2f} after"
         f" on {cores or '?'} cores")
    if "background_cores" in L:
        s += (f"; other processes used {L['background_cores']:.2f} cores on average (machine busy "
              f"{L['machine_busy_cores']:.2f}, this bench {L['bench_cores']:.2f})")
    if "steal_pct" in L:
        s += f"; CPU steal {L['steal_pct']:.1f} %"
    return s


# --------------------------------------------------------------------------- streaming helpers


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
        raise RuntimeError(f"call {c.sid} was finalised before stop was sent: {(server.result(c.sid) or {}).get('end_reason')}")
    ready = await wait_finalized(server, [c.sid], t_stop, 600)
    res = server.result(c.sid) or {}
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


# --------------------------------------------------------------------------- 1. hang-up


def spread(values: list) -> dict:
    """Median, min, max and the runs themselves (None values, i.e. failed runs, are kept in `runs` only)."""
    v = [x for x in values if isinstance(x, (int, float)) and x == x]
    med = round(statistics.median(v), 4) if v else None
    if med is not None and all(isinstance(x, int) for x in v) and med == int(med):
        med = int(med)  # a ceiling stays a whole number of calls
    return {"median": med, "min": (min(v) if v else None),
            "max": (max(v) if v else None), "runs": list(values), "n": len(v)}


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


def bench_hangup(args, R: dict, pin, pout) -> None:
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


# --------------------------------------------------------------------------- 2+3. memory and CPU


def bench_memory(args, R: dict, pin, pout) -> None:
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
                    raise RuntimeError(f"calls ended before stop: {[(server.result(c.sid) or {}).get('end_reason') for c in calls]}")
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)
            v = rss_samples()
            med = statistics.median(v)
            points.append({"minutes": m, "rss_mb": round(med, 2), "rss_max_mb": round(max(v), 2),
                           "per_call_mb": round((med - base) / n, 3),
                           "cpu_s": round(cpu_precise(server.pid) - cpu0, 2),
                           "wall_s": round(time.monotonic() - t0, 1)})
            log(f"  {n} calls at {m} min of audio: server RSS {med:.1f} MB → {(med - base) / n:.3f} MB per call")
        stream_wall = time.monotonic() - t0
        t_stop = time.monotonic()
        for c in calls:
            c.write(c.stop_bytes())
        ready = await wait_finalized(server, [c.sid for c in calls], t_stop, 600)
        cpu1 = cpu_precise(server.pid)
        await asyncio.gather(*(c.finish(30) for c in calls))
        await asyncio.sleep(1.0)
        after = statistics.median(rss_samples())
        results = [server.result(c.sid) or {} for c in calls]
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


def bench_pipecat(args, R: dict) -> None:
    py = ensure_venv(VENV_BASELINES, BENCH / "requirements-baselines.txt")
    minutes = "1,2" if args.quick else "1,10,60"
    calls = 1 if args.quick else 2
    log(f"  pipecat AudioBufferProcessor + TwilioFrameSerializer, {calls} call(s), checkpoints {minutes} min")
    R["pipecat"] = run_json([str(py), str(BENCH / "baseline_pipecat.py"), "--minutes", minutes,
                             "--calls", str(calls), "--audio", str(OUT / "cache")], timeout=900)


def bench_micro(args, R: dict) -> None:
    R["micro"] = run_json([sys.executable, str(BENCH / "micro.py"), "--minutes", "2" if args.quick else "10"],
                          timeout=600, env={"PYTHONPATH": str(ROOT)})
    py = ensure_venv(VENV_TOOLS, BENCH / "requirements-tools.txt")
    R["json_vs_orjson"] = run_json([str(py), str(BENCH / "micro.py"), "--json-only"], timeout=300)


# --------------------------------------------------------------------------- 4. concurrency


def count_recorded(server: Server, sid: str, sent: dict[str, int]) -> dict[str, int]:
    """Frames of each track present in the master (a missing frame is a hole of zeros)."""
    import numpy as np

    out = {}
    for t in ("inbound", "outbound"):
        p = server.responses / ".calls" / sid / f"{t}.wav"
        try:
            x = np.fromfile(p, dtype="<i2", offset=44)
        except OSError:
            out[t] = 0
            continue
        n = sent[t]
        starts = (FIRST_TS + 20 * np.arange(n)) * 8
        starts = starts[starts + 160 <= len(x)]
        if len(starts) == 0:
            out[t] = 0
            continue
        frames = x[starts[:, None] + np.arange(160)]
        out[t] = int(np.count_nonzero(frames.any(axis=1)))
    return out


def concurrency_step(kind: str, n: int, window: float, ramp: float, settle: float, gens: int = 2,
                     profile_s: float = 0.0) -> dict:
    env = {"MAX_CONCURRENT_CALLS": "100000", "EXPORT_INTERVAL_S": "5"}
    if kind == "ours_wav":  # diagnostic: the same server with a format whose encoder costs ~nothing
        env["DEFAULT_AUDIO_FORMAT"] = "wav"
    if kind == "ours_nice":  # experiment: export threads at nice +10 (bench/serve_probe.py)
        env["BENCH_EXPORTER_NICE"] = "10"
    if kind == "ours_transcribe":  # diagnostic: the default listen-mode transcription on (Server turns it off)
        env["TRANSCRIBE"] = "true"
    if kind.endswith("_sansio"):  # experiment: uvicorn's websockets-sansio implementation
        env["BENCH_WS_IMPL"] = "websockets-sansio"
        kind = kind[: -len("_sansio")]
    server_kind = {"ours": "probe", "ours_wav": "probe", "ours_nice": "probe", "ours_transcribe": "probe",
                   "bare": "bare", "app": "app"}[kind]
    server = Server(server_kind, env, name=f"conc-{kind}-{n}").start()
    procs = []
    try:
        per = [n // gens + (1 if i < n % gens else 0) for i in range(gens)]
        offset = 0
        for g, m in enumerate(per):
            if m == 0:
                continue
            procs.append(subprocess.Popen(
                [sys.executable, str(BENCH / "loadgen.py"), "--port", str(server.port), "--calls", str(m),
                 "--offset", str(offset), "--total", str(n), "--ramp", str(ramp), "--settle", str(settle),
                 "--window", str(window)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(OUT / "logs" / f"loadgen-{kind}-{n}-{g}.log", "w"),
                text=True, cwd=ROOT, env=os.environ | {"PYTHONPATH": str(ROOT)}))
            offset += m
        ready = []
        for p in procs:
            line = p.stdout.readline()
            if not line.startswith("READY"):
                raise RuntimeError(f"load generator did not start: {line!r}")
            ready.append(tuple(int(x) for x in line.split()[1:]))
        t_go = time.monotonic() + 0.3
        for p in procs:
            p.stdin.write(f"GO {t_go!r}\n")
            p.stdin.flush()
        m_from = t_go + ramp + settle
        time.sleep(max(0.0, m_from - time.monotonic()))
        lat0 = server.get_json("/bench/lat?reset=1") if kind != "app" else None
        cpu0 = cpu_precise(server.pid)
        spy = None
        if profile_s:
            spy_py = ensure_venv(VENV_TOOLS, BENCH / "requirements-tools.txt")
            spy = subprocess.Popen([str(spy_py.parent / "py-spy"), "record", "--pid", str(server.pid), "--duration",
                                    str(int(profile_s)), "--rate", "250", "--format", "raw", "--nonblocking",
                                    "--threads", "-o", str(OUT / "profile_raw.txt")],
                                   stdout=subprocess.DEVNULL, stderr=open(OUT / "logs" / "py-spy.log", "w"))
        time.sleep(max(0.0, m_from + window - time.monotonic()))
        cpu1 = cpu_precise(server.pid)
        lat = server.get_json("/bench/lat") if kind != "app" else None
        rss = server.rss_cpu()[0] / 1e6
        if spy is not None:
            spy.wait(timeout=profile_s + 60)
        results = []
        for p in procs:
            out, _ = p.communicate(timeout=600)
            line = [x for x in out.splitlines() if x.startswith("RESULT ")]
            if not line:
                raise RuntimeError("load generator gave no result")
            results.append(json.loads(line[-1][7:]))
        calls = [c for r in results for c in r["calls"]]
        failed = sum(r["failed_count"] for r in results)
        early = sum(1 for c in calls if c["early_close"])
        sent = sum(c["sent_in"] + c["sent_out"] for c in calls)
        lost = 0
        if kind != "bare":
            sids = [c["sid"] for c in calls]
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not all(server.finalized(s) for s in sids):
                time.sleep(0.1)
            for c in calls:
                got = count_recorded(server, c["sid"], {"inbound": c["sent_in"], "outbound": c["sent_out"]})
                lost += (c["sent_in"] - got["inbound"]) + (c["sent_out"] - got["outbound"])
        else:
            counts = server.get_json("/stats")["counts"]
            for c in calls:
                got = counts.get(c["sid"], {"inbound": 0, "outbound": 0})
                lost += (c["sent_in"] - got["inbound"]) + (c["sent_out"] - got["outbound"])
        gen_p99 = max(r["gen_lateness_ms"]["p99"] or 0 for r in results)
        gen_cpu = sum(r["gen_cpu_s"] for r in results) / window
        p99 = lat.get("p99_ms") if lat else None
        ok = failed == 0 and early == 0 and lost == 0 and (p99 is None or p99 < 50.0)
        step = {"calls": n, "placed": sum(r["placed"] for r in results), "failed_setup": failed, "early_close": early,
                "frames_sent": sent, "frames_lost": lost, "server_lateness_ms": lat, "gen_lateness_p99_ms": gen_p99,
                "server_cpu_cores": round((cpu1 - cpu0) / window, 3), "gen_cpu_cores": round(gen_cpu, 3),
                "server_rss_mb": round(rss, 1), "window_s": window, "pass": ok,
                "loadavg_1m": round(os.getloadavg()[0], 2),
                "generator_limited": gen_p99 > 20.0}
        # CPU per message: the server's process CPU (all threads) over the window ÷ the messages it
        # handled in that window (the probe counts each; nominal n × 100 × window where there is none).
        msgs = (lat or {}).get("n") or n * 100 * window
        step["messages"] = int(msgs)
        step["server_cpu_us_per_msg"] = round((cpu1 - cpu0) / max(1, msgs) * 1e6, 2)
        if lat0 is not None:
            step["ramp_lateness_ms"] = {k: lat0.get(k) for k in ("n", "p99_ms", "max_ms")}
        return step
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        server.stop()


def _attempt(kind: str, n: int, window: float, ramp: float, settle: float, retry: bool) -> dict:
    """One step; a failing step is tried once more (this machine is shared: a burst of someone else's
    work can spoil one window). It passes if either attempt passes; both attempts are kept."""
    s = concurrency_step(kind, n, window, ramp, settle)
    tries = [s]
    if not s["pass"] and retry:
        s2 = concurrency_step(kind, n, window, ramp, settle)
        tries.append(s2)
        s = s2 if s2["pass"] else s
    s = dict(s)
    s["attempts"] = [{k: t[k] for k in ("pass", "frames_lost", "server_cpu_cores", "gen_lateness_p99_ms", "loadavg_1m")}
                     | {"p99_ms": (t["server_lateness_ms"] or {}).get("p99_ms")} for t in tries]
    lat = s["server_lateness_ms"] or {}
    tried = " / ".join(f"{a['p99_ms']} ms" for a in s["attempts"])
    log(f"  {kind:9s} {n:5d} calls: lost {s['frames_lost']}, refused {s['failed_setup'] + s['early_close']}, "
        f"p99 lateness {tried} (max {lat.get('max_ms')}), server {s['server_cpu_cores']} cores, "
        f"generator p99 {s['gen_lateness_p99_ms']} ms, load {s['loadavg_1m']} → {'PASS' if s['pass'] else 'FAIL'}")
    return s


def ceilings(kinds: list[str], args, repeat: int = 1) -> dict:
    """One ceiling search. Step the number of calls for every kind, interleaved (each step count runs
    for all kinds back to back, so they see the same background load), then refine once between the
    last pass and the first failure. Diagnostic kinds use shorter windows."""
    if args.quick:
        plan, ramp, settle = [20], 1.0, 1.0
        windows = {k: 5.0 for k in kinds}
    else:
        plan, ramp, settle = [50, 100, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 1200, 1600], 2.0, 1.0
        windows = {k: (20.0 if k in ("ours", "bare") else 10.0) for k in kinds}
    st = {k: {"best": 0, "first_fail": None, "steps": []} for k in kinds}
    for n in plan:
        active = [k for k in kinds if st[k]["first_fail"] is None]
        if not active:
            break
        for k in active:
            s = _attempt(k, n, windows[k], ramp, settle, retry=not args.quick)
            s["repeat"] = repeat
            st[k]["steps"].append(s)
            if s["pass"]:
                st[k]["best"] = n
            else:
                st[k]["first_fail"] = n
    if not args.quick:
        mids = {}
        for k in kinds:
            best, fail = st[k]["best"], st[k]["first_fail"]
            if fail and fail - best > 25:
                mid = int(round((best + fail) / 2 / 25) * 25)
                if best < mid < fail:
                    mids[k] = mid
        for k, mid in mids.items():
            s = _attempt(k, mid, windows[k], ramp, settle, retry=True)
            s["repeat"] = repeat
            st[k]["steps"].append(s)
            if s["pass"]:
                st[k]["best"] = mid
    return {k: {"ceiling": v["best"], "first_fail": v["first_fail"], "steps": v["steps"], "window_s": windows[k],
                "capped": v["first_fail"] is None} for k, v in st.items()}


def cpu_ref_calls(args) -> int:
    """The step at which CPU per message is compared: low enough that both servers pass it every time."""
    return 20 if args.quick else 100


def bench_concurrency(args, R: dict) -> None:
    """`--repeats` whole ceiling searches for ours and bare (interleaved step by step, and the order
    within a step alternates between repeats); the ceilings are reported as median, min and max, beside
    the CPU per message at a fixed step, which background load moves far less. The diagnostic series
    (wav, nice, transcription on) run in the first repeat only."""
    reps = args.repeats
    main_kinds = ["ours", "bare"]
    diag = [] if (args.quick or args.no_diagnostics) else ["ours_wav", "ours_nice", "ours_transcribe"]
    ref = cpu_ref_calls(args)
    runs: list[dict] = []
    loads: list[dict] = []
    for rep in range(1, reps + 1):
        order = main_kinds if rep % 2 else main_kinds[::-1]
        kinds = order + (diag if rep == 1 else [])
        before = load_snapshot()
        log(f"  repeat {rep}/{reps}: order {', '.join(kinds)}; load average {before['loadavg'][0]:.2f}")
        runs.append(ceilings(kinds, args, repeat=rep))
        L = load_between(before, load_snapshot())
        L["repeat"] = rep
        loads.append(L)
        log(f"  repeat {rep}/{reps}: " + ", ".join(f"{k} {runs[-1][k]['ceiling']}" for k in kinds)
            + f" calls; {describe_load(L, os.cpu_count())}")
    C: dict = {"repeats": reps, "cpu_ref_calls": ref, "load": loads}
    for k in main_kinds + diag:
        per = [r[k] for r in runs if k in r]
        sp = spread([p["ceiling"] for p in per])
        cpu = []
        for p in per:
            at = [s for s in p["steps"] if s["calls"] == ref and s["pass"]]
            cpu.append(at[0]["server_cpu_us_per_msg"] if at else None)
        C[k] = {"ceiling": sp["median"], "ceiling_min": sp["min"], "ceiling_max": sp["max"],
                "ceilings": sp["runs"], "first_fail": [p["first_fail"] for p in per],
                "capped": any(p["capped"] for p in per), "window_s": per[0]["window_s"],
                "steps": [s for p in per for s in p["steps"]],
                "cpu_us_per_msg": spread(cpu) | {"calls": ref}}
    o, b = C["ours"], C["bare"]
    C["ratio_of_medians"] = round(o["ceiling"] / b["ceiling"], 3) if b["ceiling"] else None
    C["ratios"] = [round(x / y, 3) if y else None for x, y in zip(o["ceilings"], b["ceilings"])]
    co, cb = o["cpu_us_per_msg"]["median"], b["cpu_us_per_msg"]["median"]
    C["cpu_ratio"] = round(co / cb, 3) if co and cb else None
    log(f"  ceilings over {reps} repeat(s): ours median {o['ceiling']} (min {o['ceiling_min']}, max "
        f"{o['ceiling_max']}), bare median {b['ceiling']} (min {b['ceiling_min']}, max {b['ceiling_max']}), "
        f"ratio of medians {C['ratio_of_medians']}")
    log(f"  CPU per message at {ref} paced calls: ours {co} µs (min {o['cpu_us_per_msg']['min']}, max "
        f"{o['cpu_us_per_msg']['max']}), bare {cb} µs (min {b['cpu_us_per_msg']['min']}, max "
        f"{b['cpu_us_per_msg']['max']}), ratio {C['cpu_ratio']}")
    R["concurrency"] = C


# --------------------------------------------------------------------------- profile


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
    ("ours: live call + WS shell (live, media_stream)", "app/recording/live"),
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


def bench_profile(args, R: dict) -> None:
    n, window = (20, 5.0) if args.quick else (100, 12.0)
    log(f"  py-spy on `callscribe serve` (no probe) with {n} paced calls for {window:g} s")
    step = concurrency_step("app", n, window, 1.0, 1.0, profile_s=window)
    prof = summarize_profile(OUT / "profile_raw.txt") if (OUT / "profile_raw.txt").exists() else {}
    R["profile"] = {"calls": n, "window_s": window, "server_cpu_cores": step["server_cpu_cores"],
                    "server_cpu_us_per_msg": step["server_cpu_us_per_msg"], "frames_lost": step["frames_lost"],
                    "tool": "py-spy (bench/.venv-tools), --nonblocking --rate 250", **prof}


# --------------------------------------------------------------------------- 5. assistant


def bench_assistant(args, R: dict) -> None:
    from assistant import latency_report, place_assistant_calls

    if args.assistant_dir:
        paths = sorted(Path(args.assistant_dir).glob("call_*.json"))
    else:
        paths = place_assistant_calls(n=1 if args.quick else 3)
    rep = latency_report(paths)
    R["assistant"] = rep
    print(rep.get("text", ""))


# --------------------------------------------------------------------------- 6. word error rate


def bench_wer(args, R: dict) -> None:
    res = run_json([sys.executable, str(BENCH / "wer.py"), "--json"], timeout=900, env={"PYTHONPATH": str(ROOT)})
    R["wer"] = res
    print(res.get("text", ""))


# --------------------------------------------------------------------------- targets


def fmt(v, unit="", nd=3):
    if v is None or (isinstance(v, float) and v != v):
        return "n/a"
    if isinstance(v, float):
        v = round(v, nd)
    return f"{v}{unit}"


def build_table(R: dict, quick: bool) -> list[dict]:
    rows: list[dict] = []
    H = R.get("hangup")
    pc = R.get("pipecat")
    if H:
        for m in H["lengths"]:
            ours = H["ours"].get(str(m), {}).get("ready_s")
            masters = H["masters_at_hangup"].get(str(m), {}).get("ready_s")
            pyd = (pc or {}).get("hangup", {}).get(str(m), {}).get("mp3", {}).get("wall_s")
            big = m == max(H["lengths"])
            rows.append({"figure": f"hang-up → files ready, {m}-min call (mp3)", "ours": ours, "unit": "s",
                         "ours_spread": _spread_of(H["ours"].get(str(m))),
                         "baseline": pyd, "baseline_name": "pydub export at hang-up",
                         "ratio": ours / pyd if ours and pyd else None,
                         "target": "≤ 1 s (60-min call)" if big and not quick else "",
                         "pass": (ours is not None and ours <= 1.0) if big and not quick else None})
            rows.append({"figure": f"  (a) export from masters at hang-up, {m} min", "ours": masters, "unit": "s",
                         "ours_spread": _spread_of(H["masters_at_hangup"].get(str(m))),
                         "baseline": ours, "baseline_name": "ours (incremental)",
                         "ratio": masters / ours if masters and ours else None, "target": "", "pass": None})
        for m, r in (H.get("ours_no_tail") or {}).items():
            rows.append({"figure": f"  ours, pure 60x stream (no real-time tail), {m} min", "ours": r["ready_s"],
                         "ours_spread": _spread_of(r), "unit": "s", "baseline": None, "baseline_name": "", "ratio": None, "target": "", "pass": None})
    M = R.get("memory_ours")
    if M:
        pts = {p["minutes"]: p["per_call_mb"] for p in M["points"]}
        ppts = {p["minutes"]: p["per_call_mb"] for p in (pc or {}).get("points", [])}
        for m in M["checkpoints"]:
            rows.append({"figure": f"memory per call after {m} min ({M['calls']} calls)", "ours": pts.get(m), "unit": " MB",
                         "baseline": ppts.get(m), "baseline_name": "pipecat AudioBufferProcessor",
                         "ratio": pts.get(m) / ppts[m] if pts.get(m) is not None and ppts.get(m) else None,
                         "target": "", "pass": None})
        first, last = M["checkpoints"][0], M["checkpoints"][-1]
        growth = pts[last] - pts[first]
        pgrowth = (ppts.get(last) or 0) - (ppts.get(first) or 0) if ppts else None
        rows.append({"figure": f"memory growth per call, {first} → {last} min", "ours": growth, "unit": " MB",
                     "baseline": pgrowth, "baseline_name": "pipecat AudioBufferProcessor",
                     "ratio": growth / pgrowth if pgrowth else None, "target": "flat within 1 MB",
                     "pass": abs(growth) <= 1.0})
        ours_cpu = M["cpu_per_call_min_s"]
        base_cpu = (pc or {}).get("cpu_per_call_min_mp3_s")
        rows.append({"figure": "CPU per call-minute, whole path, server (mp3)", "ours": ours_cpu, "unit": " s",
                     "baseline": base_cpu, "baseline_name": "pipecat serializer + ABP + pydub mp3",
                     "ratio": ours_cpu / base_cpu if base_cpu else None, "target": "≤ 1/5 of pipecat (ratio ≤ 0.2)",
                     "pass": (ours_cpu / base_cpu <= 0.2) if base_cpu else None})
        C0 = R.get("concurrency") or {}
        so, sb = _step(C0, "ours", 100), _step(C0, "bare", 100)
        J0 = R.get("micro", {}).get("stages", {})
        if so and sb and pc:
            ours_paced = so["server_cpu_cores"] * 60 / so["calls"]
            floor = sb["server_cpu_cores"] * 60 / sb["calls"] - J0.get("json_loads_us", 0) * 6000 / 1e6
            rows.append({"figure": f"  same, paced steady state ({so['calls']} calls, no hang-up)", "ours": round(ours_paced, 4),
                         "unit": " s", "baseline": round(base_cpu + floor, 4),
                         "baseline_name": "pipecat + mp3 + bare socket floor (est.)",
                         "ratio": ours_paced / (base_cpu + floor), "target": "", "pass": None})
        mi = (R.get("micro") or {}).get("inprocess")
        if mi and pc:
            Mp = max(int(k) for k in pc["hangup"])
            enc = pc["hangup"][str(Mp)]["mp3"]
            pc_enc = (enc["cpu_self_s"] + enc["cpu_child_s"]) / Mp
            rows.append({"figure": "  mp3 encode alone per call-minute", "ours": mi["export_s_per_min"], "unit": " s",
                         "baseline": round(pc_enc, 4), "baseline_name": "ffmpeg libmp3lame via pydub",
                         "ratio": mi["export_s_per_min"] / pc_enc, "target": "", "pass": None})
            rows.append({"figure": "  same, in process, no socket (ours)", "ours": mi["cpu_per_call_min_s"], "unit": " s",
                         "baseline": base_cpu, "baseline_name": "pipecat serializer + ABP + pydub mp3",
                         "ratio": mi["cpu_per_call_min_s"] / base_cpu, "target": "", "pass": None})
            rows.append({"figure": "  parse+decode+place+write per message (no encode)",
                         "ours": round(mi["parse_us_per_msg"] + mi["place_write_us_per_msg"], 2), "unit": " µs",
                         "baseline": pc.get("us_per_message"), "baseline_name": "pipecat deserialize + process_frame",
                         "ratio": (mi["parse_us_per_msg"] + mi["place_write_us_per_msg"]) / pc["us_per_message"],
                         "target": "", "pass": None})
    C = R.get("concurrency")
    if C:
        co, cb = C["ours"], C["bare"]
        o, b = co["ceiling"], cb["ceiling"]
        reps = C.get("repeats", 1)
        rows.append({"figure": f"concurrent paced calls, 0 lost, p99 < 50 ms, median of {reps}", "ours": o,
                     "unit": " calls", "ours_spread": (co.get("ceiling_min"), co.get("ceiling_max")),
                     "baseline": b, "baseline_spread": (cb.get("ceiling_min"), cb.get("ceiling_max")),
                     "baseline_name": "bare FastAPI WS endpoint",
                     "ratio": o / b if o is not None and b else None, "target": "≥ 2/3 of bare (ratio ≥ 0.667)",
                     "pass": (o / b >= 2 / 3) if o is not None and b else None})
        uo, ub = co.get("cpu_us_per_msg") or {}, cb.get("cpu_us_per_msg") or {}
        if uo.get("median") is not None:
            rows.append({"figure": f"  stable: server CPU per message at {uo['calls']} paced calls",
                         "ours": uo["median"], "unit": " µs", "ours_spread": (uo["min"], uo["max"]),
                         "baseline": ub.get("median"), "baseline_spread": (ub.get("min"), ub.get("max")),
                         "baseline_name": "bare FastAPI WS endpoint",
                         "ratio": uo["median"] / ub["median"] if ub.get("median") else None,
                         "target": "", "pass": None})
    for key, label in (("ours_wav", "  diagnostic: ours writing wav (no mp3 encode)"),
                       ("ours_nice", "  experiment: mp3, export threads at nice 10"),
                       ("ours_transcribe", "  diagnostic: TRANSCRIBE=true (listen-mode STT)")):
        if C and C.get(key):
            o, b = C[key]["ceiling"], C["bare"]["ceiling"]
            rows.append({"figure": label + (", 1st repeat" if C.get("repeats", 1) > 1 else ""), "ours": o,
                         "unit": " calls", "baseline": b,
                         "baseline_name": "bare FastAPI WS endpoint (median)", "ratio": o / b if b else None,
                         "target": "", "pass": None})
    W = R.get("wer")
    if W and not W.get("error"):
        for key, label in (("voice", "assistant: hibari voice → μ-law 8 kHz → Whisper WER"),
                           ("human", "human speech (testdata) → μ-law 8 kHz → Whisper WER")):
            p = W.get(key) or {}
            if p.get("wer") is not None:
                rows.append({"figure": label, "ours": round(100 * p["wer"], 1), "unit": " %",
                             "baseline": None, "baseline_name": f"{p['edits']}/{p['words']} words",
                             "ratio": None, "target": "", "pass": None, "note": f"{p['edits']}/{p['words']} words"})
    J = R.get("json_vs_orjson")
    if J and J.get("orjson_loads_us"):
        rows.append({"figure": "orjson.loads on a Twilio media message", "ours": J["orjson_loads_us"], "unit": " µs",
                     "baseline": J["json_loads_us"], "baseline_name": "json.loads (same process)",
                     "ratio": J["orjson_loads_us"] / J["json_loads_us"], "target": "", "pass": None})
    if quick:  # a smoke run: verdicts are indicative only (short calls, one concurrency step)
        for r in rows:
            if r["pass"] is not None:
                r["target"] = r["target"] + " (quick: indicative)"
                if r["figure"].startswith("concurrent"):
                    r["pass"] = None
    return rows


def _step(C: dict, kind: str, calls: int) -> dict | None:
    """The passing concurrency step of `kind` with exactly `calls` (over repeats: the one with the median
    server CPU), else its largest passing step ≤ calls."""
    steps = [s for s in (C.get(kind) or {}).get("steps", []) if s["pass"] and s["calls"] <= calls]
    exact = sorted((s for s in steps if s["calls"] == calls), key=lambda s: s["server_cpu_cores"])
    if exact:
        return exact[(len(exact) - 1) // 2]
    return sorted(steps, key=lambda s: s["calls"])[-1] if steps else None


def _spread_of(r: dict | None) -> tuple | None:
    """(min, max) of a hang-up figure measured more than once, else None."""
    if not r or r.get("repeats", 1) < 2:
        return None
    return r.get("ready_s_min"), r.get("ready_s_max")


def fmt_spread(v, sp, unit: str) -> str:
    """'150 calls [125–175]': the median with the min–max of its repeats (when there were several)."""
    s = fmt(v, unit)
    if sp and sp[0] is not None and sp[1] is not None:
        lo, hi = (round(x, 3) if isinstance(x, float) else x for x in sp)
        s += f" [{lo}–{hi}]"
    return s


def _base_text(r: dict, paren: bool) -> str:
    if r["baseline"] is None:
        return r.get("note", "")
    val = fmt_spread(r["baseline"], r.get("baseline_spread"), r["unit"])
    return f"{val} ({r['baseline_name']})" if paren else f"{val} {r['baseline_name']}"


def print_table(rows: list[dict]) -> str:
    head = f"{'figure':58s} {'ours [min–max]':>22s}   {'baseline (same run)':>52s} {'ratio':>8s}  {'target':30s} result"
    lines = [head, "-" * len(head)]
    for r in rows:
        base = _base_text(r, paren=False)
        res = "" if r["pass"] is None else ("PASS" if r["pass"] else "MISS")
        ours = fmt_spread(r["ours"], r.get("ours_spread"), r["unit"])
        lines.append(f"{r['figure'][:58]:58s} {ours:>22s}   {base[:52]:>52s} "
                     f"{(fmt(r['ratio'], 'x', 3) if r['ratio'] is not None else ''):>8s}  {r['target'][:30]:30s} {res}")
    text = "\n".join(lines)
    print(text)
    return text


def markdown_table(rows: list[dict]) -> str:
    out = ["| figure | ours [min–max of repeats] | baseline (same run) | ratio | target | result |",
           "|---|---:|---|---:|---|---|"]
    for r in rows:
        base = _base_text(r, paren=True)
        res = "" if r["pass"] is None else ("**PASS**" if r["pass"] else "**MISS**")
        out.append(f"| {r['figure'].strip()} | {fmt_spread(r['ours'], r.get('ours_spread'), r['unit'])} | {base} | "
                   f"{fmt(r['ratio'], 'x', 3) if r['ratio'] is not None else ''} | {r['target']} | {res} |")
    return "\n".join(out)


def load_summary(R: dict) -> str:
    """The machine's load, for the run and each benchmark: what a reader needs to judge the wall-clock figures."""
    L = R.get("load") or {}
    cores = (R.get("machine") or {}).get("cores")
    lines = ["Machine load (other processes = machine-wide busy CPU minus this bench's own process tree;"
             " the load average includes the bench itself):"]
    for name, v in L.items():
        if name != "run":
            lines.append(f"- {name}: {describe_load(v, cores)}")
    if "run" in L:
        lines.append(f"- whole run: {describe_load(L['run'], cores)}")
    C = R.get("concurrency") or {}
    for v in C.get("load") or []:
        lines.append(f"- concurrency repeat {v['repeat']}: {describe_load(v, cores)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def main() -> int:
    import signal

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="short smoke version (~2 minutes)")
    ap.add_argument("--bench", action="append", default=[], metavar="NAME[,NAME]",
                    help=f"run only these: {', '.join(ALL + ['assistant'])} (repeatable)")
    ap.add_argument("--assistant", action="store_true", help="also run the assistant latency harness")
    ap.add_argument("--assistant-dir", help="read call_*.json from this folder instead of placing calls")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--no-diagnostics", action="store_true",
                    help="concurrency: skip the diagnostic ceilings (our server with wav; export threads at nice 10; "
                         "transcription on)")
    ap.add_argument("--repeats", type=int, default=None, metavar="N",
                    help="repeats of the wall-clock figures (concurrency ceilings, hang-up); "
                         "default 3, 1 with --quick; the median and min–max are reported")
    ap.add_argument("--out", default=str(OUT / "results.json"))
    args = ap.parse_args()
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        ap.error("--repeats must be at least 1")
    chosen = [b for x in args.bench for b in x.split(",") if b] or list(ALL)
    if args.assistant and "assistant" not in chosen:
        chosen.append("assistant")
    bad = [b for b in chosen if b not in ALL + ["assistant"]]
    if bad:
        ap.error(f"unknown benchmark(s) {bad}; choose from {ALL + ['assistant']}")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "logs").mkdir(exist_ok=True)
    shutil.rmtree(WORK, ignore_errors=True)
    t_start = time.monotonic()
    run_before = load_snapshot()
    R: dict = {"mode": "quick" if args.quick else "full", "benchmarks": chosen, "repeats": args.repeats,
               "started": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine()}
    if set(chosen) != set(ALL) and Path(args.out).exists():
        # A partial run updates the figures it measures and keeps the others (same mode only).
        try:
            prev = json.loads(Path(args.out).read_text())
        except ValueError:
            prev = {}
        if prev.get("mode") == R["mode"]:
            keep = {k: v for k, v in prev.items() if k not in ("table", "errors", "duration_s", "benchmarks")}
            R = keep | {"mode": R["mode"], "benchmarks": chosen, "machine": R["machine"], "repeats": args.repeats,
                        "started": R["started"], "updated_from": prev.get("started")}
    m = R["machine"]
    log(f"machine: {m['cpu_model']}, {m['cores']} cores, {m['ram_gib']} GiB, Python {m['python']}, "
        f"load average {m['loadavg_start'][0]:.2f}")
    prepare_audio()
    R["audio_source"] = (OUT / "cache" / "source.txt").read_text().strip()
    pin, pout = load_payloads()
    steps = []
    if "wer" in chosen:
        steps.append(("word error rate (voice and human speech, 8 kHz μ-law)", lambda: bench_wer(args, R)))
    if "hangup" in chosen:
        steps.append(("hangup", lambda: bench_hangup(args, R, pin, pout)))
    if "memory" in chosen or "cpu" in chosen:
        steps.append(("memory+cpu (ours, real server)", lambda: bench_memory(args, R, pin, pout)))
    if {"hangup", "memory", "cpu"} & set(chosen):
        steps.append(("baselines: pipecat + pydub", lambda: bench_pipecat(args, R)))
    if {"cpu", "profile"} & set(chosen):
        steps.append(("per-frame micro-benchmarks (+ orjson)", lambda: bench_micro(args, R)))
    if "concurrency" in chosen:
        steps.append(("concurrency ceiling (ours vs bare)", lambda: bench_concurrency(args, R)))
    if "profile" in chosen:
        steps.append(("profile", lambda: bench_profile(args, R)))
    if "assistant" in chosen:
        steps.append(("assistant latency", lambda: bench_assistant(args, R)))
    errors = {}
    loads = R.setdefault("load", {})
    cores = os.cpu_count()
    for name, fn in steps:
        log(f"== {name}")
        t = time.monotonic()
        before = load_snapshot()
        try:
            fn()
        except Exception as exc:  # keep going: one broken bench must not hide the others
            import traceback

            traceback.print_exc()
            errors[name] = f"{type(exc).__name__}: {exc}"
        loads[name] = load_between(before, load_snapshot())
        log(f"   {name} took {time.monotonic() - t:.0f} s; {describe_load(loads[name], cores)}")
    R["errors"] = errors
    R["machine"]["loadavg_end"] = os.getloadavg()
    loads["run"] = load_between(run_before, load_snapshot())
    R["duration_s"] = round(time.monotonic() - t_start, 1)
    rows = build_table(R, args.quick)
    R["table"] = rows
    print()
    text = print_table(rows)
    load_text = load_summary(R)
    print("\n" + load_text)
    if "profile" in R:
        p = R["profile"]
        print(f"\nprofile ({p['tool']}; {p['calls']} paced calls): threads {p.get('threads_pct')}")
        for k, v in (p.get("event_loop_pct") or {}).items():
            print(f"  event loop {v:5.1f} %  {k}")
    Path(args.out).write_text(json.dumps(R, indent=2, default=str) + "\n")
    (OUT / "summary.md").write_text(
        f"Run of {R['started']} ({R['mode']} mode: {', '.join(chosen)}), {R['duration_s']:.0f} s; wall-clock figures "
        f"are the median of {args.repeats} repeat(s) [min–max]"
        + (f"; figures of benchmarks not in this run are kept from the run of {R['updated_from']}"
           if R.get("updated_from") else "") + "\n\n" + markdown_table(rows) + "\n\n" + load_text
        + "\n\n```\n" + text + "\n```\n")
    log(f"wrote {Path(args.out).relative_to(ROOT)} and bench/out/summary.md in {R['duration_s']:.0f} s total")
    if not args.no_plot:
        try:
            py = ensure_venv(VENV_TOOLS, BENCH / "requirements-tools.txt")
            subprocess.run([str(py), str(BENCH / "plot.py"), args.out, str(OUT / "memory_cpu.png")], check=True,
                           timeout=300)
            log("wrote bench/out/memory_cpu.png")
        except Exception as exc:
            log(f"plot failed: {exc}")
    shutil.rmtree(WORK, ignore_errors=True)
    if errors:
        log(f"errors: {errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
