"""`callscribe export` and `recover` as a person runs them: real subprocesses, real recorded calls.

Bad input gets the HTTP API's own message on stderr, a non-zero exit, no traceback, and leaves
the recordings folder byte for byte as it was.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from app.simulator import SimConfig, run_call
from app.storage.paths import StoreLayout
from tests.security.helpers import RawStream, frame_bytes
from tests.support.signals import marker_signal

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

_BIN = Path(sys.executable).with_name("callscribe")
CLI = [str(_BIN)] if _BIN.exists() else [sys.executable, "-m", "app.cli"]
UNKNOWN = "CA" + "e" * 32


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    """The installed `callscribe` command, with a clean environment plus `env`, run from `cwd`."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("API_KEY", "TWILIO_AUTH_TOKEN", "DEFAULT_AUDIO_FORMAT", "KEEP_MASTERS", "CALL_MODE")}
    return subprocess.run(CLI + list(args), cwd=cwd, env=base | env, capture_output=True, text=True, timeout=120)


CATALOG_FILE = StoreLayout(Path(".")).catalog


def snapshot(root: Path) -> dict[str, str]:
    """Every folder and file under `root`, files by content hash: what "nothing was written" compares."""
    if not root.exists():
        return {}
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.name.startswith(CATALOG_FILE.name):
            # The running server's catalog: a derived index it keeps up to date by itself (SQLite
            # checkpoints, the call's own late updates), not something the CLI writes: left out.
            continue
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def settled(server, sid: str, timeout: float = 60.0) -> dict:
    """The call's JSON once finalised and no longer waiting for its transcript (it is rewritten then)."""
    deadline = time.monotonic() + timeout
    while True:
        out = server.result(sid)
        if not out.get("transcript_pending") or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def refused(r: subprocess.CompletedProcess, message: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.strip() == f"callscribe export: {message}", r.stderr
    assert "Traceback" not in r.stderr + r.stdout and r.stdout == ""


@pytest.fixture
def recorded(make_server):
    """A server (wav by default) and one finished call; the CLI shares its recordings folder."""
    server = make_server(DEFAULT_AUDIO_FORMAT="wav")
    res = asyncio.run(run_call(SimConfig(server.base, marker_signal(1.0, [0.5]), speed=0, tail_s=0)))
    settled(server, res.call_sid)
    return server, res.call_sid


def test_bad_format_is_refused_with_the_apis_message_and_the_call_keeps_its_format(recorded):
    server, sid = recorded
    env = {"RECORDINGS_DIRECTORY": str(server.responses), "DEFAULT_AUDIO_FORMAT": "wav"}
    assert httpx.post(f"{server.base}/audio/set-format/{sid}", json={"format": "ogg"}, timeout=30).status_code == 200
    before = snapshot(server.responses)
    api = httpx.post(f"{server.base}/audio/set-format/CA{'f' * 32}", json={"format": "aac"}).json()["error"]
    assert api == "unsupported format 'aac'; accepted: flac, mp3, ogg, wav"
    refused(cli(server.workdir, "export", sid, "--format", "aac", **env), api)
    api = httpx.post(f"{server.base}/audio/set-format/CA{'f' * 32}", json={"format": "wav", "bitrate": "64k"})
    assert api.status_code == 422
    refused(cli(server.workdir, "export", sid, "--format", "wav", "--bitrate", "64k", **env), api.json()["error"])
    refused(cli(server.workdir, "export", sid, "--format", "mp3", "--bitrate", "9000k", **env),
            "bitrate must be between 8k and 320k")
    refused(cli(server.workdir, "export", sid, "--bitrate", "64k", **env), "--bitrate needs --format mp3")
    assert snapshot(server.responses) == before
    # A later export without --format still uses the call's own choice (ogg), not the refused one.
    r = cli(server.workdir, "export", sid, **env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(server.responses / f"call_{sid}_conversation.ogg")
    assert json.loads((server.responses / f"call_{sid}.json").read_text())["audio"]["format"] == "ogg"


def test_unknown_and_malformed_call_sids_write_nothing(recorded, tmp_path):
    server, _ = recorded
    env = {"RECORDINGS_DIRECTORY": str(server.responses), "DEFAULT_AUDIO_FORMAT": "wav"}
    before = snapshot(server.responses)
    api = httpx.get(f"{server.base}/calls/{UNKNOWN}").json()["error"]
    assert api == f"no call {UNKNOWN} has been recorded"
    refused(cli(server.workdir, "export", UNKNOWN, **env), api)
    refused(cli(server.workdir, "export", UNKNOWN, "--format", "flac", **env), api)
    for bad in ("bad", "CA123", "CA" + "E" * 32, "../" + UNKNOWN):
        r = cli(server.workdir, "export", bad, "--format", "wav", **env)
        refused(r, "invalid call SID " + repr(bad) + ": expected a Twilio CallSid, 'CA' followed by 32 lowercase "
                   "hex digits (or a browser call id, 'WB' followed by 32 hex digits)")
        if "/" not in bad:  # the API's message for the same SID is the same
            api = httpx.post(f"{server.base}/audio/set-format/{bad}", json={"format": "wav"})
            assert api.status_code == 400 and r.stderr.strip() == "callscribe export: " + api.json()["error"]
    assert snapshot(server.responses) == before
    assert not (server.responses / ".calls" / UNKNOWN).exists()
    # With no recordings folder yet, none is created.
    empty = tmp_path / "fresh" / "responses"
    refused(cli(server.workdir, "export", UNKNOWN, "--format", "wav", RECORDINGS_DIRECTORY=str(empty)),
            f"no call {UNKNOWN} has been recorded")
    assert not empty.parent.exists()


def test_valid_export_switches_format_like_set_format_does(recorded):
    server, sid = recorded
    env = {"RECORDINGS_DIRECTORY": str(server.responses), "DEFAULT_AUDIO_FORMAT": "wav"}
    r = cli(server.workdir, "export", sid, "--format", "FLAC", **env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.strip() == str(server.responses / f"call_{sid}_conversation.flac")
    assert not (server.responses / f"call_{sid}_conversation.wav").exists()
    assert json.loads((server.responses / ".calls" / sid / "format.json").read_text()) == \
        {"format": "flac", "bitrate_kbps": None}
    r = cli(server.workdir, "export", sid, "--format", "mp3", "--bitrate", "32k", **env)
    assert r.returncode == 0, r.stderr
    out = json.loads((server.responses / f"call_{sid}.json").read_text())
    assert out["audio"]["format"] == "mp3" and out["audio"]["settings"] == "32 kbps CBR"
    assert out["recovered"] is False
    listed = httpx.get(f"{server.base}/calls/{sid}").json()
    assert listed["format"] == "mp3" and f"call_{sid}_conversation.mp3" in listed["files"]


def test_a_call_whose_masters_were_not_kept_is_refused_like_the_api_does(make_server):
    server = make_server(DEFAULT_AUDIO_FORMAT="wav", KEEP_MASTERS="false")
    res = asyncio.run(run_call(SimConfig(server.base, marker_signal(1.0, [0.5]), speed=0, tail_s=0)))
    settled(server, res.call_sid)
    before = snapshot(server.responses)
    api = httpx.post(f"{server.base}/audio/set-format/{res.call_sid}", json={"format": "flac"})
    assert api.status_code == 409
    r = cli(server.workdir, "export", res.call_sid, "--format", "flac", RECORDINGS_DIRECTORY=str(server.responses))
    refused(r, api.json()["error"])
    assert snapshot(server.responses) == before


async def test_a_call_being_recorded_is_left_alone(make_server):
    """The call stays open until the command has answered (a raw stream, stopped by the test), however long
    the command takes to start."""
    server = make_server(DEFAULT_AUDIO_FORMAT="wav")
    s = await RawStream(server).open()
    sid = s.call_sid
    assert await s.start()
    rng = np.random.default_rng(7)
    for i in range(25):
        await s.media(20 * i, frame_bytes(rng))
    async with httpx.AsyncClient() as c:
        for _ in range(100):
            if (await c.get(f"{server.base}/calls/{sid}")).status_code == 200:
                break
            await asyncio.sleep(0.05)
    r = await asyncio.to_thread(cli, server.workdir, "export", sid, "--format", "flac",
                                RECORDINGS_DIRECTORY=str(server.responses))
    assert s.still_open(), "the call must still be live when the command answers"
    assert r.returncode == 1 and "being recorded right now" in r.stderr and "Traceback" not in r.stderr
    assert not (server.responses / ".calls" / sid / "format.json").exists()
    assert await s.stop()
    await s.closed()
    assert server.result(sid)["audio"]["format"] == "wav"


@pytest.mark.parametrize("command", [["recover"], ["export", UNKNOWN]])
def test_bad_settings_and_an_unusable_folder_are_reported_without_a_traceback(tmp_path, command):
    r = cli(tmp_path, *command, RECORDINGS_DIRECTORY=str(tmp_path / "r"), DEFAULT_AUDIO_FORMAT="aac")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (f"callscribe {command[0]}: invalid setting DEFAULT_AUDIO_FORMAT: "
                                "DEFAULT_AUDIO_FORMAT='aac' is not one of ['flac', 'mp3', 'ogg', 'wav']")
    r = cli(tmp_path, *command, RECORDINGS_DIRECTORY=str(tmp_path / "r"), RECORDING_CHANNELS="three")
    assert r.returncode == 2 and "invalid setting RECORDING_CHANNELS" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r").exists()
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    r = cli(tmp_path, *command, RECORDINGS_DIRECTORY=str(a_file))
    assert r.returncode == 1 and "Not a directory" in r.stderr and "Traceback" not in r.stderr
    assert a_file.read_text() == "x"
