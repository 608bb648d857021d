"""The call catalog: one row a call, so listings, filters, sorts and search never scan a folder.

This module is the seam: the `Catalog` interface, what a row holds and how it is made from a
call's result JSON (`row_of`), and the accepted query values. `SqliteCatalog`
(`app.storage.sqlite_catalog`) is the embedded default, one SQLite file in the recordings
folder's state dir; a multi-host mode gives the same interface a cluster-wide backing.

The catalog is derived data. The truth stays in the call folders and results: every
finalisation and re-export upserts the call's row, and a catalog that is missing or stale
(`stale_reason`) is rebuilt from the results (`rebuild`). A row never holds the caller's number,
only its last four digits.

Statuses: ``live`` (the call started; a row left so by a crash reads as unfinished until recovery
finalises it), ``finalized``, ``recovered`` (finalised at restart after a crash) and ``failed``
(finalisation did not complete, or the requested audio could not be written), each with a reason.

Imports nothing of the app above storage: no recording, call, agent or web.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any, Protocol

from app.storage.paths import source_of, validate_sid

__all__ = ["Catalog", "CatalogSource", "CatalogQueryError", "CatalogBusy", "STATUSES", "SOURCES", "MODES", "SORT_KEYS",
           "MAX_LIMIT", "row_of", "status_of", "spoken_text", "last_four", "epoch", "checked_query", "search_words"]

STATUSES = ("live", "finalized", "recovered", "failed")
SOURCES = ("phone", "browser")
MODES = ("assistant", "listen")
# Sort key (the API's name) → column. Every other name is refused, so none reaches the SQL text.
SORT_KEYS = {"started_at": "started_at", "duration_s": "duration_s", "turns": "turns", "barge_ins": "barge_ins",
             "latency": "latency_ms", "size": "size_bytes"}

MAX_LIMIT = 200  # rows a page
MAX_TEXT = 200  # characters of a search

_RECORDING_OFF = "audio recording is off"  # audio_outputs' note when RECORD_CONVERSATIONS=false: not a failure


class CatalogQueryError(ValueError):
    """A query value the catalog does not accept; the message says what it accepts."""


class CatalogBusy(RuntimeError):
    """A quick write found the catalog busy with another writer; nothing was written."""


class CatalogSource(Protocol):
    """What a rebuild reads: the recorded calls (`CallStore` is one)."""

    def result_sids(self) -> set[str]:
        """Every call that has a result (`call_<sid>.json`)."""
        ...

    def read_result(self, sid: str) -> dict[str, Any] | None:
        ...

    def result_modified(self, sid: str) -> float | None:
        """When the call's result was last written (epoch seconds), or None without one."""
        ...

    def has_started(self, sid: str) -> bool:
        ...

    def is_finalized(self, sid: str) -> bool:
        ...


class Catalog(Protocol):
    def mark_live(self, sid: str, *, started_at: float, source: str, mode: str, from_last4: str | None = None,
                  quick: bool = False) -> None:
        """A call started: its row, until finalisation replaces it. Never replaces a row that exists
        (a late mark after the call was finalised changes nothing). ``quick``: wait only a few ms for
        another writer, else raise CatalogBusy (a call's start must not wait; it may retry elsewhere)."""
        ...

    def upsert(self, result: dict[str, Any], transcript: str | None = None, *, finished: bool = True) -> None:
        """The call's row from its result JSON (``transcript``: the searchable text, by default the
        turns' text). ``finished=False``: the result was written but finalisation did not complete."""
        ...

    def delete(self, sid: str) -> None:
        ...

    def get(self, sid: str) -> dict[str, Any] | None:
        ...

    def count(self) -> int:
        ...

    def query(self, *, since: float | datetime | None = None, until: float | datetime | None = None,
              status: str | Iterable[str] | None = None, source: str | None = None, mode: str | None = None,
              text: str | None = None, sort: str = "started_at", descending: bool = True, limit: int = 50,
              offset: int = 0) -> tuple[list[dict[str, Any]], int]:
        """One page of rows (started in [since, until), matching every filter given) and the number
        of rows that match. Raises CatalogQueryError for a value it does not accept."""
        ...

    def stale_reason(self, source: CatalogSource) -> str | None:
        """Why the catalog no longer matches the recorded calls, or None when it does."""
        ...

    def rebuild(self, source: CatalogSource) -> int:
        """Re-read every result and drop rows of calls that are gone; returns the rows written.
        Safe while calls are finalised: a row written meanwhile is never replaced by an older one."""
        ...

    def refresh(self, source: CatalogSource) -> str | None:
        """Rebuild when stale (one process at a time); returns the reason it rebuilt, or None."""
        ...


