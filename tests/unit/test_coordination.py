"""LocalCoordinator: call ownership across processes, the live test, format choices, the shared secret."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from app.storage.coordination import FormatChoice, LocalCoordinator
from app.storage.paths import StoreLayout
from tests.support.paths import ROOT

SID = "CA" + "a" * 32

# Another process: takes the call's lock, says so, and holds it until its stdin closes.
_HOLD = """
import sys
from pathlib import Path
from app.storage.coordination import LocalCoordinator
from app.storage.paths import StoreLayout
lock = LocalCoordinator(StoreLayout(Path(sys.argv[1]))).acquire(sys.argv[2])
print("held" if lock else "refused", flush=True)
sys.stdin.read()
"""
_SECRET = """
import sys
from pathlib import Path
from app.storage.coordination import LocalCoordinator
from app.storage.paths import StoreLayout
print(LocalCoordinator(StoreLayout(Path(sys.argv[1]))).stream_secret().hex(), flush=True)
"""


def _python(code: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, text=True, stdout=subprocess.PIPE, **kw)


def coordinator(tmp_path) -> LocalCoordinator:
    return LocalCoordinator(StoreLayout(tmp_path))


@pytest.fixture
def holder(tmp_path):
    """A second process holding SID's lock on tmp_path (it exits at the end of the test)."""
    proc = _python(_HOLD, str(tmp_path), SID, stdin=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def test_one_owner_at_a_time_and_the_next_after_release(tmp_path):
    a, b = coordinator(tmp_path), coordinator(tmp_path)
    lock = a.acquire(SID)
    assert lock is not None and b.acquire(SID) is None and a.acquire(SID) is None
    assert a.is_live(SID) and b.is_live(SID)
    lock.release()
    assert not b.is_live(SID)
    again = b.acquire(SID)
    assert again is not None
    again.release()


def test_waiting_for_the_owner_blocks_until_it_releases(tmp_path):
    c = coordinator(tmp_path)
    first = c.acquire(SID)
    assert first is not None
    threading.Timer(0.2, first.release).start()
    t0 = time.monotonic()
    second = c.acquire(SID, wait=True)
    assert second is not None and time.monotonic() - t0 >= 0.15
    second.release()


def test_a_call_owned_by_another_process_is_live_here_and_not_ours(tmp_path, holder):
    c = coordinator(tmp_path)
    assert c.is_live(SID) and c.acquire(SID) is None
    holder.stdin.close()  # the holder exits: the kernel drops its lock
    holder.wait(10)
    assert not c.is_live(SID)
    lock = c.acquire(SID)
    assert lock is not None
    lock.release()


def test_a_killed_owner_frees_the_call_at_once(tmp_path, holder):
    c = coordinator(tmp_path)
    assert c.is_live(SID)
    holder.kill()
    holder.wait(10)
    assert not c.is_live(SID)


def test_looking_is_not_owning(tmp_path):
    c = coordinator(tmp_path)
    assert not c.is_live(SID)
    assert not (tmp_path / ".calls" / SID).exists()  # a look at an unknown call makes no folder
    for _ in range(50):  # probes never make an owner fail
        assert not c.is_live(SID)
        lock = c.acquire(SID)
        assert lock is not None
        lock.release()


def test_a_format_choice_round_trips_and_every_change_changes_the_token(tmp_path):
    a, b = coordinator(tmp_path), coordinator(tmp_path)
    assert a.get_format(SID) is None and a.format_token(SID) is None
    tokens = []
    for choice in (FormatChoice("mp3", 32), FormatChoice("wav"), FormatChoice("mp3", 32)):
        a.set_format(SID, choice)  # one right after another: within one tick of the file system's clock
        assert b.get_format(SID) == choice
        tokens.append(b.format_token(SID))
    assert len(set(tokens)) == 3 and b.format_token(SID) == tokens[-1]
    assert [p.name for p in (tmp_path / ".calls" / SID).iterdir() if p.suffix == ".tmp"] == []


def test_a_damaged_choice_reads_as_none(tmp_path):
    c = coordinator(tmp_path)
    c.set_format(SID, FormatChoice("wav"))
    (tmp_path / ".calls" / SID / "format.json").write_text("{not json")
    assert c.get_format(SID) is None


def test_the_stream_secret_is_made_once_private_and_shared_by_every_process(tmp_path):
    procs = [_python(_SECRET, str(tmp_path)) for _ in range(4)]  # workers starting together race to make it
    secrets = {p.communicate(timeout=30)[0].strip() for p in procs}
    assert len(secrets) == 1 and len(secrets.pop()) == 64
    here = coordinator(tmp_path).stream_secret()
    assert here == coordinator(tmp_path).stream_secret() == bytes.fromhex(
        (tmp_path / ".calls" / ".stream-secret").read_text())
    assert (tmp_path / ".calls" / ".stream-secret").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in (tmp_path / ".calls").iterdir()] == [".stream-secret"]  # no candidate left behind


def test_a_damaged_secret_stops_the_start_with_the_file_named(tmp_path):
    (tmp_path / ".calls").mkdir()
    (tmp_path / ".calls" / ".stream-secret").write_text("")
    with pytest.raises(RuntimeError, match="stream-secret"):
        coordinator(tmp_path).stream_secret()
