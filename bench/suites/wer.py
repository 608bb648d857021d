"""Benchmark `wer`: word error rate of our voice and of human speech through 8 kHz μ-law, heard by our
Whisper tiny.en (bench/wer.py, in the app's venv)."""

from __future__ import annotations

import sys

from common import BENCH, ROOT
from venvs import run_json


def run(args, R: dict) -> None:
    res = run_json([sys.executable, str(BENCH / "wer.py"), "--json"], timeout=900, env={"PYTHONPATH": str(ROOT)})
    R["wer"] = res
    print(res.get("text", ""))
