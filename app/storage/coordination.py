"""What the processes serving calls agree on: the `Coordinator` interface and `LocalCoordinator`.

Who owns a call (the lock held by whoever records or finalises it), whether a call is live in any
process, each call's format choice with a token that changes whenever the choice does (the
recording process polls it and swaps its exporter), and the secret that signs stream tokens
(the webhook may be answered by one worker and the stream by another: they must agree).

`LocalCoordinator` is one host's: an `flock` on the call folder's `lock` file (the kernel drops it
when the holder dies, so a crashed call is free for recovery at once), `format.json` replaced
atomically (its token is its mtime and inode), and a secret file created once, whole, by whichever
worker comes first. Every worker of `callscribe serve --workers N` shares them. The networked one,
`app.storage.redis_coordination.RedisCoordinator` (REDIS_URL), keeps the same methods with
heartbeats, owner records and fencing epochs, and adds what only a cluster needs: a count of the
calls held cluster-wide, background loops (`start`/`aclose`: no-ops here) that renew the heartbeat
and claim the calls of hosts that died, and `CoordinationUnavailable` when it cannot be reached.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from app.storage.atomic import replace_text
from app.storage.paths import StoreLayout

__all__ = ["FormatChoice", "CallLock", "Coordinator", "LocalCoordinator", "CoordinationUnavailable", "OrphanHandler"]

# `is_live` tests the lock by taking it shared for a moment; an `acquire` that lands in that moment
# would wrongly see the call as owned, so it tries again a few times before believing it.
_ACQUIRE_TRIES = 3
_ACQUIRE_PAUSE_S = 0.001


@dataclass(frozen=True)
class FormatChoice:
    """A call's chosen format (a name from the format registry) and, for MP3, its bitrate."""

    format: str
    bitrate_kbps: int | None = None


class CoordinationUnavailable(RuntimeError):
    """The coordination service (Redis) cannot be reached now: no new call may start, no claim is made."""


class CallLock(Protocol):
    """Ownership of one call, held while it is recorded or finalised."""

    # The fencing epoch of this ownership (rises with each new owner); None on one host (file locks).
    epoch: int | None

    def release(self) -> None:
        ...


# Called with a call whose owner died, claimed for this process (a lock it must release); True when
# the call was finalised (or needs nothing more), False when it could not be done here (tried later).
OrphanHandler = Callable[[str, CallLock], Awaitable[bool]]


class Coordinator(Protocol):
    def acquire(self, sid: str, *, wait: bool = False) -> CallLock | None:
        """Own the call; None when someone else does (``wait``: block until they are done)."""
        ...

    def is_live(self, sid: str) -> bool:
        """Whether any process owns the call now (records or finalises it)."""
        ...

    def set_format(self, sid: str, choice: FormatChoice) -> None:
        ...

    def get_format(self, sid: str) -> FormatChoice | None:
        ...

    def format_token(self, sid: str) -> Hashable:
        """A value that changes whenever the call's format choice does (compare with ``!=``)."""
        ...

    def stream_secret(self) -> bytes:
        """The secret stream tokens are signed with: the same in every process."""
        ...

    def use_once(self, key: str, owner: str, ttl_s: float) -> bool:
        """Claim a single-use key (a browser-call token's nonce) for ``owner`` (a call): True the
        first time, and again for the same owner (its reconnects); False once another owner has it.
        Kept at least ``ttl_s`` seconds (the key's own life)."""
        ...

    def live_count(self) -> int | None:
        """Calls held now in every process of the cluster; None when only this process's count matters.
        Raises CoordinationUnavailable."""
        ...

    def epoch_of(self, sid: str) -> int | None:
        """The call's latest fencing epoch (None: no epochs here, or never owned)."""
        ...

    def still_owner(self, sid: str, epoch: int | None) -> bool:
        """Whether ownership with this epoch still holds: a finaliser checks it before committing."""
        ...

    async def start(self, on_orphan: OrphanHandler | None = None) -> None:
        """Start the background work (heartbeat, the sweep that hands orphaned calls to ``on_orphan``)."""
        ...

    async def check(self) -> str | None:
        """Why this process cannot coordinate new calls now (for readiness), or None."""
        ...

    async def aclose(self) -> None:
        ...


