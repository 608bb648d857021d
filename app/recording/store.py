"""The on-disk call store: validated names, paths, per-call folders, locks and listings.

Layout::

    <root>/call_<sid>_conversation.<ext>, call_<sid>.txt, call_<sid>_summary.txt, call_<sid>.json
    <root>/.calls/<sid>/inbound.wav, outbound.wav   PCM16 8 kHz masters
                       journal.jsonl                append-only events
                       format.json                  the chosen format (written atomically)
                       lock                         flock held by the process recording the call
                       finalized                    marker: outputs written

A name is validated before it touches the file system: a Twilio CallSid is `CA` + 32 lowercase
hex digits; a browser call id is `WB` + 32 hex digits. Anything else raises InvalidCallSid and
never becomes a path.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["CallStore", "InvalidCallSid", "CallNotFound", "SID_RE", "validate_sid"]

SID_RE = re.compile(r"^(CA|WB)[0-9a-f]{32}$")


class InvalidCallSid(ValueError):
    def __init__(self, sid: str) -> None:
        shown = sid if len(sid) <= 40 else sid[:40] + "…"
        super().__init__(
            f"invalid call SID {shown!r}: expected a Twilio CallSid, 'CA' followed by 32 lowercase hex digits "
            "(or a browser call id, 'WB' followed by 32 hex digits)"
        )


class CallNotFound(LookupError):
    pass


def validate_sid(sid: str) -> str:
    if not isinstance(sid, str) or not SID_RE.match(sid):
        raise InvalidCallSid(str(sid))
    return sid


@dataclass(frozen=True)
class CallLock:
    fd: int

    def release(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


class CallStore:
    def __init__(self, root: Path, create: bool = True) -> None:
        """`create=False` only reads until something is written (a CLI that may refuse leaves no folder)."""
        self.root = Path(root).resolve()
        self.calls_dir = self.root / ".calls"
        if create:
            self.calls_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ paths
    def call_dir(self, sid: str, create: bool = False) -> Path:
        d = self.calls_dir / validate_sid(sid)
        if create:
            d.mkdir(parents=True, exist_ok=True)
        return d

    def output(self, sid: str, kind: str, ext: str | None = None) -> Path:
        validate_sid(sid)
        names = {
            "conversation": f"call_{sid}_conversation.{ext}",
            "transcript": f"call_{sid}.txt",
            "summary": f"call_{sid}_summary.txt",
            "json": f"call_{sid}.json",
            "track": f"call_{sid}_{ext}",
        }
        return self.root / names[kind]

    def resolve_download(self, sid: str, name: str) -> Path:
        """A file of this call, by its bare name; refuses anything that is not this call's output."""
        validate_sid(sid)
        if "/" in name or "\\" in name or name.startswith(".") or not name.startswith(f"call_{sid}"):
            raise CallNotFound(f"no file {name!r} for call {sid}")
        path = (self.root / name).resolve()
        if path.parent != self.root or not path.is_file():
            raise CallNotFound(f"no file {name!r} for call {sid}")
        return path

    # ------------------------------------------------------------------ state
    def lock(self, sid: str, blocking: bool = False) -> CallLock | None:
        """flock on the call folder: held by whoever records or finalises the call, in any process."""
        d = self.call_dir(sid, create=True)
        fd = os.open(d / "lock", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        return CallLock(fd)

    def is_finalized(self, sid: str) -> bool:
        return (self.call_dir(sid) / "finalized").exists()

    def has_started(self, sid: str) -> bool:
        return (self.call_dir(sid) / "journal.jsonl").exists()

    def set_format(self, sid: str, fmt: str, bitrate: int | None) -> None:
        d = self.call_dir(sid, create=True)
        tmp = d / "format.json.tmp"
        tmp.write_text(json.dumps({"format": fmt, "bitrate_kbps": bitrate}))
        os.replace(tmp, d / "format.json")

    def get_format(self, sid: str) -> dict[str, Any] | None:
        try:
            return json.loads((self.call_dir(sid) / "format.json").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def format_mtime(self, sid: str) -> float:
        try:
            return (self.call_dir(sid) / "format.json").stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def read_result(self, sid: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.output(sid, "json").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def list_sids(self) -> list[str]:
        sids = set()
        for p in self.calls_dir.iterdir():
            if SID_RE.match(p.name):
                sids.add(p.name)
        for p in self.root.glob("call_*.json"):
            sid = p.name[5:-5]
            if SID_RE.match(sid):
                sids.add(sid)
        return sorted(sids)

    def unfinished(self) -> list[str]:
        """Calls that started and were never finalised (candidates for recovery)."""
        out = []
        for p in self.calls_dir.iterdir():
            if SID_RE.match(p.name) and (p / "journal.jsonl").exists() and not (p / "finalized").exists():
                out.append(p.name)
        return sorted(out)
