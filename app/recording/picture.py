"""The picture of a call: who spoke when and what happened, as data and as a self-contained SVG.

Owns: finding speech in a master from its loudness (``speech_spans``, read block by block, so a
four-hour call costs the memory of a minute), gathering a call's lanes, markers and gaps from its
folder and result (``picture_of`` → ``CallPicture``, for finished and live calls alike), and
drawing it (``picture_svg.render_svg``). It reads the call folder (masters, journal) and the result JSON;
it knows no transport, no assistant and no web framework, and writes no file: finalisation
writes the string as ``call_<sid>_timeline.svg``, the dashboard serves or inlines it.

**Geometry** (the dashboard seeks with it). The root ``<svg>`` has ``viewBox="0 0 W H"`` with
``W == data-width`` and, in that user space, ``x = sample × W / data-duration-samples``: a shape
for samples [a, b) has ``x = a·W/D`` and ``width = (b − a)·W/D`` (a span narrower than 1 px is
drawn 1 px wide so it shows). A click at fraction f of the SVG's rendered width is sample
``round(f × D)``, i.e. ``f × D / data-rate`` seconds (when the page keeps the SVG's aspect ratio;
otherwise map the click through ``getScreenCTM().inverse()`` to user-space x first). Shapes
carry their truth as attributes: spans ``data-lane``, ``data-start-sample``, ``data-end-sample``;
markers (``<g>``) ``data-kind``, ``data-at-sample``; gaps ``data-kind``, ``data-start-sample``,
``data-end-sample``; each lane's row (``<g>``) ``data-lane-row``.

**Recovered gaps.** The journal does not say where a restarted recorder resumed: its new
``start`` record has no sample (the recorder continues at the end of what is on disk, and the
clocks rebase, so usually no silence marks the spot). For every ``start`` after the first, the
span between the old process's last journaled sample and the new one's first is searched for a
stretch where both masters are digital zero for at least ``RESTART_MIN_GAP_S``: found, it is a
``recovered`` gap; not found, a ``restart`` marker sits at the last sample the old process
journaled. A ``start`` record carrying ``resumed_at_sample`` is used as is. A call finalised by
recovery (``result["recovered"]``) gets a ``server-stopped`` marker where its recording ends.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from app.recording.journal import read_journal
from app.recording.summary import fmt_clock
from app.recording.track import HEADER_BYTES, read_block, track_rate, track_samples
from app.storage.paths import CallFiles

__all__ = ["Span", "Marker", "Gap", "CallPicture", "speech_spans", "picture_of", "RESTART_MIN_GAP_S", "clock_label", "PRESSED"]

Span = tuple[int, int]  # [start, end) in samples at the call's rate

RESTART_MIN_GAP_S = 2.0  # both masters digitally silent this long around a restart: the server was down
_BLOCK_WINDOWS = 200  # windows read per block: 10 s at 50 ms (1.3 MB of float64 at 16 kHz)
_NOT_BARGE_IN = ("hangup", "connection lost", "paused")  # cut_by values that are no barge-in (as finalize counts)
PRESSED = "DTMF: pressed "  # a dtmf marker's label ends with this and the digit


class Marker(NamedTuple):
    """A moment: ``barge-in``, ``dtmf``, ``disconnected``, ``restart`` or ``server-stopped``."""

    kind: str
    at_sample: int
    label: str


class Gap(NamedTuple):
    """A stretch not recorded as spoken: ``recovered`` (the server was down) or ``connection-lost``
    (a browser call's socket dropped until it reconnected, or until the call ended)."""

    kind: str
    start: int
    end: int
    label: str


@dataclass
class CallPicture:
    """Who spoke when in one call, on its sample clock."""

    duration: int  # samples
    rate: int
    lanes: dict[str, list[Span]]  # "caller", then "assistant" (or "other party" in listen mode)
    markers: list[Marker] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    call_sid: str = ""
    recovered: bool = False
    sources: dict[str, str] = field(default_factory=dict)  # lane → "audio", "transcript" (master gone) or "none"
    talk: dict[str, float] = field(default_factory=dict)  # lane → talk seconds as the call's JSON counts them

    def talk_seconds(self, lane: str) -> float:
        """The call's own figure (its JSON's talk_seconds) when finalised, so the picture and the
        summary say the same; while live, the drawn spans (bridged over short pauses)."""
        if lane in self.talk:
            return self.talk[lane]
        return sum(b - a for a, b in self.lanes.get(lane, [])) / self.rate

    def count(self, kind: str) -> int:
        return sum(1 for m in self.markers if m.kind == kind)


# ---------------------------------------------------------------------------------- loudness
def _windows(path: Path, win: int, threshold: float, start: int = 0, end: int | None = None) -> Iterator[Span]:
    """Runs [a, b) of whole windows (aligned to sample 0) in [start, end) whose mean square exceeds
    ``threshold``, in order. Reads blocks with ``pread``; holes of a sparse master are skipped with
    SEEK_DATA (they are silence), so the cost follows the audio actually written."""
    n_total = track_samples(path) if end is None else min(end, track_samples(path))
    pos = start - start % win
    skip = hasattr(os, "SEEK_DATA")
    fd = os.open(path, os.O_RDONLY)
    try:
        while pos < n_total:
            data = pos
            if skip:
                try:
                    data = (os.lseek(fd, HEADER_BYTES + 2 * pos, os.SEEK_DATA) - HEADER_BYTES) // 2
                except OSError as exc:
                    if exc.errno == errno.ENXIO:
                        return  # nothing but a hole to the end
                    skip = False  # a file system without SEEK_DATA: read the holes as zeros
            pos = max(pos, data - data % win)
            if pos >= n_total:
                return
            count = min(win * _BLOCK_WINDOWS, n_total - pos)
            block = read_block(fd, pos, count)
            k = -(-count // win)
            sq = np.zeros(k * win, np.float64)
            np.square(block, out=sq[:count], dtype=np.float64)
            sums = sq.reshape(k, win).sum(axis=1)
            sums[-1] *= win / (count - (k - 1) * win)  # the last window may be short: its mean, scaled
            loud = np.concatenate(([False], sums > threshold * win, [False]))
            edges = np.flatnonzero(np.diff(loud.view(np.int8)))
            for a, b in zip(edges[::2], edges[1::2]):
                yield pos + int(a) * win, min(pos + int(b) * win, n_total)
            pos += count
    finally:
        os.close(fd)


def speech_spans(path: Path, rate: int, *, window_ms: int = 50, threshold_dbfs: float = -45,
                 min_gap_ms: int = 250, min_span_ms: int = 100, start: int = 0, end: int | None = None) -> list[Span]:
    """When a master has voice: windows of ``window_ms`` whose RMS is above ``threshold_dbfs``
    (0 dBFS = RMS 32768, a full-scale square wave), merged across gaps of at most ``min_gap_ms``,
    keeping spans of at least ``min_span_ms``. Spans are [start, end) samples at ``rate``, accurate
    to one window. Memory is flat in the call's length (one block of 10 s at a time); a missing
    master has no spans.

    ``start``/``end`` limit the reading to part of the master (a live call's page need only read
    on from its last span's start: windows are aligned to sample 0, so the spans agree)."""
    if not Path(path).exists():
        return []
    win = max(1, round(rate * window_ms / 1000))
    threshold = (32768.0 * 10 ** (threshold_dbfs / 20)) ** 2
    gap, shortest = rate * min_gap_ms / 1000, rate * min_span_ms / 1000
    spans: list[Span] = []
    cur: list[int] | None = None
    for a, b in _windows(Path(path), win, threshold, start, end):
        if cur is not None and a - cur[1] <= gap:
            cur[1] = b
            continue
        if cur is not None and cur[1] - cur[0] >= shortest:
            spans.append((cur[0], cur[1]))
        cur = [a, b]
    if cur is not None and cur[1] - cur[0] >= shortest:
        spans.append((cur[0], cur[1]))
    return spans


def _longest_silence(masters: tuple[Path, ...], start: int, end: int, win: int) -> Span | None:
    """The longest stretch of whole windows in [start, end) where every master is digital zero."""
    sound = sorted(r for m in masters if m.exists() for r in _windows(m, win, 0.0, start, end))
    best: Span | None = None
    pos = start
    for a, b in sound + [(end, end)]:
        if a > pos and (best is None or a - pos > best[1] - best[0]):
            best = (pos, a)
        pos = max(pos, b)
    return best


# ---------------------------------------------------------------------------------- the call
def _sample(r: dict[str, Any], rate: int, *keys: str) -> int | None:
    """A record's position in samples: the first of ``keys`` present, else its ``at_ms``."""
    for k in keys:
        if isinstance(r.get(k), (int, float)):
            return int(r[k])
    return round(r["at_ms"] * rate / 1000) if isinstance(r.get("at_ms"), (int, float)) else None


def _position(r: dict[str, Any], rate: int, *, first: bool = False) -> int | None:
    """Where a record sits (a turn: its end, or with ``first`` its start)."""
    if r.get("t") == "turn":
        return _sample(r, rate, *(("start_sample", "end_sample") if first else ("end_sample", "start_sample")))
    return _sample(r, rate, "at_sample")


def _turns(records: list[dict[str, Any]], result: dict[str, Any], rate: int) -> list[dict[str, Any]]:
    turns = [r for r in records if r.get("t") == "turn"] if records else list(result.get("turns") or [])
    out = []
    for t in turns:
        start = _sample(t, rate, "start_sample")
        end = _sample(t, rate, "end_sample")
        if start is None and isinstance(t.get("start_ms"), (int, float)):
            start, end = round(t["start_ms"] * rate / 1000), round(t.get("end_ms", t["start_ms"]) * rate / 1000)
        if start is not None:
            out.append({**t, "start_sample": start, "end_sample": max(start, end or start)})
    return out


def _short(text: Any, limit: int = 80) -> str:
    s = " ".join(str(text or "").split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def clock_label(samples: int, rate: int) -> str:
    """A sample index as the transcript writes times (mm:ss.s)."""
    return fmt_clock(samples * 1000 / rate)


def _restarts(records: list[dict[str, Any]], masters: tuple[Path, Path], rate: int, duration: int,
              win: int) -> tuple[list[Marker], list[Gap]]:
    """Where a restarted recorder resumed (see the module docstring)."""
    markers: list[Marker] = []
    gaps: list[Gap] = []
    starts = [i for i, r in enumerate(records) if r.get("t") == "start"]
    for n, i in enumerate(starts[1:], 1):
        before = [p for r in records[starts[n - 1]:i] if (p := _position(r, rate)) is not None]
        after = [p for r in records[i + 1: starts[n + 1] if n + 1 < len(starts) else None]
                 if (p := _position(r, rate, first=True)) is not None]
        walls = [r["wall"] for r in records[starts[n - 1]:i] if isinstance(r.get("wall"), (int, float))]
        new = records[i]
        down = (f"; about {new['wall'] - walls[-1]:.0f} s passed between the server's last record and its restart"
                if walls and isinstance(new.get("wall"), (int, float)) else "")
        lo = min(max(before, default=0), duration)
        hi = max(lo, min(min(after, default=duration), duration))
        if isinstance(new.get("resumed_at_sample"), int):
            markers.append(Marker("restart", min(new["resumed_at_sample"], duration),
                                  f"{clock_label(new['resumed_at_sample'], rate)} the server restarted; "
                                  f"the recording continues here{down}"))
            continue
        quiet = _longest_silence(masters, lo, hi, win) if hi > lo else None
        if quiet is not None and quiet[1] - quiet[0] >= RESTART_MIN_GAP_S * rate:
            gaps.append(Gap("recovered", quiet[0], quiet[1],
                            f"{clock_label(quiet[0], rate)}–{clock_label(quiet[1], rate)} not recorded: "
                            f"the server was down{down}"))
        else:
            markers.append(Marker("restart", lo, f"{clock_label(lo, rate)} the server restarted after this point "
                                                 f"(its exact position is not journaled){down}"))
    return markers, gaps


def _connections(records: list[dict[str, Any]], rate: int, duration: int) -> tuple[list[Marker], list[Gap]]:
    """A browser call's dropped sockets: each `disconnected` until the next `reconnected` (or the end)."""
    markers: list[Marker] = []
    gaps: list[Gap] = []
    lost: tuple[int, dict[str, Any]] | None = None

    def close(end: int, resumed: bool) -> None:
        assert lost is not None
        s, r = lost
        end = max(s, min(end, duration))
        how = f"resumed after {(end - s) / rate:.1f} s" if resumed else "not resumed before the call ended"
        code = f" (close code {r['code']})" if r.get("code") is not None else ""
        markers.append(Marker("disconnected", s, f"{clock_label(s, rate)} the browser's connection dropped{code}"))
        gaps.append(Gap("connection-lost", s, end,
                        f"{clock_label(s, rate)}–{clock_label(end, rate)} connection lost{code}, {how}"))

    for r in records:
        at = _position(r, rate)
        if r.get("t") == "disconnected" and at is not None and lost is None:
            lost = (min(at, duration), r)
        elif r.get("t") == "reconnected" and lost is not None:
            close(at if at is not None else lost[0], True)
            lost = None
    if lost is not None:
        close(duration, False)
    return markers, gaps


def picture_of(call_folder: Path, result: dict[str, Any]) -> CallPicture:
    """The picture of the call in ``call_folder`` (its masters and journal), with ``result`` (the
    call's JSON as finalize wrote it; ``{}`` for a live call). Lanes come from the masters'
    loudness; a master that is gone (not kept) falls back to the transcript's turn times."""
    files = CallFiles(Path(call_folder))
    records = list(read_journal(files.journal))
    start = next((r for r in records if r.get("t") == "start"), {})
    stop = next((r for r in reversed(records) if r.get("t") == "stop"), None)
    mode = result.get("mode") or start.get("mode") or "assistant"
    source = result.get("source") or start.get("source")
    masters = files.masters
    journaled_rate = int(start.get("rate") or (16000 if source == "browser" else 8000))
    rate = track_rate(masters[0], track_rate(masters[1], journaled_rate))
    if stop and isinstance(stop.get("samples"), int):
        duration = stop["samples"]
    elif isinstance(result.get("duration_s"), (int, float)):
        duration = round(result["duration_s"] * rate)
    else:
        duration = max(track_samples(m) for m in masters)
    duration = max(0, int(duration))

    turns = _turns(records, result, rate)
    lanes: dict[str, list[Span]] = {}
    sources: dict[str, str] = {}
    names = ("caller", "assistant" if mode == "assistant" else "other party")
    for name, master, roles in zip(names, masters, (("caller",), ("assistant", "other"))):
        if track_samples(master):
            spans, sources[name] = speech_spans(master, rate), "audio"
        else:
            spans = sorted((t["start_sample"], t["end_sample"]) for t in turns
                           if t.get("role") in roles and t["end_sample"] > t["start_sample"])
            sources[name] = "transcript" if spans else "none"
        lanes[name] = [(a, min(b, duration)) for a, b in spans if a < duration]

    markers: list[Marker] = []
    for t in turns:
        if t.get("interrupted") and t.get("cut_by") not in _NOT_BARGE_IN:
            at = min(t["end_sample"], duration)
            said = _short(t.get("text"))
            markers.append(Marker("barge-in", at, f"{clock_label(at, rate)} barge-in: the caller cut the {names[1]} off"
                                  + (f' after "{said}"' if said else " before any words were heard")))
    dtmf = [r for r in records if r.get("t") == "dtmf"] if records else list(result.get("dtmf") or [])
    for r in dtmf:
        at = _position(r, rate)
        if at is not None:
            markers.append(Marker("dtmf", min(at, duration), f"{clock_label(at, rate)} {PRESSED}{r.get('digit', '?')}"))
    win = max(1, rate // 20)
    restart_markers, gaps = _restarts(records, masters, rate, duration, win)
    drop_markers, drops = _connections(records, rate, duration)
    markers += restart_markers + drop_markers
    if result.get("recovered"):
        markers.append(Marker("server-stopped", duration, f"{clock_label(duration, rate)} the recording ends here: the "
                              "server stopped during the call, which was finalised from what it had recorded"))
    markers.sort(key=lambda m: m.at_sample)
    sid = str(result.get("call_sid") or start.get("call_sid") or Path(call_folder).name)
    counted = (result.get("stats") or {}).get("talk_seconds") or {}
    talk = {lane: float(counted[track]) for lane, track in zip(lanes, ("inbound", "outbound"))
            if isinstance(counted.get(track), (int, float))}
    return CallPicture(duration, rate, lanes, markers, sorted(gaps + drops, key=lambda g: g.start), sid,
                       bool(result.get("recovered")), sources, talk)
