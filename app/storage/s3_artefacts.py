"""`S3Artefacts`: the finished files in an S3-compatible bucket, written through a local spool.

Writers see the local folder exactly as with `LocalArtefacts` (``local_path``, ``publish``,
``write_text``): a finalisation never waits on the network and works with S3 away. The call's
files reach the bucket afterwards, all at once, with ``commit`` (driven by
`app.recording.segments.SegmentUploads`, which retries it until S3 answers):

1. if the call already has a commit by someone else, keep theirs and upload nothing;
2. upload every output to ``.calls/<sid>/out/<attempt>/<name>`` (staged: not yet visible);
3. create ``.calls/<sid>/final.json`` with If-None-Match: * (``replace``: If-Match its ETag).
   A 412 means another host committed first: our staged copies go, theirs stay;
4. copy the staged files server-side to ``<S3_PREFIX><name>``, the names of responses/ (the
   result JSON last: once it is there, so is every file it lists), then drop the staged copies
   (and, when replacing, names the new set no longer has).

A crash between 3 and 4 leaves a commit whose files are still staged: readers follow
``final.json`` to them, and the next ``commit`` of the same attempt finishes the copy.

Readers (``stat``, ``open``, ``read_text``, ``list``) prefer the local spool (the host that
recorded the call serves its own files, ranges and all) and otherwise read the bucket, streaming
the body, so `GET /calls/{sid}/files/{name}` works on any host. Deleting a call's result JSON (what
`DELETE /calls/{sid}` does last-but-one) removes the call's objects from the bucket too; other
deletes are local (a finalisation dropping other formats' files), and the next commit reconciles.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from app.storage.artefacts import ArtefactInfo, LocalArtefacts
from app.storage.paths import STAGED_SUFFIXES, CallNotFound, is_output_of, result_sid, validate_sid
from app.storage.s3_bucket import AlreadyCommitted, Bucket, S3Unavailable

__all__ = ["S3Artefacts", "Commit", "sid_of"]

log = logging.getLogger("callscribe.s3")


def sid_of(name: str) -> str | None:
    """The call an output's bare name belongs to (`call_<sid>…`), or None."""
    sid = name[5:39]
    try:
        return validate_sid(sid) if name.startswith("call_") else None
    except ValueError:
        return None


@dataclass(frozen=True)
class Commit:
    """What ``commit`` did: ``committed`` (ours is the call's set) or kept ``theirs`` (another attempt's)."""

    committed: bool
    attempt: str
    files: dict[str, int]  # name → bytes of the committed set (ours or theirs)
    theirs: str | None = None


