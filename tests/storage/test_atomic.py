"""Files replaced whole (app/storage/atomic.py), as two writers of one file see them.

A run of the S3 tests failed with FileNotFoundError when a restarted registry and the uploads of the
one it replaced (still running after a drain that timed out) saved one call's `segments.json` at once: both wrote the same `segments.json.tmp`, and the
first rename took the other's file away.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from app.recording.segment_uploader import STATE_FILE, SegmentUploader
from app.storage.atomic import replace_text

ROUNDS = 300


def _race(*savers) -> list[BaseException]:
    errors: list[BaseException] = []
    go = threading.Barrier(len(savers))

    def run(save) -> None:
        go.wait()
        try:
            for _ in range(ROUNDS):
                save()
        except BaseException as exc:  # whatever a writer hit is the test's finding
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in savers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_two_uploaders_of_one_call_save_its_state_at_once(tmp_path: Path):
    """An old process's uploader and a restarted one's, each with its own lock, on one call folder."""
    sid = "CA" + "3" * 32
    old, new = SegmentUploader(sid, tmp_path, 8000, 8000, epoch=1), SegmentUploader(sid, tmp_path, 8000, 8000, epoch=2)
    assert _race(old.save, new.save) == []
    assert json.loads((tmp_path / STATE_FILE).read_text())["epoch"] in (1, 2)  # whole: one writer's or the other's
    assert sorted(p.name for p in tmp_path.iterdir()) == [STATE_FILE]  # no temporary file left behind


def test_a_reader_sees_the_old_text_or_the_new_never_a_part(tmp_path: Path):
    path = tmp_path / "state.json"
    texts = [json.dumps({"n": n, "pad": "x" * 20_000}) for n in range(2)]
    replace_text(path, texts[0])
    seen: set[str] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(path.read_text())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert _race(*(lambda t=t: replace_text(path, t) for t in texts)) == []
    finally:
        stop.set()
        reader.join()
    assert seen <= set(texts) and seen
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_one(tmp_path: Path):
    path = tmp_path / "state.json"
    replace_text(path, "old")
    try:
        replace_text(path, "\ud800")  # a lone surrogate: UTF-8 cannot encode it
    except UnicodeEncodeError:
        pass
    else:
        raise AssertionError("the write should have failed")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.json"]
