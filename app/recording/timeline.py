"""Where a frame goes on the call's timeline: Twilio's media clock, checked rather than trusted.

Rules (sample index = timestamp ms × 8, shared by both tracks of a stream):

* In order, or ahead with a hole of up to `max_jump` samples: placed at its timestamp; the
  hole stays silence.
* Behind the furthest sample placed but inside the reorder window: placed only where it fills
  a hole (a late frame); where the slot is already filled it is a duplicate and dropped.
* Further behind than the window, or further ahead than `max_jump`: not trusted. One stray
  frame is dropped. If `_CONFIRM` such frames in a row agree with each other (the clock really
  was reset or jumped), the clock is rebased so that they continue where the call was, and the
  discontinuity is reported; the frames held while deciding are then placed.

Memory is bounded: the hole list only covers the reorder window and at most `_CONFIRM` frames
are held.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["StreamClock", "HoleTracker"]

_CONFIRM = 5
_MAX_HOLES = 512


class HoleTracker:
    """Per-track record of recent holes, so late frames fill them and duplicates are dropped."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.end = 0  # furthest sample written
        self.holes: list[list[int]] = []  # [start, stop) within the window, sorted

    def accept(self, start: int, n: int) -> list[tuple[int, int]]:
        """Ranges [a, b) of the frame (absolute samples) that should be written."""
        stop = start + n
        if start >= self.end:
            if start > self.end:
                self.holes.append([self.end, start])
                if len(self.holes) > _MAX_HOLES:
                    del self.holes[0]
            self.end = stop
            self._prune()
            return [(start, stop)]
        if start < self.end - self.window:
            return []
        out: list[tuple[int, int]] = []
        new_holes: list[list[int]] = []
        for h0, h1 in self.holes:
            a, b = max(h0, start), min(h1, stop)
            if a < b:
                out.append((a, b))
                if h0 < a:
                    new_holes.append([h0, a])
                if b < h1:
                    new_holes.append([b, h1])
            else:
                new_holes.append([h0, h1])
        self.holes = new_holes
        if stop > self.end:  # overlaps the end: the part beyond is new
            out.append((self.end, stop))
            self.end = stop
        return out

    def _prune(self) -> None:
        limit = self.end - self.window
        while self.holes and self.holes[0][1] <= limit:
            del self.holes[0]


@dataclass
class StreamClock:
    """Maps Twilio timestamps (ms) to sample indexes, rebasing on confirmed discontinuities."""

    window: int  # samples
    max_jump: int  # samples
    offset: int = 0  # samples added to timestamp × 8
    frontier: int = 0  # furthest sample end placed on any track
    _held: list[tuple[str, int, bytes]] = field(default_factory=list)
    discontinuities: int = 0
    dropped: int = 0

    def map(self, track: str, timestamp_ms: int, pcm: bytes) -> list[tuple[str, int, bytes]]:
        """Frames ready to place as (track, sample, pcm). Usually the one given; sometimes none or several."""
        n = len(pcm) // 2
        index = timestamp_ms * 8 + self.offset
        plausible = self.frontier - self.window <= index <= self.frontier + self.max_jump
        if plausible:
            if self._held:
                self.dropped += len(self._held)
                self._held.clear()
            self.frontier = max(self.frontier, index + n)
            return [(track, index, pcm)]
        self._held.append((track, timestamp_ms, pcm))
        if len(self._held) < _CONFIRM:
            return []
        ts = [t for _, t, _ in self._held]
        if any(b < a for a, b in zip(ts, ts[1:])) or ts[-1] - ts[0] > 20 * 4 * _CONFIRM:
            self.dropped += 1
            del self._held[0]
            return []
        # Confirmed: the clock jumped. Continue the held frames where the call was.
        self.offset = self.frontier - ts[0] * 8
        self.discontinuities += 1
        out = [(tr, t * 8 + self.offset, p) for tr, t, p in self._held]
        self._held.clear()
        self.frontier = max(self.frontier, max(s + len(p) // 2 for _, s, p in out))
        return out
