"""Benchmark `wer`: word error rate of our voice and of human speech through 8 kHz μ-law, heard by our
Whisper tiny.en with the assistant's encoder window (STT_WINDOW_S default, the headline) beside the
full 30 s window, with the transcription's CPU and wall time per clip (bench/wer.py, in the app's venv)."""

from __future__ import annotations

import sys

from common import BENCH, ROOT
from venvs import run_json


def run(args, R: dict) -> None:
    # Times per clip: the median of the run's repeats (1 with --quick); the words do not change between repeats.
    res = run_json([sys.executable, str(BENCH / "wer.py"), "--json", "--repeats", str(args.repeats)], timeout=900,
                   env={"PYTHONPATH": str(ROOT)})
    R["wer"] = res
    print(res.get("text", ""))
