"""Finalisation: masters + journal → the four files in `responses/`. Runs off the event loop.

Called at hang-up (with the live call's exporter, which has already encoded the settled part),
at start-up for calls a crash left unfinished (`recovered=True`), and after a call when its
format is changed (re-export from the kept masters).

The steps, in `finalize_call`'s order: read the call (`read_call`: journal, masters, length),
export its audio (`audio_outputs.export_conversation`), describe it (`_conversation` for what
was said, `_describe` for the call JSON), write the records, then mark the call finalised and
drop the masters it no longer needs (`_close_folder`), and last update the call's catalog row
(`_catalog`). Every finalisation, recovery, re-export and transcript rewrite passes here, so the
catalog follows them all; a catalog that cannot be written never fails a finalisation.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.recording.audio_outputs import (
    ExportedAudio, ExportOptions, chosen_format, export_conversation, make_exporter, write_turn_clips,
)
from app.recording.export import ConversationExporter
from app.recording.journal import read_journal
from app.recording.picture import picture_of
from app.recording.picture_svg import render_svg
from app.recording.summary import iso, latency_stats, summary_text, transcript_lines
from app.recording.track import repair_header, track_rate, track_samples
from app.storage.paths import CallFiles, output_name, source_of
from app.storage.store import CallStore

__all__ = ["ExportOptions", "FinalizeIncomplete", "CallFacts", "read_call", "finalize_call", "rewrite_transcript",
           "make_exporter", "chosen_format"]

log = logging.getLogger("callscribe.finalize")

_RATE = 8000  # the masters' rate when neither their header nor the journal says (Twilio's)


class FinalizeIncomplete(RuntimeError):
    """The call's files could not all be written; it stays unfinished for a later attempt."""


# ---------------------------------------------------------------------------------- reading the call
@dataclass(frozen=True)
class CallFacts:
    """What a call's folder says about it: its journal, its two masters and how long it is."""

    files: CallFiles
    records: list[dict[str, Any]]
    start: dict[str, Any]  # the journal's `start` record ({} when there is none)
    stop: dict[str, Any] | None  # its last `stop` record: None when the call never ended cleanly
    masters: tuple[Path, Path]  # inbound (caller), outbound (assistant or other party)
    total: int  # the call's length in samples at `rate`
    rate: int = _RATE  # the masters' rate: the transport's native one
    audio_ended: float | None = None  # a crashed call: when its masters were last written (before repair)

    @property
    def mode(self) -> str:
        return self.start.get("mode", "assistant")

    @property
    def duration_s(self) -> float:
        return round(self.total / self.rate, 3)

    def completed_at(self) -> float:
        """When the call ended: its stop record's time; without one (a crash), when its audio did
        (the masters' last write, read before their headers were repaired, or the journal's last
        record), not at recovery."""
        if self.stop:
            return self.stop.get("closed_at") or time.time()
        written = [r["wall"] for r in self.records if "wall" in r]
        if self.audio_ended is not None:
            written.append(self.audio_ended)
        return max(written) if written else time.time()


def read_call(store: CallStore, sid: str, *, recovered: bool = False, total: int | None = None) -> CallFacts:
    """Read the call's journal and masters. A call that did not end cleanly (``recovered``, or no
    `stop` record) has its masters' headers repaired first (a missing master is made empty).
    ``total`` (samples) is the live call's length when it has one; else it comes from the journal
    or the masters."""
    files = store.files(sid)
    records = list(read_journal(files.journal))
    start = next((r for r in records if r["t"] == "start"), {})
    stop = next((r for r in reversed(records) if r["t"] == "stop"), None)
    masters = files.masters
    rate = track_rate(masters[0], start.get("rate", _RATE))
    audio_ended = None
    if recovered or stop is None:
        written = [m.stat().st_mtime for m in masters if m.exists()]
        audio_ended = max(written) if written else None  # before the repair below touches them
        for m in masters:
            if not m.exists():
                m.touch()
            repair_header(m, rate)
    if total is None:
        total = _length(start, stop, masters)
    return CallFacts(files, records, start, stop, masters, total, rate, audio_ended)


def _length(start: dict[str, Any], stop: dict[str, Any] | None, masters: tuple[Path, Path]) -> int:
    if stop:
        return stop["samples"]
    if start.get("mode", "assistant") == "assistant" and track_samples(masters[0]):
        # The stream ended where the caller's audio ends: assistant audio queued past it was never heard.
        return track_samples(masters[0])
    return max(track_samples(m) for m in masters)


