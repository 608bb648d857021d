"""The report of a run: the table of figures beside their baselines, printed and in markdown, the
machine's load, bench/out/summary.md and the plot (bench/plot.py in bench/.venv-tools)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from common import BENCH, OUT, ROOT, log
from machine import describe_load
from venvs import VENV_TOOLS, ensure_venv


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
            base = (H.get("threads_no_tail") or {}).get(m, {}).get("ready_s")
            rows.append({"figure": f"  ours, pure 60x stream (no real-time tail), {m} min", "ours": r["ready_s"],
                         "ours_spread": _spread_of(r), "unit": "s", "baseline": base,
                         "baseline_name": "encoding on threads (ENCODER_PROCESSES=0)" if base is not None else "",
                         "ratio": r["ready_s"] / base if base else None, "target": "", "pass": None})
        for m, r in (H.get("ours_beside_50") or {}).items():
            base = (H.get("threads_beside_50") or {}).get(m, {}).get("ready_s")
            big = m == "60"
            rows.append({"figure": f"hang-up → files ready, {m}-min call at 60x beside {H.get('beside_calls', 50)} "
                                   "real-time calls", "ours": r["ready_s"], "ours_spread": _spread_of(r), "unit": "s",
                         "baseline": base, "baseline_name": "encoding on threads (ENCODER_PROCESSES=0)",
                         "ratio": r["ready_s"] / base if r["ready_s"] and base else None,
                         "target": "≤ 1 s" if big else "",
                         "pass": (r["ready_s"] is not None and r["ready_s"] <= 1.0) if big else None})
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
                         "target": "≤ 4 µs (issue 13)",
                         "pass": mi["parse_us_per_msg"] + mi["place_write_us_per_msg"] <= 4.0})
            st = (R.get("micro") or {}).get("stages") or {}
            if st.get("json_loads_us") is not None:
                floor = st["json_loads_us"] + st["b64decode_us"] + st["mulaw_decode_bytes_us"] + st["pwrite_320B_us"]
                ours_msg = mi["parse_us_per_msg"] + mi["place_write_us_per_msg"]
                rows.append({"figure": "    beside it, the stdlib floor: json.loads + b64decode + ulaw2lin + pwrite",
                             "ours": round(ours_msg, 2), "unit": " µs", "baseline": round(floor, 2),
                             "baseline_name": "stdlib floor (same run)", "ratio": ours_msg / floor,
                             "target": "", "pass": None})
    for c in (R.get("encoders") or {}).get("configs", []):
        o, f = c["ours_mp3"], c.get("ffmpeg_libmp3lame")
        what = f"{c['rate'] // 1000} kHz {'mono' if c['channels'] == 1 else 'stereo'} {c['kbps']} kbps"
        if f:
            ok = o["cpu_per_min_s"] <= f["cpu_per_min_s"] and o["snr_db"] >= f["snr_db"] - 1 and o["exact_length"]
            rows.append({"figure": f"mp3 alone {c['rate'] // 1000}k {'mono' if c['channels'] == 1 else 'stereo'} "
                                   f"{c['kbps']}k, SNR {o['snr_db']:.1f}/{f['snr_db']:.1f} dB, exact "
                                   f"{'yes' if o['exact_length'] else 'NO'}",
                         "ours": o["cpu_per_min_s"], "unit": " s", "baseline": f["cpu_per_min_s"],
                         "baseline_name": "ffmpeg libmp3lame, same audio and bitrate",
                         "ratio": o["cpu_per_min_s"] / f["cpu_per_min_s"],
                         "target": "≤ libmp3lame, SNR within 1 dB, exact length", "pass": ok})
        for fmt in ("ogg", "flac"):
            rows.append({"figure": f"  {fmt} alone, {what.rsplit(' ', 2)[0]} ({c[fmt]['kbps']} kbps)",
                         "ours": c[fmt]["cpu_per_min_s"], "unit": " s", "baseline": o["cpu_per_min_s"],
                         "baseline_name": "our mp3", "ratio": c[fmt]["cpu_per_min_s"] / o["cpu_per_min_s"],
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
                     "ratio": o / b if o is not None and b else None, "target": "≥ 0.85 × bare (issue 13)",
                     "pass": (o / b >= 0.85) if o is not None and b else None})
        uo, ub = co.get("cpu_us_per_msg") or {}, cb.get("cpu_us_per_msg") or {}
        if uo.get("median") is not None:
            rows.append({"figure": f"  stable: server CPU per message at {uo['calls']} paced calls",
                         "ours": uo["median"], "unit": " µs", "ours_spread": (uo["min"], uo["max"]),
                         "baseline": ub.get("median"), "baseline_spread": (ub.get("min"), ub.get("max")),
                         "baseline_name": "bare FastAPI WS endpoint",
                         "ratio": uo["median"] / ub["median"] if ub.get("median") else None,
                         "target": "", "pass": None})
    for key, label in (("ours_wav", "  diagnostic: ours writing wav (no mp3 encode)"),
                       ("ours_w2", "  diagnostic: serve --workers 2 (same machine, same 2 cores)"),
                       ("bare_sink", "  diagnostic: bare endpoint through the frame sink (transport floor)"),
                       ("ours_transcribe", "  diagnostic: TRANSCRIBE=true (listen-mode STT)"),
                       ("ours_oldstack", "  diagnostic: ours on the old stack (asyncio, h11, legacy websockets)"),
                       ("bare_oldstack", "  diagnostic: bare on the old stack (asyncio, h11, legacy websockets)")):
        if C and C.get(key):
            o, b = C[key]["ceiling"], C["bare"]["ceiling"]
            rows.append({"figure": label + (", 1st repeat" if C.get("repeats", 1) > 1 else ""), "ours": o,
                         "unit": " calls", "baseline": b,
                         "baseline_name": "bare FastAPI WS endpoint (median)", "ratio": o / b if b else None,
                         "target": "", "pass": None})
            u, ub = (C[key].get("cpu_us_per_msg") or {}).get("median"), (C["bare"].get("cpu_us_per_msg") or {}).get("median")
            if (key.endswith("_oldstack") or key == "bare_sink") and u is not None and ub:
                rows.append({"figure": f"    its CPU per message at {C['cpu_ref_calls']} paced calls", "ours": u,
                             "unit": " µs", "baseline": ub, "baseline_name": "bare endpoint, plain ASGI (median)",
                             "ratio": u / ub, "target": "", "pass": None})
    W = R.get("wer")
    if W and not W.get("error"):
        # Headline: the assistant's window (STT_WINDOW_S default, with its fall-back); beside it the full 30 s window.
        head = W.get("window_s")
        for key, label in (("voice", "assistant: hibari voice → μ-law 8 kHz → Whisper WER"),
                           ("human", "human speech (testdata) → μ-law 8 kHz → Whisper WER")):
            p = W.get(key) or {}
            if p.get("wer") is None:
                continue
            bw = p.get("by_window") or {}
            full = bw.get("30")
            if head is None or full is None:  # a result from before the window comparison: 30 s only
                rows.append({"figure": label, "ours": round(100 * p["wer"], 1), "unit": " %",
                             "baseline": None, "baseline_name": f"{p['edits']}/{p['words']} words",
                             "ratio": None, "target": "", "pass": None, "note": f"{p['edits']}/{p['words']} words"})
                continue
            short = bw[f"{head:g}"]
            rows.append({"figure": f"{label} ({head:g} s)", "ours": round(100 * p["wer"], 1), "unit": " %",
                         "baseline": round(100 * full["wer"], 1),
                         "baseline_name": f"30 s window ({full['edits']}/{full['words']}; "
                                          f"ours {p['edits']}/{p['words']} words)",
                         "ratio": None, "target": "", "pass": None})
            for w, b in bw.items():  # more windows asked for (bench/wer.py --windows)
                if w not in ("30", f"{head:g}"):
                    rows.append({"figure": f"  {key}: WER with a {w} s window", "ours": round(100 * b["wer"], 1),
                                 "unit": " %", "baseline": round(100 * full["wer"], 1), "baseline_name": "30 s window",
                                 "ratio": None, "target": "", "pass": None})
            for what, field in (("CPU", "cpu_s_per_clip"), ("wall", "wall_s_per_clip")):
                o, b = short.get(field), full.get(field)
                rows.append({"figure": f"  {key}: Whisper {what} per clip, {head:g} s window", "ours": o, "unit": " s",
                             "baseline": b, "baseline_name": f"30 s window ({short['clips']} clips)",
                             "ratio": o / b if o is not None and b else None, "target": "", "pass": None})
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


def _shown(path: Path) -> str:
    """A path as the log shows it: relative to the project when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def publish(R: dict, args, chosen: list[str]) -> None:
    """Print the table, the machine's load and the profile; write the results JSON, summary.md and the plot."""
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
    log(f"wrote {_shown(args.out)} and bench/out/summary.md in {R['duration_s']:.0f} s total")
    if not args.no_plot:
        try:
            py = ensure_venv(VENV_TOOLS, BENCH / "requirements-tools.txt")
            subprocess.run([str(py), str(BENCH / "plot.py"), args.out, str(OUT / "memory_cpu.png")], check=True,
                           timeout=300)
            log("wrote bench/out/memory_cpu.png")
        except Exception as exc:
            log(f"plot failed: {exc}")
