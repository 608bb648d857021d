"""Benchmark 5 (hook): the assistant's response latency, split by stage, from finished calls.

`latency_report(paths)` reads `responses/call_<sid>.json` files and, over their assistant turns,
reports median and worst of:
  latency_ms          stream ms from the end of the caller's speech to the reply's first audio
  stt_ms              speech-to-text of the caller's turn (wall ms)
  responder_ms        responder, asked → first sentence (wall ms)
  tts_first_audio_ms  text-to-speech, sentence → first audio (wall ms)
(field meanings: app/agent/session.py). `place_assistant_calls(n)` runs a real server with
GREETING=assistant and places n real-time calls with the simulator and real speech, so
`python bench/run.py --assistant` measures the current assistant; `--assistant-dir DIR` reads an
existing responses folder instead.

`compare_end_of_turn(n)` places the same calls twice, with the turn's end decided by its words (the
defaults) and with the fixed wait it replaces (BASELINE_ENV: 700 ms of silence whatever was said,
Whisper on its full 30 s window), and prints the two side by side. `cutoff_report()` streams the real
speech of ../shared/testdata (each recording one caller utterance, with its natural pauses) through
both rules as a phone call would (tests/support/turn_cutoffs.py) and counts the turns each ended
inside an utterance (false cut-offs).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGES = ("latency_ms", "stt_ms", "responder_ms", "tts_first_audio_ms")


def latency_report(paths: list[Path]) -> dict:
    vals: dict[str, list[float]] = {s: [] for s in STAGES}
    calls = turns = 0
    for p in paths:
        try:
            data = json.loads(Path(p).read_text())
        except (OSError, ValueError):
            continue
        calls += 1
        for t in data.get("turns", []):
            if t.get("role") != "assistant":
                continue
            turns += 1
            for s in STAGES:
                v = t.get(s)
                if isinstance(v, (int, float)):
                    vals[s].append(float(v))
    stats = {s: ({"median": round(statistics.median(v), 1), "worst": round(max(v), 1), "n": len(v)} if v else None)
             for s, v in vals.items()}
    lines = [f"assistant latency: {calls} call(s), {turns} assistant turn(s)"]
    for s in STAGES:
        st = stats[s]
        lines.append(f"  {s:20s} " + (f"median {st['median']:8.1f} ms   worst {st['worst']:8.1f} ms   (n={st['n']})"
                                      if st else "no data (no assistant turn carries this field yet)"))
    return {"calls": calls, "assistant_turns": turns, "stages": stats, "text": "\n".join(lines)}


# The end of turn before issue 13: a fixed 700 ms of silence, Whisper's full window.
BASELINE_ENV = {"END_OF_TURN_MS": "700", "END_OF_TURN_COMPLETE_MS": "700", "END_OF_TURN_INCOMPLETE_MS": "700",
                "STT_WINDOW_S": "30"}


def place_assistant_calls(n: int = 3, env: dict[str, str] | None = None, name: str = "assistant") -> list[Path]:
    import numpy as np

    from app.simulator import SimConfig, load_wav_8k, run_call
    from common import OUT, Server

    speech = Path("/work/shared/testdata/speech")
    clips = sorted(speech.glob("librivox-*.wav"))[:3]
    gap = np.zeros(8000 * 4, np.int16)
    audio = np.concatenate([x for c in clips for x in (load_wav_8k(c), gap)]) if clips else None
    env = {"GREETING": "assistant", "CALL_MODE": "assistant", **(env or {})}
    server = Server("app", env, name=name).start(timeout=300)
    dest = OUT / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    paths = []
    try:
        for _ in range(n):
            res = asyncio.run(run_call(SimConfig(server.base, audio, duration_s=None if audio is not None else 20.0,
                                                 tail_s=5.0, speed=1.0)))
            import time

            deadline = time.monotonic() + 120
            while not server.finalized(res.call_sid) and time.monotonic() < deadline:
                time.sleep(0.1)
            src = server.responses / f"call_{res.call_sid}.json"
            if src.exists():
                paths.append(Path(shutil.copy(src, dest / src.name)))
    finally:
        server.stop()
    return paths


def compare_end_of_turn(n: int = 3) -> dict:
    """The same calls with the fixed wait (baseline) and with the words deciding (ours), side by side."""
    base = latency_report(place_assistant_calls(n, BASELINE_ENV, name="assistant-baseline"))
    ours = latency_report(place_assistant_calls(n, None, name="assistant"))
    lines = [f"assistant latency, median (worst) in ms, {ours['calls']} call(s) each; "
             "baseline = fixed 700 ms end of turn, Whisper 30 s window",
             f"  {'stage':20s} {'baseline':>22s} {'ours':>22s}"]
    for stage in STAGES:
        cells = []
        for rep in (base, ours):
            st = rep["stages"][stage]
            cells.append(f"{st['median']:8.1f} ({st['worst']:7.1f}) n={st['n']}" if st else "no data")
        lines.append(f"  {stage:20s} {cells[0]:>22s} {cells[1]:>22s}")
    return {"baseline": base, "ours": ours, "text": "\n".join(lines)}


def cutoff_report() -> dict:
    """False cut-offs and the last turn's wait on the testdata's real speech, fixed wait vs the words."""
    import asyncio
    import statistics

    from app.agent.stt import LocalWhisperSTT
    from tests.support.turn_cutoffs import count_cutoffs, rule_settings

    stt = LocalWhisperSTT()
    stt.load()
    rules = {"baseline": rule_settings(**{k.lower(): v for k, v in BASELINE_ENV.items()}), "ours": rule_settings()}
    out: dict = {}
    lines = ["false cut-offs on ../shared/testdata/speech (turns ended inside one recording's utterance), "
             "and the wait from the end of the last words to the end of the turn:"]
    for label, settings in rules.items():
        results = asyncio.run(count_cutoffs(stt, settings))
        waits = [r.last_wait_ms for r in results if r.last_wait_ms is not None]
        out[label] = {"cutoffs": sum(r.cutoffs for r in results), "recordings": len(results),
                      "per_recording": {r.name: r.cutoffs for r in results},
                      "wait_ms_median": round(statistics.median(waits), 1) if waits else None}
        per = ", ".join(f"{r.name.rsplit('.', 1)[0]} {r.cutoffs}" for r in results if r.cutoffs)
        lines.append(f"  {label:8s} {out[label]['cutoffs']} false cut-off(s) in {len(results)} recordings"
                     f" ({per or 'none'}); end-of-turn wait median {out[label]['wait_ms_median']} ms")
    out["text"] = "\n".join(lines)
    return out


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("responses")
    print(latency_report(sorted(folder.glob("call_*.json")))["text"])
