"""Finalisation: masters + journal → the four files in `responses/`. Runs off the event loop.

Called at hang-up (with the live call's exporter, which has already encoded the settled part),
at start-up for calls a crash left unfinished (`recovered=True`), and after a call when its
format is changed (re-export from the kept masters).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile as sf

from app.audio.formats import FORMATS, get_format
from app.recording.export import ConversationExporter
from app.recording.journal import read_journal
from app.recording.store import CallStore
from app.recording.summary import iso, latency_stats, summary_text, transcript_lines
from app.recording.track import repair_header, track_samples

__all__ = ["ExportOptions", "FinalizeIncomplete", "finalize_call", "rewrite_transcript", "make_exporter",
           "chosen_format"]

log = logging.getLogger("callscribe.finalize")


class FinalizeIncomplete(RuntimeError):
    """The call's files could not all be written; it stays unfinished for a later attempt."""


@dataclass(frozen=True)
class ExportOptions:
    default_format: str = "mp3"
    mp3_kbps: int | None = 128
    channels: int = 1
    sample_rate: int = 8000
    per_track_files: bool = False
    keep_masters: bool = True
    record_audio: bool = True  # RECORD_CONVERSATIONS=false: transcript and summary only, masters deleted
    per_turn_clips: bool = False  # one clip per turn: call_<sid>_turn<NN>_<role>.<ext>


def chosen_format(store: CallStore, sid: str, opts: ExportOptions) -> tuple[str, int | None]:
    choice = store.get_format(sid) or {}
    fmt = choice.get("format") or opts.default_format
    kbps = choice.get("bitrate_kbps") or opts.mp3_kbps
    return fmt, kbps


def make_exporter(store: CallStore, sid: str, opts: ExportOptions) -> ConversationExporter:
    fmt_name, kbps = chosen_format(store, sid, opts)
    fmt = get_format(fmt_name)
    d = store.call_dir(sid)
    tracks = None
    if opts.per_track_files:
        tracks = (store.output(sid, "track", f"caller.{fmt.extension}"), store.output(sid, "track", f"other.{fmt.extension}"))
    return ConversationExporter((d / "inbound.wav", d / "outbound.wav"), store.output(sid, "conversation", fmt.extension),
                                fmt, channels=opts.channels, sample_rate=opts.sample_rate, mp3_kbps=kbps,
                                track_paths=tracks)


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
    return bool(turn.get("interrupted")) and turn.get("cut_by") != "hangup"


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


def _write_records(store: CallStore, sid: str, result: dict[str, Any], transcript: list[str]) -> None:
    """Transcript, summary and JSON, each replaced atomically."""
    _write_atomic(store.output(sid, "transcript"), "\n".join(transcript) + ("\n" if transcript else ""))
    _write_atomic(store.output(sid, "summary"), summary_text(result, transcript))
    _write_atomic(store.output(sid, "json"), json.dumps(result, indent=2, default=str) + "\n")


def rewrite_transcript(store: CallStore, sid: str) -> dict[str, Any] | None:
    """The transcript finished after hang-up: rewrite transcript, summary and JSON from the journal
    (the audio file stays as it is). Returns the new result, or None if the call has none yet."""
    result = store.read_result(sid)
    if result is None:
        return None
    records = list(read_journal(store.call_dir(sid) / "journal.jsonl"))
    part, transcript = _conversation(records)
    result.update(turns=part["turns"], dtmf=part["dtmf"], notes=part["notes"], transcript_pending=False)
    result["stats"].update(part["stats"])
    _write_records(store, sid, result, transcript)
    return result


