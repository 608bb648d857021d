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

The event loop's commands, synchronous and behind a breaker, are `app.storage.redis_commands`;
this module holds the coordinator's state and its background loops (heartbeat, sweep).

Redis out of reach: calls in progress go on and finish (their ownership is held; a release that
cannot be sent is queued and sent when Redis is back); new calls are refused; nothing is claimed;
the heartbeat loop tries every second and logs the outage once, and its end.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.cancellation import cancel_and_wait, within
from app.storage import redis_scripts as lua
from app.storage.coordination import FormatChoice, OrphanHandler
from app.storage.paths import StoreLayout
from app.storage.redis_commands import _ERRORS, RedisCommands, _RedisLock, _choice, _read_fence, _safe

__all__ = ["RedisCoordinator", "Timing"]

log = logging.getLogger("callscribe.coordination")

_SWEEP_PAGE = 500  # calls of `open` looked at per script call (Redis is not held longer than that)


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


class RedisCoordinator(RedisCommands):
    """The state, the keys and the background loops; the event loop's commands are `RedisCommands`'s."""

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
            status = int(await within(self._ascripts["BEAT"](
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
                res = await within(self._ascripts["CLAIM"](keys=keys, args=args), self.timing.loop_timeout_s)
            except _ERRORS:
                with self._guard:
                    self._unanswered.setdefault(sid, False)
                raise
            return self._took(sid, files, res)
        finally:
            with self._guard:
                self._claiming.discard(sid)

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
            await within(self._aio.ping(), self.timing.loop_timeout_s)
        except _ERRORS as exc:
            self._went_down(exc)
            return f"{self._unreachable()} ({type(exc).__name__})"
        if self._down_since is not None or not self._registered:
            return f"{self._unreachable()} (reconnecting)"
        return None

    async def aclose(self) -> None:
        await cancel_and_wait(self._tasks, what="the coordinator's heartbeat or sweep")  # redis-py can lose a cancel
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
