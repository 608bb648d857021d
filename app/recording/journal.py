"""Append-only JSON-lines journal of a call: the per-call truth any process can read.

Each record is one `os.write` of one line on an O_APPEND descriptor: it reaches the page cache
at once (a `kill -9` keeps it) and concurrent writers never interleave inside a line. Readers
skip a torn last line left by a crash.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["Journal", "read_journal"]


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)

    def append(self, kind: str, **data: Any) -> dict[str, Any]:
        record = {"t": kind, "wall": round(time.time(), 3), **data}
        line = json.dumps(record, separators=(",", ":"), default=str) + "\n"
        os.write(self._fd, line.encode("utf-8"))
        return record

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def append_once(path: Path, kind: str, **data: Any) -> None:
    j = Journal(path)
    try:
        j.append(kind, **data)
    finally:
        j.close()


def read_journal(path: Path) -> Iterator[dict[str, Any]]:
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            if not line.endswith("\n"):
                break  # torn final line from a crash
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                yield rec
