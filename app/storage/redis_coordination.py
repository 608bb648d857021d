"""RedisCoordinator: the `Coordinator` of several hosts that share one Redis (REDIS_URL).

Keys (prefix `cs:`; the atomic steps are the Lua scripts in `app.storage.redis_scripts`):

    hb:<host>        this process's heartbeat (a nonce of its life), PX 15 s, renewed every 5 s:
                     one command per process, however many calls it has
    owner:<sid>      `<host>:<epoch>`: who records or finalises the call
    epoch:<sid>      the fencing counter, INCR at every claim; also kept in the call folder's
                     `epoch` file, which a finaliser on a shared disk checks before it commits
    open             zset sid → start ms: calls not finalised, swept for orphans
    live             zset sid → expiry ms: calls held now (MAX_CONCURRENT_CALLS, cluster-wide)
    fmt:<sid>        hash {format, kbps, v}: the format choice (kept for a call not started), v its version
    used:<key>       single-use keys (browser-call token nonces), SET NX EX
    stream-secret    the stream-token secret, created once for the cluster (SET NX)

A call is claimed by a stream's admission, by `recover_sync` at start, and by the sweep (every
~5 s, with jitter): a call in `open` whose owner's heartbeat has expired is claimed by exactly
one host (the claim script is atomic) with a new epoch, and handed to the registry's
`on_orphan`. A host that comes back with an older epoch finds `still_owner` false and must not
commit.

The event loop calls the sync methods (acquire at admission, is_live, live_count, and the
format token the export schedule polls): they use a sync client with 0.25 s socket timeouts and
no retries, behind a breaker. After one failure they fail at once (`CoordinationUnavailable`)
until the background loop reaches Redis again, so an outage costs the loop one timeout, not one
per call or request. The format token of a call this process holds comes from a cache that each
heartbeat refreshes (no network per call); finalisation reads the choice itself, fresh.

Redis out of reach: calls in progress go on and finish (their ownership is held; a release that
cannot be sent is queued and sent when Redis is back); new calls are refused; nothing is claimed;
the heartbeat loop tries every second and logs the outage once, and its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.storage import redis_scripts as lua
from app.storage.coordination import CallLock, CoordinationUnavailable, FormatChoice, OrphanHandler
from app.storage.paths import CallFiles, StoreLayout, validate_sid

__all__ = ["RedisCoordinator", "Timing"]

log = logging.getLogger("callscribe.coordination")

T = TypeVar("T")
_ERRORS = (redis.RedisError, OSError, asyncio.TimeoutError)
_SWEEP_PAGE = 500  # calls of `open` looked at per script call (Redis is not held longer than that)
_REMEMBERED = 4096  # last is_live answers kept, for answering during an outage


@dataclass(frozen=True)
class Timing:
    """How often and how long (seconds). The defaults claim a dead host's calls 10 to 21 s after it died."""

    heartbeat_ttl_s: float = 15.0
    beat_s: float = 5.0
    sweep_s: float = 5.0
    sweep_jitter_s: float = 1.0
    op_timeout_s: float = 0.25  # sync client (the event loop waits on it): connect and each reply
    loop_timeout_s: float = 1.0  # async client (the background loops)
    probe_s: float = 1.0  # while Redis is out of reach (or this host not registered), the beat tries this often
    orphan_backoff_s: float = 60.0  # a claimed orphan that could not be finished here waits this long
    epoch_keep_s: int = 30 * 86400  # a finalised call's epoch counter lives on this long (the fence file after)


class _RedisLock:
    """Ownership of one call as epoch `epoch`; released by compare-and-delete."""

    def __init__(self, coordinator: "RedisCoordinator", sid: str, epoch: int) -> None:
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


