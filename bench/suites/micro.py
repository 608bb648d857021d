"""Per-frame micro-benchmarks in process (bench/micro.py: each stage, and the recording path without a
socket), and json.loads vs orjson.loads on a Twilio media message (in bench/.venv-tools)."""

from __future__ import annotations

import sys

from common import BENCH, ROOT
from venvs import VENV_TOOLS, ensure_venv, run_json


def run(args, R: dict) -> None:
    R["micro"] = run_json([sys.executable, str(BENCH / "micro.py"), "--minutes", "2" if args.quick else "10"],
                          timeout=600, env={"PYTHONPATH": str(ROOT)})
    py = ensure_venv(VENV_TOOLS, BENCH / "requirements-tools.txt")
    R["json_vs_orjson"] = run_json([str(py), str(BENCH / "micro.py"), "--json-only"], timeout=300)
