"""Where the project and the shared, externally made test data live (../shared/testdata beside it)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _testdata() -> Path:
    for p in (os.environ.get("CALLSCRIBE_TESTDATA"), ROOT.parent / "shared" / "testdata", "/work/shared/testdata"):
        if p and Path(p).is_dir():
            return Path(p).resolve()
    return ROOT.parent / "shared" / "testdata"


TESTDATA = _testdata()
