"""Drawing a call's picture (``picture.CallPicture``) as a self-contained, accessible SVG.

The geometry the dashboard seeks with is stated in ``app/recording/picture.py``: in the root's
user space ``x = sample × W / D`` (``W = data-width``, ``D = data-duration-samples``), and every
shape carries its samples as data attributes. No script, no external reference; all text escaped.
"""

from __future__ import annotations

import math
import re
from typing import Any

from app.recording.picture import PRESSED, CallPicture, Marker, clock_label

__all__ = ["render_svg"]


_LANE_COLOURS = {"caller": "#2563eb", "assistant": "#ea580c", "other party": "#059669"}
_LANE_TITLES = {"caller": "Caller", "assistant": "Assistant", "other party": "Other party"}
_MARKER_NAMES = {"barge-in": "barge-in", "dtmf": "DTMF digit", "disconnected": "connection dropped",
                 "restart": "server restart", "server-stopped": "server stopped"}
_GAP_NAMES = {"recovered": "not recorded (server down)", "connection-lost": "connection lost"}
_TICK_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
_XML_BAD = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")  # not allowed in XML 1.0 at all


def _esc(value: Any) -> str:
    """Text or attribute content, escaped (and stripped of characters XML cannot hold)."""
    s = _XML_BAD.sub("", str(value))
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _n(x: float) -> str:
    return f"{x:.3f}".rstrip("0").rstrip(".") or "0"


def _plural(n: int, word: str, many: str = "") -> str:
    return f"{n} {word if n == 1 else many or word + 's'}"


def _spoken(seconds: float) -> str:
    """12.34 → '12.3 s', 125 → '2 min 5 s', 3725 → '1 h 2 min'."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h} h {m} min" if h else f"{m} min {s} s"


def _tick_label(seconds: float, hours: bool, tenths: bool) -> str:
    whole = int(seconds)
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    text = f"{h}:{m:02d}:{s:02d}" if hours else f"{m + 60 * h:02d}:{s:02d}"
    return text + f".{int(round((seconds - whole) * 10)) % 10}" if tenths else text


def _digit(label: str) -> str:
    return label.rsplit(PRESSED, 1)[-1]


def _symbol(kind: str, x: float, y: float, label: str) -> str:
    """The marker's shape centred on (x, y)."""
    if kind == "barge-in":
        return f'<polygon points="{_n(x - 5)},{_n(y - 5)} {_n(x + 5)},{_n(y - 5)} {_n(x)},{_n(y + 5)}" fill="#dc2626"/>'
    if kind == "dtmf":
        digit = _esc(_digit(label)[:2])
        return (f'<rect x="{_n(x - 6)}" y="{_n(y - 6)}" width="12" height="12" rx="2" fill="#7c3aed"/>'
                f'<text x="{_n(x)}" y="{_n(y + 3.5)}" font-size="9" fill="#fff" text-anchor="middle">{digit}</text>')
    if kind == "disconnected":
        return f'<circle cx="{_n(x)}" cy="{_n(y)}" r="4.5" fill="#fff" stroke="#4b5563" stroke-width="2"/>'
    if kind == "restart":
        return (f'<polygon points="{_n(x)},{_n(y - 6)} {_n(x + 6)},{_n(y)} {_n(x)},{_n(y + 6)} {_n(x - 6)},{_n(y)}" '
                'fill="#111827"/>')
    return f'<rect x="{_n(x - 5)}" y="{_n(y - 5)}" width="10" height="10" fill="#111827"/>'


def _marker_rows(markers: list[Marker], x_of: Any, room: float = 13.0, most: int = 3) -> list[int]:
    """A row for each marker (sorted by time) so that close ones sit one under the other, not on top."""
    last: list[float] = []
    rows = []
    for m in markers:
        x = x_of(m.at_sample)
        row = next((r for r, at in enumerate(last) if x - at >= room), None)
        if row is None and len(last) < most:
            row = len(last)
            last.append(x)
        elif row is None:  # crowded: the row whose last marker is furthest back
            row = min(range(most), key=lambda r: last[r])
        last[row] = x
        rows.append(row)
    return rows


def _caption(p: CallPicture) -> str:
    """The line above the lanes: length, talk per lane, barge-ins, DTMF."""
    if p.duration == 0:
        return "No audio was recorded"
    talk = [f"{_LANE_TITLES.get(lane, lane)} {_spoken(p.talk_seconds(lane))}" for lane in p.lanes]
    return " · ".join([clock_label(p.duration, p.rate), *talk, _plural(p.count("barge-in"), "barge-in"),
                       f"{p.count('dtmf')} DTMF"])


