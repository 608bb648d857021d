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


def place_assistant_calls(n: int = 3) -> list[Path]:
    import numpy as np

    from app.simulator import SimConfig, load_wav_8k, run_call
    from common import OUT, Server

    speech = Path("/work/shared/testdata/speech")
    clips = sorted(speech.glob("librivox-*.wav"))[:3]
    gap = np.zeros(8000 * 4, np.int16)
    audio = np.concatenate([x for c in clips for x in (load_wav_8k(c), gap)]) if clips else None
    server = Server("app", {"GREETING": "assistant", "CALL_MODE": "assistant"}, name="assistant").start(timeout=300)
    dest = OUT / "assistant"
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


if __name__ == "__main__":
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("responses")
    print(latency_report(sorted(folder.glob("call_*.json")))["text"])
