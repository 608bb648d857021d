"""Several `callscribe serve` hosts on one Redis: the simulator plays the load balancer.

Each host has its own HOST_ID and (unless the test is about a shared disk) its own recordings
folder. The webhook, the stream, set-format and status requests of one call go to different
hosts; Redis is paused mid-call; a host is killed mid-call and another finishes its call.
"""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import pytest
import redis
import soundfile as sf

from app.simulator import SimConfig, run_call
from tests.security.helpers import RawStream, stream_token, webhook
from tests.support.frames import new_sid
from tests.support.signals import find_markers, marker_signal

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]
FIRST_TS = 120  # ms: the simulator's first frame on the stream clock
TEMPLATE = marker_signal(0.02, [0.0])
LIVE_ELSEWHERE = "call in progress on another worker: applied at hang-up"


def stream_url(server) -> str:
    return f"ws://{server.host}:{server.port}/media-stream"


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as c:
        return await c.get(url)


async def wait_state(server, sid: str, state: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = await get(f"{server.base}/calls/{sid}")
        if r.status_code == 200 and r.json()["state"] == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"call {sid} never showed as {state} on {server.name}")


async def wait_status(url: str, status: int, timeout: float = 5.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        r = await get(url)
        if r.status_code == status or time.monotonic() > deadline:
            return r
        await asyncio.sleep(0.05)


def markers(server, out: dict) -> list[int]:
    x, rate = sf.read(str(server.responses / out["files"]["conversation"]), dtype="int16", always_2d=True)
    assert rate == 8000 and len(x) == round(out["duration_s"] * 8000)
    return find_markers(x[:, 0], TEMPLATE)


async def test_webhook_on_one_host_stream_on_another_and_set_format_on_the_first(make_host):
    a, b = make_host("host-a"), make_host("host-b")
    sid, at = new_sid(), [1.0, 3.0]
    call = asyncio.create_task(run_call(SimConfig(a.base, marker_signal(4.0, at), call_sid=sid, speed=1.0,
                                                  tail_s=0.5, stream_url=stream_url(b))))
    await wait_state(a, sid, "live")  # host a answered the webhook only: b records, and a knows it
    r = httpx.post(f"{a.base}/audio/set-format/{sid}", json={"format": "flac"})
    assert r.status_code == 200 and (r.json()["state"], r.json()["message"]) == ("live", LIVE_ELSEWHERE)
    assert (await get(f"{b.base}/calls/{sid}")).json()["state"] == "live"
    assert (await get(f"{a.base}/readyz")).json() == {"ready": True}
    res = await call
    assert not res.closed_by_server  # b accepted the stream token a issued: one secret for the cluster

    out = b.result(sid)
    assert out["audio"]["format"] == "flac" and not out["recovered"]  # chosen on a, applied by b
    assert out["duration_s"] == pytest.approx(FIRST_TS / 1000 + 4.0 + 0.5)
    assert markers(b, out) == [FIRST_TS * 8 + int(s * 8000) for s in at]  # sample-exact
    assert not list(a.responses.glob(f"call_{sid}*")), "host a recorded nothing"
    assert f"call {sid}: stream started" in b.log.read_text()
    assert (await get(f"{b.base}/calls/{sid}")).json()["state"] == "finalized"
    metrics = (await get(f"{b.base}/metrics")).text
    assert "callscribe_redis_up 1" in metrics


async def test_redis_paused_mid_call_the_call_finishes_whole_new_calls_wait(make_host, redis_server):
    a = make_host("host-a")
    sid, at = new_sid(), [1.0, 5.0]
    refused = new_sid()
    token = await asyncio.to_thread(stream_token, a, refused)  # issued while Redis answered
    call = asyncio.create_task(run_call(SimConfig(a.base, marker_signal(6.0, at), call_sid=sid, speed=1.0,
                                                  tail_s=0.5)))
    await wait_state(a, sid, "live")
    await asyncio.sleep(1.0)
    redis_server.pause()
    paused = time.monotonic()
    try:
        r = await wait_status(f"{a.base}/readyz", 503)
        assert r.status_code == 503 and not r.json()["ready"] and "unreachable" in r.json()["reasons"][0], r.text
        assert (await get(f"{a.base}/healthz")).status_code == 200  # liveness: the process serves
        busy = await asyncio.to_thread(webhook, a, new_sid())
        assert "busy" in busy.text and "<Hangup" in busy.text and "<Stream" not in busy.text
        s = await RawStream(a, call_sid=refused).open()
        await s.start(token=token)
        closed = await s.closed()
        assert closed.code == 1013 and "unreachable" in closed.reason, closed
        res = await call  # hangs up while Redis is still paused
        assert not res.closed_by_server
        out = await asyncio.to_thread(a.result, sid, 15)
        assert time.monotonic() - paused < 14, "finalised during the pause (shorter than the heartbeat's TTL)"
    finally:
        redis_server.resume()
    assert out["duration_s"] == pytest.approx(FIRST_TS / 1000 + 6.0 + 0.5) and not out["recovered"]
    assert markers(a, out) == [FIRST_TS * 8 + int(s * 8000) for s in at]
    assert (await wait_status(f"{a.base}/readyz", 200)).json() == {"ready": True}
    r = redis.Redis.from_url(redis_server.url)
    deadline = time.monotonic() + 5
    while r.exists(f"cs:owner:{sid}") and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not r.exists(f"cs:owner:{sid}") and r.zrange("cs:open", 0, -1) == [], "the release was sent once back"
    assert not r.exists(f"cs:owner:{refused}"), "the claim Redis got late was undone"
    log = a.log.read_text()
    assert log.count("is unreachable (") == 1 and log.count("reachable again") == 1  # once an outage, not a beat
    again = await run_call(SimConfig(a.base, marker_signal(1.0, [0.5]), speed=0, tail_s=0.1))
    assert a.result(again.call_sid)["duration_s"] > 1


async def test_a_host_killed_mid_call_has_its_call_finished_by_another_on_a_shared_disk(make_host):
    a = make_host("host-a", shared=True)
    b = make_host("host-b", shared=True)
    sid, at = new_sid(), [1.0, 2.0]
    call = asyncio.create_task(run_call(SimConfig(a.base, marker_signal(30.0, at), call_sid=sid, speed=1.0)))
    await wait_state(b, sid, "live")
    await asyncio.sleep(3.0)
    killed = time.monotonic()
    a.kill9()
    try:
        await asyncio.wait_for(call, 10)
    except Exception:
        pass  # the simulator sees the socket die
    out = await asyncio.to_thread(b.result, sid, 60)
    claimed_after = time.monotonic() - killed
    assert claimed_after < 60 and out["recovered"] is True, claimed_after
    log = b.log.read_text()
    assert f"call {sid}: its owner stopped (no heartbeat); claimed as epoch 2" in log
    assert (b.responses / ".calls" / sid / "epoch").read_text() == "2\n"
    assert 2.5 <= out["duration_s"] <= 4.5, out["duration_s"]  # at most ~1 s lost at the kill
    assert markers(b, out) == [FIRST_TS * 8 + int(s * 8000) for s in at]
    assert (await get(f"{b.base}/calls/{sid}")).json()["state"] == "finalized"
    assert "callscribe_orphans_claimed_total 1" in (await get(f"{b.base}/metrics")).text
    print(f"claimed and finalised {claimed_after:.1f} s after kill -9")


async def test_two_survivors_race_for_a_dead_hosts_call_and_exactly_one_finishes_it(make_host):
    """Three hosts on one shared disk; the one recording a call is killed. Both survivors sweep for
    orphans; exactly one claims the call (epoch 2) and finalises it, once."""
    a = make_host("host-a", shared=True)
    b = make_host("host-b", shared=True)
    c = make_host("host-c", shared=True)
    sid, at = new_sid(), [1.0, 2.0]
    call = asyncio.create_task(run_call(SimConfig(a.base, marker_signal(30.0, at), call_sid=sid, speed=1.0)))
    await wait_state(b, sid, "live")
    await asyncio.sleep(3.0)
    a.kill9()
    try:
        await asyncio.wait_for(call, 10)
    except Exception:
        pass  # the simulator sees the socket die
    out = await asyncio.to_thread(b.result, sid, 60)
    assert out["recovered"] is True
    await asyncio.sleep(6.0)  # another sweep round on both survivors: nobody claims it again
    claims = [(await get(f"{h.base}/metrics")).text for h in (b, c)]
    counts = [int(re.search(r"^callscribe_orphans_claimed_total (\d+)", t, re.M).group(1)) for t in claims]
    assert sorted(counts) == [0, 1], counts
    logs = b.log.read_text() + c.log.read_text()
    assert logs.count(f"call {sid}: its owner stopped (no heartbeat); claimed as epoch 2") == 1
    assert "epoch 3" not in logs
    assert markers(b, out) == [FIRST_TS * 8 + int(s * 8000) for s in at]
