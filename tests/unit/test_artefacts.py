"""LocalArtefacts (the responses/ folder) and the names of app.storage.paths."""

from __future__ import annotations

import os

import pytest

from app.storage.artefacts import LocalArtefacts
from app.storage.paths import CallNotFound, InvalidCallSid, StoreLayout, output_name, turn_clip_name

SID = "CA" + "b" * 32
OTHER = "CA" + "c" * 32


@pytest.fixture
def store(tmp_path) -> LocalArtefacts:
    return LocalArtefacts(tmp_path)


def test_every_name_comes_from_one_place(tmp_path):
    files = StoreLayout(tmp_path).call(SID)
    assert files.folder == tmp_path / ".calls" / SID
    assert [p.name for p in files.masters] == ["inbound.wav", "outbound.wav"]
    assert [p.name for p in (files.journal, files.status, files.format, files.lock, files.finalized)] == [
        "journal.jsonl", "status.jsonl", "format.json", "lock", "finalized"]
    assert [output_name(SID, k, "mp3") for k in ("conversation", "caller", "other")] == [
        f"call_{SID}_conversation.mp3", f"call_{SID}_caller.mp3", f"call_{SID}_other.mp3"]
    assert [output_name(SID, k) for k in ("transcript", "summary", "json")] == [
        f"call_{SID}.txt", f"call_{SID}_summary.txt", f"call_{SID}.json"]
    assert turn_clip_name(SID, 3, "caller", "wav") == f"call_{SID}_turn03_caller.wav"
    with pytest.raises(InvalidCallSid):
        StoreLayout(tmp_path).call("../" + SID)
    with pytest.raises(ValueError, match="unknown track"):
        files.master("../inbound")


def test_a_published_file_is_listed_stated_and_read(store, tmp_path):
    name = output_name(SID, "conversation", "wav")
    store.local_path(name).write_bytes(b"RIFF" + bytes(40))
    info = store.publish(name)
    assert (info.name, info.size, info.path) == (name, 44, tmp_path / name)
    assert store.stat(SID, name) == info
    with store.open(SID, name) as f:
        assert f.read() == b"RIFF" + bytes(40)
    assert store.list(SID) == [name] and store.list(OTHER) == []


def test_text_is_replaced_whole(store, tmp_path):
    name = output_name(SID, "json")
    assert store.read_text(name) is None
    store.write_text(name, '{"a": 1}')
    info = store.write_text(name, '{"a": 2}')
    assert store.read_text(name) == '{"a": 2}' and info.size == 8
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no .tmp left
    assert store.results() == {SID}


def test_delete_and_discarding_half_written_files(store, tmp_path):
    for suffix in ("_conversation.mp3", "_conversation.mp3.partial", ".json.tmp", ".txt"):
        (tmp_path / f"call_{SID}{suffix}").write_text("x")
    store.discard_staged(SID)
    assert store.list(SID) == [f"call_{SID}.txt", f"call_{SID}_conversation.mp3"]
    store.delete(f"call_{SID}.txt")
    store.delete(f"call_{SID}.txt")  # gone already: no error
    assert store.list(SID) == [f"call_{SID}_conversation.mp3"]


@pytest.mark.parametrize("name", [
    "../call_{sid}.json", "call_{sid}/../../etc/passwd", "call_{sid}.json/", ".call_{sid}.json", "call_{other}.json",
    "call_{sid}..\\x", "call_{sid}_missing.wav", "call_{sid}_outside.txt",
])
def test_a_download_is_only_this_calls_own_file(store, tmp_path, name):
    (tmp_path / f"call_{OTHER}.json").write_text("{}")
    outside = tmp_path.parent / "secret.txt"
    outside.write_text("secret")
    os.symlink(outside, tmp_path / f"call_{SID}_outside.txt")  # a link out of the folder is not followed
    name = name.format(sid=SID, other=OTHER)
    with pytest.raises(CallNotFound):
        store.stat(SID, name)
    with pytest.raises(CallNotFound):
        store.open(SID, name)


def test_a_malformed_sid_never_becomes_a_path(store):
    with pytest.raises(InvalidCallSid):
        store.stat("../x", "call_x.json")
    with pytest.raises(InvalidCallSid):
        store.list("CA*")
