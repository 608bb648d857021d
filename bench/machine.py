"""The machine a bench runs on: what it is, and how busy other people's work kept it during a run."""

from __future__ import annotations

import os
import platform
import time


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
