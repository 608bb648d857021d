"""Audio files in and out, and waiting for the call's files on the server (``httpx.MockTransport``)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from app.simulator import FilesNotReady, load_wav_8k, wait_for_call_files
from tests.simulator.fake_server import tone


def test_load_wav_8k_any_rate_and_channels(tmp_path) -> None:
    t = np.arange(16000) / 16000
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 440 * t)], axis=1)
    path = tmp_path / "in.wav"
    sf.write(path, stereo, 16000, subtype="FLOAT")
    out = load_wav_8k(path)
    assert out.dtype == np.int16 and out.ndim == 1 and abs(len(out) - 8000) <= 1
    assert 14000 < np.abs(out).max() < 17500

    path2 = tmp_path / "ulaw.wav"
    sf.write(path2, tone(0.5), 8000, subtype="ULAW")
    assert len(load_wav_8k(path2)) == 4000


def mock_calls(answers: list[tuple[int, dict[str, Any] | str]], seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        status, body = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(body, str):
            return httpx.Response(status, text=body)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handle)


SID = "CA" + "b" * 32


def test_wait_for_call_files_polls_until_finalized() -> None:
    seen: list[httpx.Request] = []
    answers = [(404, {"error": "no call"}), (200, {"state": "live"}), (200, {"state": "unfinished"}),
               (200, {"call_sid": SID, "state": "finalized", "result": {"files": {}}})]
    body = wait_for_call_files("http://h:1/", SID, headers={"X-API-Key": "k"}, timeout_s=5, interval_s=0.01,
                               transport=mock_calls(answers, seen))
    assert body["state"] == "finalized" and len(seen) == 4
    assert all(str(r.url) == f"http://h:1/calls/{SID}" and r.headers["x-api-key"] == "k" for r in seen)


def test_wait_for_call_files_gives_up_and_says_why() -> None:
    seen: list[httpx.Request] = []
    t0 = time.monotonic()
    with pytest.raises(FilesNotReady, match=r"gave up .* after 0.3 s: the call is still 'unfinished'"):
        wait_for_call_files("http://h:1", SID, timeout_s=0.3, interval_s=0.05,
                            transport=mock_calls([(200, {"state": "unfinished"})], seen))
    assert 0.3 <= time.monotonic() - t0 < 2 and len(seen) >= 3
    with pytest.raises(FilesNotReady, match="--api-key"):
        wait_for_call_files("http://h:1", SID, timeout_s=5, transport=mock_calls([(401, {"error": "key"})], seen))
    with pytest.raises(FilesNotReady, match="404"):
        wait_for_call_files("http://h:1", SID, timeout_s=0.1, interval_s=0.05, transport=mock_calls([(404, "x")], seen))

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    with pytest.raises(FilesNotReady, match="ConnectError"):
        wait_for_call_files("http://h:1", SID, timeout_s=0.1, interval_s=0.05, transport=httpx.MockTransport(down))
