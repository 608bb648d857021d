"""Cluster-wide listings with S3: each host's catalog kept in step with the bucket's committed results.

Without a shared disk every host has its own catalog (`SqliteCatalog` in its recordings folder),
which its own finalisations fill. With S3 the committed results (`<S3_PREFIX>call_<sid>.json`)
are the cluster's truth, so every CATALOG_SYNC_SECONDS (and at start) `CatalogSync`:

- lists `<S3_PREFIX>call_` and reads the result JSONs it has not seen (or whose ETag / time
  changed), upserting their rows (a committed result is a finished call);
- drops the finished rows whose result is gone from the bucket (a `DELETE /calls/{sid}` on another
  host) and from the local folder;
- with Redis, writes a `live` row for each call in the coordinator's `open` set (calls not yet
  finalised, any host; its start time is the set's score, its source the id's prefix; the mode is
  not known there) and drops a live row of another host's call once the call has left `open`.
  In the catalog rather than merged into each `GET /calls`: filters, sorts, counts and pages stay
  one SQLite query, and a listing never waits on Redis for rows (only for the `is_live` check it
  already makes of each live row).

The calls this host recorded (a local result or folder) are left to its own finalisation and
rebuild: the local files are their truth. The sid of a result is random, so a start-after marker
would not find only the new keys: each pass lists the whole prefix (every output of every call,
about 5 keys a call; 1,000 keys a page) and reads only what changed. Every S3 and Redis call is
made off the event loop; several workers on one folder share the catalog, so one pass at a time
runs (a non-blocking file lock; the others skip). S3 or Redis away: the pass is skipped (nothing
is dropped on the strength of a listing that failed) and retried at the next interval.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from app.storage.coordination import CoordinationUnavailable
from app.storage.paths import result_sid, source_of

if TYPE_CHECKING:
    from app.storage.s3_artefacts import S3Artefacts
    from app.storage.s3_bucket import ObjectInfo
    from app.storage.store import CallStore

__all__ = ["CatalogSync", "catalog_sync"]

log = logging.getLogger("callscribe.catalog")


def catalog_sync(store: CallStore, interval_s: float) -> CatalogSync | None:
    """The sync for this store when it keeps its files in S3 (else None: the local folder is the truth)."""
    from app.storage.s3_artefacts import S3Artefacts  # obstore is imported only when configured

    return CatalogSync(store, interval_s) if isinstance(store.artefacts, S3Artefacts) else None


class _ClusterSource:
    """What a rebuild reads with S3: this folder's results and the bucket's (a `CatalogSource`)."""

    def __init__(self, store: CallStore, listing: dict[str, ObjectInfo], open_calls: dict[str, float]) -> None:
        self.store, self.listing, self.open = store, listing, open_calls
        self.local = store.artefacts.results()

    def result_sids(self) -> set[str]:
        return self.local | self.listing.keys()

    def read_result(self, sid: str) -> dict[str, Any] | None:
        return self.store.read_result(sid)  # the local file first, else the bucket

    def result_modified(self, sid: str) -> float | None:
        # Another host's result: the periodic pass follows its changes (server and host clocks differ).
        return self.store.result_modified(sid) if sid in self.local else None

    def has_started(self, sid: str) -> bool:
        return self.store.has_started(sid) or sid in self.open

    def is_finalized(self, sid: str) -> bool:
        return self.store.is_finalized(sid) if self.store.has_started(sid) else sid in self.listing


class CatalogSync:
    def __init__(self, store: CallStore, interval_s: float = 10.0) -> None:
        self.store = store
        self.artefacts: S3Artefacts = store.artefacts  # type: ignore[assignment]
        self.bucket = self.artefacts.bucket
        self.interval_s = interval_s
        self._seen: dict[str, tuple[float, str | None]] = {}  # sid → (modified, ETag) of the result read last
        self._lock_path = store.layout.catalog.with_name("catalog-sync.lock")

    # ------------------------------------------------------------------ what the cluster has
    def _listing(self) -> dict[str, ObjectInfo]:
        """Every committed result in the bucket: sid → its object. Raises S3Unavailable.

        The outputs of every call, listed from the prefix's folder after `<p>call_` (S3's
        start-after): `<p>.calls/` and its segments sort before and are never read."""
        p = self.bucket.prefix
        found: dict[str, ObjectInfo] = {}
        for info in self.bucket.list_after(p.rstrip("/"), f"{p}call_"):
            if (sid := result_sid(info.key[len(p):])) is not None:
                found[sid] = info
        return found

    def _open_calls(self) -> dict[str, float] | None:
        """Calls not finalised on any host (sid → start), or None without Redis or with Redis away."""
        open_calls = getattr(self.store.coordinator, "open_calls", None)
        if open_calls is None:
            return None
        try:
            return open_calls()
        except CoordinationUnavailable:
            return None

    def _rows(self) -> dict[str, tuple[str, float]]:
        """sid → (status, updated_at) of every catalog row."""
        file = self.store.catalog.file  # type: ignore[attr-defined]  # the SqliteCatalog of this folder
        with file.read() as conn:
            return {r["sid"]: (r["status"], r["updated_at"])
                    for r in conn.execute("SELECT sid, status, updated_at FROM calls").fetchall()}

    # ------------------------------------------------------------------ passes
    def start(self) -> str | None:
        """At start: the catalog checked (rebuilt when stale) against this folder's results and the
        bucket's, then one pass. S3 away: checked against this folder alone, as without S3 (the
        other hosts' rows come back at the first pass that reaches S3)."""
        from app.storage.s3_bucket import S3Unavailable

        try:
            listing = self._listing()
        except S3Unavailable as exc:
            log.warning("call catalog: the bucket could not be listed at start (%s); other hosts' calls are "
                        "listed once it answers", exc)
            return self.store.catalog.refresh(self.store)
        reason = self.store.catalog.refresh(_ClusterSource(self.store, listing, self._open_calls() or {}))
        self.sync_once(listing)
        return reason

    def sync_once(self, listing: dict[str, ObjectInfo] | None = None) -> dict[str, int] | None:
        """One pass (see the module docstring); what it changed, or None when another worker's pass runs."""
        self._lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return None
            return self._pass(self._listing() if listing is None else listing)

    def _pass(self, listing: dict[str, ObjectInfo]) -> dict[str, int]:
        catalog, store = self.store.catalog, self.store
        open_calls = self._open_calls()
        rows = self._rows()
        local = store.artefacts.results()  # this host's results: its own finalisation keeps their rows
        done = {"read": 0, "deleted": 0, "live": 0}
        for sid, info in listing.items():
            mark = (info.modified, info.e_tag)
            if self._seen.get(sid) == mark or sid in local:
                continue
            row = rows.get(sid)
            if sid not in self._seen and row is not None and row[0] != "live" and info.modified <= row[1]:
                self._seen[sid] = mark  # the row was written after this result (an earlier life of this host)
                continue
            at = time.time()
            got = self.bucket.get(info.key)
            result = _parsed(got[0]) if got else None
            if result is None or result.get("call_sid") != sid:
                if got is not None:
                    log.warning("call catalog: %s in the bucket is not a call's result; left out", info.key)
                    self._seen[sid] = mark
                continue
            catalog.upsert(result, finished=True, as_of=at)  # type: ignore[call-arg]
            self._seen[sid] = mark
            done["read"] += 1
        for sid, (status, _) in rows.items():
            if sid in listing or sid in local or store.has_started(sid):
                continue
            if status == "live" and (open_calls is None or sid in open_calls):
                continue  # another host's call in progress (or Redis cannot say: kept)
            catalog.delete(sid)
            self._seen.pop(sid, None)
            done["deleted"] += 1
        for sid, started in (open_calls or {}).items():
            if sid not in rows and sid not in listing and sid not in local:
                catalog.mark_live(sid, started_at=started, source=source_of(sid), mode=None)  # type: ignore[arg-type]
                done["live"] += 1
        if any(done.values()):
            log.info("call catalog: in step with the cluster: %(read)d result(s) read, %(deleted)d row(s) dropped, "
                     "%(live)d live row(s) added", done)
        return done

    async def run(self, after: Awaitable[Any] | None = None) -> None:
        """Every `interval_s` until cancelled (after `after`, the start pass), off the event loop."""
        if after is not None:
            try:
                await after
            except Exception:  # noqa: BLE001  # logged by its own callback; the passes go on
                pass
        failing = False
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await asyncio.to_thread(self.sync_once)
                if failing:
                    log.warning("call catalog: in step with the bucket again")
                failing = False
            except Exception as exc:  # noqa: BLE001  # S3 away, a busy catalog: the next pass tries again
                if not failing:
                    log.warning("call catalog: other hosts' calls could not be brought in (%s: %s); retrying every "
                                "%.0f s", type(exc).__name__, exc, self.interval_s)
                failing = True


def _parsed(body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None