# ---------------------------------------------------------------------------------- what was said
def _entries(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    entries = []
    for r in records:
        if r["t"] == "turn":
            e = {k: v for k, v in r.items() if k not in ("t", "wall")}
            e.setdefault("start_sample", round(e["start_ms"] * 8))  # journals from before sample indexes
            e.setdefault("end_sample", round(e["end_ms"] * 8))
            entries.append(e)
        elif r["t"] == "dtmf":
            at = r.get("at_sample", round(r["at_ms"] * 8))
            entries.append({"role": "caller", "kind": "dtmf", "text": r["digit"], "start_ms": r["at_ms"],
                            "end_ms": r["at_ms"], "start_sample": at, "end_sample": at, "interrupted": False})
    entries.sort(key=lambda e: e["start_sample"])
    return entries


def _is_barge_in(turn: dict[str, Any]) -> bool:
    """An interrupted turn the caller cut by speaking (a hang-up cut is not a barge-in)."""
    return bool(turn.get("interrupted")) and turn.get("cut_by") not in ("hangup", "connection lost", "paused")


def _conversation(records: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """What the journal says was said: turns, DTMF, notes and their figures; and the transcript lines."""
    entries = _entries(records)
    turns = [e for e in entries if e.get("kind") != "dtmf"]
    latencies = [e["latency_ms"] for e in turns if e.get("latency_ms") is not None]
    part = {
        "turns": turns,
        "dtmf": [{"digit": r["digit"], "at_ms": r["at_ms"]} for r in records if r["t"] == "dtmf"],
        "notes": [n for r in records if r["t"] == "notes" for n in r.get("notes", [])],
        "stats": {
            "turns": len(turns),
            "caller_turns": sum(1 for e in turns if e["role"] == "caller"),
            "assistant_turns": sum(1 for e in turns if e["role"] == "assistant"),
            "other_turns": sum(1 for e in turns if e["role"] == "other"),
            "barge_ins": sum(1 for e in turns if _is_barge_in(e)),
            "cut_at_hangup": sum(1 for e in turns if e.get("cut_by") == "hangup"),
            "clears": sum(1 for r in records if r["t"] == "clear"),
            "dtmf_count": sum(1 for r in records if r["t"] == "dtmf"),
            "response_latency": latency_stats(latencies),
        },
    }
    return part, transcript_lines(entries)


# ---------------------------------------------------------------------------------- the call JSON
def _warnings(call: CallFacts, audio: ExportedAudio, recovered: bool) -> list[str]:
    """The export's warnings, then the errors the journal recorded, then the recovery."""
    warnings = list(audio.warnings)
    warnings += [f"{e.get('what')}: {e.get('detail')}" for e in call.records if e["t"] == "error"]
    if recovered:
        warnings.append("the server stopped during this call; it was finalised from its masters and journal at restart")
    return warnings


def _describe(sid: str, call: CallFacts, audio: ExportedAudio, part: dict[str, Any], opts: ExportOptions, *,
              recovered: bool, end_reason: str | None, transcript_pending: bool) -> dict[str, Any]:
    """The call's JSON, less its `files` (`finalize_seconds` is filled in last)."""
    stop = call.stop or {}
    stats = {
        **part["stats"],
        "talk_seconds": audio.talk_seconds(call.total),
        "clock_discontinuities": stop.get("clock_discontinuities", 0),
        "dropped_frames": stop.get("dropped_frames", 0),
        "finalize_seconds": None,
    }
    return {
        "call_sid": sid,
        "stream_sid": call.start.get("stream_sid"),
        "mode": call.mode,
        "source": call.start.get("source") or source_of(sid),  # phone or browser
        "from_last4": call.start.get("from_last4"),  # the caller's number's last four digits (phone calls)
        "started_at": iso(call.start["wall"]) if call.start.get("wall") else None,
        "completed_at": iso(call.completed_at()),
        "duration_s": call.duration_s,
        "end_reason": end_reason or stop.get("reason") or ("server stopped (crash)" if recovered else None),
        "recovered": recovered,
        "recovered_at": iso(time.time()) if recovered else None,
        "transcript_pending": transcript_pending,
        "audio": audio.facts,
        "turns": part["turns"],
        "dtmf": part["dtmf"],
        "notes": part["notes"],
        "stats": stats,
        "warnings": _warnings(call, audio, recovered),
        "masters": [str(m) for m in call.masters] if opts.keep_masters and opts.record_audio else [],
    }


def _files(store: CallStore, sid: str, audio: ExportedAudio, clips: list[str]) -> dict[str, Any]:
    """The JSON's `files`: the call's output files by kind."""
    files: dict[str, Any] = {kind: output_name(sid, kind) for kind in ("transcript", "summary", "json")}
    if audio.path is not None:
        files["conversation"] = audio.path.name
    tracks = audio.track_files()
    if tracks:
        files["tracks"] = tracks
    if clips:
        files["turn_clips"] = clips
    return files


# ---------------------------------------------------------------------------------- writing
def _write_records(store: CallStore, sid: str, result: dict[str, Any], transcript: list[str]) -> None:
    """Transcript, summary and JSON, each replaced atomically."""
    write = store.artefacts.write_text
    write(output_name(sid, "transcript"), "\n".join(transcript) + ("\n" if transcript else ""))
    write(output_name(sid, "summary"), summary_text(result, transcript))
    write(output_name(sid, "json"), json.dumps(result, indent=2, default=str) + "\n")


def _write_picture(store: CallStore, sid: str, call: CallFacts, result: dict[str, Any]) -> bool:
    """The picture of the call beside its other files (before the masters may go). A picture that
    cannot be drawn is a warning in the log, never a failed finalisation."""
    try:
        svg = render_svg(picture_of(call.files.folder, result))
        store.artefacts.write_text(output_name(sid, "timeline"), svg)
        return True
    except Exception as exc:
        log.warning("call %s: the timeline picture was not written (%s)", sid, type(exc).__name__)
        return False


def _close_folder(call: CallFacts, audio: ExportedAudio, opts: ExportOptions) -> None:
    """Mark the call finalised, and drop its masters unless they are kept or still the only audio."""
    call.files.finalized.write_text(iso(time.time()) + "\n")
    if not opts.record_audio or (not opts.keep_masters and audio.path is not None and not audio.facts.get("error")):
        for m in call.masters:
            m.unlink(missing_ok=True)


def _catalog(store: CallStore, result: dict[str, Any], *, finished: bool = True) -> None:
    """The call's catalog row follows its result. Failing to write it is logged, never raised: the
    result on disk is the truth, and the next start finds the row stale and rebuilds it."""
    try:
        store.catalog.upsert(result, finished=finished)
    except Exception as exc:
        log.warning("call %s: the catalog was not updated (%s); it is rebuilt at the next start",
                    result.get("call_sid"), type(exc).__name__)


# ---------------------------------------------------------------------------------- the steps together
def rewrite_transcript(store: CallStore, sid: str) -> dict[str, Any] | None:
    """The transcript finished after hang-up: rewrite transcript, summary and JSON from the journal
    (the audio file stays as it is). Returns the new result, or None if the call has none yet."""
    result = store.read_result(sid)
    if result is None:
        return None
    records = list(read_journal(store.files(sid).journal))
    part, transcript = _conversation(records)
    result.update(turns=part["turns"], dtmf=part["dtmf"], notes=part["notes"], transcript_pending=False)
    result["stats"].update(part["stats"])
    _write_records(store, sid, result, transcript)
    _catalog(store, result, finished=store.is_finalized(sid))
    return result


def finalize_call(store: CallStore, sid: str, opts: ExportOptions, *, recovered: bool = False,
                  exporter: ConversationExporter | None = None, total: int | None = None,
                  end_reason: str | None = None, transcript_pending: bool = False) -> dict[str, Any]:
    """Write conversation audio, transcript, summary and JSON for one call. Idempotent.

    ``transcript_pending``: speech-to-text is still working on the call's last turns; the summary
    and JSON say so, and ``rewrite_transcript`` replaces them when it is done."""
    t0 = time.monotonic()
    call = read_call(store, sid, recovered=recovered, total=total)
    audio = export_conversation(store, sid, opts, call.masters, call.total, call.rate, exporter)
    part, transcript = _conversation(call.records)
    result = _describe(sid, call, audio, part, opts, recovered=recovered, end_reason=end_reason,
                       transcript_pending=transcript_pending)
    clips: list[str] = []
    if opts.per_turn_clips and audio.path is not None:
        clips = write_turn_clips(store, sid, part["turns"], call.masters, audio.facts["format"], audio.kbps,
                                 opts.sample_rate or call.rate, call.rate)
    result["files"] = _files(store, sid, audio, clips)
    if opts.timeline_svg and _write_picture(store, sid, call, result):
        result["files"]["timeline"] = output_name(sid, "timeline")
    result["stats"]["finalize_seconds"] = round(time.monotonic() - t0, 3)
    _write_records(store, sid, result, transcript)
    if opts.record_audio and audio.path is None:
        # No audio could be written (e.g. a full disk): the call is not done. Its masters and
        # journal stay, without the finalized marker, so the next start (or `callscribe recover`)
        # exports it once there is room.
        _catalog(store, result, finished=False)
        raise FinalizeIncomplete(f"call {sid}: no conversation audio could be written; masters kept in {call.files.folder}")
    _close_folder(call, audio, opts)
    _catalog(store, result)
    log.info("call %s finalised in %.3f s (%s%s)", sid, result["stats"]["finalize_seconds"], audio.facts.get("format"),
             ", recovered" if recovered else "")
    return result
