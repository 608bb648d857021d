"""Where audio goes on the call's timeline: one clock per kind of transport, checked rather than trusted.

A clock turns what a transport knows about a chunk of audio (its *position*) into a sample index
at the call's rate. Both clocks share one interface (``Clock``): ``map`` places a chunk,
``frontier`` is the furthest sample placed, ``now()`` the call's clock, ``window`` how far back
late audio may still land.

**TwilioClock** (position = ``media.timestamp`` in ms; sample index = timestamp × rate / 1000,
shared by both tracks of a stream):

* In order, or ahead with a hole of up to `max_jump` samples: placed at its timestamp; the
  hole stays silence.
* Behind the furthest sample placed but inside the reorder window: placed only where it fills
  a hole (a late frame); where the slot is already filled it is a duplicate and dropped.
* Further behind than the window, or further ahead than `max_jump`: not trusted. One stray
  frame is dropped. If `_CONFIRM` such frames in a row agree with each other (the clock really
  was reset or jumped), the clock is rebased so that they continue where the call was, and the
  discontinuity is reported; the frames held while deciding are then placed.

**SpeechOnlyClock** (position = arrival time in seconds on the call's wall clock): for transports
that send the caller's audio only while the caller speaks (a browser client with its own voice
detection). Each burst is anchored where it was spoken — its first chunk ends when it arrived —
and continues contiguously within the burst; between bursts is silence. A burst never overlaps
the one before (it starts at the earlier one's end at the soonest), and because every burst is
re-anchored on the wall clock, errors never add up over an hour. A burst that falls more than
`max_lag` behind the wall clock (the client stalled mid-burst) is re-anchored too.

Memory is bounded: the hole list only covers the reorder window and at most `_CONFIRM` frames
are held.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = ["Clock", "TwilioClock", "SpeechOnlyClock", "HoleTracker"]

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
            if self.holes:
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


class Clock(Protocol):
    """What the recorder needs of a transport's clock."""

    window: int  # samples: late audio may still land this far behind the frontier
    frontier: int  # furthest sample end placed on any track
    follows_wall: bool  # now() runs on between chunks by itself (else it moves only with the audio)
    discontinuities: int
    dropped: int

    def map(self, track: str, position: float, pcm: bytes) -> list[tuple[str, int, bytes]]: ...

    def fast_index(self, position: float, n: int) -> int: ...

    def now(self) -> int: ...


@dataclass
class TwilioClock:
    """Maps Twilio timestamps (ms) to sample indexes, rebasing on confirmed discontinuities."""

    window: int  # samples
    max_jump: int  # samples
    rate: int = 8000
    follows_wall: bool = False
    offset: int = 0  # samples added to timestamp × rate / 1000
    frontier: int = 0  # furthest sample end placed on any track
    _held: list[tuple[str, int, bytes]] = field(default_factory=list)
    discontinuities: int = 0
    dropped: int = 0

    def now(self) -> int:
        """Twilio's clock is its media: the end of the furthest frame."""
        return self.frontier

    def _index(self, timestamp_ms: int) -> int:
        return timestamp_ms * self.rate // 1000

    def fast_index(self, position: float, n: int) -> int:
        """Where a plausible chunk of `n` samples goes (the frontier moves past it; frames held while
        deciding on a jump were strays and are dropped), or -1 when it is not plausible: then ``map``
        decides. The per-frame path: ``_index`` is inlined."""
        index = int(position) * self.rate // 1000 + self.offset
        frontier = self.frontier
        if not frontier - self.window <= index <= frontier + self.max_jump:
            return -1
        if self._held:
            self.dropped += len(self._held)
            self._held.clear()
        if index + n > frontier:
            self.frontier = index + n
        return index

    def map(self, track: str, position: float, pcm: bytes) -> list[tuple[str, int, bytes]]:
        """Frames ready to place as (track, sample, pcm). Usually the one given; sometimes none or several."""
        index = self.fast_index(position, len(pcm) >> 1)
        if index >= 0:
            return [(track, index, pcm)]
        timestamp_ms = int(position)
        self._held.append((track, timestamp_ms, pcm))
        if len(self._held) < _CONFIRM:
            return []
        ts = [t for _, t, _ in self._held]
        if any(b < a for a, b in zip(ts, ts[1:])) or ts[-1] - ts[0] > 20 * 4 * _CONFIRM:
            self.dropped += 1
            del self._held[0]
            return []
        # Confirmed: the clock jumped. Continue the held frames where the call was.
        self.offset = self.frontier - self._index(ts[0])
        self.discontinuities += 1
        out = [(tr, self._index(t) + self.offset, p) for tr, t, p in self._held]
        self._held.clear()
        self.frontier = max(self.frontier, max(s + len(p) // 2 for _, s, p in out))
        return out


@dataclass
class SpeechOnlyClock:
    """Places bursts of speech by when they arrived; contiguous within a burst, silence between."""

    rate: int
    wall: Callable[[], float]  # seconds on the call's wall clock (0 at the call's start)
    window: int = 0  # samples: nothing arrives late on one ordered socket, but a chunk lands up to its length back
    max_lag: float = 1.0  # seconds a burst may fall behind the wall clock before it is re-anchored
    follows_wall: bool = True
    frontier: int = 0
    discontinuities: int = 0  # re-anchored mid-burst (a stall)
    dropped: int = 0
    _burst_end: dict[str, int | None] = field(default_factory=dict)  # track → where its open burst continues
    _ends: dict[str, int] = field(default_factory=dict)  # track → end of the last burst placed

    def fast_index(self, position: float, n: int) -> int:
        return -1  # every chunk needs ``map``: a burst's anchor depends on the track

    def begin_burst(self, track: str = "inbound") -> None:
        """The transport says a new burst starts with the next chunk (e.g. StartSpeaking)."""
        self._burst_end[track] = None

    def now(self) -> int:
        return max(self.frontier, round(self.wall() * self.rate))

    def map(self, track: str, position: float, pcm: bytes) -> list[tuple[str, int, bytes]]:
        n = len(pcm) // 2
        arrived = round(position * self.rate)
        track_end = self._ends.get(track, 0)
        cont = self._burst_end.get(track)
        if cont is not None and arrived - (cont + n) > self.max_lag * self.rate:
            self.discontinuities += 1  # a stall mid-burst: follow the wall clock again
            cont = None
        start = cont if cont is not None else max(track_end, arrived - n)
        self._burst_end[track] = start + n
        self._ends[track] = start + n
        self.frontier = max(self.frontier, start + n)
        return [(track, start, pcm)]
