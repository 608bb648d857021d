"""Where a call's finished files live: the `ArtefactStore` interface and `LocalArtefacts`.

A writer (the exporter, finalisation) writes a file at ``local_path(name)`` — through a
`.partial` or `.tmp` sibling that it renames into place, so a reader never sees half a file —
and then calls ``publish(name)``. Downloads and listings read through ``stat``/``open``/``list``.

`LocalArtefacts` is the `responses/` folder: ``local_path`` is the file itself and the writer's
rename is the commit, so ``publish`` only reports the file. A remote store (S3, a later issue)
would hand out a local spool path and upload at ``publish``. Knows no call session, no
recording and no web framework; the names come from `app.storage.paths`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from app.storage.atomic import replace_text
from app.storage.paths import STAGED_SUFFIXES, CallNotFound, is_output_of, result_sid, validate_sid

__all__ = ["ArtefactInfo", "ArtefactStore", "LocalArtefacts"]


@dataclass(frozen=True)
class ArtefactInfo:
    name: str
    size: int
    modified: float  # epoch seconds
    path: Path | None = None  # a local file a server may send as it is (None: only `open` reads it)


class ArtefactStore(Protocol):
    """The finished files of every call, by bare name (`call_<sid>…`, from app.storage.paths)."""

    def local_path(self, name: str) -> Path:
        """Where this process writes the file `name` before ``publish``."""
        ...

    def publish(self, name: str) -> ArtefactInfo:
        """Make the file written at ``local_path(name)`` the call's artefact `name`."""
        ...

    def write_text(self, name: str, text: str) -> ArtefactInfo:
        """Write and publish a text artefact; a reader sees the old text or the new, never half."""
        ...

    def read_text(self, name: str) -> str | None:
        """An artefact's text, or None when there is none."""
        ...

    def stat(self, sid: str, name: str) -> ArtefactInfo:
        """One of this call's artefacts, for a download: raises CallNotFound for anything else
        (another call's file, a path, a hidden or missing file)."""
        ...

    def open(self, sid: str, name: str) -> BinaryIO:
        """Read one of this call's artefacts (checked as ``stat`` checks)."""
        ...

    def list(self, sid: str) -> list[str]:
        """The names of this call's artefacts, files still being written included."""
        ...

    def delete(self, name: str) -> None:
        """Remove an artefact; one that is not there is no error."""
        ...

    def discard_staged(self, sid: str) -> None:
        """Remove this call's half-written files (a finalisation that failed)."""
        ...

    def results(self) -> set[str]:
        """The calls that have a result (`call_<sid>.json`)."""
        ...


class LocalArtefacts:
    """The `responses/` folder (RECORDINGS_DIRECTORY): today's behaviour."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def local_path(self, name: str) -> Path:
        return self.root / name

    def publish(self, name: str) -> ArtefactInfo:
        return self._info(self.root / name)

    def write_text(self, name: str, text: str) -> ArtefactInfo:
        replace_text(self.root / name, text)
        return self.publish(name)

    def read_text(self, name: str) -> str | None:
        try:
            return (self.root / name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def stat(self, sid: str, name: str) -> ArtefactInfo:
        validate_sid(sid)
        if not is_output_of(sid, name):
            raise CallNotFound(f"no file {name!r} for call {sid}")
        path = (self.root / name).resolve()
        if path.parent != self.root or not path.is_file():
            raise CallNotFound(f"no file {name!r} for call {sid}")
        return self._info(path)

    def open(self, sid: str, name: str) -> BinaryIO:
        return open(self.root / self.stat(sid, name).name, "rb")

    def list(self, sid: str) -> list[str]:
        validate_sid(sid)
        return sorted(p.name for p in self.root.glob(f"call_{sid}*") if p.is_file())

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def discard_staged(self, sid: str) -> None:
        for name in self.list(sid):
            if name.endswith(STAGED_SUFFIXES):
                try:
                    self.delete(name)
                except OSError:  # best effort: the next attempt (or the next start) tries again
                    pass

    def results(self) -> set[str]:
        return {sid for p in self.root.glob("call_*.json") if (sid := result_sid(p.name))}

    @staticmethod
    def _info(path: Path) -> ArtefactInfo:
        st = path.stat()
        return ArtefactInfo(path.name, st.st_size, st.st_mtime, path)