def _describe(p: CallPicture) -> tuple[str, str]:
    """The SVG's <title> and <desc> (plain text, escaped by the caller)."""
    length = clock_label(p.duration, p.rate)
    title = f"Who spoke when: call {p.call_sid} ({length})"
    if p.duration == 0:
        return title, f"Call {p.call_sid}: no audio was recorded, so there is nothing to show."
    parts = [f"Call {p.call_sid} lasted {length}."]
    talk = [f"{_LANE_TITLES.get(lane, lane).lower()} {_spoken(p.talk_seconds(lane))} in "
            + _plural(len(spans), "stretch", "stretches") for lane, spans in p.lanes.items()]
    parts.append("Talk time: " + ", ".join(talk) + ".")
    guessed = [_LANE_TITLES.get(lane, lane).lower() for lane, src in p.sources.items() if src == "transcript"]
    if guessed:
        parts.append(f"No recorded audio was kept for the {' and '.join(guessed)}: "
                     "shown from the transcript's turn times.")
    parts.append(_plural(p.count("barge-in"), "barge-in") + ".")
    digits = [_digit(m.label) for m in p.markers if m.kind == "dtmf"]
    parts.append(_plural(len(digits), "DTMF digit") + (f": {', '.join(digits)}." if digits else "."))
    drops = [g for g in p.gaps if g.kind == "connection-lost"]
    if drops:
        parts.append(f"The browser's connection dropped {_plural(len(drops), 'time')}.")
    restarts = p.count("restart") + sum(1 for g in p.gaps if g.kind == "recovered")
    if restarts:
        parts.append(f"The server restarted {_plural(restarts, 'time')} during the call.")
    if p.recovered:
        parts.append("The server stopped during the call; the recording ends where it stopped.")
    return title, " ".join(parts)


def _legend(p: CallPicture, ident: str) -> str:
    """One line under the caption: each lane's colour, each kind of marker and gap present."""
    items: list[tuple[str, str]] = []  # (swatch, name)
    for lane in p.lanes:
        name = _LANE_TITLES.get(lane, lane) + (" (from transcript)" if p.sources.get(lane) == "transcript" else "")
        items.append((f'<rect x="{{x}}" y="24" width="12" height="10" fill="{_LANE_COLOURS.get(lane, "#6b7280")}"/>',
                      name))
    for kind in sorted({m.kind for m in p.markers}, key=list(_MARKER_NAMES).index):
        items.append((kind, _MARKER_NAMES[kind]))
    for kind in sorted({g.kind for g in p.gaps}):
        fill = f'fill="url(#{ident}-hatch)"' if kind == "recovered" else 'fill="#9ca3af" fill-opacity="0.5"'
        items.append((f'<rect x="{{x}}" y="24" width="12" height="10" {fill}/>', _GAP_NAMES[kind]))
    out, x = [], 0.0
    for swatch, name in items:
        shape = _symbol(swatch, x + 6, 29, PRESSED + "#") if swatch in _MARKER_NAMES else swatch.format(x=_n(x))
        out.append(f'{shape}<text x="{_n(x + 16)}" y="33" fill="#374151">{_esc(name)}</text>')
        x += 24 + 6.5 * len(name)
    return '<g class="legend">' + "".join(out) + "</g>"


