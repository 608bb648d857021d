"""The picture of a call: written with the other outputs at finalisation, served live and after."""

from __future__ import annotations

import asyncio
import uuid
import xml.etree.ElementTree as ET

import httpx
import numpy as np
import pytest

from app.simulator import SimConfig, run_call

pytestmark = pytest.mark.e2e

SVG = "{http://www.w3.org/2000/svg}"


def caller_audio() -> np.ndarray:
    """4 s: silence, a 1 s tone at 1.5 s, silence."""
    x = np.zeros(4 * 8000, np.int16)
    t = np.arange(8000)
    x[12000:20000] = (np.sin(2 * np.pi * 440 * t / 8000) * 8000).astype(np.int16)
    return x


def rects(svg: str, lane: str) -> list[tuple[int, int]]:
    root = ET.fromstring(svg)
    return [(int(r.get("data-start-sample")), int(r.get("data-end-sample")))
            for r in root.iter(f"{SVG}rect") if r.get("data-lane") == lane]


async def test_the_timeline_is_written_at_finalisation_and_served_live_and_after(make_server):
    server = make_server(GREETING="tone", TRANSCRIBE="false", DEFAULT_AUDIO_FORMAT="wav")
    sid = "CA" + uuid.uuid4().hex
    call = asyncio.create_task(run_call(SimConfig(server.base, caller_audio(), speed=1.0, tail_s=0.0, call_sid=sid)))
    await asyncio.sleep(2.8)  # mid-call: the tone has been heard
    async with httpx.AsyncClient() as client:
        live = await client.get(f"{server.base}/calls/{sid}/timeline.svg")
    assert live.status_code == 200 and live.headers["content-type"].startswith("image/svg+xml")
    assert "default-src 'none'" in live.headers["content-security-policy"]
    assert rects(live.text, "assistant"), "the greeting chime is on the live picture"
    await call
    out = await asyncio.to_thread(server.result, sid)
    name = out["files"]["timeline"]
    assert name == f"call_{sid}_timeline.svg"
    on_disk = (server.responses / name).read_text()
    root = ET.fromstring(on_disk)
    assert root.get("role") == "img" and int(root.get("data-duration-samples")) == round(out["duration_s"] * 8000)
    # The shapes sit where the call's sound is: the caller's tone and the greeting's turn.
    first = out["turns"][0]
    caller, assistant = rects(on_disk, "caller"), rects(on_disk, "assistant")
    assert any(a <= first["start_sample"] + 400 and b >= first["end_sample"] - 400 for a, b in assistant), assistant
    assert len(caller) == 1 and abs((caller[0][1] - caller[0][0]) - 8000) <= 800, caller
    async with httpx.AsyncClient() as client:
        after = await client.get(f"{server.base}/calls/{sid}/timeline.svg")
        download = await client.get(f"{server.base}/calls/{sid}/files/{name}")
        unknown = await client.get(f"{server.base}/calls/CA{'0' * 32}/timeline.svg")
        bad = await client.get(f"{server.base}/calls/nope/timeline.svg")
    assert after.text == on_disk and download.content == on_disk.encode()
    assert download.headers["content-type"].startswith("image/svg+xml")
    assert unknown.status_code == 404 and bad.status_code == 400


async def test_timeline_svg_false_writes_none(make_server):
    server = make_server(GREETING="tone", TRANSCRIBE="false", TIMELINE_SVG="false")
    res = await run_call(SimConfig(server.base, caller_audio(), speed=0, tail_s=0.0))
    out = await asyncio.to_thread(server.result, res.call_sid)
    assert "timeline" not in out["files"]
    assert not (server.responses / f"call_{res.call_sid}_timeline.svg").exists()
