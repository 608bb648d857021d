"""Real finalised calls for catalog tests: a call folder (masters and a journal) finalised by the
project's own `finalize_call`, with the start time, turns, mode and caller digits a test asks for."""

from __future__ import annotations

import numpy as np

from app.recording.audio_outputs import ExportOptions
from app.recording.finalize import finalize_call
from app.recording.journal import Journal
from app.recording.track import MasterTrack
from app.storage.store import CallStore

OPTS = ExportOptions(default_format="wav")


def record(store: CallStore, sid: str, *, started: float = 1.75e9, seconds: float = 1.0, mode: str = "assistant",
           texts: tuple[str, ...] = ("hello there", "hi, how can I help"), barge_in: bool = False,
           from_last4: str | None = None, latency_ms: float | None = 400.0, stopped: bool = True) -> None:
    """Lay out the call's folder as a live call leaves it (``stopped=False``: as a crash leaves it)."""
    rate = 16000 if sid.startswith("WB") else 8000
    n = round(seconds * rate)
    folder = store.files(sid, create=True).folder
    for name in ("inbound", "outbound"):
        track = MasterTrack(folder / f"{name}.wav", rate)
        track.write(0, np.full(n, 1000, "<i2").tobytes())
        track.close()
    journal = Journal(folder / "journal.jsonl")
    journal.append("start", call_sid=sid, stream_sid="MZ" + "0" * 32, mode=mode,
                   source="browser" if sid.startswith("WB") else "phone", rate=rate, wall=started,
                   from_last4=from_last4)
    step = seconds * 1000 / max(1, len(texts))
    for i, text in enumerate(texts):
        role = ("caller", "assistant")[i % 2] if mode == "assistant" else ("caller", "other")[i % 2]
        extra = {"latency_ms": latency_ms} if role == "assistant" and latency_ms is not None else {}
        interrupted = barge_in and role == "assistant"
        start_ms, end_ms = i * step, (i + 1) * step
        journal.append("turn", role=role, text=text, start_ms=start_ms, end_ms=end_ms,
                       start_sample=round(start_ms * rate / 1000), end_sample=round(end_ms * rate / 1000),
                       interrupted=interrupted, **({"cut_by": "caller"} if interrupted else {}), **extra)
    if stopped:
        journal.append("stop", samples=n, reason="caller hung up (stop)", closed_at=started + seconds)
    journal.close()


def finalised(store: CallStore, sid: str, *, recovered: bool = False, opts: ExportOptions = OPTS, **call) -> dict:
    """A call recorded and finalised (``recovered``: as the start-up recovery finalises a crashed one)."""
    record(store, sid, stopped=not recovered, **call)
    return finalize_call(store, sid, opts, recovered=recovered)
