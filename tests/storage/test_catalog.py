"""The call catalog: rows made by finalisation, rebuilt from the call folders, searched, filtered and
kept consistent while calls are finalised."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

import pytest

from app.recording.audio_outputs import ExportOptions
from app.recording.finalize import FinalizeIncomplete, finalize_call, rewrite_transcript
from app.recording.journal import append_once
from app.storage import sqlite_catalog
from app.storage.catalog import CatalogBusy, CatalogQueryError
from app.storage.coordination import FormatChoice
from app.storage.sqlite_catalog import SqliteCatalog
from app.storage.store import CallStore
from tests.storage.calls import finalised, record
from tests.support.frames import new_sid

T0 = 1.75e9  # 2025-06-15T15:06:40Z
DAY = 86400.0


class NoCatalog:
    """A catalog that keeps nothing: calls finalised without one, for a rebuild to find."""

    def __getattr__(self, name):
        return lambda *a, **k: None


class BrokenCatalog:
    def upsert(self, *a, **k):
        raise sqlite3.OperationalError("disk I/O error")


def _rows(catalog) -> dict[str, dict]:
    rows, total = catalog.query(limit=200)
    assert total == len(rows)
    return {r["sid"]: {k: v for k, v in r.items() if k != "updated_at"} for r in rows}


@pytest.fixture
def store(tmp_path) -> CallStore:
    return CallStore(tmp_path / "responses")


# ---------------------------------------------------------------------------------- rows from finalisation
def test_a_finalised_call_gets_its_row_from_its_result(store):
    sid = new_sid()
    result = finalised(store, sid, started=T0, seconds=2.0, texts=("my order never came", "sorry, let me check"),
                       barge_in=True, from_last4="0123", latency_ms=350.0)
    row = store.catalog.get(sid)
    assert row["started_at"] == T0 and row["completed_at"] == T0 + 2.0 and row["duration_s"] == 2.0
    assert (row["source"], row["mode"], row["status"], row["status_reason"]) == (
        "phone", "assistant", "finalized", "caller hung up (stop)")
    assert (row["format"], row["size_bytes"]) == ("wav", result["audio"]["bytes"]) and row["size_bytes"] > 32000
    assert (row["turns"], row["barge_ins"], row["latency_ms"], row["from_last4"]) == (2, 1, 350.0, "0123")
    assert row["files"] == result["files"] and row["warnings"] == [] and row["recovered"] is False
    assert result["from_last4"] == "0123"  # the JSON says it too: the catalog is rebuilt from it


def test_recovered_listen_and_browser_calls_say_so(store):
    crashed, listen, browser = new_sid(), new_sid(), new_sid("WB")
    finalised(store, crashed, recovered=True)
    finalised(store, listen, mode="listen")
    finalised(store, browser)
    rows = _rows(store.catalog)
    assert rows[crashed]["status"] == "recovered" and rows[crashed]["status_reason"] == "server stopped (crash)"
    assert rows[listen]["mode"] == "listen" and rows[browser]["source"] == "browser"
    assert rows[browser]["from_last4"] is None


def test_a_transcript_rewrite_and_a_reexport_update_the_row(store):
    sid = new_sid()
    finalised(store, sid, opts=ExportOptions(default_format="wav", keep_masters=True))
    assert store.catalog.query(text="invoice")[1] == 0
    append_once(store.files(sid).journal, "turn", role="caller", text="about my invoice", start_ms=900, end_ms=990,
                start_sample=7200, end_sample=7920, interrupted=False)
    rewrite_transcript(store, sid)
    assert [r["sid"] for r in store.catalog.query(text="invoice")[0]] == [sid]
    store.coordinator.set_format(sid, FormatChoice("flac"))
    result = finalize_call(store, sid, ExportOptions(default_format="wav", keep_masters=True))
    row = store.catalog.get(sid)
    assert (row["format"], row["size_bytes"], row["turns"]) == ("flac", result["audio"]["bytes"], 3)


def test_a_finalisation_without_audio_is_failed_until_recovery_finishes_it(store, monkeypatch):
    from tests.unit.test_finalize import _failing_finish

    sid = new_sid()
    record(store, sid)
    _failing_finish(monkeypatch, {"flac", "wav"})
    with pytest.raises(FinalizeIncomplete):
        finalize_call(store, sid, ExportOptions(default_format="flac"))
    row = store.catalog.get(sid)
    assert row["status"] == "failed" and row["status_reason"] == (
        "the flac encoder failed: OSError: [Errno 28] No space left on device")
    monkeypatch.undo()
    finalize_call(store, sid, ExportOptions(default_format="flac"), recovered=True)
    assert store.catalog.get(sid)["status"] == "recovered"


def test_a_catalog_that_cannot_be_written_never_fails_a_finalisation(store, caplog):
    store.catalog.refresh(store)
    real, store.catalog = store.catalog, BrokenCatalog()
    sid = new_sid()
    with caplog.at_level(logging.WARNING, "callscribe.finalize"):
        result = finalised(store, sid)
    assert result["audio"]["format"] == "wav" and store.is_finalized(sid)
    assert f"call {sid}: the catalog was not updated (OperationalError)" in caplog.text
    store.catalog = real
    assert "1 recorded call(s) missing" in real.stale_reason(store)
    real.refresh(store)
    assert real.get(sid)["status"] == "finalized" and real.stale_reason(store) is None


# ---------------------------------------------------------------------------------- rebuild and staleness
def test_a_rebuild_from_the_call_folders_gives_the_rows_finalisation_wrote(store, tmp_path):
    for i, sid in enumerate([new_sid(), new_sid(), new_sid("WB"), new_sid()]):
        finalised(store, sid, started=T0 + i * 60, from_last4=f"{i:04d}", barge_in=i % 2 == 1,
                  mode="listen" if i == 3 else "assistant")
    finalised(store, new_sid(), recovered=True, started=T0 + 500)
    fresh = SqliteCatalog(tmp_path / "elsewhere" / "catalog.sqlite3")
    assert fresh.stale_reason(store) == "the catalog file is missing"
    assert fresh.refresh(store) == "the catalog file is missing"
    assert _rows(fresh) == _rows(store.catalog) and len(_rows(fresh)) == 5
    assert fresh.stale_reason(store) is None and fresh.refresh(store) is None


def test_a_catalog_is_stale_when_results_change_or_go_and_a_refresh_fixes_it(store):
    a, b, c = new_sid(), new_sid(), new_sid()
    for sid in (a, b):
        finalised(store, sid)
    store.catalog.refresh(store)  # built once: from here only differences make it stale
    assert store.catalog.stale_reason(store) is None
    # A result rewritten while the catalog could not be written; one deleted by hand; one added.
    real, store.catalog = store.catalog, NoCatalog()
    time.sleep(0.02)  # past the file system clock's tick
    rewrite_transcript(store, a)
    store.catalog = real
    assert store.catalog.stale_reason(store) == "1 call(s) written after their catalog row"
    store.output(b, "json").unlink()
    store.catalog = NoCatalog()
    finalised(store, c)
    store.catalog = real
    assert store.catalog.stale_reason(store) == (
        "1 recorded call(s) missing from the catalog, 1 row(s) for calls no longer recorded")
    store.catalog.refresh(store)
    assert set(_rows(store.catalog)) == {a, c} and store.catalog.stale_reason(store) is None


def test_a_file_of_another_schema_version_is_emptied_and_rebuilt(store, tmp_path):
    sid = new_sid()
    finalised(store, sid)
    path = store.layout.catalog
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '0' WHERE key = 'schema_version'")
    reopened = SqliteCatalog(path)
    assert reopened.count() == 0 and reopened.stale_reason(store) == "the catalog was never built with this schema"
    reopened.refresh(store)
    assert reopened.get(sid)["status"] == "finalized"


def test_live_rows_are_replaced_by_finalisation_and_kept_by_a_rebuild_only_while_unfinished(store):
    sid, crashed, gone = new_sid(), new_sid(), new_sid()
    for s in (sid, crashed, gone):
        store.catalog.mark_live(s, started_at=T0, source="phone", mode="assistant", from_last4="+15005550006")
        record(store, s, stopped=False)
    assert store.catalog.get(sid)["status"] == "live" and store.catalog.get(sid)["from_last4"] == "0006"
    finalize_call(store, sid, ExportOptions(default_format="wav"))
    store.catalog.mark_live(sid, started_at=T0, source="phone", mode="assistant")  # late: changes nothing
    assert store.catalog.get(sid)["status"] == "finalized"
    for p in store.files(gone).folder.iterdir():  # the folder of a call deleted by hand
        p.unlink()
    store.files(gone).folder.rmdir()
    assert store.catalog.stale_reason(store) == "the catalog was never built with this schema"
    store.catalog.refresh(store)
    assert store.catalog.get(crashed)["status"] == "live" and store.catalog.get(gone) is None
    assert store.catalog.query(status="live")[1] == 1


# ---------------------------------------------------------------------------------- search, numbers, deletion
def test_search_finds_words_of_the_transcript(store):
    refund, other = new_sid(), new_sid()
    finalised(store, refund, texts=("I would like a refund for my café order", "of course"))
    finalised(store, other, texts=("what are your opening hours", "nine to five"))
    found = lambda text: [r["sid"] for r in store.catalog.query(text=text)[0]]  # noqa: E731
    assert found("refund") == [refund] and found("REFUND") == [refund]
    assert found("refu") == [refund]  # a word's start
    assert found("cafe") == [refund]  # without its accent
    assert found("refund café") == [refund] and found("refund hours") == []  # every word must occur
    assert found("nine") == [other] and found("caller") == []  # what was said, not the roles


def test_search_works_without_fts5_too(tmp_path, monkeypatch):
    monkeypatch.setattr(sqlite_catalog, "_FTS", "CREATE VIRTUAL TABLE transcripts USING no_such_module(text)")
    store = CallStore(tmp_path / "responses")
    sid = new_sid()
    finalised(store, sid, texts=("refund_request 100% please",))
    with sqlite3.connect(store.layout.catalog) as conn:
        assert dict(conn.execute("SELECT key, value FROM meta").fetchall())["search"] == "like"
    assert [r["sid"] for r in store.catalog.query(text="fund")[0]] == [sid]
    assert store.catalog.query(text="100 please")[1] == 1 and store.catalog.query(text="refunds")[1] == 0


def test_only_the_last_four_digits_of_a_number_are_ever_stored(store):
    sid = new_sid()
    finalised(store, sid, from_last4="+1 (415) 555-0123")  # a whole number where four digits belong
    store.catalog.mark_live(new_sid(), started_at=T0, source="phone", mode="assistant", from_last4="+14155550987")
    assert store.catalog.get(sid)["from_last4"] == "0123"
    store.catalog.close()
    on_disk = b"".join(p.read_bytes() for p in store.layout.calls_dir.glob("catalog.sqlite3*"))
    assert b"0123" in on_disk and b"0987" in on_disk
    for whole in (b"4155550123", b"555-0123", b"4155550987"):
        assert whole not in on_disk
    with pytest.raises(sqlite3.IntegrityError):  # and the schema refuses anything but four digits
        with sqlite3.connect(store.layout.catalog) as conn:
            conn.execute("UPDATE calls SET from_last4 = '4155550123'")


def test_the_catalog_file_is_not_world_readable(store):
    finalised(store, new_sid())
    for p in store.layout.calls_dir.glob("catalog.sqlite3*"):
        assert not p.stat().st_mode & 0o007, p.name


def test_deleting_a_call_removes_its_row_and_its_text(store):
    keep, gone = new_sid(), new_sid()
    finalised(store, keep, texts=("parcel",))
    finalised(store, gone, texts=("parcel",))
    store.catalog.delete(gone)
    assert store.catalog.get(gone) is None and store.catalog.count() == 1
    assert [r["sid"] for r in store.catalog.query(text="parcel")[0]] == [keep]
    store.catalog.delete(gone)  # twice: no error


# ---------------------------------------------------------------------------------- queries
def test_filters_sorts_and_pages(store):
    sids = [new_sid() for _ in range(6)]
    for i, sid in enumerate(sids):
        finalised(store, sid, started=T0 + i * DAY, seconds=1.0 + i % 3, texts=("a", "b", "c")[: 1 + i % 3],
                  recovered=i == 5, mode="listen" if i == 4 else "assistant")
    q = store.catalog.query
    assert [r["sid"] for r in q()[0]] == sids[::-1]  # newest first
    assert [r["sid"] for r in q(since=T0 + DAY, until=T0 + 3 * DAY)[0]] == [sids[2], sids[1]]
    assert [r["sid"] for r in q(status="recovered")[0]] == [sids[5]]
    assert q(status=["finalized", "recovered"])[1] == 6 and q(status="failed")[1] == 0
    assert [r["sid"] for r in q(mode="listen")[0]] == [sids[4]] and q(source="browser")[1] == 0
    by_length = [r["duration_s"] for r in q(sort="duration_s", descending=False)[0]]
    assert by_length == sorted(by_length)
    page1, total = q(sort="turns", limit=4)
    page2, _ = q(sort="turns", limit=4, offset=4)
    assert total == 6 and len(page1) == 4 and len(page2) == 2
    assert {r["sid"] for r in page1 + page2} == set(sids)  # no row twice, none left out
    assert [r["turns"] for r in page1 + page2] == sorted((r["turns"] for r in page1 + page2), reverse=True)


@pytest.mark.parametrize("kwargs, message", [
    ({"sort": "caller"}, "sort 'caller' is not accepted; accepted: started_at, duration_s, turns, barge_ins, "
                         "latency, size"),
    ({"status": "done"}, "status 'done' is not accepted; accepted: live, finalized, recovered, failed"),
    ({"source": "sip"}, "source 'sip' is not accepted; accepted: phone, browser"),
    ({"mode": "x"}, "mode 'x' is not accepted; accepted: assistant, listen"),
    ({"limit": 0}, "limit 0 is not accepted; accepted: 1 to 200"),
    ({"limit": 201}, "accepted: 1 to 200"),
    ({"offset": -1}, "offset -1 is not accepted; accepted: 0 or more"),
    ({"text": "?!"}, "the search text '?!' has no words"),
    ({"text": "x" * 201}, "at most 200"),
])
def test_a_value_the_catalog_does_not_accept_is_refused_with_what_it_accepts(store, kwargs, message):
    with pytest.raises(CatalogQueryError) as err:
        store.catalog.query(**kwargs)
    assert message in str(err.value)


def test_a_call_finalised_while_listings_run_leaves_every_page_consistent(store):
    for i in range(20):
        finalised(store, new_sid(), started=T0 + i)
    problems: list[str] = []
    stop = threading.Event()

    def list_pages() -> None:
        while not stop.is_set():
            try:
                offset = 0
                while True:
                    rows, total = store.catalog.query(limit=7, offset=offset)
                    if len(rows) != max(0, min(7, total - offset)):
                        problems.append(f"{len(rows)} rows at {offset} of {total}")
                    starts = [r["started_at"] for r in rows]
                    if starts != sorted(starts, reverse=True):
                        problems.append(f"unsorted page {starts}")
                    offset += 7
                    if offset >= total:
                        break
            except Exception as exc:  # any error is a failure of the test
                problems.append(repr(exc))

    readers = [threading.Thread(target=list_pages) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for i in range(15):  # finalised, with their rows written, while the readers page
            finalised(store, new_sid(), started=T0 + 100 + i)
    finally:
        stop.set()
        for t in readers:
            t.join()
    assert problems == []
    assert store.catalog.query()[1] == 35


def test_a_quick_live_mark_gives_up_at_once_on_a_busy_catalog(store):
    store.catalog.count()
    writer = sqlite3.connect(store.layout.catalog, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        t = time.perf_counter()
        with pytest.raises(CatalogBusy):
            store.catalog.mark_live(new_sid(), started_at=T0, source="phone", mode="assistant", quick=True)
        assert time.perf_counter() - t < 0.5
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    sid = new_sid()
    store.catalog.mark_live(sid, started_at=T0, source="phone", mode="assistant", quick=True)
    assert store.catalog.get(sid)["status"] == "live"


def test_a_damaged_catalog_is_moved_aside_and_rebuilt(store, caplog):
    sid = new_sid()
    finalised(store, sid)
    store.catalog.close()
    path = store.layout.catalog
    for suffix in ("-wal", "-shm"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)
    path.write_bytes(b"this is no database" * 300)
    reopened = SqliteCatalog(path, store.layout.catalog_lock)
    assert reopened.refresh(store).startswith("the catalog file is damaged (file is not a database)")
    assert reopened.get(sid)["status"] == "finalized"
    assert path.with_name("catalog.sqlite3.damaged").read_bytes().startswith(b"this is no database")


def test_a_catalog_deleted_while_in_use_is_made_again_not_written_to_the_deleted_file(store):
    finalised(store, new_sid())
    for p in store.layout.calls_dir.glob("catalog.sqlite3*"):
        p.unlink()
    sid = new_sid()
    finalised(store, sid)
    assert store.layout.catalog.exists() and [r["sid"] for r in store.catalog.query()[0]] == [sid]
    assert store.catalog.stale_reason(store).startswith("the catalog was never built")
