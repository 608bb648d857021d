"""CallStore: the one object the rest of the app asks about stored calls.

It names every file (through `app.storage.paths`), keeps finished files in an `ArtefactStore`,
leaves ownership, format choices and the stream secret to a `Coordinator` and the one-row-a-call
listing to a `Catalog`; it adds what needs several: whether a call has started, is finalised or
kept its masters, its result, and the listings. The engines are chosen here, in one place: the
local folder, file locks and a SQLite catalog unless others are given (Redis and S3 later).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.storage.artefacts import ArtefactStore, LocalArtefacts
from app.storage.catalog import Catalog
from app.storage.coordination import Coordinator, LocalCoordinator
from app.storage.paths import SID_RE, CallFiles, CallNotFound, StoreLayout, output_name
from app.storage.sqlite_catalog import SqliteCatalog

if TYPE_CHECKING:
    from app.storage.s3_bucket import S3Config

__all__ = ["CallStore"]


class CallStore:
    def __init__(self, root: Path, create: bool = True, *, artefacts: ArtefactStore | None = None,
                 coordinator: Coordinator | None = None, catalog: Catalog | None = None,
                 redis_url: str | None = None, host_id: str | None = None,
                 s3: S3Config | None = None) -> None:
        """`create=False` only reads until something is written (a CLI that may refuse leaves no folder;
        the catalog's file is made when it is first used). ``s3``: the bucket (S3_BUCKET set): the finished
        files are read from it on any host, and reach it through the local spool (`S3Artefacts`; the
        recording's `SegmentUploads` sends the segments and commits the files)."""
        self.layout = StoreLayout(Path(root).resolve())
        self.root = self.layout.root
        if artefacts is None and s3 is not None:
            from app.storage.s3_artefacts import S3Artefacts  # obstore is imported only when configured
            from app.storage.s3_bucket import Bucket

            artefacts = S3Artefacts(self.root, Bucket(s3), host=host_id or default_host_id())
        self.artefacts: ArtefactStore = artefacts or LocalArtefacts(self.root)
        self.coordinator: Coordinator = coordinator or _coordinator(self.layout, redis_url, host_id)
        self.catalog: Catalog = catalog or SqliteCatalog(self.layout.catalog, self.layout.catalog_lock)
        if create:
            self.layout.calls_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ names
    def files(self, sid: str, create: bool = False) -> CallFiles:
        """The call's folder and the files in it (``create``: make the folder)."""
        files = self.layout.call(sid)
        if create:
            files.folder.mkdir(parents=True, exist_ok=True)
        return files

    def output(self, sid: str, kind: str, ext: str = "") -> Path:
        """Where this process writes one of the call's outputs (see paths.output_name for the kinds)."""
        return self.artefacts.local_path(output_name(sid, kind, ext))

    # ------------------------------------------------------------------ a call's state
    def has_started(self, sid: str) -> bool:
        return self.files(sid).journal.exists()

    def is_finalized(self, sid: str) -> bool:
        return self.files(sid).finalized.exists()

    def masters_kept(self, sid: str) -> bool:
        return self.files(sid).master("inbound").exists()

    def read_result(self, sid: str) -> dict[str, Any] | None:
        text = self.artefacts.read_text(output_name(sid, "json"))
        try:
            return json.loads(text) if text is not None else None
        except ValueError:
            return None

    def result_modified(self, sid: str) -> float | None:
        """When the call's result was last written (epoch seconds), or None without one."""
        try:
            return self.artefacts.stat(sid, output_name(sid, "json")).modified
        except CallNotFound:
            return None

    # ------------------------------------------------------------------ listings
    def result_sids(self) -> set[str]:
        """Every call with a result (`call_<sid>.json`): what the catalog is rebuilt from."""
        return self.artefacts.results()

    def list_sids(self) -> list[str]:
        """Every call with a folder or a result."""
        folders = {p.name for p in self.layout.calls_dir.iterdir() if SID_RE.match(p.name)}
        return sorted(folders | self.artefacts.results())

    def unfinished(self) -> list[str]:
        """Calls that started and were never finalised (candidates for recovery)."""
        return sorted(p.name for p in self.layout.calls_dir.iterdir()
                      if SID_RE.match(p.name) and self.has_started(p.name) and not self.is_finalized(p.name))


def _coordinator(layout: StoreLayout, redis_url: str | None, host_id: str | None) -> Coordinator:
    """File locks on this host, or Redis (REDIS_URL) for several: the one place the engine is chosen."""
    if not redis_url:
        return LocalCoordinator(layout)
    from app.storage.redis_coordination import RedisCoordinator  # redis is imported only when configured

    return RedisCoordinator(redis_url, layout, host_id or default_host_id())


def default_host_id() -> str:
    """HOST_ID's default: the host name and this process's id (each worker process is a host of its own)."""
    return f"{socket.gethostname()}-{os.getpid()}"
