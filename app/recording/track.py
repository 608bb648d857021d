"""One track of a call as a 16-bit PCM WAV master on disk, written by sample position, at the call's rate.

Why positioned writes: Twilio's `media.timestamp` says where each frame belongs. Writing the PCM
at byte `44 + 2 × sample` puts every frame in its place whatever the arrival order, and a hole
(frames Twilio never sent) is left as a run of zero bytes, which is PCM silence (μ-law silence
would be 0xFF, which is why masters are PCM, not μ-law). Nothing is buffered in Python: a frame
goes straight to the page cache, so a `kill -9` loses nothing already written, and memory stays
flat whatever the call's length. A jump of minutes allocates neither memory nor disk (the file
is sparse); the reader fills the hole with zeros block by block.

How a frame reaches the page cache. A master keeps a small window of the file mapped (`mmap`,
shared; WINDOW_BYTES, moved forward as the call goes on) and a frame is a copy into it: no system
call per frame, which is most of what a `pwrite` cost on the serving loop (bench: `cpu`). The
window's blocks are reserved with `posix_fallocate` before it is mapped, so a full disk is an
ENOSPC when the window moves (an OSError, as a failed `pwrite` was), never a SIGBUS on a copy —
on file systems that overwrite reserved blocks in place (MAPPED_FILE_SYSTEMS: ext4, xfs, tmpfs);
elsewhere (copy-on-write, network) masters are written with a `pwrite` per frame, and
MASTER_WRITES chooses either way explicitly.
A frame outside the window (a late one before it, a jump ahead) is a `pwrite`; the window moves
only where the track flows (on from the window, or after 0.5 s of contiguous frames), so a jump
stays sparse and a client jumping about reserves no more disk than its frames would. Where mapping is not possible
(no `posix_fallocate` on the file system, the disk too full for a window), the master falls back
to a `pwrite` per frame for the rest of the call.

The track's length. A mapped file is longer than the track (the window reaches ahead), so while
recording the header's data size holds the track's length, updated with each frame through the
mapped header page; a plain (`pwrite`) master has data size 0 and is as long as its track, as
before. `track_samples()` reads either, so a crashed call's length is exact; `close()` writes the
full header and cuts the file to the track; `repair_header()` writes the header after a crash
(and never cuts: only a master's writer does, so nothing is cut under another's mapped window).
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import struct
from pathlib import Path

import numpy as np

__all__ = ["MasterTrack", "HEADER_BYTES", "WINDOW_BYTES", "WRITE_MODES", "MAPPED_FILE_SYSTEMS", "file_system_of",
           "repair_header", "read_block", "track_samples", "track_rate"]

HEADER_BYTES = 44
WINDOW_BYTES = 128 * 1024  # mapped at a time per track: 8 s at 8 kHz, 4 s at 16 kHz
_ZERO_CHUNK = bytes(64 * 1024)
_RATE_AT = 24  # byte offset of the sample rate in the WAV header
_DATA_SIZE_AT = 40  # byte offset of the data chunk's size
_PAGE = mmap.ALLOCATIONGRANULARITY
_MADV_POPULATE_WRITE = 23  # Linux 5.14+: fault the window's pages in with one call (not in the mmap module yet)
_pack_size = struct.Struct("<I").pack_into


# Where posix_fallocate reserves real blocks that a later copy into a mapped page overwrites in place.
# Copy-on-write file systems (btrfs, ZFS) and network ones can still fail such a write at a full disk,
# and a mapped write that fails is a SIGBUS: masters there are written with `pwrite`.
MAPPED_FILE_SYSTEMS = frozenset({"ext4", "ext3", "ext2", "xfs", "tmpfs"})
WRITE_MODES = ("auto", "mapped", "pwrite")
_file_systems: dict[int, str] = {}  # device → file system type, read once per device


def file_system_of(folder: Path) -> str:
    """The type of the file system that holds `folder` (from /proc/self/mounts; "unknown" elsewhere)."""
    dev = os.stat(folder).st_dev
    kind = _file_systems.get(dev)
    if kind is None:
        real, best, kind = os.path.realpath(folder), "", "unknown"
        try:
            with open("/proc/self/mounts", encoding="utf-8", errors="replace") as f:
                for line in f:
                    parts = line.split()
                    if len(parts) < 3:
                        continue
                    point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), parts[1])
                    inside = real == point or real.startswith(point.rstrip("/") + "/")
                    if inside and len(point) >= len(best):
                        best, kind = point, parts[2]
        except OSError:
            pass
        _file_systems[dev] = kind
    return kind


def _header(data_bytes: int, rate: int) -> bytes:
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF", 36 + data_bytes if data_bytes else 0, b"WAVE", b"fmt ", 16, 1, 1, rate, rate * 2, 2, 16,
        b"data", data_bytes,
    )


def _samples_of(head: bytes, size: int) -> int:
    """A master's length in samples from its header and file size: the header's data size when set
    (a closed file, or one recorded through a mapped window), else the file's length."""
    in_file = max(0, (size - HEADER_BYTES) // 2)
    if len(head) >= HEADER_BYTES:
        data = struct.unpack_from("<I", head, _DATA_SIZE_AT)[0]
        if data:
            return min(data // 2, in_file)
    return in_file


class MasterTrack:
    """Append-anywhere PCM16 mono WAV file at `rate` (the transport's native rate: 8 kHz for
    Twilio, 16 kHz for browser calls). Not thread-safe; one writer per track (the call's lock)."""

    def __init__(self, path: Path, rate: int = 8000, *, writes: str = "auto") -> None:
        """``writes``: "mapped", "pwrite", or "auto" (mapped where the file system is known to
        reserve blocks for a mapped write: MAPPED_FILE_SYSTEMS)."""
        self.path = Path(path)
        exists = self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        size = os.fstat(self._fd).st_size
        if not exists or size < HEADER_BYTES:
            os.pwrite(self._fd, _header(0, rate), 0)
            self.rate = rate
            self.end = 0  # samples
        else:  # a restarted call continues at the rate it was recorded at, after what is on disk
            head = os.pread(self._fd, HEADER_BYTES, 0)
            self.rate = struct.unpack_from("<I", head, _RATE_AT)[0] or rate
            self.end = _samples_of(head, size)
        self._hdr: mmap.mmap | None = None  # the header's page, mapped: the data size follows the track
        self._win: mmap.mmap | None = None
        self._lo = self._hi = 0  # the window: file bytes [lo, hi); empty in plain mode
        self._steady_from = self.end  # where the frames written outside the window began to follow each other
        self._touch_at = 0  # the track's end (samples) at which the file's mtime is next set
        if writes == "mapped" or (writes == "auto" and file_system_of(self.path.parent) in MAPPED_FILE_SYSTEMS):
            try:
                self._hdr = mmap.mmap(self._fd, HEADER_BYTES)
                _pack_size(self._hdr, _DATA_SIZE_AT, 2 * self.end)
            except (OSError, ValueError):
                self._plain()
        else:
            self._plain()

    def _plain(self) -> None:
        """A `pwrite` per frame from now on: the file is cut to the track and its data size is 0
        again (the file's length is the track's, as a crash recovery reads it)."""
        self._close_maps()
        os.ftruncate(self._fd, HEADER_BYTES + 2 * self.end)
        os.pwrite(self._fd, bytes(4), _DATA_SIZE_AT)

    def _close_maps(self) -> None:
        for m in (self._win, self._hdr):
            if m is not None:
                m.close()
        self._win = self._hdr = None
        self._lo = self._hi = 0

    @property
    def mapped(self) -> bool:
        return self._hdr is not None

    def write(self, sample: int, pcm: bytes) -> None:
        """Write little-endian int16 `pcm` starting at `sample`. May raise OSError (e.g. ENOSPC)."""
        pos = HEADER_BYTES + 2 * sample
        stop = pos + len(pcm)
        if self._lo <= pos and stop <= self._hi:  # the common case: a copy into the window
            self._win[pos - self._lo: stop - self._lo] = pcm
        else:
            self._write_outside(pos, pcm)
        end = sample + (len(pcm) >> 1)
        if end > self.end:
            self.end = end
            if self._hdr is not None:
                _pack_size(self._hdr, _DATA_SIZE_AT, 2 * end)
                if end >= self._touch_at:
                    self._touch(end)

    def _touch(self, end: int) -> None:
        """Copies into a mapped page do not move the file's mtime (a `pwrite` does), and a crashed
        call's recovery reads when its audio ended from it: set it once per second of audio."""
        self._touch_at = end + self.rate
        try:
            os.utime(self._fd)
        except OSError:  # a file system that refuses: the journal's times remain
            pass

    def _write_outside(self, pos: int, pcm: bytes) -> None:
        sample = (pos - HEADER_BYTES) >> 1
        if sample != self.end:
            self._steady_from = sample  # a jump or a late frame: the track is not flowing here
        if (self._hdr is not None and pos + len(pcm) > self._hi
                and (self._lo < pos <= self._hi or sample - self._steady_from >= self.rate // 2)):
            # Ahead of the window, where the track flows (right after the window, or after 0.5 s of
            # contiguous frames): move the window here. A jump is written as it is, so it stays sparse.
            try:
                self._move_window(pos, len(pcm))
            except OSError:
                self._plain()  # a full disk (or no fallocate): what fits still goes in, as plain writes
            else:
                self._win[pos - self._lo: pos - self._lo + len(pcm)] = pcm
                return
        n = os.pwrite(self._fd, pcm, pos)  # behind the window (a late frame), or a plain master
        if n < len(pcm):
            self._write_rest(memoryview(pcm)[max(n, 0):], pos + max(n, 0))

    def _move_window(self, pos: int, length: int) -> None:
        if self._win is not None:
            self._win.close()
            self._win = None
            self._lo = self._hi = 0
        lo = pos - pos % _PAGE
        size = max(WINDOW_BYTES, pos + length - lo)
        os.posix_fallocate(self._fd, lo, size)  # the blocks exist before a byte is copied: no SIGBUS
        win = mmap.mmap(self._fd, size, offset=lo)
        try:
            win.madvise(_MADV_POPULATE_WRITE)
        except (OSError, ValueError):  # an older kernel: pages fault in one by one instead
            pass
        self._win, self._lo, self._hi = win, lo, lo + size

    def _write_rest(self, view: memoryview, pos: int) -> None:
        while view:  # a short write (the disk filled mid-frame) is retried, so the rest raises ENOSPC
            n = os.pwrite(self._fd, view, pos)
            if n <= 0:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            view, pos = view[n:], pos + n

    def silence(self, start: int, stop: int) -> None:
        """Zero samples [start, stop). At the end of the track this shortens it instead."""
        stop = min(stop, self.end)
        if stop <= start:
            return
        if stop >= self.end and self._hdr is None:
            os.ftruncate(self._fd, HEADER_BYTES + 2 * start)
            self.end = start
            return
        # Zeros written through the page cache (the window sees them); a mapped file is never cut
        # while mapped, so its track is shortened in the header.
        pos = HEADER_BYTES + 2 * start
        remaining = 2 * (stop - start)
        while remaining:
            n = min(remaining, len(_ZERO_CHUNK))
            os.pwrite(self._fd, _ZERO_CHUNK[:n], pos)
            pos += n
            remaining -= n
        if stop >= self.end:
            self.end = start
            if start == 0:  # data size 0 would read as "the file's length": cut the file instead
                if self._win is not None:
                    self._win.close()
                self._win, self._lo, self._hi = None, 0, 0
                os.ftruncate(self._fd, HEADER_BYTES)  # the header's page stays inside the file
            _pack_size(self._hdr, _DATA_SIZE_AT, 2 * start)

    def extend_to(self, samples: int) -> None:
        """Make the track at least `samples` long (trailing silence, sparse)."""
        if samples > self.end:
            if HEADER_BYTES + 2 * samples > os.fstat(self._fd).st_size:
                os.ftruncate(self._fd, HEADER_BYTES + 2 * samples)  # grows only: a window stays inside the file
            self.end = samples
            if self._hdr is not None:
                _pack_size(self._hdr, _DATA_SIZE_AT, 2 * samples)
                self._touch(samples)

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            os.pwrite(self._fd, _header(2 * self.end, self.rate), 0)  # the length first: then the cut
            self._close_maps()
            os.ftruncate(self._fd, HEADER_BYTES + 2 * self.end)
            os.fsync(self._fd)
        finally:
            self._close_maps()
            os.close(self._fd)
            self._fd = -1


def track_samples(path: Path) -> int:
    """A master's length in samples, live or closed or left by a crash (see the module's note)."""
    try:
        with open(path, "rb") as f:
            return _samples_of(f.read(HEADER_BYTES), os.fstat(f.fileno()).st_size)
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
    """Patch the RIFF/data sizes of a master left by a crash, keeping the rate it has (``rate`` for a
    file too short to have one). Returns samples. The file is never cut here: only its writer cuts
    a master (a host that lost its claim may still have it mapped, and a cut under a mapped window
    is a SIGBUS); what lies past the data size is the reserved window's silence, which readers skip."""
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
