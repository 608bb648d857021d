"""S3Artefacts against a real S3 server: a call's files committed once, read from any host, deleted.

Two "hosts" are two spools (folders) on one bucket: what one commits the other serves."""

from __future__ import annotations

import json
import os
import resource
import time

import pytest

from app.storage.paths import CallNotFound
from app.storage.s3_artefacts import S3Artefacts
from app.storage.s3_bucket import AlreadyCommitted, Bucket
from tests.support.frames import new_sid


@pytest.fixture
def bucket(s3_cfg) -> Bucket:
    return Bucket(s3_cfg)


def host(tmp_path, name: str, bucket: Bucket) -> S3Artefacts:
    root = tmp_path / name
    root.mkdir()
    return S3Artefacts(root, bucket, host=name)


def write_call(a: S3Artefacts, sid: str, audio: bytes, text: str = "hello") -> dict[str, bytes]:
    """A finished call's files in a host's spool, written as finalisation writes them."""
    conv = f"call_{sid}_conversation.wav"
    a.local_path(conv).write_bytes(audio)
    a.publish(conv)
    a.write_text(f"call_{sid}.txt", text + "\n")
    a.write_text(f"call_{sid}_summary.txt", "=== CALL SUMMARY ===\n")
    a.write_text(f"call_{sid}.json", json.dumps({"call_sid": sid, "text": text}))
    return {n: a.local_path(n).read_bytes() for n in a.outputs(sid)}


def test_a_commit_publishes_the_calls_files_under_their_names_and_any_host_reads_them(tmp_path, bucket):
    a, b = host(tmp_path, "a", bucket), host(tmp_path, "b", bucket)
    sid = new_sid()
    audio = os.urandom(3 * 1024 * 1024 + 123)  # several stream chunks
    files = write_call(a, sid, audio)
    a.local_path(f"call_{sid}_conversation.mp3.partial").write_bytes(b"half")  # staged: never uploaded

    done = a.commit(sid, "e000-aaaa", epoch=0)

    assert done.committed and set(done.files) == set(files)
    for name, body in files.items():  # the names of responses/, under S3_PREFIX
        got = bucket.get(bucket.output_key(name))
        assert got is not None and got[0] == body
    final = json.loads(bucket.get(bucket.final_key(sid))[0])
    assert final["attempt"] == "e000-aaaa" and final["host"] == "a" and final["files"][f"call_{sid}.json"] > 0
    assert not [o for o in bucket.list(bucket.call_prefix(sid)) if "/out/" in o.key]  # staged copies gone
    assert bucket.head(bucket.output_key(f"call_{sid}_conversation.mp3.partial")) is None

    # Host b has nothing local: it reads the bucket.
    assert b.list(sid) == sorted(files)
    assert json.loads(b.read_text(f"call_{sid}.json"))["call_sid"] == sid
    info = b.stat(sid, f"call_{sid}_conversation.wav")
    assert info.path is None and info.size == len(audio)
    with b.open(sid, f"call_{sid}_conversation.wav") as f:
        assert f.read() == audio
    with pytest.raises(CallNotFound):
        b.stat(sid, f"call_{sid}_other.wav")
    with pytest.raises(CallNotFound):
        b.stat(sid, f"call_{new_sid()}.json")  # another call's name is never this call's file
    # Host a serves its own spool (a local path: ranges, sendfile).
    assert a.stat(sid, f"call_{sid}.json").path == a.local_path(f"call_{sid}.json")


def test_downloads_stream_the_body_a_chunk_at_a_time(tmp_path, bucket):
    a, b = host(tmp_path, "a", bucket), host(tmp_path, "b", bucket)
    sid = new_sid()
    audio = os.urandom(4 * 1024 * 1024)
    write_call(a, sid, audio)
    a.commit(sid, "e000-s")
    pulled = []
    real = bucket.stream

    def counting(key, chunk=64 * 1024):
        for c in real(key, chunk):
            pulled.append(len(c))
            yield c

    bucket.stream = counting  # type: ignore[method-assign]
    f = b.open(sid, f"call_{sid}_conversation.wav")
    first = f.read(65536)
    assert first == audio[:65536]
    assert sum(pulled) < 1024 * 1024, "the whole body was fetched for the first 64 kB"
    rest = b"".join(iter(lambda: f.read(65536), b""))
    f.close()
    assert first + rest == audio and len(pulled) > 10


def test_the_second_commit_keeps_the_first_and_uploads_nothing(tmp_path, bucket):
    a, b = host(tmp_path, "a", bucket), host(tmp_path, "b", bucket)
    sid = new_sid()
    theirs = write_call(a, sid, b"A" * 5000, "from a")
    write_call(b, sid, b"B" * 7000, "from b")
    assert a.commit(sid, "e001-aaaa", epoch=1).committed

    again = b.commit(sid, "e002-bbbb", epoch=2)

    assert not again.committed and again.theirs == "e001-aaaa"
    for name, body in theirs.items():
        assert bucket.get(bucket.output_key(name))[0] == body
    assert not bucket.list(bucket.call_prefix(sid) + "out/")


