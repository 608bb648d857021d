"""The synchronous half of `RedisCoordinator`: the commands the event loop sends to Redis.

The event loop calls the sync methods (acquire at admission, is_live, live_count, and the
format token the export schedule polls): they use a sync client with 0.25 s socket timeouts and
no retries, behind a breaker. After one failure they fail at once (`CoordinationUnavailable`)
until the background loop reaches Redis again, so an outage costs the loop one timeout, not one
per call or request. The format token of a call this process holds comes from a cache that each
heartbeat refreshes (no network per call); finalisation reads the choice itself, fresh.

`RedisCommands` is a mixin: its state (the clients, the breaker, the calls held) is set by
`RedisCoordinator.__init__`, and shared with the background loops in `app.storage.redis_coordination`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis

from app.storage.atomic import replace_text
from app.storage.coordination import CallLock, CoordinationUnavailable, FormatChoice
from app.storage.paths import CallFiles, validate_sid

__all__ = ["RedisCommands"]

log = logging.getLogger("callscribe.coordination")

T = TypeVar("T")
_ERRORS = (redis.RedisError, OSError, asyncio.TimeoutError)
_REMEMBERED = 4096  # last is_live answers kept, for answering during an outage


class _RedisLock:
    """Ownership of one call as epoch `epoch`; released by compare-and-delete."""

    def __init__(self, coordinator: RedisCommands, sid: str, epoch: int) -> None:
        self._coordinator = coordinator
        self.sid = sid
        self.epoch: int | None = epoch
        self.released = False

    @property
    def value(self) -> str:
        return f"{self._coordinator.host_id}:{self.epoch}"

    def release(self) -> None:
        if not self.released:
            self.released = True
            self._coordinator._release(self)


class RedisCommands:
    """The event loop's calls (see the module's docstring); mixed into `RedisCoordinator`."""

    # ------------------------------------------------------------------ reaching Redis
    def _do(self, fn: Callable[[], T]) -> T:
        """A sync command behind the breaker; raises CoordinationUnavailable."""
        if self._failing_fast():
            raise CoordinationUnavailable(self._unreachable())
        try:
            out = fn()
        except _ERRORS as exc:
            self._went_down(exc)
            raise CoordinationUnavailable(self._unreachable()) from None
        if not self._loop_running:
            self._came_back()  # with the loop running, only its heartbeat says Redis is back
        return out

    def _failing_fast(self) -> bool:
        """Whether a sync command would be refused without being sent (the breaker is open)."""
        return self._down_since is not None and (self._loop_running or time.monotonic() < self._next_probe)

    def _unreachable(self) -> str:
        return f"Redis at {_safe(self.url)} is unreachable"

    def _went_down(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._next_probe = now + self.timing.probe_s
        if self._down_since is None:
            self._down_since = now
            log.warning("%s (%s): calls in progress go on and finish; new calls are refused and no orphaned call "
                        "is claimed until it is back", self._unreachable(), type(exc).__name__)

    def _came_back(self) -> None:
        if self._down_since is not None:
            log.warning("Redis at %s is reachable again after %.1f s", _safe(self.url),
                        time.monotonic() - self._down_since)
            self._down_since = None

    @property
    def reachable(self) -> bool:
        return self._down_since is None

    # ------------------------------------------------------------------ ownership
    def acquire(self, sid: str, *, wait: bool = False) -> CallLock | None:
        while True:
            lock = self._claim(sid)
            if lock is not None or not wait:
                return lock
            time.sleep(0.05)

    def _claim(self, sid: str) -> _RedisLock | None:
        files = self.layout.call(sid)  # validates the sid
        with self._guard:
            if sid in self._held or sid in self._claiming:
                return None  # this process has it
            self._claiming.add(sid)
        try:
            if not self._registered:
                self._register_now()
            keys, args = self._claim_call(sid, _read_fence(files), orphan=False)
            sent = not self._failing_fast()
            try:
                res = self._do(lambda: self._scripts["CLAIM"](keys=keys, args=args))
            except CoordinationUnavailable:
                if sent:  # it may have reached Redis, and run there later
                    with self._guard:
                        self._unanswered.setdefault(sid, not files.folder.exists())
                raise
            return self._took(sid, files, res)
        finally:
            with self._guard:
                self._claiming.discard(sid)

    def _took(self, sid: str, files: CallFiles, res: list[Any]) -> _RedisLock | None:
        epoch = int(res[0])
        if epoch == 0:
            return None
        lock = _RedisLock(self, sid, epoch)
        with self._guard:
            self._held[sid] = lock
            self._formats[sid] = (_choice(res[1], res[2]), res[3])
        if files.folder.exists():  # a new call's folder is made by its recording (epoch 1 needs no fence)
            _write_fence(files, epoch)
        return lock

    def _register_now(self) -> None:
        """The first heartbeat, from a process without the background loop (e.g. a command-line tool)."""
        status = self._do(lambda: self._scripts["BEAT"](keys=[self._k("hb", self.host_id), self._k("live")],
                                                        args=[self.nonce, int(self.timing.heartbeat_ttl_s * 1000)]))
        if int(status) == 0:
            raise CoordinationUnavailable(self._twin_message())
        self._registered = True

    def _twin_message(self) -> str:
        return (f"HOST_ID {self.host_id!r} is in use by another live process (each process needs its own; leave "
                f"HOST_ID unset for hostname-pid), or this host restarted less than {self.timing.heartbeat_ttl_s:.0f} "
                f"s ago")

    def _release(self, lock: _RedisLock) -> None:
        with self._guard:
            if self._held.get(lock.sid) is lock:
                del self._held[lock.sid]
                self._formats.pop(lock.sid, None)
        finished = self.layout.call(lock.sid).finalized.exists()
        try:
            self._do(lambda: self._scripts["RELEASE"](keys=self._release_keys(lock.sid),
                                                      args=[lock.value, lock.sid, int(finished), self.timing.epoch_keep_s]))
        except CoordinationUnavailable:
            with self._guard:
                self._pending.append((lock.sid, lock.value, finished))
            log.info("call %s: released while Redis is out of reach; the release is sent when it is back", lock.sid)

    def _release_keys(self, sid: str) -> list[str]:
        return [self._k("owner", sid), self._k("open"), self._k("live"), self._k("epoch", sid)]

    def is_live(self, sid: str) -> bool:
        with self._guard:
            if sid in self._held:
                return True
        try:
            live = bool(self._do(lambda: self._scripts["IS_LIVE"](keys=[self._k("owner", sid)],
                                                                  args=[self._k("hb", "")])))
        except CoordinationUnavailable:
            with self._guard:  # out of reach: nobody can claim, so what was live still is
                return self._seen.get(sid, False)
        with self._guard:
            self._seen[sid] = live
            self._seen.move_to_end(sid)
            if len(self._seen) > _REMEMBERED:
                self._seen.popitem(last=False)
        return live

    def open_calls(self) -> dict[str, float]:
        """Every call not yet finalised, on any host: sid → when it was first claimed (epoch s). For the
        other hosts' catalogs (`app.storage.catalog_sync`). Raises CoordinationUnavailable."""
        pairs = self._do(lambda: self._sync.zrange(self._k("open"), 0, -1, withscores=True))
        return {sid: ms / 1000 for sid, ms in pairs}

    def live_count(self) -> int | None:
        return int(self._do(lambda: self._scripts["LIVE_COUNT"](keys=[self._k("live")])))

    def epoch_of(self, sid: str) -> int | None:
        try:
            value = self._do(lambda: self._sync.get(self._k("epoch", sid)))
        except CoordinationUnavailable:
            return _read_fence(self.layout.call(sid)) or None
        return int(value) if value is not None else (_read_fence(self.layout.call(sid)) or None)

    def still_owner(self, sid: str, epoch: int | None) -> bool:
        if epoch is None:
            return True
        if _read_fence(self.layout.call(sid)) > epoch:
            return False  # a later owner wrote its epoch beside the masters (a shared disk)
        try:
            return bool(self._do(lambda: self._scripts["STILL_OWNER"](keys=[self._k("owner", sid)],
                                                                      args=[f"{self.host_id}:{epoch}"])))
        except CoordinationUnavailable:
            # While Redis is out of reach of every host nobody can claim; a host cut off alone is the
            # case the storage's own fence (the epoch file, S3's conditional commit) is there for.
            log.warning("call %s: Redis out of reach; committing as epoch %d", sid, epoch)
            return True

    # ------------------------------------------------------------------ format choices
    def set_format(self, sid: str, choice: FormatChoice) -> None:
        key = self._k("fmt", validate_sid(sid))

        def write() -> list[Any]:
            pipe = self._sync.pipeline(transaction=True)
            pipe.hset(key, "format", choice.format)
            if choice.bitrate_kbps is None:
                pipe.hdel(key, "kbps")
            else:
                pipe.hset(key, "kbps", str(choice.bitrate_kbps))
            pipe.hincrby(key, "v", 1)
            return pipe.execute()

        version = str(self._do(write)[-1])
        with self._guard:
            if sid in self._held:
                self._formats[sid] = (choice, version)

    def get_format(self, sid: str) -> FormatChoice | None:
        key = self._k("fmt", validate_sid(sid))
        try:
            fmt, kbps = self._do(lambda: self._sync.hmget(key, "format", "kbps"))
        except CoordinationUnavailable:
            with self._guard:
                cached = self._formats.get(sid)
            log.warning("call %s: Redis out of reach; using the format choice %s", sid,
                        "known when it was last reached" if cached else "default (none known here)")
            return cached[0] if cached else None
        return _choice(fmt, kbps)

    def format_token(self, sid: str) -> Hashable:
        with self._guard:
            cached = self._formats.get(sid)
        if cached is not None:
            return cached[1]  # a call held here: refreshed by each heartbeat
        try:
            return self._do(lambda: self._sync.hget(self._k("fmt", validate_sid(sid)), "v"))
        except CoordinationUnavailable:
            return None

    # ------------------------------------------------------------------ the stream secret, single-use keys
    def stream_secret(self) -> bytes:
        if self._secret is None:
            key = self._k("stream-secret")

            def read() -> str | None:
                self._sync.set(key, secrets.token_hex(32), nx=True)  # the first host's stays
                return self._sync.get(key)

            try:
                secret = bytes.fromhex(self._do(read) or "")
            except ValueError:
                secret = b""
            if len(secret) < 16:
                raise RuntimeError(f"the stream-token secret in Redis ({key}) is damaged; delete it and restart "
                                   f"every host")
            self._secret = secret
        return self._secret

    def use_once(self, key: str, owner: str, ttl_s: float) -> bool:
        if not re.fullmatch(r"[0-9a-f]{16,64}", key):
            return False
        name = self._k("used", key)

        def claim() -> bool:
            if self._sync.set(name, owner, nx=True, ex=max(1, math.ceil(2 * ttl_s))):
                return True
            return self._sync.get(name) == owner

        try:
            return self._do(claim)
        except CoordinationUnavailable:
            log.warning("a single-use token was refused: Redis is out of reach")
            return False


def _choice(fmt: str | None, kbps: str | None) -> FormatChoice | None:
    if not fmt:
        return None
    return FormatChoice(fmt, int(kbps) if kbps else None)


def _fence(files: CallFiles) -> Path:
    return files.folder / "epoch"


def _read_fence(files: CallFiles) -> int:
    """The highest epoch written beside the call's masters (0: none)."""
    try:
        return int(_fence(files).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _write_fence(files: CallFiles, epoch: int) -> None:
    """Write the epoch beside the masters (replaced atomically): on a shared disk a host that lost the call
    sees a higher one there before it commits."""
    path = _fence(files)
    try:
        replace_text(path, f"{epoch}\n")
    except OSError as exc:
        log.warning("call %s: could not write its epoch file (%s)", files.folder.name, exc.strerror or exc)


def _safe(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.rsplit("@", 1)[1]
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}" if user else f"***@{netloc}"))
    return url
