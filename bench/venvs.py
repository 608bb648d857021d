"""The side venvs (baselines in bench/.venv-baselines, plotting and profiling in bench/.venv-tools) and
running a script in one of them that prints its result as a JSON line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from common import BENCH, ROOT, log

VENV_BASELINES = BENCH / ".venv-baselines"
VENV_TOOLS = BENCH / ".venv-tools"


def ensure_venv(path: Path, reqs: Path) -> Path:
    """Create `path` with `python -m venv` and pip-install `reqs` (pinned); skipped when up to date."""
    py = path / "bin" / "python"
    stamp = path / ".bench-stamp"
    want = reqs.read_text()
    if py.exists() and stamp.exists() and stamp.read_text() == want:
        return py
    log(f"creating {path.relative_to(ROOT)} from {reqs.name} (first run only)")
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(reqs)],
                   check=True)
    stamp.write_text(want)
    return py


def run_json(cmd: list[str], timeout: float, env: dict | None = None) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                       env=(os.environ | (env or {})))
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({r.returncode}): {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])
