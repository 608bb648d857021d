"""RedisCoordinator against a real redis-server: coordinators in one process stand for hosts.

Ownership and heartbeats, the claim of a dead host's calls (by one host only, however many race),
epoch fencing, single-use keys, the shared stream secret, format versions, the cluster-wide count,
and what a host does while Redis does not answer.
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import redis

from app.storage.coordination import CoordinationUnavailable, FormatChoice
from tests.scaleout.conftest import FAST, die

SID = "CA" + "1" * 32


def sid_of(i: int) -> str:
    return "CA" + f"{i:032x}"


class Orphans:
    """An `on_orphan` that records what it was handed (and when), and says the call is done."""

    def __init__(self, done: bool = True) -> None:
        self.got: list[tuple[str, int | None, float]] = []
        self.done = done

    async def __call__(self, sid, lock) -> bool:
        self.got.append((sid, lock.epoch, time.monotonic()))
        return self.done

    async def wait(self, n: int = 1, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.got) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert len(self.got) >= n, self.got


async def test_one_owner_at_a_time_and_a_dead_hosts_call_is_claimed_within_ttl_plus_sweep(make_coordinator):
    orphans = Orphans()
    a = await make_coordinator("host-a")
    b = await make_coordinator("host-b", on_orphan=orphans)
    lock = a.acquire(SID)
    assert lock is not None and lock.epoch == 1
    assert b.acquire(SID) is None and a.acquire(SID) is None  # the other host, and the same one again
    assert b.is_live(SID) and a.is_live(SID) and b.live_count() == 1
    await asyncio.sleep(FAST.heartbeat_ttl_s * 1.5)
    assert not orphans.got, "a host that beats keeps its calls"

    await die(a)
    died = time.monotonic()
    left = redis.Redis.from_url(a.url).pttl(a._k("hb", "host-a")) / 1000  # the heartbeat's life at the death
    assert 0 < left <= FAST.heartbeat_ttl_s
    await orphans.wait(timeout=FAST.heartbeat_ttl_s + FAST.sweep_s * 4)
    sid, epoch, at = orphans.got[0]
    assert (sid, epoch) == (SID, 2)
    # Not before the heartbeat expires; then within a few sweeps.
    assert left - 0.05 <= at - died <= left + FAST.sweep_s * 4 + 0.3
    assert not a.still_owner(SID, 1) and a.epoch_of(SID) == 2
    # finished (on_orphan said done) and released: the release follows the callback's return
    deadline = time.monotonic() + 2.0
    while b.is_live(SID) and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert not b.is_live(SID)
    assert SID not in await b._aio.zrange("cs:open", 0, -1)
    lock.release()  # the old owner's late release changes nothing
    assert b.acquire(SID).epoch == 3


async def test_exactly_one_host_claims_when_two_race(make_coordinator):
    """Two survivors race for the same orphans, many times: by their sweeps, and by direct claims from threads."""
    owner = await make_coordinator("host-x")
    await die(owner)  # its heartbeat is renewed by hand below, once a round
    y_orphans, z_orphans = Orphans(), Orphans()
    y = await make_coordinator("host-y", on_orphan=y_orphans)
    z = await make_coordinator("host-z", on_orphan=z_orphans)
    for c in (y, z):  # the races below are run by hand, not by the background sweeps
        c.on_orphan = None
    r = redis.Redis.from_url(y.url)
    for i in range(40):
        sid = sid_of(100 + i)
        await owner._beat()
        stale = owner.acquire(sid)
        assert stale is not None
        r.delete("cs:hb:host-x")  # the owner's heartbeat is gone (as after its TTL)
        if i % 2:
            y.on_orphan, z.on_orphan = y_orphans, z_orphans
            won = await asyncio.gather(y.sweep(), z.sweep())
            y.on_orphan = z.on_orphan = None
            assert sorted(won[0] + won[1]) == [sid], (i, won)
        else:
            locks: list[object] = []
            barrier = threading.Barrier(2)

            def claim(c):
                barrier.wait()
                locks.append(c.acquire(sid))

            threads = [threading.Thread(target=claim, args=(c,)) for c in (y, z)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            held = [lk for lk in locks if lk is not None]
            assert len(held) == 1 and held[0].epoch == 2, (i, locks)
            held[0].release()
            r.zrem("cs:open", sid)  # as its finalisation would (released unfinished, it would be an orphan)
        stale.release()  # a superseded release: changes nothing
    assert len(y_orphans.got) + len(z_orphans.got) == 20


async def test_the_epoch_fences_a_host_that_comes_back(make_coordinator, tmp_path):
    """A paused owner whose call was claimed meanwhile must not commit: Redis says so, and so does the
    epoch file beside the masters on a shared disk (even when Redis cannot be asked)."""
    a = await make_coordinator("host-a")
    b = await make_coordinator("host-b")
    old = a.acquire(SID)
    (tmp_path / "shared" / ".calls" / SID).mkdir(parents=True)
    assert a.still_owner(SID, old.epoch)
    await die(a)
    redis.Redis.from_url(a.url).delete("cs:hb:host-a")
    new = b.acquire(SID)
    assert new.epoch == 2 and (tmp_path / "shared" / ".calls" / SID / "epoch").read_text() == "2\n"
    assert not a.still_owner(SID, old.epoch) and b.still_owner(SID, new.epoch)
    a._down_since, a._loop_running = time.monotonic(), True  # Redis out of reach from host a
    assert not a.still_owner(SID, old.epoch), "the epoch file fences without Redis"
    a._down_since = None
    old.release()
    assert b.is_live(SID) and redis.Redis.from_url(a.url).get("cs:owner:" + SID) == b"host-b:2"
    new.release()
    # Epochs only rise, even once Redis forgot the counter: the epoch file is the floor.
    redis.Redis.from_url(a.url).delete("cs:epoch:" + SID)
    assert b.acquire(SID).epoch == 3


async def test_use_once_and_the_stream_secret_are_shared_by_every_host(make_coordinator):
    a = await make_coordinator("host-a")
    b = await make_coordinator("host-b")
    key = "ab" * 16
    assert a.use_once(key, "WB1", ttl_s=30)
    assert a.use_once(key, "WB1", ttl_s=30) and b.use_once(key, "WB1", ttl_s=30)  # its own reconnects
    assert not b.use_once(key, "WB2", ttl_s=30) and not a.use_once(key, "WB2", ttl_s=30)
    assert not a.use_once("../../etc", "WB1", ttl_s=30)
    assert 55 <= redis.Redis.from_url(a.url).ttl("cs:used:" + key) <= 60
    secret = a.stream_secret()
    assert len(secret) == 32 and b.stream_secret() == secret
    c = await make_coordinator("host-c", start=False)
    assert c.stream_secret() == secret


async def test_a_format_choice_reaches_the_host_that_records_the_call(make_coordinator):
    a = await make_coordinator("host-a")
    b = await make_coordinator("host-b")
    pending = sid_of(7)
    a.set_format(pending, FormatChoice("mp3", 64))  # before the call: kept
    assert b.get_format(pending) == FormatChoice("mp3", 64)
    lock = b.acquire(pending)
    first = b.format_token(pending)
    assert first is not None
    a.set_format(pending, FormatChoice("flac"))  # during it, on the other host
    deadline = time.monotonic() + 2 * FAST.beat_s + 1
    while b.format_token(pending) == first and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert b.format_token(pending) != first, "the holder's heartbeat refreshes the version"
    assert b.get_format(pending) == FormatChoice("flac")
    token = b.format_token(pending)
    b.set_format(pending, FormatChoice("wav"))  # on the holder itself: at once
    assert b.format_token(pending) != token and a.get_format(pending) == FormatChoice("wav")
    lock.release()
    assert a.format_token(sid_of(8)) is None and a.get_format(sid_of(8)) is None


async def test_the_live_count_is_cluster_wide_and_forgets_a_dead_host(make_coordinator):
    a = await make_coordinator("host-a")
    b = await make_coordinator("host-b")
    locks = [a.acquire(sid_of(1)), a.acquire(sid_of(2)), b.acquire(sid_of(3))]
    assert all(locks) and a.live_count() == b.live_count() == 3
    locks[0].release()
    assert b.live_count() == 2
    await die(a)
    await asyncio.sleep(FAST.heartbeat_ttl_s + FAST.beat_s * 2)
    assert b.live_count() == 1  # a's call no longer refreshed; b's still is


async def test_while_redis_does_not_answer_calls_go_on_new_ones_are_refused_and_it_all_resumes(
        make_coordinator, redis_server):
    a = await make_coordinator("host-a")
    live = a.acquire(SID)
    a.set_format(SID, FormatChoice("ogg"))
    token = a.format_token(SID)
    redis_server.pause()
    t0 = time.perf_counter()
    with pytest.raises(CoordinationUnavailable, match="unreachable"):
        a.acquire(sid_of(2))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(100):
        with pytest.raises(CoordinationUnavailable):
            a.live_count()
    after = (time.perf_counter() - t0) / 100
    assert first < 2 * FAST.op_timeout_s, "one short timeout, not two (no retry)"
    assert after < 0.005, "then the breaker answers at once (no network)"
    # The call in progress: still live here, its format known, and it can finish and let go.
    assert a.is_live(SID) and a.format_token(SID) == token and a.get_format(SID) == FormatChoice("ogg")
    assert a.still_owner(SID, live.epoch)
    assert "unreachable" in (await a.check())
    live.release()
    await asyncio.sleep(FAST.heartbeat_ttl_s * 0.5)
    redis_server.resume()
    deadline = time.monotonic() + 3
    while await a.check() is not None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await a.check() is None
    r = redis.Redis.from_url(a.url)
    # The claim that timed out reached Redis all the same (it ran it once it went on): undone, as it
    # was never answered; and the release queued during the outage was sent.
    while (r.get("cs:owner:" + sid_of(2)) or r.get("cs:owner:" + SID)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert r.get("cs:owner:" + SID) is None and r.get("cs:owner:" + sid_of(2)) is None
    # SID was let go unfinished (no finalised marker here), so it stays open; the new call never started.
    assert r.zrange("cs:open", 0, -1) == [SID.encode()] and r.zcard("cs:live") == 0
    assert a.acquire(sid_of(2)) is not None and a.live_count() == 1


async def test_a_host_id_in_use_is_refused_and_a_restart_takes_its_calls_back(make_coordinator):
    first = await make_coordinator("host-a")
    lock = first.acquire(SID)
    twin = await make_coordinator("host-a")
    assert "in use by another live process" in (await twin.check())
    with pytest.raises(CoordinationUnavailable, match="HOST_ID"):
        twin.acquire(sid_of(2))
    await twin.aclose()
    # The same id after a crash (a container restarts with the same name and pid 1): once the old
    # heartbeat expires, the new life registers and its sweep takes the earlier life's call.
    await die(first)
    orphans = Orphans()
    again = await make_coordinator("host-a", on_orphan=orphans)
    await orphans.wait(timeout=FAST.heartbeat_ttl_s + FAST.sweep_s * 4 + 1)
    assert orphans.got[0][:2] == (SID, 2) and await again.check() is None
    assert not first.still_owner(SID, lock.epoch)


async def test_an_orphan_that_cannot_be_finished_here_stays_open_and_is_tried_later(make_coordinator):
    a = await make_coordinator("host-a")
    a.acquire(SID)
    await die(a)
    orphans = Orphans(done=False)
    b = await make_coordinator("host-b", on_orphan=orphans)
    await orphans.wait(timeout=4)
    assert SID in await b._aio.zrange("cs:open", 0, -1) and not b.is_live(SID)
    await asyncio.sleep(FAST.sweep_s * 3)
    assert len(orphans.got) == 1, "backed off"
    await orphans.wait(2, timeout=FAST.orphan_backoff_s + 2)


async def test_closing_as_redis_answers_a_beat_ends_the_heartbeat(make_coordinator):
    """CI hung here for 300 s: the close cancelled the heartbeat just as Redis answered it. On Python 3.11
    `asyncio.wait_for` then returns the answer instead of the cancel, and the heartbeat went on beating."""
    loop = asyncio.get_running_loop()
    c = await make_coordinator("host-a")
    beats: list[asyncio.Future] = []
    c._ascripts["BEAT"] = lambda **_: beats.append(loop.create_future()) or beats[-1]
    async with asyncio.timeout(5):
        while not beats:
            await asyncio.sleep(0.01)
    beats[0].set_result(1)  # the answer is in: the close below cancels the heartbeat before it resumes
    async with asyncio.timeout(5):
        await c.aclose()
    assert not c._tasks and len(beats) == 1, "no heartbeat after the close"
