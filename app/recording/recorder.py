"""CallRecorder: two aligned tracks on the call's clock, masters on disk, the journal.

It knows no transport: audio arrives as PCM16 at the call's rate with a *position* that the
call's clock (app.recording.timeline: Twilio's media timestamps, or a speech-only transport's
arrival times) turns into a sample index. Every place, cut and turn is an integer sample index
at that rate; milliseconds appear only in the journal, for people.

Tracks: `inbound` (the caller) and `outbound` (in assistant mode our own voice, rebuilt from
what we send; in listen mode the other party, placed by its own positions).

The assistant's track. The transport never echoes our audio back. It queues what we send and
plays it in real time, so a chunk sent at `now` starts playing at `max(end of what is already
queued, now)`; that is where it is written, and the recorder is the one owner of that playback
time (`play` returns the span). A `clear` at `now` (barge-in) silences everything placed after
`now`: the recording holds what the caller heard.

Faults: an OSError writing a master (disk full, I/O error) is logged once per call (later
failures, on either track, are counted, not logged), and the call goes on; what was written
stays. Nothing here blocks for long: a frame is a table lookup and one `pwrite`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.recording.journal import Journal, append_once
from app.recording.timeline import Clock, HoleTracker, TwilioClock
from app.recording.track import MasterTrack
from app.storage.paths import TRACKS, CallFiles

__all__ = ["CallRecorder", "TrackStats"]

log = logging.getLogger("callscribe.recorder")


@dataclass
class TrackStats:
    frames: int = 0
    dropped_duplicate: int = 0
    write_errors: int = 0


@dataclass
class CallRecorder:
    call_dir: Path
    call_sid: str
    rate: int = 8000
    reorder_window_ms: int = 2000
    max_clock_jump_s: int = 600
    max_seconds: int = 4 * 3600
    clock: Clock | None = None  # default: Twilio's media clock at `rate`
    master_writes: str = "auto"  # MasterTrack's `writes`: mapped, pwrite, or auto (by file system)
    stats: dict[str, TrackStats] = field(default_factory=lambda: {t: TrackStats() for t in TRACKS})

    def __post_init__(self) -> None:
        self.call_dir = Path(self.call_dir)
        self.call_dir.mkdir(parents=True, exist_ok=True)
        self.files = CallFiles(self.call_dir)
        self.journal = Journal(self.files.journal)
        self.tracks = {t: MasterTrack(self.files.master(t), self.rate, writes=self.master_writes) for t in TRACKS}
        self.rate = self.tracks["inbound"].rate  # a restarted call keeps the rate it was recorded at
        self.max_samples = self.max_seconds * self.rate
        if self.clock is None:
            self.clock = TwilioClock(window=self.reorder_window_ms * self.rate // 1000,
                                     max_jump=self.max_clock_jump_s * self.rate, rate=self.rate)
        self.holes = {t: HoleTracker(self.clock.window) for t in TRACKS}
        self._lanes = {t: (self.holes[t], self.stats[t], self.tracks[t]) for t in TRACKS}  # one lookup per frame
        self.queue_end = 0  # end of the assistant audio queued at Twilio (samples)
        self.clears = 0
        self._failed: set[str] = set()
        self.closed = False
        # A recovered or restarted call continues after what is already on disk.
        self.clock.frontier = max(t.end for t in self.tracks.values())
        for t in TRACKS:
            self.holes[t].end = self.tracks[t].end

    # ------------------------------------------------------------------ time
    @property
    def stream_samples(self) -> int:
        """The call's clock now (samples): for Twilio, the furthest sample its frames have reached."""
        return self.clock.now()

    def ms(self, samples: int) -> float:
        """Samples → milliseconds, for the journal's readers."""
        return round(samples * 1000 / self.rate, 3)

    # ------------------------------------------------------------------ the transport's audio
    def on_audio(self, track: str, position: float, pcm: bytes) -> list[tuple[str, int, bytes]]:
        """Place one chunk of PCM16 at the clock's reading of `position`. Returns what was placed.

        The common case (a plausible chunk that continues its track with no hole open in the reorder
        window) is written here directly; the rest goes through the clock's ``map`` and ``_place``,
        which apply the same rules in general. This is the per-frame path: 50 calls a second a track."""
        n = len(pcm) >> 1
        start = self.clock.fast_index(position, n)
        if start < 0:
            placed = self.clock.map(track, position, pcm)
            for tr, at, data in placed:
                self._place(tr, at, data)
            return placed
        holes, stats, master = self._lanes[track]
        if start == holes.end and not holes.holes and start + n <= self.max_samples and not self._failed:
            holes.end = start + n
            stats.frames += 1
            try:
                master.write(start, pcm)
            except OSError as exc:
                self._write_failed(track, exc)
        else:
            self._place(track, start, pcm)
        return [(track, start, pcm)]

    def _place(self, track: str, start: int, pcm: bytes) -> None:
        st = self.stats[track]
        st.frames += 1
        n = len(pcm) // 2
        if start + n > self.max_samples:
            return
        ranges = self.holes[track].accept(start, n)
        if not ranges:
            st.dropped_duplicate += 1
        for a, b in ranges:
            self._write(track, a, pcm if b - a == n else pcm[2 * (a - start): 2 * (b - start)])

    def _write(self, track: str, start: int, pcm: bytes) -> None:
        if track in self._failed:
            self.stats[track].write_errors += 1
            return
        try:
            self.tracks[track].write(start, pcm)
        except OSError as exc:
            self._write_failed(track, exc)

    def _write_failed(self, track: str, exc: OSError) -> None:
        """Log the first failed write of the call, count every one, and write no more to that track."""
        first = not self._failed
        self._failed.add(track)
        self.stats[track].write_errors += 1
        if first:
            log.error("call %s: writing the %s master failed (%s); keeping what was written, "
                      "further write failures of this call are counted, not logged",
                      self.call_sid, track, exc.strerror or exc)
        try:
            self.journal.append("error", what=f"{track} master write failed", detail=str(exc.strerror or exc))
        except OSError:  # the same disk: the log line above already says it
            log.debug("call %s: the journal could not note the write failure either", self.call_sid)

    # ------------------------------------------------------------------ our audio
    def play(self, pcm: bytes, now: int | None = None) -> tuple[int, int]:
        """Place PCM16 we send to the caller at its playback time. Returns [start, end) in samples."""
        now = self.stream_samples if now is None else now
        start = max(self.queue_end, now)
        end = start + len(pcm) // 2
        if end <= self.max_samples:
            self._write("outbound", start, pcm)
        self.queue_end = end
        self.stats["outbound"].frames += 1
        return start, end

    def clear(self, now: int | None = None) -> int:
        """The caller barged in at `now`: drop what was queued after it. Returns samples cut."""
        now = self.stream_samples if now is None else now
        cut = self._cut_after(now)
        self.clears += 1
        self.journal.append("clear", at_ms=self.ms(now), cut_ms=self.ms(cut), at_sample=now, cut_samples=cut)
        return cut

    def cut_at_hangup(self, now: int) -> int:
        """The call ended at `now`: drop assistant audio queued after it (never heard). Not a clear,
        not a barge-in: journaled as `hangup_cut`. Returns samples cut."""
        cut = self._cut_after(now)
        if cut:
            self.event("hangup_cut", at_ms=self.ms(now), cut_ms=self.ms(cut), at_sample=now, cut_samples=cut)
        return cut

    def _cut_after(self, now: int) -> int:
        """Silence the assistant audio queued after `now`; returns how many samples that was."""
        cut = max(0, self.queue_end - now)
        if cut:
            try:
                self.tracks["outbound"].silence(now, self.queue_end)
            except OSError as exc:
                log.error("call %s: cutting the outbound master failed (%s)", self.call_sid, exc)
        self.queue_end = min(self.queue_end, now)
        return cut

    # ------------------------------------------------------------------ events
    def event(self, kind: str, **data: Any) -> None:
        try:
            self.journal.append(kind, **data)
        except OSError as exc:
            log.error("call %s: journal write failed (%s)", self.call_sid, exc)

    def add_turn(self, role: str, text: str, start: int, end: int, interrupted: bool = False,
                 **extra: Any) -> None:
        """Journal one turn. Where it sits is the sample index (exact); ms are for display.
        After close (a transcript finished after hang-up) the line is appended all the same."""
        record = dict(role=role, text=text, start_sample=int(start), end_sample=int(end),
                      start_ms=self.ms(start), end_ms=self.ms(end), interrupted=interrupted, **extra)
        if self.closed:
            try:
                append_once(self.journal.path, "turn", **record)
            except OSError as exc:
                log.error("call %s: journal write failed (%s)", self.call_sid, exc)
            return
        self.event("turn", **record)

    # ------------------------------------------------------------------ end
    def close(self, reason: str) -> int:
        """Stop recording; patch WAV headers. Returns the call length in samples."""
        if self.closed:
            return max(t.end for t in self.tracks.values())
        self.closed = True
        # The call lasts as long as its stream (assistant audio queued past it was cut at hang-up):
        # for Twilio the furthest frame, for a clock that follows the wall the moment it ended.
        end = max(self.clock.now(), *(t.end for t in self.tracks.values()))
        # Nothing is written past max_samples, and a hostile jump must not stretch the file past it either.
        end = min(end, max(self.max_samples, *(t.end for t in self.tracks.values())))
        for t in self.tracks.values():
            try:
                t.extend_to(end)
                t.close()
            except OSError as exc:
                log.error("call %s: closing a master failed (%s)", self.call_sid, exc)
        self.event("stop", reason=reason, samples=end, rate=self.rate, clock_discontinuities=self.clock.discontinuities,
                   dropped_frames=self.clock.dropped + sum(s.dropped_duplicate for s in self.stats.values()),
                   closed_at=time.time())
        self.journal.close()
        return end