@dataclass(frozen=True)
class _Flock:
    fd: int
    epoch: None = None  # the kernel fences a file lock: a dead holder's lock is gone with it

    def release(self) -> None:
        try:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
        finally:
            os.close(self.fd)


class LocalCoordinator:
    """One host: file locks and files in the store's `.calls` folder (today's behaviour)."""

    def __init__(self, layout: StoreLayout) -> None:
        self.layout = layout
        self._secret: bytes | None = None

    # ------------------------------------------------------------------ ownership
    def acquire(self, sid: str, *, wait: bool = False) -> CallLock | None:
        files = self.layout.call(sid)
        files.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o640)
        for attempt in range(_ACQUIRE_TRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                return _Flock(fd)
            except BlockingIOError:
                if attempt + 1 < _ACQUIRE_TRIES:
                    time.sleep(_ACQUIRE_PAUSE_S)
        os.close(fd)
        return None

    def is_live(self, sid: str) -> bool:
        try:
            fd = os.open(self.layout.call(sid).lock, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # shared: probes never block each other
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the probe's shared lock
        return False

    # ------------------------------------------------------------------ format choices
    def set_format(self, sid: str, choice: FormatChoice) -> None:
        files = self.layout.call(sid)
        files.folder.mkdir(parents=True, exist_ok=True)
        replace_text(files.format, json.dumps({"format": choice.format, "bitrate_kbps": choice.bitrate_kbps}))

    def get_format(self, sid: str) -> FormatChoice | None:
        try:
            data = json.loads(self.layout.call(sid).format.read_text())
            return FormatChoice(data["format"], data.get("bitrate_kbps"))
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            return None

    def format_token(self, sid: str) -> Hashable:
        try:
            st = self.layout.call(sid).format.stat()
        except FileNotFoundError:
            return None
        # Each choice is a new file (os.replace), so its inode tells two choices made within one
        # tick of the file system's clock apart.
        return st.st_mtime_ns, st.st_ino

    # ------------------------------------------------------------------ the stream-token secret
    def stream_secret(self) -> bytes:
        if self._secret is None:
            self._secret = _shared_secret(self.layout.stream_secret)
        return self._secret


    # ------------------------------------------------------------------ cluster (one host: nothing to do)
    def live_count(self) -> int | None:
        return None

    def epoch_of(self, sid: str) -> int | None:
        return None

    def still_owner(self, sid: str, epoch: int | None) -> bool:
        return True

    async def start(self, on_orphan: OrphanHandler | None = None) -> None:
        """Nothing runs in the background: a crashed call's lock is free at once, recovered at the next start."""

    async def check(self) -> str | None:
        return None

    async def aclose(self) -> None:
        """Nothing to close."""

    # ------------------------------------------------------------------ single-use keys
    def use_once(self, key: str, owner: str, ttl_s: float) -> bool:
        folder = self.layout.used_tokens
        folder.mkdir(parents=True, exist_ok=True)
        if not re.fullmatch(r"[0-9a-f]{16,64}", key):
            return False
        path = folder / key
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            try:
                return path.read_text() == owner
            except OSError:
                return False
        with os.fdopen(fd, "w") as f:
            f.write(owner)
        self._prune_used(folder, ttl_s)
        return True

    @staticmethod
    def _prune_used(folder: Path, ttl_s: float) -> None:
        """Forget keys past their life (twice it, to be safe): an expired token is refused anyway."""
        cutoff = time.time() - 2 * ttl_s
        for p in folder.iterdir():
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
            except OSError:
                pass  # another worker pruned it


def _shared_secret(path: Path) -> bytes:
    """Read the secret, making it first if there is none. Workers starting together race here: each
    writes a candidate to a file of its own and links it into place, so the first link wins and a
    reader never sees a half-written secret."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass  # another worker's came first: use it
        finally:
            tmp.unlink()
    try:
        secret = bytes.fromhex(path.read_text().strip())
    except ValueError:
        secret = b""
    if len(secret) < 16:
        raise RuntimeError(f"the stream-token secret in {path} is damaged; delete the file and restart every worker")
    return secret
