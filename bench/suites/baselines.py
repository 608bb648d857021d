"""The baselines of `hangup`, `memory` and `cpu`: pipecat's TwilioFrameSerializer + AudioBufferProcessor
and pydub's mp3 export, fed the same frames (bench/baseline_pipecat.py in bench/.venv-baselines)."""

from __future__ import annotations

from common import BENCH, OUT, log
from venvs import VENV_BASELINES, ensure_venv, run_json


def run(args, R: dict) -> None:
    py = ensure_venv(VENV_BASELINES, BENCH / "requirements-baselines.txt")
    minutes = "1,2" if args.quick else "1,10,60"
    calls = 1 if args.quick else 2
    log(f"  pipecat AudioBufferProcessor + TwilioFrameSerializer, {calls} call(s), checkpoints {minutes} min")
    R["pipecat"] = run_json([str(py), str(BENCH / "baseline_pipecat.py"), "--minutes", minutes,
                             "--calls", str(calls), "--audio", str(OUT / "cache")], timeout=900)