def finalize_call(store: CallStore, sid: str, opts: ExportOptions, *, recovered: bool = False,
                  exporter: ConversationExporter | None = None, total: int | None = None,
                  end_reason: str | None = None, transcript_pending: bool = False) -> dict[str, Any]:
    """Write conversation audio, transcript, summary and JSON for one call. Idempotent.

    ``transcript_pending``: speech-to-text is still working on the call's last turns; the summary
    and JSON say so, and ``rewrite_transcript`` replaces them when it is done."""
    t0 = time.monotonic()
    d = store.call_dir(sid)
    records = list(read_journal(d / "journal.jsonl"))
    start = next((r for r in records if r["t"] == "start"), {})
    stop = next((r for r in reversed(records) if r["t"] == "stop"), None)
    masters = (d / "inbound.wav", d / "outbound.wav")
    if recovered or stop is None:
        for m in masters:
            if m.exists():
                repair_header(m)
            else:
                m.touch()
                repair_header(m)
    if total is None:
        if stop:
            total = stop["samples"]
        elif start.get("mode", "assistant") == "assistant" and track_samples(masters[0]):
            # The stream ended where the caller's audio ends: assistant audio queued past it was never heard.
            total = track_samples(masters[0])
        else:
            total = max(track_samples(m) for m in masters)
    warnings: list[str] = []
    fmt_name, kbps = chosen_format(store, sid, opts)
    audio: dict[str, Any] = {"requested_format": fmt_name}
    exported: Path | None = None
    try:
        if not opts.record_audio:
            if exporter is not None:
                exporter.abort()
            exporter = None
            audio["error"] = "audio recording is off (RECORD_CONVERSATIONS=false)"
        elif exporter is None or exporter.fmt.name != fmt_name:
            if exporter is not None:
                exporter.abort()
            exporter = make_exporter(store, sid, opts)
        if exporter is not None:
            exported = exporter.finish(total)
            audio.update(format=exporter.fmt.name, settings=exporter.settings_note)
    except Exception as exc:  # an encoder failure must not lose the call
        log.error("call %s: %s export failed (%s); writing WAV instead, masters kept", sid, fmt_name, type(exc).__name__)
        if exporter is not None:
            exporter.abort()
        audio["error"] = f"the {fmt_name} encoder failed: {type(exc).__name__}: {exc}"
        warnings.append(f"{fmt_name.upper()} export failed ({type(exc).__name__}); the conversation was written as WAV instead")
        fallback = None
        try:
            fallback = ConversationExporter(masters, store.output(sid, "conversation", "wav"), FORMATS["wav"],
                                            channels=opts.channels, sample_rate=opts.sample_rate)
            exported = fallback.finish(total)
            exporter = fallback
            audio.update(format="wav", settings=fallback.settings_note)
        except Exception as exc2:
            if fallback is not None:
                fallback.abort()
            log.error("call %s: WAV fallback failed too (%s); masters kept in %s", sid, type(exc2).__name__, d)
            warnings.append(f"WAV fallback failed too ({type(exc2).__name__}); the masters in {d} hold the audio")
            exporter = None
    # Only one conversation file per call: drop ones of other formats (a format change re-exports).
    for f in FORMATS.values():
        p = store.output(sid, "conversation", f.extension)
        if p != exported and p.exists():
            p.unlink()
    if exported is not None:
        info = sf.info(str(exported))
        st = exported.stat()
        audio.update(file=exported.name, path=str(exported), bytes=st.st_size, created_at=iso(st.st_mtime),
                     sample_rate=info.samplerate, channels=info.channels, duration_s=round(total / 8000, 3),
                     media_type=FORMATS[audio["format"]].media_type)
    part, transcript = _conversation(records)
    errors = [r for r in records if r["t"] == "error"]
    for e in errors:
        warnings.append(f"{e.get('what')}: {e.get('detail')}")
    if recovered:
        warnings.append("the server stopped during this call; it was finalised from its masters and journal at restart")
    stats = {
        **part["stats"],
        "talk_seconds": exporter.talk.seconds() if exporter is not None and exporter.done >= total else {},
        "clock_discontinuities": (stop or {}).get("clock_discontinuities", 0),
        "dropped_frames": (stop or {}).get("dropped_frames", 0),
        "finalize_seconds": None,
    }
    if stop:
        completed = stop.get("closed_at") or time.time()
    else:  # recovered: the call ended when its audio did (the masters' last write), not at recovery
        written = [m.stat().st_mtime for m in masters if m.exists()] + [r["wall"] for r in records if "wall" in r]
        completed = max(written) if written else time.time()
    result: dict[str, Any] = {
        "call_sid": sid,
        "stream_sid": start.get("stream_sid"),
        "mode": start.get("mode", "assistant"),
        "started_at": iso(start["wall"]) if start.get("wall") else None,
        "completed_at": iso(completed),
        "duration_s": round(total / 8000, 3),
        "end_reason": end_reason or (stop or {}).get("reason") or ("server stopped (crash)" if recovered else None),
        "recovered": recovered,
        "recovered_at": iso(time.time()) if recovered else None,
        "transcript_pending": transcript_pending,
        "audio": audio,
        "turns": part["turns"],
        "dtmf": part["dtmf"],
        "notes": part["notes"],
        "stats": stats,
        "warnings": warnings,
        "masters": [str(m) for m in masters] if opts.keep_masters and opts.record_audio else [],
    }
    if opts.per_turn_clips and exported is not None:
        files_clips = _write_turn_clips(store, sid, part["turns"], masters, audio["format"], kbps, opts.sample_rate)
    else:
        files_clips = []
    files = {"transcript": store.output(sid, "transcript").name, "summary": store.output(sid, "summary").name,
             "json": store.output(sid, "json").name}
    if exported is not None:
        files["conversation"] = exported.name
    if exporter is not None and exporter.track_paths:
        files["tracks"] = [Path(p).name for p in exporter.track_paths]
    if files_clips:
        files["turn_clips"] = files_clips
    result["files"] = files
    stats["finalize_seconds"] = round(time.monotonic() - t0, 3)
    _write_records(store, sid, result, transcript)
    if opts.record_audio and exported is None:
        # No audio could be written (e.g. a full disk): the call is not done. Its masters and
        # journal stay, without the finalized marker, so the next start (or `callscribe recover`)
        # exports it once there is room.
        raise FinalizeIncomplete(f"call {sid}: no conversation audio could be written; masters kept in {d}")
    (d / "finalized").write_text(iso(time.time()) + "\n")
    if not opts.record_audio or (not opts.keep_masters and exported is not None and not audio.get("error")):
        for m in masters:
            m.unlink(missing_ok=True)
    log.info("call %s finalised in %.3f s (%s%s)", sid, stats["finalize_seconds"], audio.get("format"),
             ", recovered" if recovered else "")
    return result


def _write_turn_clips(store: CallStore, sid: str, turns: list[dict[str, Any]], masters: tuple[Path, Path],
                      fmt_name: str, kbps: int | None, rate: int) -> list[str]:
    """One file per turn, from the track of whoever spoke: role, index and text are in the JSON."""
    from app.audio.formats import encoder_kwargs
    from app.audio.resample import resample
    from app.recording.events import read_span

    fmt = FORMATS[fmt_name]
    kwargs, _ = encoder_kwargs(fmt, rate, kbps)
    names = []
    for old in store.root.glob(f"call_{sid}_turn*"):
        old.unlink()
    for i, t in enumerate(turns):
        if t["end_sample"] <= t["start_sample"]:
            continue
        master = masters[0] if t["role"] == "caller" else masters[1]
        audio = read_span(master, t["start_sample"], t["end_sample"]).astype("float32") / 32768
        name = f"call_{sid}_turn{i:02d}_{t['role']}.{fmt.extension}"
        sf.write(str(store.root / name), resample(audio, 8000, rate), rate, **kwargs)
        t["clip"] = name
        names.append(name)
    return names


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