# ---------------------------------------------------------------------------------- rows from results
def last_four(value: object) -> str | None:
    """The last four digits of a number (or of what claims to be them), or None: never more than four."""
    if not isinstance(value, str):
        return None
    digits = re.sub(r"[^0-9]", "", value)
    return digits[-4:] if len(digits) >= 4 else None


def status_of(result: dict[str, Any], finished: bool = True) -> tuple[str, str | None]:
    """The call's status and why, from its result (``finished``: its folder was marked finalised)."""
    audio_error = (result.get("audio") or {}).get("error")
    if not finished:
        warnings = result.get("warnings") or []
        return "failed", audio_error or (warnings[-1] if warnings else "finalisation did not complete")
    if audio_error and not str(audio_error).startswith(_RECORDING_OFF):
        return "failed", str(audio_error)
    if result.get("recovered"):
        return "recovered", result.get("end_reason")
    return "finalized", result.get("end_reason")


def spoken_text(result: dict[str, Any]) -> str:
    """What was said, one turn a line (no roles or times: a search for "caller" finds what was said)."""
    return "\n".join(str(t.get("text", "")) for t in result.get("turns") or [] if t.get("text"))


def epoch(value: object) -> float | None:
    """Epoch seconds from an ISO 8601 time (naive means UTC), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def row_of(result: dict[str, Any], finished: bool = True) -> dict[str, Any]:
    """A catalog row (column → value) from a call's result JSON (app.recording.finalize writes it)."""
    sid = validate_sid(result.get("call_sid", ""))
    audio = result.get("audio") or {}
    stats = result.get("stats") or {}
    status, why = status_of(result, finished)
    return {
        "sid": sid,
        "started_at": epoch(result.get("started_at")),
        "completed_at": epoch(result.get("completed_at")),
        "duration_s": result.get("duration_s"),
        "source": result.get("source") or source_of(sid),  # older results have none: the id's prefix says
        "mode": result.get("mode"),
        "from_last4": last_four(result.get("from_last4")),
        "status": status,
        "status_reason": why,
        "end_reason": result.get("end_reason"),
        "warnings": json.dumps(result.get("warnings") or []),
        "format": audio.get("format"),
        "size_bytes": audio.get("bytes"),
        "turns": stats.get("turns"),
        "barge_ins": stats.get("barge_ins"),
        "latency_ms": (stats.get("response_latency") or {}).get("median_ms"),
        "recovered": int(bool(result.get("recovered"))),
        "transcript_pending": int(bool(result.get("transcript_pending"))),
        "files": json.dumps(result.get("files") or {}),
    }


# ---------------------------------------------------------------------------------- query values
def _one_of(name: str, value: str, accepted: Iterable[str]) -> str:
    accepted = tuple(accepted)
    if value not in accepted:
        raise CatalogQueryError(f"{name} {value!r} is not accepted; accepted: {', '.join(accepted)}")
    return value


def _time(name: str, value: float | datetime | None) -> float | None:
    if value is None or isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()
    raise CatalogQueryError(f"{name} must be a time (epoch seconds or a datetime), not {type(value).__name__}")


def search_words(text: str) -> list[str]:
    """The words a search looks for (each must occur, as a word or the start of one)."""
    return re.findall(r"\w+", text)


def checked_query(*, since: float | datetime | None, until: float | datetime | None,
                  status: str | Iterable[str] | None, source: str | None, mode: str | None, text: str | None,
                  sort: str, descending: bool, limit: int, offset: int) -> dict[str, Any]:
    """Every query value checked (CatalogQueryError names the accepted ones) and normalised: times in
    epoch seconds, `status` a tuple, `text` its words, `sort` a column name."""
    statuses = (status,) if isinstance(status, str) else tuple(status) if status is not None else ()
    for s in statuses:
        _one_of("status", s, STATUSES)
    words = None
    if text is not None:
        if len(text) > MAX_TEXT:
            raise CatalogQueryError(f"the search text is {len(text)} characters; accepted: at most {MAX_TEXT}")
        words = search_words(text)
        if not words:
            raise CatalogQueryError(f"the search text {text!r} has no words; accepted: letters or digits")
    if not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        raise CatalogQueryError(f"limit {limit!r} is not accepted; accepted: 1 to {MAX_LIMIT}")
    if not isinstance(offset, int) or offset < 0:
        raise CatalogQueryError(f"offset {offset!r} is not accepted; accepted: 0 or more")
    return {
        "since": _time("since", since), "until": _time("until", until), "status": statuses,
        "source": source and _one_of("source", source, SOURCES), "mode": mode and _one_of("mode", mode, MODES),
        "words": words, "column": SORT_KEYS[_one_of("sort", sort, SORT_KEYS)], "descending": bool(descending),
        "limit": limit, "offset": offset,
    }
