"""One track of a call as a 16-bit PCM WAV master on disk, written by sample position, at the call's rate.

Why positioned writes: Twilio's `media.timestamp` says where each frame belongs. Writing the PCM
at byte `44 + 2 × sample` puts every frame in its place whatever the arrival order, and a hole
(frames Twilio never sent) is left as a sparse run of zero bytes, which is PCM silence (μ-law
silence would be 0xFF, which is why masters are PCM, not μ-law). Nothing is buffered in Python:
a frame costs one `pwrite` to the page cache, so a `kill -9` loses nothing already written, and
memory stays flat whatever the call's length. A jump of minutes allocates neither memory nor disk
(the file is sparse); the reader fills the hole with zeros block by block.

The header is written with data size 0 and patched at close; `repair_header()` fixes it after a
crash from the file's length (libsndfile reads size-0 WAVs, the stdlib `wave` does not).
"""

from __future__ import annotations

import errno
import os
import struct
from pathlib import Path

import numpy as np

__all__ = ["MasterTrack", "HEADER_BYTES", "repair_header", "read_block", "track_samples", "track_rate"]

HEADER_BYTES = 44
_ZERO_CHUNK = bytes(64 * 1024)
_RATE_AT = 24  # byte offset of the sample rate in the WAV header


def _header(data_bytes: int, rate: int) -> bytes:
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + data_bytes if data_bytes else 0, b"WAVE", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16,
        b"data", data_bytes,
    )


class MasterTrack:
    """Append-anywhere PCM16 mono WAV file at `rate` (the transport's native rate: 8 kHz for
    Twilio, 16 kHz for browser calls). Not thread-safe; one writer per track."""

    def __init__(self, path: Path, rate: int = 8000) -> None:
        self.path = Path(path)
        exists = self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        if not exists or os.fstat(self._fd).st_size < HEADER_BYTES:
            os.pwrite(self._fd, _header(0, rate), 0)
            self.rate = rate
        else:  # a restarted call continues at the rate it was recorded at
            self.rate = struct.unpack("<I", os.pread(self._fd, 4, _RATE_AT))[0] or rate
        self.end = max(0, (os.fstat(self._fd).st_size - HEADER_BYTES) // 2)  # samples

    def write(self, sample: int, pcm: bytes) -> None:
        """Write little-endian int16 `pcm` starting at `sample`. May raise OSError (e.g. ENOSPC)."""
        pos = HEADER_BYTES + 2 * sample
        n = os.pwrite(self._fd, pcm, pos)
        if n < len(pcm):
            self._write_rest(memoryview(pcm)[max(n, 0):], pos + max(n, 0))
        end = sample + (len(pcm) >> 1)
        if end > self.end:
            self.end = end

    def _write_rest(self, view: memoryview, pos: int) -> None:
        while view:  # a short write (the disk filled mid-frame) is retried, so the rest raises ENOSPC
            n = os.pwrite(self._fd, view, pos)
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view, pos = view[n:], pos + n

    def silence(self, start: int, stop: int) -> None:
        """Zero samples [start, stop). At the end of the file this truncates instead."""
        stop = min(stop, self.end)
        if stop <= start:
            return
        if stop >= self.end:
            os.ftruncate(self._fd, HEADER_BYTES + 2 * start)
            self.end = start
            return
        pos = HEADER_BYTES + 2 * start
        remaining = 2 * (stop - start)
        while remaining:
            n = min(remaining, len(_ZERO_CHUNK))
            os.pwrite(self._fd, _ZERO_CHUNK[:n], pos)
            pos += n
            remaining -= n

    def extend_to(self, samples: int) -> None:
        """Make the track at least `samples` long (trailing silence, sparse)."""
        if samples > self.end:
            os.ftruncate(self._fd, HEADER_BYTES + 2 * samples)
            self.end = samples

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            os.pwrite(self._fd, _header(2 * self.end, self.rate), 0)
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = -1


def track_samples(path: Path) -> int:
    try:
        return max(0, (path.stat().st_size - HEADER_BYTES) // 2)
    except FileNotFoundError:
        return 0


def track_rate(path: Path, default: int = 8000) -> int:
    """The sample rate a master was recorded at (from its header)."""
    try:
        with open(path, "rb") as f:
            f.seek(_RATE_AT)
            raw = f.read(4)
    except FileNotFoundError:
        return default
    return (struct.unpack("<I", raw)[0] if len(raw) == 4 else 0) or default


def repair_header(path: Path, rate: int = 8000) -> int:
    """Patch the RIFF/data sizes from the file length (after a crash), keeping the rate it has
    (``rate`` for a file too short to have one). Returns samples."""
    n = track_samples(path)
    if path.exists():
        rate = track_rate(path, rate) if path.stat().st_size >= HEADER_BYTES else rate
        with open(path, "r+b") as f:
            f.write(_header(2 * n, rate))
    return n


def read_block(fd: int, start: int, count: int) -> np.ndarray:
    """Samples [start, start+count) of an open master; past the end reads as silence."""
    raw = os.pread(fd, 2 * count, HEADER_BYTES + 2 * start)
    out = np.zeros(count, np.int16)
    if raw:
        n = len(raw) // 2
        out[:n] = np.frombuffer(raw[: 2 * n], "<i2")
    return out
