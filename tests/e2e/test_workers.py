"""`callscribe serve --workers 2`: two processes on one folder, and any of them may answer any request.

The kernel picks the worker for each connection, so the test asserts outcomes, and every request
goes over a fresh connection, repeated until both workers have answered. The server log carries
each line's worker pid (`[pid]`), which tells who served what.
"""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
import soundfile as sf

from app.simulator import SimConfig, run_call
from tests.support.frames import new_sid
from tests.support.signals import find_markers, marker_signal

pytestmark = pytest.mark.e2e
FIRST_TS = 120  # ms: the simulator's first frame on the stream clock
AUDIO_S, TAIL_S, AT = 8.0, 0.5, [1.0, 3.0]  # long enough to be live through the checks on a slow machine
TEMPLATE = marker_signal(0.02, [0.0])
LIVE_HERE = "applied now; the file is ready at hang-up"
LIVE_ELSEWHERE = "call in progress on another worker: applied at hang-up"


async def _fresh(method: str, url: str, **kw) -> httpx.Response:
    """One request on a new connection (a kept-alive one would stay with one worker)."""
    async with httpx.AsyncClient(timeout=30) as c:
        return await c.request(method, url, **kw)


async def _until_both_workers(method: str, url: str, key, tries: int = 150, **kw) -> dict[object, httpx.Response]:
    """Repeat a request until two different answers by `key` (e.g. the worker's pid) were seen."""
    seen: dict[object, httpx.Response] = {}
    for _ in range(tries):
        r = await _fresh(method, url, **kw)
        seen.setdefault(key(r), r)
        if len(seen) >= 2:
            break
    return seen


async def _wait_live(base: str, sid: str) -> None:
    for _ in range(300):
        r = await _fresh("GET", f"{base}/calls/{sid}")
        if r.status_code == 200 and r.json()["state"] == "live":
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"call {sid} never showed as live")


async def test_two_workers_share_every_call_whoever_answers(make_server):
    server = make_server(workers=2, GREETING="tone", TRANSCRIBE="false", DEFAULT_AUDIO_FORMAT="wav")
    pids = await _until_both_workers("GET", server.base + "/healthz", key=lambda r: r.json()["pid"])
    assert len(pids) == 2 and server.pid not in pids, "two worker processes answer /healthz"

    sids = [new_sid() for _ in range(4)]
    chosen = sids[0]  # its format is chosen mid-call, from whichever worker answers
    calls = [asyncio.create_task(run_call(SimConfig(server.base, marker_signal(AUDIO_S, AT), call_sid=sid,
                                                    speed=1.0, tail_s=TAIL_S))) for sid in sids]
    for sid in sids:
        await _wait_live(server.base, sid)
    # set-format for a live call on either worker: the recording one applies it, the other keeps it for it.
    answers = await _until_both_workers("POST", f"{server.base}/audio/set-format/{chosen}", json={"format": "flac"},
                                        key=lambda r: (r.status_code, r.json()["state"], r.json()["message"]))
    assert set(answers) == {(200, "live", LIVE_HERE), (200, "live", LIVE_ELSEWHERE)}, answers
    # Every worker says "live" for every call, whichever records it.
    for sid in sids:
        states = {(await _fresh("GET", f"{server.base}/calls/{sid}")).json()["state"] for _ in range(6)}
        assert states == {"live"}, (sid, states)
    results = await asyncio.gather(*calls)
    assert all(not r.closed_by_server for r in results)

    for sid in sids:
        out = server.result(sid)
        ext = "flac" if sid == chosen else "wav"
        names = {f"call_{sid}_conversation.{ext}", f"call_{sid}.txt", f"call_{sid}_summary.txt", f"call_{sid}.json",
                 f"call_{sid}_timeline.svg"}
        assert {p.name for p in server.responses.glob(f"call_{sid}*")} == names
        assert out["audio"]["format"] == ext and not out["recovered"]
        assert out["duration_s"] == pytest.approx(FIRST_TS / 1000 + AUDIO_S + TAIL_S)
        x, rate = sf.read(str(server.responses / f"call_{sid}_conversation.{ext}"), dtype="int16", always_2d=True)
        assert rate == 8000 and len(x) == round(out["duration_s"] * 8000)
        assert find_markers(x[:, 0], TEMPLATE) == [FIRST_TS * 8 + int(a * 8000) for a in AT]  # sample-exact

    # After hang-up, any worker: finalised, and every file downloads whole.
    for sid in sids:
        body = (await _fresh("GET", f"{server.base}/calls/{sid}")).json()
        assert body["state"] == "finalized" and len(body["files"]) == 5  # with the timeline picture
        for name, link in body["files"].items():
            for _ in range(3):
                r = await _fresh("GET", server.base + link)
                assert r.status_code == 200 and r.content == (server.responses / name).read_bytes(), name

    log = server.log.read_text()
    served = {int(pid) for pid in re.findall(r"^\[(\d+)\] INFO: .*\"(?:GET|POST) /(?:calls|audio)/", log, re.M)}
    assert served == set(pids), f"both workers served the API: {served} vs {set(pids)}"
    # Which worker recorded each call (the webhook that issued its stream token may have been the other).
    recorded_by = {sid: int(pid) for pid, sid in re.findall(r"^\S+ \S+ \[(\d+)\] INFO callscribe.stream: call "
                                                            r"(\w+): stream started", log, re.M)}
    assert sorted(recorded_by) == sorted(sids) and set(recorded_by.values()) <= set(pids), log[-3000:]
