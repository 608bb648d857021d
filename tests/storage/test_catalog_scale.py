"""The catalog at size and under several writers: 10,000 calls paged, filtered, sorted and searched
within 100 ms a query, and processes writing the same file at once without corrupting it."""

from __future__ import annotations

import multiprocessing
import random
import sqlite3
import statistics
import time
from pathlib import Path

import pytest

from app.storage.catalog import SORT_KEYS
from app.storage.sqlite_catalog import SqliteCatalog

N = 10_000
T0 = 1.75e9
WORDS = ("order refund parcel delivery invoice account password address appointment payment card balance "
         "cancel change number opening hours thanks hello help please today tomorrow week").split()


def _result(i: int, rng: random.Random) -> dict:
    sid = ("WB" if i % 10 == 0 else "CA") + f"{i:032x}"
    said = [" ".join(rng.choices(WORDS, k=12)) for _ in range(rng.randint(2, 12))]
    if i % 100 == 7:
        said.append("my zeppelin arrived broken")  # a rare word: 100 calls
    turns = [{"role": ("caller", "assistant")[k % 2], "text": t} for k, t in enumerate(said)]
    return {"call_sid": sid, "mode": "listen" if i % 7 == 0 else "assistant", "source": None,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + i * 300)),
            "completed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + i * 300 + 90)),
            "duration_s": rng.uniform(5, 900), "end_reason": "caller hung up (stop)", "recovered": i % 50 == 0,
            "audio": {"format": "mp3", "bytes": rng.randint(10_000, 9_000_000)}, "turns": turns,
            "stats": {"turns": len(turns), "barge_ins": rng.randint(0, 4),
                      "response_latency": {"median_ms": rng.uniform(200, 2000)}},
            "warnings": [], "files": {"json": f"call_{sid}.json"}, "from_last4": f"{i % 10000:04d}"}


class Results:
    """A CatalogSource of synthetic results: finalised calls without their audio."""

    def __init__(self, n: int) -> None:
        rng = random.Random(11)
        self.results = {r["call_sid"]: r for r in (_result(i, rng) for i in range(n))}

    def result_sids(self) -> set[str]:
        return set(self.results)

    def read_result(self, sid: str) -> dict | None:
        return self.results.get(sid)

    def result_modified(self, sid: str) -> float | None:
        return T0 if sid in self.results else None

    def has_started(self, sid: str) -> bool:
        return sid in self.results

    def is_finalized(self, sid: str) -> bool:
        return sid in self.results


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> SqliteCatalog:
    catalog = SqliteCatalog(tmp_path_factory.mktemp("big") / "catalog.sqlite3")
    t = time.perf_counter()
    catalog.refresh(Results(N))
    print(f"\n{N} calls catalogued (rebuild) in {time.perf_counter() - t:.2f} s")
    return catalog


QUERIES = {
    "first page": {},
    "last page": {"offset": N - 50},
    "one day, finalized phone calls, shortest first": {
        "since": T0 + 2 * 86400, "until": T0 + 3 * 86400, "status": "finalized", "source": "phone",
        "sort": "duration_s", "descending": False},
    "a week of listen calls by latency": {"since": T0, "until": T0 + 7 * 86400, "mode": "listen", "sort": "latency"},
    "search a common word, largest first": {"text": "refund", "sort": "size"},
    "search a common word, page 40": {"text": "invoice payment", "offset": 2000},
    "search a rare word": {"text": "zeppelin"},
    "search a rare word, finalised or failed, by barge-ins": {"text": "zepp", "status": ["finalized", "failed"],
                                                   "sort": "barge_ins"},
    **{f"sorted by {key}, page 100": {"sort": key, "offset": 4950} for key in SORT_KEYS},
}


@pytest.mark.parametrize("name", list(QUERIES))
def test_ten_thousand_calls_page_filter_sort_and_search_within_100_ms(big, name):
    kwargs = QUERIES[name]
    big.query(**kwargs)  # warm-up
    times = []
    for _ in range(5):
        t = time.perf_counter()
        rows, total = big.query(**kwargs)
        times.append((time.perf_counter() - t) * 1000)
    median = statistics.median(times)
    print(f"  {name}: median {median:.1f} ms, worst {max(times):.1f} ms ({total} match, {len(rows)} shown)")
    assert min(times) < 100, f"{name}: {times} ms"  # the query's own cost; a busy machine slows every run
    assert len(rows) == max(0, min(kwargs.get("limit", 50), total - kwargs.get("offset", 0)))


def test_the_filters_select_what_they_say_at_size(big):
    rows, total = big.query(text="zeppelin", limit=200)
    assert total == N // 100 and all(int(r["sid"][2:], 16) % 100 == 7 for r in rows)
    rows, total = big.query(source="browser", status="recovered", limit=200)
    assert total == len([i for i in range(N) if i % 10 == 0 and i % 50 == 0])
    assert all(r["source"] == "browser" and r["status"] == "recovered" for r in rows)
    assert big.count() == N


# ---------------------------------------------------------------------------------- several processes
def _write(path: str, worker: int, n: int, start: multiprocessing.Event) -> None:
    """One worker process: live rows, finalisations, deletions and reads, as fast as it can."""
    catalog = SqliteCatalog(Path(path))
    rng = random.Random(worker)
    start.wait()
    for i in range(n):
        r = _result(worker * 100_000 + i, rng)
        catalog.mark_live(r["call_sid"], started_at=T0, source="phone", mode="assistant", from_last4="1234")
        catalog.upsert(r)
        if i % 10 == 9:
            catalog.delete(r["call_sid"])
        if i % 25 == 0:
            catalog.query(text="refund", sort="latency")


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_processes_writing_at_once_leave_a_whole_file(tmp_path, method):
    path = tmp_path / "catalog.sqlite3"
    catalog = SqliteCatalog(path)
    catalog.count()  # the parent has it open too (a forked child must not use the parent's connection)
    ctx = multiprocessing.get_context(method)
    start = ctx.Event()
    n = 300
    workers = [ctx.Process(target=_write, args=(str(path), w, n, start)) for w in range(1, 4)]
    for p in workers:
        p.start()
    start.set()
    t = time.perf_counter()
    for p in workers:
        p.join(120)
    print(f"\n3 processes × {n} calls ({method}) in {time.perf_counter() - t:.2f} s")
    assert [p.exitcode for p in workers] == [0, 0, 0]
    assert catalog.count() == 3 * (n - n // 10)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.execute("INSERT INTO transcripts (transcripts) VALUES ('integrity-check')")  # raises when corrupt
        assert conn.execute("SELECT count(*) FROM transcripts").fetchone()[0] == 3 * (n - n // 10)
    assert catalog.query(status="live")[1] == 0
