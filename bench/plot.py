"""Plot bench/out/results.json → bench/out/memory_cpu.png (runs in bench/.venv-tools, matplotlib)."""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, dst: str) -> None:
    R = json.load(open(src))
    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    m = R.get("machine", {})
    fig.suptitle(f"Callscribe bench ({R.get('mode')}) — {m.get('cpu_model')}, {m.get('cores')} cores, "
                 f"Python {m.get('python')}, {R.get('started')}", fontsize=10)

    ax = axes[0][0]
    M, P = R.get("memory_ours"), R.get("pipecat")
    if M:
        x = [p["minutes"] for p in M["points"]]
        ax.plot(x, [p["per_call_mb"] for p in M["points"]], "o-", label=f"ours: server RSS/call ({M['calls']} calls)")
    if P:
        x = [p["minutes"] for p in P["points"]]
        ax.plot(x, [p["per_call_mb"] for p in P["points"]], "s--", label="pipecat AudioBufferProcessor (RSS/call)")
    ax.set_xlabel("minutes of audio streamed")
    ax.set_ylabel("MB per call")
    ax.set_title("Memory per call vs call length")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[0][1]
    labels, vals = [], []
    if M:
        labels.append("ours\nserver\n(socket+all)")
        vals.append(M["cpu_per_call_min_s"])
    mi = (R.get("micro") or {}).get("inprocess")
    if mi:
        labels.append("ours\nin process")
        vals.append(mi["cpu_per_call_min_s"])
    if P:
        labels += ["pipecat\n+ mp3", "pipecat\n+ wav", "pipecat\nno encode"]
        vals += [P["cpu_per_call_min_mp3_s"], P["cpu_per_call_min_wav_s"], P["cpu_per_call_min_stream_s"]]
    if vals:
        bars = ax.bar(labels, vals, color=["C0", "C0", "C1", "C1", "C1"][:len(vals)])
        for b, v in zip(bars, vals):
            ax.annotate(f"{v:.3f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("CPU seconds per call-minute")
    ax.set_title("CPU per call-minute (mp3, both tracks)")
    ax.grid(axis="y", alpha=0.3)

    ax = axes[1][0]
    H = R.get("hangup")
    if H:
        lengths = H["lengths"]
        series = [("ours (incremental)", [H["ours"].get(str(n), {}).get("ready_s") for n in lengths]),
                  ("(a) masters at hang-up", [H["masters_at_hangup"].get(str(n), {}).get("ready_s") for n in lengths])]
        if P:
            series.append(("(b) pydub at hang-up", [P["hangup"].get(str(n), {}).get("mp3", {}).get("wall_s") for n in lengths]))
        spreads = {"ours (incremental)": H["ours"], "(a) masters at hang-up": H["masters_at_hangup"]}
        w = 0.8 / len(series)
        for i, (lbl, v) in enumerate(series):
            xs = [j + i * w for j in range(len(lengths))]
            err = None
            if lbl in spreads and H.get("repeats", 1) > 1:  # min–max of the repeats around the median
                rr = [spreads[lbl].get(str(n), {}) for n in lengths]
                err = [[max(0.0, (r.get("ready_s") or 0) - (r.get("ready_s_min") or r.get("ready_s") or 0)) for r in rr],
                       [max(0.0, (r.get("ready_s_max") or r.get("ready_s") or 0) - (r.get("ready_s") or 0)) for r in rr]]
            ax.bar(xs, [x or 0 for x in v], w, label=lbl, yerr=err, capsize=3 if err else 0)
            for xx, vv in zip(xs, v):
                if vv is not None:
                    ax.annotate(f"{vv:.2f}", (xx, vv), ha="center", va="bottom", fontsize=7)
        ax.set_xticks([j + w * (len(series) - 1) / 2 for j in range(len(lengths))])
        ax.set_xticklabels([f"{n} min" for n in lengths])
        ax.axhline(1.0, color="r", lw=0.8, ls=":", label="target 1 s")
        ax.set_yscale("log")
        ax.set_ylabel("seconds from stop to all files ready")
        ax.set_title("Hang-up → files ready (mp3)")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)

    ax = axes[1][1]
    C = R.get("concurrency")
    if C:
        for ci, (k, style) in enumerate((("ours", "o-"), ("bare", "s--"), ("ours_wav", "^:"), ("ours_w2", "v-."),
                                                  ("ours_transcribe", "d:"), ("bare_oldstack", "x--"),
                                                  ("ours_oldstack", "+:"), ("bare_sink", "*--"))):
            if not isinstance(C.get(k), dict):
                continue
            reps = sorted({s.get("repeat", 1) for s in C[k]["steps"]})
            lo, hi = C[k].get("ceiling_min"), C[k].get("ceiling_max")
            label = f"{k}: ceiling {C[k]['ceiling']:g} calls" + (f" (median; {lo}–{hi})" if len(reps) > 1 else "")
            for ri, rep in enumerate(reps):  # one line per repeat, same colour
                st = sorted((s for s in C[k]["steps"] if s.get("repeat", 1) == rep), key=lambda s: s["calls"])
                xs = [s["calls"] for s in st]
                ys = [(s.get("server_lateness_ms") or {}).get("p99_ms") for s in st]
                ax.plot(xs, [y if y is not None else float("nan") for y in ys], style, color=f"C{ci}",
                        alpha=1.0 if ri == 0 else 0.5, label=label if ri == 0 else None)
                if ri == 0:
                    for x, y, c in zip(xs, ys, [s["server_cpu_cores"] for s in st]):
                        if y is not None:
                            ax.annotate(f"{c:.2f} cores", (x, y), fontsize=6, xytext=(2, 2),
                                        textcoords="offset points")
        ax.axhline(50, color="r", lw=0.8, ls=":", label="p99 limit 50 ms")
        ax.set_yscale("log")
        ax.set_xlabel("concurrent paced calls (100 messages/s each)")
        ax.set_ylabel("p99 frame lateness, due → handled (ms)")
        ax.set_title("Concurrency: one worker vs bare WebSocket endpoint")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