def test_a_commit_race_lost_at_the_conditional_write_412_keeps_theirs(tmp_path, bucket):
    """Both hosts saw no commit and staged their files; a's final.json lands first, b's create gets
    412 (If-None-Match: *): b's staged files go, a's set stands."""
    a, b = host(tmp_path, "a", bucket), host(tmp_path, "b", bucket)
    sid = new_sid()
    theirs = write_call(a, sid, b"A" * 5000, "from a")
    write_call(b, sid, b"B" * 7000, "from b")
    real = b._manifest
    calls = []

    def blind_then_real(s):
        calls.append(s)
        if len(calls) == 1:  # b's first look happens before a commits
            assert a.commit(sid, "e001-aaaa", epoch=1).committed
            return {}, None
        return real(s)

    b._manifest = blind_then_real  # type: ignore[method-assign]
    lost = b.commit(sid, "e002-bbbb", epoch=2)
    assert not lost.committed and lost.theirs == "e001-aaaa"
    for name, body in theirs.items():
        assert bucket.get(bucket.output_key(name))[0] == body
    assert not bucket.list(bucket.call_prefix(sid) + "out/")
    with pytest.raises(AlreadyCommitted):  # the raw conditional write, for the record
        bucket.create(bucket.final_key(sid), b"{}")


def test_a_commit_cut_before_its_copy_is_served_from_staging_and_finished_by_a_retry(tmp_path, bucket):
    a, c = host(tmp_path, "a", bucket), host(tmp_path, "c", bucket)
    sid = new_sid()
    files = write_call(a, sid, os.urandom(10000))
    real_finish = a._finish
    a._finish = lambda *args: (_ for _ in ()).throw(OSError("host died after its commit"))  # type: ignore
    with pytest.raises(OSError):
        a.commit(sid, "e000-cut")
    assert bucket.head(bucket.output_key(f"call_{sid}.json")) is None  # not copied yet
    assert json.loads(c.read_text(f"call_{sid}.json"))["call_sid"] == sid  # followed final.json to staging
    with c.open(sid, f"call_{sid}_conversation.wav") as f:
        assert f.read() == files[f"call_{sid}_conversation.wav"]
    a._finish = real_finish  # type: ignore[method-assign]
    assert a.commit(sid, "e000-cut").committed  # the same attempt: finds its commit, finishes the copy
    assert bucket.get(bucket.output_key(f"call_{sid}.json"))[0] == files[f"call_{sid}.json"]
    assert not bucket.list(bucket.call_prefix(sid) + "out/")


def test_replace_swaps_the_set_and_drops_names_the_new_one_lacks(tmp_path, bucket):
    a = host(tmp_path, "a", bucket)
    sid = new_sid()
    write_call(a, sid, b"W" * 4000)
    a.commit(sid, "e000-1")
    a.delete(f"call_{sid}_conversation.wav")  # a format change: the WAV goes locally, an OGG comes
    a.local_path(f"call_{sid}_conversation.ogg").write_bytes(b"OggS" * 100)
    assert bucket.head(bucket.output_key(f"call_{sid}_conversation.wav")) is not None  # reconciled at the commit
    assert a.commit(sid, "e000-2", replace=True).committed
    assert bucket.head(bucket.output_key(f"call_{sid}_conversation.wav")) is None
    assert bucket.get(bucket.output_key(f"call_{sid}_conversation.ogg"))[0] == b"OggS" * 100
    assert json.loads(bucket.get(bucket.final_key(sid))[0])["attempt"] == "e000-2"


def test_deleting_the_result_deletes_the_call_from_the_bucket(tmp_path, bucket):
    a, b = host(tmp_path, "a", bucket), host(tmp_path, "b", bucket)
    sid = new_sid()
    write_call(a, sid, b"x" * 100)
    bucket.put(bucket.segment_key(sid, 0, 0, "wav"), b"segment")
    a.commit(sid, "e000-d")
    for name in b.list(sid):  # what DELETE /calls/{sid} does on a host without the call's files
        b.delete(name)
    assert not bucket.list(bucket.output_key(f"call_{sid}")) and not bucket.list(bucket.call_prefix(sid))
    assert b.list(sid) == []


def test_a_small_put_costs_well_under_a_millisecond_of_cpu(bucket, capsys):
    """The issue's budget: 200 calls × one segment and one journal delta per 10 s under 2 % of a core."""
    body = os.urandom(16 * 1024)
    for i in range(10):  # warm the connection pool
        bucket.put(f"{bucket.prefix}warm/{i}", body)
    n = 200
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    for i in range(n):
        bucket.put(f"{bucket.prefix}cpu/{i}", body)
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - t0
    cpu_ms = ((r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)) / n * 1000
    with capsys.disabled():
        print(f"\n16 kB PUT: {cpu_ms:.3f} ms CPU, {wall / n * 1000:.2f} ms wall each (obstore, sync, one thread)")
    assert cpu_ms < 1.5
