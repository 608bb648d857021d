"""`callscribe simulate` as the README runs it, against a real server: the caller listens to the
greeting, speaks, stays on the line until the reply has played out, and the command returns only
once the server has written the call's files."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from app.agent.receptionist import ReceptionistResponder
from app.config import Settings
from tests.e2e.test_assistant import wait_ready
from tests.support.paths import ROOT, TESTDATA

pytestmark = [pytest.mark.e2e]

SPEECH = TESTDATA / "speech"
CALLSCRIBE = ROOT / ".venv" / "bin" / "callscribe"


def simulate(*argv: str, cwd: Path, timeout: float = 60.0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEY", "TWILIO_AUTH_TOKEN")}
    return subprocess.run([str(CALLSCRIBE), "simulate", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def call_sid(stdout: str) -> str:
    m = re.search(r"^call sid:\s+(CA[0-9a-f]{32})$", stdout, re.M)
    assert m, stdout
    return m.group(1)


def four_files(server, sid: str) -> list[Path]:
    return [server.responses / f"call_{sid}{suffix}" for suffix in ("_conversation.mp3", ".txt", "_summary.txt", ".json")]


def greeting() -> str:
    """What the server's receptionist says first, with the default settings the server runs with."""
    fields = Settings.model_fields
    return ReceptionistResponder(business_name=fields["business_name"].default,
                                 assistant_name=fields["assistant_name"].default).greeting()


def voiced(x: np.ndarray, level: int = 300) -> np.ndarray:
    """Per 20 ms frame: does it hold speech (peak above `level`)?"""
    n = len(x) // 160
    return np.abs(x[: n * 160].astype(np.int32)).reshape(n, 160).max(axis=1) > level


@pytest.mark.models
def test_readme_example_hears_the_whole_greeting_and_reply(make_server, tmp_path):
    server = make_server(GREETING="assistant")  # the README's `make run`: the assistant, MP3
    wait_ready(server)
    heard_path = tmp_path / "heard.wav"
    t0 = time.monotonic()
    proc = simulate("--url", server.base, "--wav", str(SPEECH / "librivox-sense-and-sensibility-0880.wav"),
                    "--out", str(heard_path), cwd=tmp_path)
    took = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sid = call_sid(proc.stdout)
    # When simulate returns, the call's four files are there (no polling on our side).
    for path in four_files(server, sid):
        assert path.is_file() and path.stat().st_size > 0, path
    assert "call files:" in proc.stdout and f"call_{sid}_summary.txt" in proc.stdout
    assert "for the greeting: it had" in proc.stdout and "for the assistant to finish: it had" in proc.stdout

    out = json.loads((server.responses / f"call_{sid}.json").read_text())
    transcript = (server.responses / f"call_{sid}.txt").read_text()
    assistant = [t for t in out["turns"] if t["role"] == "assistant"]
    assert [t for t in out["turns"] if t["role"] == "caller"], transcript
    assert len(assistant) >= 2, transcript
    assert not any(t.get("interrupted") for t in out["turns"]), transcript
    assert "interrupted" not in transcript and out["stats"]["barge_ins"] == 0
    assert " ".join(assistant[0]["text"].split()) == greeting()  # the whole greeting, every sentence
    assert assistant[1]["text"].strip(), transcript  # a reply to the caller, in words
    assert "caller" in (out["end_reason"] or "").lower(), out["end_reason"]  # the caller hung up, after the reply

    heard, rate = sf.read(str(heard_path), dtype="int16")
    assert rate == 8000
    v = voiced(heard)
    for t in assistant:  # each turn, as the caller heard it: speech from start to end, no hole
        a, b = int(t["start_ms"]) // 20, int(t["end_ms"]) // 20
        assert b <= len(v) and v[a:b].mean() > 0.4, (t, v[a:b].mean())
        assert v[a:a + 50].any() and v[b - 50:b].any(), t  # voice in its first and last second (TTS pads ~0.5 s)
        holes = np.diff(np.flatnonzero(v[a:b]))
        assert holes.max() * 20 < 1500, t  # pauses between sentences, never a missing sentence
    # heard.wav goes on past the assistant's last words, the line quiet after them: nothing was cut
    last_voice = (len(v) - 1 - int(np.argmax(v[::-1]))) * 20
    assert last_voice >= assistant[-1]["end_ms"] - 1000
    assert len(heard) / 8 - last_voice >= 1500, (len(heard) / 8, last_voice)
    # what the caller heard is what the server sent (its assistant master, on the same stream clock)
    master = next(m for m in out["masters"] if m.endswith("outbound.wav"))
    sent, _ = sf.read(master, dtype="int16")
    w = voiced(sent)
    n = min(len(v), len(w))
    assert (v[:n] == w[:n]).mean() > 0.9 and not w[n:].any()
    # the recording lasts as long as the call (what the caller heard, stream ms 0 to hang-up)
    assert abs(out["duration_s"] - len(heard) / 8000) <= 0.25, (out["duration_s"], len(heard) / 8000)
    assert took < 40, took


def test_no_stop_and_api_key_wait_for_the_files(make_server, tmp_path):
    server = make_server(GREETING="tone", API_KEY="k-123")
    wav = SPEECH / "sr-one-two-three-44k.wav"
    fast = ("--url", server.base, "--wav", str(wav), "--speed", "0", "--speak-at", "0", "--tail", "0", "--out", "")
    # Dropping the socket instead of `stop`: the command still waits for the server's files.
    proc = simulate(*fast, "--no-stop", "--api-key", "k-123", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "socket dropped" in proc.stdout
    for path in four_files(server, call_sid(proc.stdout)):
        assert path.is_file(), path
    # Without the server's API key it cannot tell: it says so and exits non-zero.
    proc = simulate(*fast, "--files-timeout", "5", cwd=tmp_path)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "--api-key" in proc.stderr and "API key" in proc.stderr
