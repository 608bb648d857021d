"""Finalisation step by step: reading the call, what was said, the export and its fallback, the folder's end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from app.recording import audio_outputs
from app.recording.audio_outputs import ExportOptions, export_conversation, make_exporter
from app.recording.export import ConversationExporter
from app.recording.finalize import FinalizeIncomplete, _conversation, finalize_call, read_call, rewrite_transcript
from app.recording.journal import Journal
from app.storage.store import CallStore
from app.recording.track import HEADER_BYTES, MasterTrack

SID = "CA" + "f" * 32


def _call(tmp_path, *records: dict, inbound: int = 8000, outbound: int = 4000) -> CallStore:
    """A call folder: masters of the given lengths (samples of a steady tone) and these journal records."""
    store = CallStore(tmp_path / "responses")
    d = store.files(SID, create=True).folder
    for name, n in (("inbound", inbound), ("outbound", outbound)):
        track = MasterTrack(d / f"{name}.wav")
        if n:
            track.write(0, np.full(n, 1000, "<i2").tobytes())
        track.close()
    journal = Journal(d / "journal.jsonl")
    for r in records:
        journal.append(r["t"], **{k: v for k, v in r.items() if k != "t"})
    journal.close()
    return store


START = {"t": "start", "call_sid": SID, "stream_sid": "MZ" + "0" * 32, "mode": "assistant"}
LISTEN = {**START, "mode": "listen"}


def _stop(samples: int, **extra) -> dict:
    return {"t": "stop", "samples": samples, "reason": "caller hung up (stop)", "closed_at": 1.7e9, **extra}


def _turn(role: str, start_ms: float, end_ms: float, **extra) -> dict:
    return {"t": "turn", "role": role, "text": f"{role} at {start_ms}", "start_ms": start_ms, "end_ms": end_ms,
            "start_sample": round(start_ms * 8), "end_sample": round(end_ms * 8), "interrupted": False, **extra}


# ---------------------------------------------------------------------------------- reading the call
def test_a_stopped_call_is_as_long_as_its_stop_record_says_and_ended_when_it_closed(tmp_path):
    store = _call(tmp_path, START, _stop(6000))
    call = read_call(store, SID)
    assert call.total == 6000 and call.duration_s == 0.75 and call.mode == "assistant"
    assert call.completed_at() == 1.7e9


def test_the_live_calls_length_wins_over_the_journals(tmp_path):
    store = _call(tmp_path, START, _stop(6000))
    assert read_call(store, SID, total=1234).total == 1234


def test_an_assistant_call_without_stop_ends_with_the_callers_audio(tmp_path):
    # Assistant audio queued past the caller's last frame was never heard.
    store = _call(tmp_path, START, inbound=8000, outbound=12000)
    assert read_call(store, SID).total == 8000


def test_a_listen_call_without_stop_is_as_long_as_its_longer_track(tmp_path):
    store = _call(tmp_path, LISTEN, inbound=8000, outbound=12000)
    assert read_call(store, SID).total == 12000


def test_a_call_that_did_not_end_cleanly_gets_its_headers_repaired_and_a_missing_master_made(tmp_path):
    store = _call(tmp_path, START, inbound=8000)
    d = store.files(SID).folder
    raw = bytearray((d / "inbound.wav").read_bytes())
    raw[4:8] = raw[40:44] = bytes(4)  # sizes as a crash leaves them
    (d / "inbound.wav").write_bytes(bytes(raw))
    (d / "outbound.wav").unlink()
    read_call(store, SID, recovered=True)
    assert sf.info(str(d / "inbound.wav")).frames == 8000
    assert (d / "outbound.wav").stat().st_size == HEADER_BYTES


# ---------------------------------------------------------------------------------- what was said
def test_the_conversation_orders_turns_and_digits_and_counts_barge_ins_but_not_hang_up_cuts():
    records = [
        START,
        _turn("assistant", 0, 900, interrupted=True, latency_ms=300.0),
        {"t": "turn", "role": "caller", "text": "old journal", "start_ms": 500, "end_ms": 800, "interrupted": False},
        {"t": "dtmf", "digit": "5", "at_ms": 930},
        _turn("assistant", 1000, 1500, interrupted=True, cut_by="hangup", cut_text="goodbye", latency_ms=500.0),
        {"t": "notes", "notes": ["call back"]},
        {"t": "clear"},
    ]
    part, transcript = _conversation(records)
    assert [t["text"] for t in part["turns"]] == ["assistant at 0", "old journal", "assistant at 1000"]
    assert part["turns"][1]["start_sample"] == 4000  # placed from its ms on an old journal
    assert part["dtmf"] == [{"digit": "5", "at_ms": 930}] and part["notes"] == ["call back"]
    stats = part["stats"]
    assert (stats["turns"], stats["caller_turns"], stats["assistant_turns"]) == (3, 1, 2)
    assert (stats["barge_ins"], stats["cut_at_hangup"], stats["clears"], stats["dtmf_count"]) == (1, 1, 1, 1)
    assert stats["response_latency"] == {"count": 2, "median_ms": 400.0, "worst_ms": 500.0}
    assert transcript[2] == "[00:00.9] Caller: (pressed 5)"
    assert transcript[3] == '[00:01.0] Assistant: assistant at 1000 [call ended during: "goodbye"]'


# ---------------------------------------------------------------------------------- the export step
def _export(store, opts, exporter=None):
    call = read_call(store, SID)
    return export_conversation(store, SID, opts, call.masters, call.total, call.rate, exporter)


def test_the_export_writes_one_conversation_file_and_drops_one_of_another_format(tmp_path):
    store = _call(tmp_path, START, _stop(8000))
    stale = store.output(SID, "conversation", "mp3")
    stale.write_bytes(b"from before a format change")
    out = _export(store, ExportOptions(default_format="wav"))
    assert out.path == store.output(SID, "conversation", "wav") and not stale.exists()
    assert out.facts["format"] == "wav" and out.facts["duration_s"] == 1.0 and out.facts["sample_rate"] == 8000
    assert out.talk_seconds(8000) == {"inbound": 1.0, "outbound": 0.5, "overlap": 0.5}
    assert out.warnings == []


def test_a_live_exporter_of_another_format_is_aborted_and_the_chosen_one_written(tmp_path):
    store = _call(tmp_path, START, _stop(8000))
    live = make_exporter(store, SID, ExportOptions(default_format="flac"))
    live.advance(4000)
    out = _export(store, ExportOptions(default_format="wav"), exporter=live)
    assert live.closed and not live.partial.exists()
    assert out.path is not None and out.path.suffix == ".wav"


def test_with_recording_off_there_is_no_file_and_the_live_exporter_is_dropped(tmp_path):
    store = _call(tmp_path, START, _stop(8000))
    live = make_exporter(store, SID, ExportOptions(default_format="wav"))
    out = _export(store, ExportOptions(record_audio=False), exporter=live)
    assert out.path is None and out.exporter is None and not live.partial.exists()
    assert out.facts == {"requested_format": "mp3", "error": "audio recording is off (RECORD_CONVERSATIONS=false)"}
    assert out.talk_seconds(8000) == {}


def _failing_finish(monkeypatch, formats):
    real = ConversationExporter.finish

    def finish(self, total):
        if self.fmt.name in formats:
            raise OSError(28, "No space left on device")
        return real(self, total)

    monkeypatch.setattr(audio_outputs.ConversationExporter, "finish", finish)


def test_a_failing_encoder_falls_back_to_wav_and_says_so(tmp_path, monkeypatch):
    store = _call(tmp_path, START, _stop(8000))
    _failing_finish(monkeypatch, {"flac"})
    out = _export(store, ExportOptions(default_format="flac"))
    assert out.path == store.output(SID, "conversation", "wav") and out.facts["format"] == "wav"
    assert out.facts["error"] == "the flac encoder failed: OSError: [Errno 28] No space left on device"
    assert out.warnings == ["FLAC export failed (OSError); the conversation was written as WAV instead"]
    assert [p.name for p in store.root.iterdir() if p.suffix == ".partial"] == []


def test_when_the_wav_fallback_fails_too_there_is_no_file_and_the_masters_are_named(tmp_path, monkeypatch):
    store = _call(tmp_path, START, _stop(8000))
    _failing_finish(monkeypatch, {"flac", "wav"})
    out = _export(store, ExportOptions(default_format="flac"))
    assert out.path is None and out.exporter is None and "format" not in out.facts
    assert out.warnings[1] == (f"WAV fallback failed too (OSError); the masters in {store.files(SID).folder} "
                               "hold the audio")


# ---------------------------------------------------------------------------------- the whole call
def test_without_any_audio_written_the_call_stays_unfinished_with_its_masters(tmp_path, monkeypatch):
    store = _call(tmp_path, START, _stop(8000))
    _failing_finish(monkeypatch, {"flac", "wav"})
    with pytest.raises(FinalizeIncomplete):
        finalize_call(store, SID, ExportOptions(default_format="flac", keep_masters=False))
    d = store.files(SID).folder
    assert not (d / "finalized").exists() and (d / "inbound.wav").exists()
    assert "Audio File: none" in store.output(SID, "summary").read_text()  # the records say what happened


@pytest.mark.parametrize("opts, kept", [(ExportOptions(default_format="wav"), True),
                                        (ExportOptions(default_format="wav", keep_masters=False), False),
                                        (ExportOptions(record_audio=False), False)])
def test_a_finalised_call_is_marked_and_keeps_its_masters_only_when_asked(tmp_path, opts, kept):
    store = _call(tmp_path, START, _stop(8000))
    out = finalize_call(store, SID, opts)
    d = store.files(SID).folder
    assert (d / "finalized").exists()
    assert (d / "inbound.wav").exists() is kept and (d / "outbound.wav").exists() is kept
    assert bool(out["masters"]) is kept


def test_masters_are_kept_when_the_chosen_format_failed_even_if_not_asked(tmp_path, monkeypatch):
    store = _call(tmp_path, START, _stop(8000))
    _failing_finish(monkeypatch, {"flac"})
    finalize_call(store, SID, ExportOptions(default_format="flac", keep_masters=False))
    assert store.files(SID).master("inbound").exists()


def test_the_json_names_every_file_and_each_turns_clip(tmp_path):
    store = _call(tmp_path, START, _turn("caller", 0, 500), _turn("assistant", 500, 500), _stop(8000))
    out = finalize_call(store, SID, ExportOptions(default_format="wav", per_track_files=True, per_turn_clips=True))
    clip = f"call_{SID}_turn00_caller.wav"
    assert out["files"] == {"transcript": f"call_{SID}.txt", "summary": f"call_{SID}_summary.txt",
                            "json": f"call_{SID}.json", "conversation": f"call_{SID}_conversation.wav",
                            "tracks": [f"call_{SID}_caller.wav", f"call_{SID}_other.wav"], "turn_clips": [clip],
                            "timeline": f"call_{SID}_timeline.svg"}
    assert out["turns"][0]["clip"] == clip and "clip" not in out["turns"][1]  # an empty turn has no clip
    assert sf.info(str(store.root / clip)).frames == 4000


def test_a_recovered_call_says_so_and_lists_the_journals_errors(tmp_path):
    store = _call(tmp_path, START, {"t": "error", "what": "stt", "detail": "timed out"})
    out = finalize_call(store, SID, ExportOptions(default_format="wav"), recovered=True)
    assert out["recovered"] is True and out["end_reason"] == "server stopped (crash)"
    assert out["warnings"] == ["stt: timed out", "the server stopped during this call; it was finalised from its "
                               "masters and journal at restart"]


def test_the_transcript_written_after_hang_up_replaces_the_pending_one(tmp_path):
    store = _call(tmp_path, START, _stop(8000))
    assert rewrite_transcript(store, SID) is None  # not finalised yet: nothing to rewrite
    first = finalize_call(store, SID, ExportOptions(default_format="wav"), transcript_pending=True)
    assert first["transcript_pending"] is True and first["turns"] == []
    journal = Journal(store.files(SID).journal)
    journal.append("turn", **{k: v for k, v in _turn("caller", 100, 600).items() if k != "t"})
    journal.close()
    out = rewrite_transcript(store, SID)
    assert out["transcript_pending"] is False and out["stats"]["caller_turns"] == 1
    assert out["audio"] == first["audio"]
    assert json.loads(store.output(SID, "json").read_text()) == out
    assert store.output(SID, "transcript").read_text() == "[00:00.1] Caller: caller at 100\n"