class RedisCoordinator:
    def __init__(self, url: str, layout: StoreLayout, host_id: str, *, prefix: str = "cs:",
                 timing: Timing | None = None) -> None:
        self.url = url
        self.layout = layout
        self.host_id = host_id
        self.prefix = prefix
        self.timing = t = timing or Timing()
        self.nonce = secrets.token_hex(8)  # this process's life: tells it from an earlier one with the same id
        self._sync = redis.Redis.from_url(url, socket_timeout=t.op_timeout_s, socket_connect_timeout=t.op_timeout_s,
                                          retry=Retry(NoBackoff(), 0), decode_responses=True)
        self._scripts = {name: self._sync.register_script(getattr(lua, name)) for name in lua.__all__}
        self._aio: aredis.Redis | None = None
        self._ascripts: dict[str, Any] = {}
        self._guard = threading.Lock()  # _held, _claiming, _formats, _pending: finalisation threads touch them
        self._held: dict[str, _RedisLock] = {}
        self._claiming: set[str] = set()
        self._formats: dict[str, tuple[FormatChoice | None, str | None]] = {}  # held calls: choice, version
        self._pending: list[tuple[str, str, bool]] = []  # releases Redis did not get: (sid, owner value, finished)
        self._unanswered: dict[str, bool] = {}  # claims whose answer was lost (Redis may have run them): sid → new call
        self._seen: OrderedDict[str, bool] = OrderedDict()
        self._skip: dict[str, float] = {}
        self._secret: bytes | None = None
        self._down_since: float | None = None
        self._next_probe = 0.0
        self._loop_running = False
        self._registered = False
        self._twin = False
        self._tasks: list[asyncio.Task[None]] = []
        self.on_orphan: OrphanHandler | None = None
        self.claimed_count = 0  # orphans claimed by this process's sweep

    # ------------------------------------------------------------------ keys
    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _claim_call(self, sid: str, floor: int, orphan: bool) -> tuple[list[str], list[Any]]:
        keys = [self._k("owner", sid), self._k("epoch", sid), self._k("open"), self._k("live"), self._k("fmt", sid)]
        args = [self.host_id, self._k("hb", ""), sid, int(self.timing.heartbeat_ttl_s * 1000), "1", floor, int(orphan)]
        return keys, args

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

    async def _aclaim(self, sid: str) -> _RedisLock | None:
        files = self.layout.call(sid)
        with self._guard:
            if sid in self._held or sid in self._claiming:
                return None
            self._claiming.add(sid)
        try:
            keys, args = self._claim_call(sid, _read_fence(files), orphan=True)
            assert self._aio is not None
            try:
                res = await asyncio.wait_for(self._ascripts["CLAIM"](keys=keys, args=args), self.timing.loop_timeout_s)
            except _ERRORS:
                with self._guard:
                    self._unanswered.setdefault(sid, False)
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

    # ------------------------------------------------------------------ the background loops
    async def start(self, on_orphan: OrphanHandler | None = None) -> None:
        t = self.timing
        self.on_orphan = on_orphan
        self._aio = aredis.Redis.from_url(self.url, socket_timeout=t.loop_timeout_s,
                                          socket_connect_timeout=t.loop_timeout_s, retry=AsyncRetry(NoBackoff(), 0),
                                          decode_responses=True)
        self._ascripts = {name: self._aio.register_script(getattr(lua, name)) for name in lua.__all__}
        self._loop_running = True
        await self._beat()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._beat_loop(), name="callscribe-heartbeat"),
                       loop.create_task(self._sweep_loop(), name="callscribe-sweep")]
        log.info("coordination: Redis at %s as host %s (heartbeat %g s, renewed every %g s)", _safe(self.url),
                 self.host_id, t.heartbeat_ttl_s, t.beat_s)

    async def _beat_loop(self) -> None:
        while True:
            steady = self._down_since is None and self._registered
            await asyncio.sleep(self.timing.beat_s if steady else self.timing.probe_s)
            await self._beat()

    async def _beat(self) -> None:
        assert self._aio is not None
        with self._guard:
            held = list(self._held.values())
        try:
            status = int(await asyncio.wait_for(self._ascripts["BEAT"](
                keys=[self._k("hb", self.host_id), self._k("live")],
                args=[self.nonce, int(self.timing.heartbeat_ttl_s * 1000), *(lock.sid for lock in held)]),
                self.timing.loop_timeout_s))
            if status == 0:
                if not self._twin:
                    log.error("coordination: %s; this process takes no calls until it is free", self._twin_message())
                self._twin, self._registered = True, False
                self._came_back()
                return
            if status == 2 and self._registered:  # our heartbeat expired while Redis was out of reach
                await self._check_held(held)
            self._twin, self._registered = False, True
            self._came_back()
            await self._send_pending()
            await self._undo_unanswered()
            await self._refresh_formats(held)
        except _ERRORS as exc:
            self._went_down(exc)
        except Exception:  # a bug here must not stop the heartbeat: the next beat tries again
            log.exception("coordination: heartbeat failed")

    async def _check_held(self, held: list[_RedisLock]) -> None:
        """After our heartbeat expired, another host may have claimed our calls: say which (their
        finalisation here will not commit, `still_owner` being false)."""
        assert self._aio is not None
        owners = await self._aio.mget([self._k("owner", lock.sid) for lock in held]) if held else []
        for lock, owner in zip(held, owners):
            if owner != lock.value:
                log.error("call %s: another host claimed it while this host was cut off from Redis (epoch %s "
                          "superseded by %s); this host will not commit its result", lock.sid, lock.epoch, owner)

    async def _send_pending(self) -> None:
        with self._guard:
            pending, self._pending = self._pending, []
        for i, (sid, value, finished) in enumerate(pending):
            try:
                await self._ascripts["RELEASE"](keys=self._release_keys(sid),
                                                args=[value, sid, int(finished), self.timing.epoch_keep_s])
            except _ERRORS:
                with self._guard:
                    self._pending[:0] = pending[i:]
                raise

    async def _undo_unanswered(self) -> None:
        """Claims sent while Redis was not answering may have been run later: undo those this process does not
        hold (the owner would be this host with an epoch it never learnt, and the call would look live)."""
        with self._guard:
            todo = {sid: new for sid, new in self._unanswered.items()
                    if sid not in self._held and sid not in self._claiming}
            self._claiming.update(todo)
            self._unanswered = {}
        try:
            for sid, new in todo.items():
                await self._ascripts["UNCLAIM"](keys=[self._k("owner", sid), self._k("open"), self._k("live")],
                                                args=[self.host_id, sid, int(new)])
                with self._guard:
                    self._claiming.discard(sid)
        except _ERRORS:
            with self._guard:
                for sid, new in todo.items():
                    if sid in self._claiming:
                        self._claiming.discard(sid)
                        self._unanswered.setdefault(sid, new)
            raise

    async def _refresh_formats(self, held: list[_RedisLock]) -> None:
        if not held:
            return
        assert self._aio is not None
        pipe = self._aio.pipeline(transaction=False)
        for lock in held:
            pipe.hmget(self._k("fmt", lock.sid), "format", "kbps", "v")
        rows = await pipe.execute()
        with self._guard:
            for lock, (fmt, kbps, version) in zip(held, rows):
                if self._held.get(lock.sid) is lock:
                    self._formats[lock.sid] = (_choice(fmt, kbps), version)

    async def _sweep_loop(self) -> None:
        t = self.timing
        while True:
            await asyncio.sleep(max(0.05, t.sweep_s + random.uniform(-t.sweep_jitter_s, t.sweep_jitter_s)))
            if self.on_orphan is None or self._down_since is not None or not self._registered:
                continue
            try:
                await self.sweep()
            except _ERRORS as exc:
                self._went_down(exc)
            except Exception:
                log.exception("coordination: the sweep for orphaned calls failed")

    async def sweep(self) -> list[str]:
        """Claim the calls whose owner's heartbeat expired and hand each to `on_orphan`; the sids claimed."""
        assert self._aio is not None and self.on_orphan is not None
        found: list[str] = []
        first = 0
        while True:
            n, sids = await self._ascripts["ORPHANS"](keys=[self._k("open")], args=[
                self._k("owner", ""), self._k("hb", ""), self.host_id, first, first + _SWEEP_PAGE - 1])
            found += sids
            if int(n) < _SWEEP_PAGE:
                break
            first += _SWEEP_PAGE
        now = time.monotonic()
        self._skip = {sid: until for sid, until in self._skip.items() if until > now}
        claimed = []
        for sid in found:
            if sid in self._skip:
                continue
            lock = await self._aclaim(sid)
            if lock is None:
                continue  # held here, or another host was first
            self.claimed_count += 1
            claimed.append(sid)
            log.warning("call %s: its owner stopped (no heartbeat); claimed as epoch %d to finish it", sid, lock.epoch)
            done = False
            try:
                done = await self.on_orphan(sid, lock)
                if done:  # out of `open` before the release: no sweeper claims it again
                    await self._aio.zrem(self._k("open"), sid)
            except Exception:
                log.exception("call %s: finishing the orphaned call failed", sid)
            finally:
                lock.release()
            if not done:
                self._skip[sid] = now + self.timing.orphan_backoff_s
        return claimed

    async def check(self) -> str | None:
        if self._twin:
            return self._twin_message()
        if self._aio is None:
            return None
        try:
            await asyncio.wait_for(self._aio.ping(), self.timing.loop_timeout_s)
        except _ERRORS as exc:
            self._went_down(exc)
            return f"{self._unreachable()} ({type(exc).__name__})"
        if self._down_since is not None or not self._registered:
            return f"{self._unreachable()} (reconnecting)"
        return None

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self._loop_running = False
        if self._aio is not None:
            try:
                await self._send_pending()
                # Gone: calls still held (a drain that timed out) are claimable at the next sweep.
                hb = self._k("hb", self.host_id)
                if await self._aio.get(hb) == self.nonce:
                    await self._aio.delete(hb)
            except _ERRORS as exc:
                log.warning("coordination: could not say goodbye to Redis (%s); the heartbeat expires by itself",
                            type(exc).__name__)
            await self._aio.aclose()
            self._aio = None
        self._sync.close()


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
        tmp = path.with_name(f"epoch.{secrets.token_hex(4)}.tmp")
        tmp.write_text(f"{epoch}\n")
        os.replace(tmp, path)
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
