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

This file is the driver (flags, which suites run, the results file). Each benchmark is a module of
bench/suites/; bench/report.py makes the table, summary.md and the plot; bench/machine.py records
the machine and its load; bench/common.py and tests/support hold the client and the servers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import OUT, WORK, load_payloads, log, prepare_audio  # noqa: E402
from machine import describe_load, load_between, load_snapshot, machine  # noqa: E402
from report import publish  # noqa: E402
from suites import assistant, baselines, concurrency, hangup, memory, micro, profile, wer  # noqa: E402

ALL = ["wer", "hangup", "memory", "cpu", "concurrency", "profile"]


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
                    help="concurrency: skip the diagnostic ceilings (two workers; the bare endpoint through the frame "
                         "sink; our server with wav; transcription on; both servers on the old stack)")
    ap.add_argument("--diagnostics", default=None, metavar="KIND[,KIND]",
                    help="concurrency: only these diagnostic series (ours_w2, bare_sink, ours_wav, ours_transcribe, "
                         "bare_oldstack, ours_oldstack)")
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
        steps.append(("word error rate (voice and human speech, 8 kHz μ-law)", lambda: wer.run(args, R)))
    if "hangup" in chosen:
        steps.append(("hangup", lambda: hangup.run(args, R, pin, pout)))
    if "memory" in chosen or "cpu" in chosen:
        steps.append(("memory+cpu (ours, real server)", lambda: memory.run(args, R, pin, pout)))
    if {"hangup", "memory", "cpu"} & set(chosen):
        steps.append(("baselines: pipecat + pydub", lambda: baselines.run(args, R)))
    if {"cpu", "profile"} & set(chosen):
        steps.append(("per-frame micro-benchmarks (+ orjson)", lambda: micro.run(args, R)))
    if "concurrency" in chosen:
        steps.append(("concurrency ceiling (ours vs bare)", lambda: concurrency.run(args, R)))
    if "profile" in chosen:
        steps.append(("profile", lambda: profile.run(args, R)))
    if "assistant" in chosen:
        steps.append(("assistant latency", lambda: assistant.run(args, R)))
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
    publish(R, args, chosen)
    shutil.rmtree(WORK, ignore_errors=True)
    if errors:
        log(f"errors: {errors}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