def _axis(p: CallPicture, width: int, y: int) -> str:
    """The time axis: a tick every 'nice' step (at most one per 90 px), labelled m:ss or h:mm:ss."""
    seconds = p.duration / p.rate
    most = max(2, width // 90)
    step = next((s for s in _TICK_STEPS if seconds / s <= most), _TICK_STEPS[-1])
    while seconds / step > most:
        step *= 2
    out = [f'<line x1="0" y1="{y}" x2="{width}" y2="{y}" stroke="#9ca3af"/>']
    for k in range(int(math.floor(seconds / step + 1e-9)) + 1 if p.duration else 0):
        t = k * step
        x = round(t * p.rate) * width / p.duration
        anchor = "start" if x < 20 else "end" if x > width - 20 else "middle"
        out.append(f'<line x1="{_n(x)}" y1="{y}" x2="{_n(x)}" y2="{y + 4}" stroke="#9ca3af"/>'
                   f'<text x="{_n(x)}" y="{y + 16}" text-anchor="{anchor}" fill="#4b5563" '
                   f'data-seconds="{_n(t)}">{_tick_label(t, seconds >= 3600, step < 1)}</text>')
    return '<g class="axis">' + "".join(out) + "</g>"


def render_svg(picture: CallPicture, *, width: int = 1000, lane_height: int = 28) -> str:
    """The picture as a self-contained SVG string (no script, no external reference): a time axis,
    one lane per voice, markers with tooltips, gaps shaded. Geometry: see the module docstring
    (``x = sample × width / duration`` in the viewBox's user space)."""
    p, W = picture, width
    D = max(p.duration, 1)

    def x_of(sample: int) -> float:
        return sample * W / D

    ident = "cp-" + (re.sub(r"[^A-Za-z0-9_-]", "", p.call_sid)[:40] or "call")
    title, desc = _describe(p)
    label_h, lane_gap = 14, 8
    top = 44  # caption and legend
    lane_tops = [top + i * (label_h + lane_height + lane_gap) + label_h for i in range(len(p.lanes))]
    lanes_bottom = (lane_tops[-1] + lane_height) if lane_tops else top
    rows = _marker_rows(p.markers, x_of)
    marker_y = lanes_bottom + 12
    axis_y = marker_y + 14 * max(rows, default=0) + 12
    height = axis_y + 22
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {height}" width="{W}" height="{height}" '
        f'role="img" aria-labelledby="{ident}-title {ident}-desc" data-rate="{p.rate}" '
        f'data-duration-samples="{p.duration}" data-width="{W}" font-family="system-ui, sans-serif" font-size="11">',
        f'<title id="{ident}-title">{_esc(title)}</title>',
        f'<desc id="{ident}-desc">{_esc(desc)}</desc>',
        f'<defs><pattern id="{ident}-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="#e5e7eb"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#6b7280" stroke-width="2"/></pattern></defs>',
        f'<rect x="0" y="0" width="{W}" height="{height}" fill="#fff"/>',
    ]
    out.append(f'<text x="0" y="13" font-size="12" font-weight="600" fill="#111827">{_esc(_caption(p))}</text>')
    out.append(_legend(p, ident))
    # Lanes: a background row, its label, then its spans.
    for (lane, spans), y in zip(p.lanes.items(), lane_tops):
        name = _LANE_TITLES.get(lane, lane)
        out.append(f'<g class="lane" data-lane-row="{_esc(lane)}">'
                   f'<text x="0" y="{y - 3}" fill="#374151" font-weight="600">{_esc(name)}</text>'
                   f'<rect x="0" y="{y}" width="{W}" height="{lane_height}" fill="#f3f4f6"/>')
        colour = _LANE_COLOURS.get(lane, "#6b7280")
        for a, b in spans:
            out.append(f'<rect x="{_n(x_of(a))}" y="{y}" width="{_n(max(1.0, x_of(b) - x_of(a)))}" '
                       f'height="{lane_height}" fill="{colour}" data-lane="{_esc(lane)}" data-start-sample="{a}" '
                       f'data-end-sample="{b}"><title>{_esc(name)} {clock_label(a, p.rate)}–{clock_label(b, p.rate)}</title>'
                       "</rect>")
        out.append("</g>")
    if p.duration == 0 or not any(p.lanes.values()):
        note = "No audio was recorded for this call" if p.duration == 0 else "No speech was detected"
        mid = (top + lanes_bottom) / 2 + 4
        out.append(f'<text x="{W / 2}" y="{_n(mid)}" text-anchor="middle" fill="#6b7280">{note}</text>')
    # Gaps over the lanes (behind nothing a person needs to read: they hold no speech).
    for g in p.gaps:
        fill = (f'fill="url(#{ident}-hatch)" fill-opacity="0.85"' if g.kind == "recovered"
                else 'fill="#9ca3af" fill-opacity="0.35"')
        out.append(f'<rect x="{_n(x_of(g.start))}" y="{top}" width="{_n(max(1.0, x_of(g.end) - x_of(g.start)))}" '
                   f'height="{lanes_bottom - top}" {fill} data-kind="{g.kind}" data-start-sample="{g.start}" '
                   f'data-end-sample="{g.end}"><title>{_esc(g.label)}</title></rect>')
    # Markers: a faint guide through the lanes at the exact x, the symbol in a row below them (kept
    # whole at the edges: a recovered call's marker sits at the very end).
    for m, row in zip(p.markers, rows):
        x, y = x_of(m.at_sample), marker_y + 14 * row
        out.append(f'<g class="marker" data-kind="{_esc(m.kind)}" data-at-sample="{m.at_sample}">'
                   f"<title>{_esc(m.label)}</title>"
                   f'<line x1="{_n(x)}" y1="{top}" x2="{_n(x)}" y2="{_n(y)}" stroke="#111827" '
                   f'stroke-opacity="0.35" stroke-dasharray="2 2"/>'
                   f"{_symbol(m.kind, min(max(x, 6), W - 6), y, m.label)}</g>")
    out.append(_axis(p, W, axis_y))
    out.append("</svg>")
    return "\n".join(out) + "\n"
