"""Transcript lines, the summary text and the call JSON, from journal records and export facts. Pure."""

from __future__ import annotations

import statistics
from datetime import datetime, timezone
from typing import Any

__all__ = ["fmt_clock", "transcript_lines", "summary_text", "human_size", "latency_stats"]

ROLE_LABELS = {"caller": "Caller", "assistant": "Assistant", "other": "Other party", "system": "System"}


def fmt_clock(ms: float) -> str:
    """62300 ms → '01:02.3' (hours added when needed)."""
    tenths = int(round(max(0.0, ms) / 100))
    s, t = divmod(tenths, 10)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}.{t}" if h else f"{m:02d}:{s:02d}.{t}"


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def human_size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def transcript_lines(entries: list[dict[str, Any]]) -> list[str]:
    lines = []
    for e in entries:
        label = ROLE_LABELS.get(e["role"], e["role"].title())
        text = e["text"]
        if e.get("kind") == "dtmf":
            text = f"(pressed {e['text']})"
        if e.get("cut_by") == "hangup":
            cut = f'[call ended during: "{e["cut_text"]}"]' if e.get("cut_text") else "[call ended]"
            text = f"{text} {cut}" if text else cut
        elif e.get("interrupted"):
            text = f"{text} [interrupted]" if text else "[interrupted before any words were heard]"
        lines.append(f"[{fmt_clock(e['start_ms'])}] {label}: {text}")
    return lines


def latency_stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"count": 0, "median_ms": None, "worst_ms": None}
    return {"count": len(values), "median_ms": round(statistics.median(values), 1), "worst_ms": round(max(values), 1)}


_SOURCES = {"phone": "phone (Twilio Media Stream)", "browser": "browser (Micdrop WebSocket, /web-call)"}


def summary_text(result: dict[str, Any], transcript: list[str]) -> str:
    audio = result.get("audio") or {}
    stats = result["stats"]
    lat = stats.get("response_latency") or {}
    talk = stats.get("talk_seconds", {})
    lines = [
        "=== CALL SUMMARY ===",
        f"Call SID: {result['call_sid']}",
        f"Call Completed: {result['completed_at']}",
        f"Call Started: {result.get('started_at') or 'unknown'}",
        f"Mode: {result['mode']}",
        f"Source: {_SOURCES.get(result.get('source', 'phone'), result.get('source'))}",
        f"Duration: {fmt_clock(result['duration_s'] * 1000)} ({result['duration_s']:.2f} s)",
        f"Ended By: {result.get('end_reason') or 'unknown'}",
        "Recovered After Crash: " + (f"yes (finalised at {result['recovered_at']})" if result.get("recovered")
                                      and result.get("recovered_at") else "yes" if result.get("recovered") else "no"),
        f"Turns: {stats.get('turns', 0)} (caller {stats.get('caller_turns', 0)}, "
        + (f"assistant {stats.get('assistant_turns', 0)})" if result["mode"] == "assistant"
           else f"other party {stats.get('other_turns', 0)})"),
        f"Talk Time: caller {talk.get('inbound', 0):.1f} s, "
        f"{'assistant' if result['mode'] == 'assistant' else 'other party'} {talk.get('outbound', 0):.1f} s, "
        f"overlap {talk.get('overlap', 0):.1f} s",
        f"Barge-ins: {stats.get('barge_ins', 0)}"
        + (f" (and {stats['cut_at_hangup']} reply cut off by the hang-up)" if stats.get("cut_at_hangup") else ""),
        "Response Latency: " + (
            f"median {lat['median_ms']:.0f} ms, worst {lat['worst_ms']:.0f} ms over {lat['count']} replies"
            if lat.get("count") else "n/a (no replies to caller turns)"),
        f"DTMF Digits: {stats.get('dtmf_count', 0)}",
    ]
    if stats.get("clock_discontinuities") or stats.get("dropped_frames"):
        lines.append(f"Timeline Repairs: {stats.get('clock_discontinuities', 0)} clock jumps, "
                     f"{stats.get('dropped_frames', 0)} frames dropped (duplicates or implausible timestamps)")
    for w in result.get("warnings", []):
        lines.append(f"Warning: {w}")
    lines += ["", "=== ALL RESPONSES ==="]
    if result.get("transcript_pending"):
        lines.append("(the transcript of the last turns is still being made; this summary is rewritten when it is done)")
    lines += transcript or ["(no speech was transcribed)"]
    if result.get("notes"):
        lines += ["", "=== MESSAGES TAKEN ==="] + [f"- {n}" for n in result["notes"]]
    lines += ["", "=== AUDIO RECORDING ==="]
    if audio.get("file"):
        lines += [
            f"Audio File: {audio['file']}",
            f"Full Path: {audio['path']}",
            f"File Size: {human_size(audio['bytes'])}",
            f"Created: {audio['created_at']}",
            f"Format: {audio['format'].upper()} ({audio['settings']})",
            f"Sample Rate: {audio['sample_rate']} Hz",
            f"Channels: {audio['channels']} ({'mono mix' if audio['channels'] == 1 else 'stereo: caller left, ' + ('assistant' if result['mode'] == 'assistant' else 'other party') + ' right'})",
            f"Audio Duration: {audio['duration_s']:.2f} s",
        ]
    else:
        lines.append("Audio File: none")
    if audio.get("requested_format") and audio.get("requested_format") != audio.get("format"):
        lines.append(f"Requested Format: {audio['requested_format'].upper()} — missing: {audio.get('error')}")
    if result.get("masters"):
        lines.append(f"Masters Kept: {', '.join(result['masters'])}")
    return "\n".join(lines) + "\n"
