"""Every name the store uses, in one place: call ids, the files in a call's folder, the outputs.

Layout::

    <root>/call_<sid>_conversation.<ext>, call_<sid>.txt, call_<sid>_summary.txt, call_<sid>.json
    <root>/call_<sid>_caller.<ext>, call_<sid>_other.<ext>     per-track files (PER_TRACK_FILES)
    <root>/call_<sid>_turn<NN>_<role>.<ext>                   per-turn clips (PER_TURN_CLIPS)
    <root>/.calls/.stream-secret                              the stream-token secret (mode 0600)
    <root>/.calls/.used-tokens/<nonce>                        browser-call tokens used (and by which call)
    <root>/.calls/catalog.sqlite3 (+ -wal, -shm)              the call catalog: one row a call (SqliteCatalog)
    <root>/.calls/catalog.lock                                flocked by the process rebuilding the catalog
    <root>/.calls/<sid>/inbound.wav, outbound.wav   PCM16 masters at the transport's rate
                       journal.jsonl                append-only events
                       status.jsonl                 Twilio's status callbacks
                       format.json                  the chosen format (written atomically)
                       lock                         flock held by the process recording the call
                       finalized                    marker: outputs written

A name is validated before it touches the file system: a Twilio CallSid is `CA` + 32 lowercase
hex digits; a browser call id is `WB` + 32 hex digits. Anything else raises InvalidCallSid and
never becomes a path. Pure names: nothing here reads or writes a file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SID_RE", "InvalidCallSid", "CallNotFound", "validate_sid", "TRACKS", "STAGED_SUFFIXES", "CallFiles",
           "StoreLayout", "output_name", "source_of", "turn_clip_name", "is_turn_clip", "is_output_of", "result_sid"]

SID_RE = re.compile(r"^(CA|WB)[0-9a-f]{32}$")  # a Twilio CallSid, or a browser call's id
SOURCES = {"CA": "phone", "WB": "browser"}  # what carried the call, by the id's prefix

TRACKS = ("inbound", "outbound")  # the caller; the assistant (or, listening, the other party)
STAGED_SUFFIXES = (".partial", ".tmp")  # a file being written, renamed into place when whole


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


def source_of(sid: str) -> str:
    """"phone" for a Twilio CallSid (CA…), "browser" for a browser call (WB…)."""
    return SOURCES.get(sid[:2], "phone")


def _in_folder(name: str, doc: str) -> property:
    return property(lambda self: self.folder / name, doc=doc)


@dataclass(frozen=True)
class CallFiles:
    """The files in one call's folder (the per-call state of DESIGN's "lives with the call on disk")."""

    folder: Path

    journal = _in_folder("journal.jsonl", "append-only events: start, turns, marks, DTMF, stop")
    status = _in_folder("status.jsonl", "Twilio's status callbacks")
    format = _in_folder("format.json", "the chosen format (the local coordinator's)")
    lock = _in_folder("lock", "flocked by whoever records or finalises the call (the local coordinator's)")
    finalized = _in_folder("finalized", "marker: the outputs are written")

    def master(self, track: str) -> Path:
        """A track's PCM16 master: `inbound` (the caller) or `outbound`."""
        if track not in TRACKS:
            raise ValueError(f"unknown track {track!r}: expected one of {TRACKS}")
        return self.folder / f"{track}.wav"

    @property
    def masters(self) -> tuple[Path, Path]:
        return self.master("inbound"), self.master("outbound")


@dataclass(frozen=True)
class StoreLayout:
    """Where a store keeps its state: the outputs in `root`, each call's folder under `root/.calls`."""

    root: Path

    @property
    def calls_dir(self) -> Path:
        return self.root / ".calls"

    @property
    def stream_secret(self) -> Path:
        return self.calls_dir / ".stream-secret"

    @property
    def used_tokens(self) -> Path:
        return self.calls_dir / ".used-tokens"

    @property
    def catalog(self) -> Path:
        """The call catalog's SQLite file (derived from the results; rebuilt when missing or stale)."""
        return self.calls_dir / "catalog.sqlite3"

    @property
    def catalog_lock(self) -> Path:
        return self.calls_dir / "catalog.lock"

    def call(self, sid: str) -> CallFiles:
        return CallFiles(self.calls_dir / validate_sid(sid))


_OUTPUTS = {
    "conversation": "call_{sid}_conversation.{ext}",
    "transcript": "call_{sid}.txt",
    "summary": "call_{sid}_summary.txt",
    "json": "call_{sid}.json",
    "timeline": "call_{sid}_timeline.svg",  # the picture of the call (TIMELINE_SVG)
    "caller": "call_{sid}_caller.{ext}",  # per-track files
    "other": "call_{sid}_other.{ext}",
}


def output_name(sid: str, kind: str, ext: str = "") -> str:
    """The bare name of a call's output: `conversation`, `caller`, `other` (with `ext`), `transcript`,
    `summary`, `json` or `timeline`."""
    return _OUTPUTS[kind].format(sid=validate_sid(sid), ext=ext)


def turn_clip_name(sid: str, index: int, role: str, ext: str) -> str:
    return f"call_{validate_sid(sid)}_turn{index:02d}_{role}.{ext}"


def is_turn_clip(sid: str, name: str) -> bool:
    return name.startswith(f"call_{sid}_turn")


def is_output_of(sid: str, name: str) -> bool:
    """Whether a bare name could be one of this call's outputs (never a path, a hidden file or another call's)."""
    return not ("/" in name or "\\" in name or name.startswith(".")) and name.startswith(f"call_{sid}")


def result_sid(name: str) -> str | None:
    """The call a result's name (`call_<sid>.json`) belongs to, or None."""
    if name.startswith("call_") and name.endswith(".json") and SID_RE.match(name[5:-5]):
        return name[5:-5]
    return None
