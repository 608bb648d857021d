"""Incremental export of the conversation from the masters: mix, resample, encode, in blocks.

`ConversationExporter.advance(upto)` encodes the settled part of the call (everything before
`upto` samples can no longer change) and may be called while the call goes on, from a worker
thread; `finish(total)` encodes the rest and renames the `.partial` file into place. Memory is
one block (1 s) whatever the call's length. The masters stay the source of truth until the
export is confirmed; a failed encoder leaves them untouched.

Mixdown: mono is the sum of both tracks, clipped to int16 (two voices rarely overlap, and a sum
keeps each at its own level); stereo is caller left, assistant/other party right.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.audio.formats import AudioFormat, encoder_kwargs, open_encoder
from app.audio.resample import StreamResampler
from app.recording.track import read_block, track_rate

__all__ = ["ConversationExporter", "TalkStats"]

_TALK_RMS = 300.0  # int16 RMS above which a 20 ms frame counts as talk (≈ -40 dBFS)


@dataclass
class TalkStats:
    """Talk time per side from 20 ms frame energy (works in both modes, with or without transcripts)."""

    rate: int = 8000
    talk_frames: dict[str, int] = field(default_factory=lambda: {"inbound": 0, "outbound": 0})
    overlap_frames: int = 0

    def add(self, a: np.ndarray, b: np.ndarray) -> None:
        frame = self.rate // 50
        n = len(a) // frame * frame
        if n == 0:
            return
        ea = np.sqrt(np.mean(a[:n].astype(np.float32).reshape(-1, frame) ** 2, axis=1)) > _TALK_RMS
        eb = np.sqrt(np.mean(b[:n].astype(np.float32).reshape(-1, frame) ** 2, axis=1)) > _TALK_RMS
        self.talk_frames["inbound"] += int(ea.sum())
        self.talk_frames["outbound"] += int(eb.sum())
        self.overlap_frames += int((ea & eb).sum())

    def seconds(self) -> dict[str, float]:
        return {k: round(v * 0.02, 2) for k, v in self.talk_frames.items()} | {"overlap": round(self.overlap_frames * 0.02, 2)}


class ConversationExporter:
    """Encode masters → one conversation file, block by block.

    Safe to call from several threads: a lock serialises advance/finish/abort, because an
    encoder used from two threads at once corrupts its state (LAME aborts the whole process)."""

    def __init__(self, masters: tuple[Path, Path], out_path: Path, fmt: AudioFormat, *, channels: int = 1,
                 sample_rate: int | None = None, mp3_kbps: int | None = None, track_paths: tuple[Path, Path] | None = None):
        self.masters = masters
        self.out_path = Path(out_path)
        self.partial = self.out_path.with_name(self.out_path.name + ".partial")
        self.fmt = fmt
        self.channels = channels
        self.source_rate = track_rate(masters[0])  # the masters' rate: the transport's native one
        self.sample_rate = sample_rate = sample_rate or self.source_rate
        self.kwargs, self.settings_note = encoder_kwargs(fmt, sample_rate, mp3_kbps)
        self._block = self.source_rate  # samples read at a time: 1 s
        self._frame = self.source_rate // 50  # 20 ms
        self.done = 0  # samples (at source_rate) encoded so far
        self.talk = TalkStats(self.source_rate)
        self._fds = tuple(os.open(p, os.O_RDONLY) for p in masters)
        self._rs = StreamResampler(self.source_rate, sample_rate, channels)
        # The encoders (app/audio/formats.py: LAME for MP3, libsndfile for the others), writing `.partial` files.
        self._sf, _ = open_encoder(self.partial, fmt, sample_rate, channels, mp3_kbps)
        self._tracks: list[tuple[object, StreamResampler]] = []
        self.track_paths = track_paths
        if track_paths:
            for p in track_paths:
                tp = Path(str(p) + ".partial")
                self._tracks.append((open_encoder(tp, fmt, sample_rate, 1, mp3_kbps)[0],
                                     StreamResampler(self.source_rate, sample_rate, 1)))
        self.closed = False
        self._lock = threading.RLock()

    def advance(self, upto: int, last: bool = False) -> None:
        """Encode samples [done, upto)."""
        with self._lock:
            if self.closed:
                raise RuntimeError("exporter already closed")
            self._advance(upto, last)

    def _advance(self, upto: int, last: bool) -> None:
        while self.done < upto:
            n = min(self._block, upto - self.done)
            if not last and n % self._frame:  # whole 20 ms frames, so talk-time stats see every frame
                n -= n % self._frame
                if n == 0:
                    break
            a = read_block(self._fds[0], self.done, n)
            b = read_block(self._fds[1], self.done, n)
            self.talk.add(a, b)
            final = last and self.done + n >= upto
            if self.channels == 1:
                mixed = np.clip(a.astype(np.int32) + b.astype(np.int32), -32768, 32767)
                block = mixed.astype(np.float32) / 32768.0
            else:
                block = np.stack([a, b], axis=1).astype(np.float32) / 32768.0
            out = self._rs.process(block, last=final)
            if len(out):
                self._sf.write(out)
            for (f, rs), x in zip(self._tracks, (a, b)):
                y = rs.process(x.astype(np.float32) / 32768.0, last=final)
                if len(y):
                    f.write(y)
            self.done += n

    def finish(self, total: int) -> Path:
        """Encode the rest, close, and move the file into place."""
        with self._lock:
            self._advance(total, last=True)
            self._close_files()
        os.replace(self.partial, self.out_path)
        if self.track_paths:
            for p in self.track_paths:
                os.replace(str(p) + ".partial", p)
        return self.out_path

    def abort(self) -> None:
        with self._lock:
            self._close_files()
        for p in [self.partial] + [Path(str(t) + ".partial") for t in (self.track_paths or ())]:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def _close_files(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._sf.close()
            for f, _ in self._tracks:
                f.close()
        finally:
            for fd in self._fds:
                os.close(fd)