class _StreamReader(io.RawIOBase):
    """A file-like view of an object's body as it arrives (constant memory whatever its size)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buf:
            nxt = next(self._chunks, None)
            if nxt is None:
                return 0
            self._buf = memoryview(nxt)
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()
        super().close()


class S3Artefacts(LocalArtefacts):
    """A local spool (`root`, i.e. RECORDINGS_DIRECTORY) in front of a bucket."""

    def __init__(self, root: Path, bucket: Bucket, *, host: str = "") -> None:
        super().__init__(root)
        self.bucket = bucket
        self.host = host

    # ------------------------------------------------------------------ reading: local first, then the bucket
    def read_text(self, name: str) -> str | None:
        local = super().read_text(name)
        if local is not None:
            return local
        sid = sid_of(name)
        if sid is None or not is_output_of(sid, name):
            return None
        try:
            found = self._remote(sid, name)
            got = self.bucket.get(found[0]) if found else None
        except S3Unavailable as exc:
            log.warning("%s: not in the local spool and S3 did not answer (%s)", name, exc)
            return None
        return got[0].decode("utf-8") if got else None

    def stat(self, sid: str, name: str) -> ArtefactInfo:
        try:
            return super().stat(sid, name)
        except CallNotFound:
            pass
        found = self._remote(sid, name)  # (super().stat has refused an invalid sid already)
        if found is None:
            raise CallNotFound(f"no file {name!r} for call {sid}")
        return ArtefactInfo(name, found[1].size, found[1].modified, None)

    def open(self, sid: str, name: str) -> BinaryIO:
        try:
            local = LocalArtefacts.stat(self, sid, name)  # not self.stat: that one falls back to the bucket
            return open(local.path, "rb")  # type: ignore[arg-type]
        except (CallNotFound, FileNotFoundError):
            pass
        found = self._remote(sid, name)
        chunks = self.bucket.stream(found[0]) if found else None
        if chunks is None:
            raise CallNotFound(f"no file {name!r} for call {sid}")
        return io.BufferedReader(_StreamReader(chunks), 64 * 1024)  # type: ignore[return-value]

    def list(self, sid: str) -> list[str]:
        """This host's files of the call; when it has none, the call's files in the bucket."""
        local = super().list(sid)
        if local:
            return local
        try:
            names = {o.key[len(self.bucket.prefix):] for o in self.bucket.list(self.bucket.output_key(f"call_{sid}"))}
            if not names:
                names = set(self._manifest(sid)[0].get("files", {}))
        except S3Unavailable as exc:
            log.warning("call %s: its files in S3 could not be listed (%s)", sid, exc)
            return []
        return sorted(n for n in names if is_output_of(sid, n))

    def _remote(self, sid: str, name: str) -> tuple[str, Any] | None:
        """(key, ObjectInfo) of one of the call's files in the bucket: its public name, or, between a
        commit and its copy, the staged copy the commit lists."""
        validate_sid(sid)
        if not is_output_of(sid, name) or name.endswith(STAGED_SUFFIXES):
            return None
        key = self.bucket.output_key(name)
        info = self.bucket.head(key)
        if info is not None:
            return key, info
        manifest = self._manifest(sid)[0]
        if name in manifest.get("files", {}):
            key = self.bucket.staged_key(sid, manifest["attempt"], name)
            info = self.bucket.head(key)
            if info is not None:
                return key, info
        return None

    def _manifest(self, sid: str) -> tuple[dict[str, Any], str | None]:
        """The call's commit (final.json) and its ETag; ({}, None) without one."""
        got = self.bucket.get(self.bucket.final_key(sid))
        if got is None:
            return {}, None
        try:
            data = json.loads(got[0])
        except ValueError:
            log.error("call %s: its final.json in S3 is not JSON; treating the call as committed by nobody", sid)
            return {}, None
        return (data if isinstance(data, dict) else {}), got[1]

    # ------------------------------------------------------------------ deleting
    def delete(self, name: str) -> None:
        """Local, except for the call's result JSON: deleting it deletes the call, so its objects in the
        bucket go too (raises S3Unavailable, an OSError, when S3 does not answer: retry the deletion)."""
        super().delete(name)
        sid = result_sid(name)
        if sid is not None:
            keys = [o.key for o in self.bucket.list(self.bucket.output_key(f"call_{sid}"))]
            keys += [o.key for o in self.bucket.list(self.bucket.call_prefix(sid))]
            self.bucket.delete(keys)

    def discard_staged(self, sid: str) -> None:
        """This host's half-written files of the call (local only: nothing staged is ever uploaded)."""
        for name in LocalArtefacts.list(self, sid):
            if name.endswith(STAGED_SUFFIXES):
                try:
                    LocalArtefacts.delete(self, name)
                except OSError:  # best effort, as LocalArtefacts does
                    pass

    # ------------------------------------------------------------------ committing a call's set
    def committed(self, sid: str) -> dict[str, Any] | None:
        """The call's commit (final.json: attempt, host, epoch, files), or None before any. Raises S3Unavailable."""
        return self._manifest(sid)[0] or None

    def outputs(self, sid: str) -> list[str]:
        """The call's finished files in the local spool (what a commit uploads)."""
        return [n for n in super().list(sid) if not n.endswith(STAGED_SUFFIXES)]

    def commit(self, sid: str, attempt: str, *, epoch: int = 0, replace: bool = False,
               recovered: bool = False) -> Commit:
        """Publish the call's local outputs as its one set in the bucket (see the module docstring).

        ``attempt`` names this try and must be kept by the caller across retries (a retry after a
        crash finds its own commit and finishes it). ``replace``: a new set for a call committed
        before (a format change re-exported it). Raises S3Unavailable; safe to call again."""
        manifest, e_tag = self._manifest(sid)
        if manifest.get("attempt") == attempt:
            return self._finish(sid, manifest, {})  # our commit landed before a crash or a timeout
        if manifest and not replace:
            log.info("call %s: already committed by %s (attempt %s); keeping that one", sid,
                     manifest.get("host") or "another host", manifest.get("attempt"))
            return Commit(False, attempt, manifest.get("files", {}), manifest.get("attempt"))
        names = self.outputs(sid)
        if f"call_{sid}.json" not in names:
            raise FileNotFoundError(f"call {sid}: no result in the local spool to commit")
        files = {n: self.bucket.put_file(self.bucket.staged_key(sid, attempt, n), self.local_path(n)) for n in names}
        ours = {"call_sid": sid, "attempt": attempt, "epoch": epoch, "host": self.host, "recovered": recovered,
                "committed_at": time.time(), "files": files}
        body = json.dumps(ours, indent=1).encode()
        try:
            if manifest and e_tag:
                self.bucket.replace(self.bucket.final_key(sid), body, e_tag)
            else:
                self.bucket.create(self.bucket.final_key(sid), body)
        except AlreadyCommitted:
            theirs, _ = self._manifest(sid)
            if theirs.get("attempt") != attempt:  # not our own earlier try: theirs stands
                self.bucket.delete([self.bucket.staged_key(sid, attempt, n) for n in files])
                log.warning("call %s: another host committed it first (attempt %s); ours (%s) discarded", sid,
                            theirs.get("attempt"), attempt)
                return Commit(False, attempt, theirs.get("files", {}), theirs.get("attempt"))
            ours = theirs
        return self._finish(sid, ours, manifest if replace else {})

    def _finish(self, sid: str, ours: dict[str, Any], previous: dict[str, Any]) -> Commit:
        """Copy a commit's staged files to their public names; drop what the previous set had and this one has not."""
        attempt, files = ours["attempt"], ours.get("files", {})
        # The result JSON last: a reader that finds it under its name finds every file it lists.
        for name in sorted(files, key=lambda n: result_sid(n) is not None):
            staged = self.bucket.staged_key(sid, attempt, name)
            if self.bucket.head(staged) is not None:  # gone: an earlier finish copied it already
                self.bucket.copy(staged, self.bucket.output_key(name))
        gone = [self.bucket.output_key(n) for n in previous.get("files", {}) if n not in files]
        self.bucket.delete(gone + [self.bucket.staged_key(sid, attempt, n) for n in files])
        return Commit(True, attempt, files)
