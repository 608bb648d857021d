"""One call's side of the segment uploads (`app.recording.segments`): `SegmentUploader`.

Its cursor (samples and journal bytes already in S3) and the commit asked for, kept in
``segments.json`` in the call's folder; the next range to upload, read from the local masters as
a stereo WAV (`segment_wav`), and the journal lines appended since the last upload.
"""

from __future__ import annotations

import json
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from app.recording.track import read_block
from app.storage.atomic import replace_text
from app.storage.paths import TRACKS

if TYPE_CHECKING:
    from app.recording.segments import SegmentUploads

__all__ = ["SegmentUploader", "STATE_FILE", "segment_wav"]

STATE_FILE = "segments.json"  # in the call's folder: the upload cursor and the commit to make


def segment_wav(inbound: np.ndarray, outbound: np.ndarray, rate: int) -> bytes:
    """A stereo PCM16 WAV: L = inbound, R = outbound (equal lengths)."""
    frames = np.empty((len(inbound), 2), "<i2")
    frames[:, 0] = inbound
    frames[:, 1] = outbound
    data = frames.tobytes()
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16, 1, 2, rate,
                         rate * 4, 4, 16, b"data", len(data))
    return header + data


@dataclass
class SegmentUploader:
    """One call's uploads. The event loop writes ``settled`` and ``end``; one worker at a time does the rest."""

    sid: str
    folder: Path
    rate: int
    seg: int  # samples a segment
    epoch: int = 0
    done: int = 0  # samples [0, done) are in S3
    journal_at: int = 0  # journal bytes [0, journal_at) are in S3
    settled: int = 0  # from the call: samples before it can no longer change
    end: int | None = None  # the call's length, once it has ended
    journal_flushed: bool = False  # the journal's tail after the last segment went up (once, at the end)
    attempt: str | None = None  # a commit asked for: its attempt id (kept across retries and restarts)
    replace: bool = False
    recovered: bool = False
    published: str | None = None  # the attempt that committed (ours or another host's)
    failures: int = 0
    publish_asked: float = 0.0  # monotonic time the commit was asked for
    max_backlog_s: float = 0.0  # the most un-uploaded settled audio seen at an upload (the loss bound)
    _state: str = "idle"  # idle | queued | running | waiting
    _again: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _uploads: "SegmentUploads | None" = field(default=None, repr=False)

    # ------------------------------------------------------------------ the event loop's side
    def on_settled(self, settled: int) -> None:
        """Called per chunk of audio: costs two comparisons unless a whole segment is ready."""
        self.settled = settled
        if self._state == "idle" and settled - self.done >= self.seg and self._uploads is not None:
            self._uploads.kick(self)

    # ------------------------------------------------------------------ state on disk
    @property
    def state_path(self) -> Path:
        return self.folder / STATE_FILE

    def save(self) -> None:
        with self._lock:  # the registry's thread (a commit asked for) and a worker may both save
            self._save()

    def _save(self) -> None:
        data = {"sid": self.sid, "rate": self.rate, "seg": self.seg, "epoch": self.epoch, "done": self.done,
                "journal_at": self.journal_at, "end": self.end, "journal_flushed": self.journal_flushed,
                "attempt": self.attempt, "replace": self.replace, "recovered": self.recovered,
                "published": self.published}
        replace_text(self.state_path, json.dumps(data))  # a name of its own: an old process's uploads may save too

    def load(self) -> bool:
        """Continue from the state on disk (a restarted call, or a commit left to make); False without one."""
        try:
            data = json.loads(self.state_path.read_text())
        except (FileNotFoundError, ValueError):
            return False
        if data.get("epoch", 0) == self.epoch and data.get("rate") == self.rate:
            self.done, self.journal_at = int(data.get("done", 0)), int(data.get("journal_at", 0))
        self.end = data.get("end") if self.end is None else self.end
        self.journal_flushed = bool(data.get("journal_flushed"))
        self.attempt, self.replace = data.get("attempt"), bool(data.get("replace"))
        self.recovered, self.published = bool(data.get("recovered")), data.get("published")
        return True

    # ------------------------------------------------------------------ the worker's side
    def next_segment(self) -> tuple[int, int] | None:
        """The next range to upload: a whole segment of settled audio, or at the end the last part."""
        limit = self.end if self.end is not None else self.settled
        stop = min(self.done + self.seg, limit)
        if stop - self.done >= self.seg or (self.end is not None and stop > self.done):
            return self.done, stop
        return None

    def read_segment(self, start: int, stop: int) -> bytes | None:
        """The span as a stereo WAV; None when the masters are gone (the call was finalised without
        keeping them: its files, committed next, hold the audio, and a segment of zeros would lie)."""
        tracks = []
        for track in TRACKS:
            try:
                fd = os.open(self.folder / f"{track}.wav", os.O_RDONLY)
            except FileNotFoundError:
                tracks.append(None)
                continue
            try:
                tracks.append(read_block(fd, start, stop - start))
            finally:
                os.close(fd)
        if tracks[0] is None and tracks[1] is None:
            return None
        zeros = np.zeros(stop - start, np.int16)
        return segment_wav(zeros if tracks[0] is None else tracks[0], zeros if tracks[1] is None else tracks[1],
                           self.rate)

    def flush_due(self) -> bool:
        return self.end is not None and self.done >= self.end and not self.journal_flushed

    def commit_due(self) -> bool:
        return bool(self.attempt) and not self.published and (self.end is None or self.done >= self.end)

    def has_work(self) -> bool:
        return self.next_segment() is not None or self.flush_due() or self.commit_due()

    def journal_delta(self) -> tuple[bytes, int]:
        """Whole journal lines appended since the last upload, and the offset after them."""
        try:
            with open(self.folder / "journal.jsonl", "rb") as f:
                f.seek(self.journal_at)
                data = f.read()
        except FileNotFoundError:
            return b"", self.journal_at
        cut = data.rfind(b"\n") + 1  # a line being written (or torn by a crash) waits for the next segment
        return data[:cut], self.journal_at + cut
