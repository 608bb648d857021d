"""A streaming MP3 writer: LAME through `lameenc`, with a LAME/Info tag so decoders trim to the exact length.

Why not libsndfile's MP3 (what `soundfile` bundles): at the same LAME quality and bitrate it costs about
three times the CPU of a stock LAME 3.100 (0.172 vs 0.057 s per call-minute, 8 kHz mono 64 kbps; its bundled
LAME looks built with little optimisation: `count_bit_ESC`, `ix_max`, `putbits2` show up as hot functions of
their own), and it offers no way to set LAME's algorithmic quality. `lameenc` is LAME with
`lame_set_quality`; we use quality 5, ffmpeg's libmp3lame default, so the comparison with ffmpeg is like for
like (see bench/mp3_encoders.py for the figures).

What `lameenc` does not give: the Xing "Info" + LAME tag (it turns LAME's tag off and does not expose
`lame_get_lametag_frame`). Without it a decoder cannot know LAME's encoder delay (576 samples) and end
padding, and every file would decode 1,100-1,500 samples too long, shifted by the delay. So `Mp3Writer`
reserves the first frame, counts the frames LAME emits as it goes (their headers), and at `close()` writes
an Info frame there: frame and byte counts, a linear seek table, and the LAME extension with the delay and
padding (the fields mpg123, ffmpeg and browsers read for gapless playback). The music CRC is left 0 (no
decoder checks it; computing it in Python would cost more than the encode); the tag's own CRC is set.

Incremental: `write()` encodes and appends as it goes (constant memory); `close()` flushes LAME and
rewrites the reserved first frame in place. The caller writes to a `.partial` name and renames after close.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

try:  # optional at import: formats.py falls back to libsndfile's MP3 when it is missing
    import lameenc
except ImportError:  # pragma: no cover - lameenc is a declared dependency
    lameenc = None

__all__ = ["Mp3Writer", "available", "QUALITY", "ENCODER_DELAY"]

QUALITY = 5  # lame_set_quality: ffmpeg libmp3lame's default (LAME's own default, which libsndfile gets, is 3)
ENCODER_DELAY = 576  # LAME's encoder delay (ENCDELAY), samples; decoders add their 529 to it
_TAG_VERSION = b"LAME4.0\x00\x00"  # lameenc 1.9 bundles LAME "4.0" (get_lame_version); 9 bytes as in the tag

# Bitrate tables for layer III, by header version bits: 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5.
_KBPS = {3: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
         2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)}
_KBPS[0] = _KBPS[2]
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def available() -> bool:
    return lameenc is not None


def _crc16(data: bytes) -> int:
    """CRC-16 (polynomial 0x8005, reflected, init 0), as LAME computes the Info tag's CRC."""
    crc = 0
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


class _Header:
    __slots__ = ("version", "kbps_index", "rate_index", "padding", "mono")

    def __init__(self, h: bytes) -> None:
        if h[0] != 0xFF or (h[1] & 0xE0) != 0xE0 or (h[1] >> 1) & 3 != 1:
            raise ValueError(f"not an MPEG layer III frame header: {h.hex()}")
        self.version = (h[1] >> 3) & 3
        self.kbps_index = h[2] >> 4
        self.rate_index = (h[2] >> 2) & 3
        self.padding = (h[2] >> 1) & 1
        self.mono = (h[3] >> 6) == 3

    @property
    def rate(self) -> int:
        return _RATES[self.version][self.rate_index]

    @property
    def samples(self) -> int:  # samples per channel per frame
        return 1152 if self.version == 3 else 576

    def size(self, kbps_index: int | None = None, padding: int | None = None) -> int:
        kbps = _KBPS[self.version][self.kbps_index if kbps_index is None else kbps_index]
        pad = self.padding if padding is None else padding
        return (144000 if self.version == 3 else 72000) * kbps // self.rate + pad

    @property
    def side_info(self) -> int:
        if self.version == 3:
            return 17 if self.mono else 32
        return 9 if self.mono else 17


class Mp3Writer:
    """MP3 (CBR) to a file, block by block; `write()` takes float32 in [-1, 1), shape (n,) or (n, channels)."""

    def __init__(self, path: str | os.PathLike, sample_rate: int, channels: int, kbps: int, quality: int = QUALITY):
        if lameenc is None:  # pragma: no cover
            raise RuntimeError("lameenc is not installed")
        self.path = Path(path)
        self.sample_rate, self.channels, self.kbps = sample_rate, channels, kbps
        enc = lameenc.Encoder()
        enc.set_in_sample_rate(sample_rate)
        enc.set_out_sample_rate(sample_rate)  # never let LAME resample
        enc.set_channels(channels)
        enc.set_bit_rate(kbps)
        enc.set_quality(quality)
        enc.silence()
        self._enc = enc
        enc.encode(b"")  # lame_init_params now: a bad setting fails here, and an empty file can still be flushed
        self._f = open(self.path, "wb")
        self.frames = 0  # audio frames written (the Info frame not counted)
        self.samples = 0  # per channel, fed to LAME
        self._first: _Header | None = None
        self._tag_size = 0
        self._pending = b""  # bytes of a frame header split across two LAME outputs
        self._next = 0  # bytes still to skip to the next frame header
        self.closed = False

    # ------------------------------------------------------------------ writing

    def write(self, data: np.ndarray) -> None:
        x = np.asarray(data)
        if x.ndim == 2 and x.shape[1] != self.channels or x.ndim == 1 and self.channels != 1:
            raise ValueError(f"expected {self.channels} channel(s), got shape {x.shape}")
        if not len(x):
            return
        pcm = np.clip(np.rint(x * 32768.0), -32768, 32767).astype("<i2")
        self.samples += len(pcm)
        self._out(self._enc.encode(pcm.tobytes()))

    def _out(self, b: bytes | bytearray) -> None:
        if not b:
            return
        if self._first is None:
            self._first = h = _Header(bytes(b[:4]))
            self._tag_size = self._tag_frame_size(h)[1]
            self._f.write(bytes(self._tag_size))  # reserved: the Info frame goes here at close()
        self._count_frames(b)
        self._f.write(b)

    def _count_frames(self, b: bytes | bytearray) -> None:
        """Walk the frame headers across LAME's outputs (they need not end on a frame boundary)."""
        n, i = len(b), self._next
        if self._pending:  # a header started in the previous output
            need = 4 - len(self._pending)
            if n < need:
                self._pending += bytes(b)
                return
            h = _Header(self._pending + bytes(b[:need]))
            i = h.size() - len(self._pending)
            self.frames += 1
            self._pending = b""
        while i + 4 <= n:
            h = _Header(bytes(b[i:i + 4]))
            self.frames += 1
            i += h.size()
        if i < n:
            self._pending = bytes(b[i:])
            self._next = 0
        else:
            self._next = i - n

    # ------------------------------------------------------------------ the Info tag

    @staticmethod
    def _tag_frame_size(h: _Header) -> tuple[int, int]:
        """The bitrate index and size of the Info frame: the stream's, or the lowest that holds the tag."""
        need = 4 + h.side_info + 120 + 36
        for idx in range(h.kbps_index, 15):
            if h.size(idx, 0) >= need:
                return idx, h.size(idx, 0)
        raise ValueError("no bitrate holds the Info tag")  # pragma: no cover - 160 kbps always does

    def _info_frame(self, total_bytes: int) -> bytes:
        h = self._first
        assert h is not None
        idx, size = self._tag_frame_size(h)
        frame = bytearray(size)
        # The stream's header with the tag's bitrate, no padding, no CRC protection.
        frame[0] = 0xFF
        frame[1] = 0xE0 | (h.version << 3) | (1 << 1) | 1
        frame[2] = (idx << 4) | (h.rate_index << 2)
        frame[3] = 0xC0 if h.mono else 0x40  # mono / joint stereo, as LAME encodes them
        p = 4 + h.side_info
        delay = ENCODER_DELAY
        padding = self.frames * h.samples - delay - self.samples
        if not 0 <= padding < 4096:
            raise ValueError(f"MP3 end padding {padding} does not fit the LAME tag")
        toc = bytes(min(255, i * 256 // 100) for i in range(100))
        quality = 100 - 10 * 4 - QUALITY  # LAME's formula (VBR_q 4 is LAME's default)
        frame[p:p + 120] = b"Info" + struct.pack(">III", 0x0F, self.frames, total_bytes) + toc + struct.pack(">I", quality)
        q = p + 120
        lame = bytearray(36)
        lame[0:9] = _TAG_VERSION
        lame[9] = 1  # tag revision 0, method: CBR
        lame[20] = min(255, self.kbps)  # CBR: the bitrate
        lame[21:24] = bytes([delay >> 4, ((delay & 0xF) << 4) | (padding >> 8), padding & 0xFF])
        lame[28:32] = struct.pack(">I", total_bytes)  # music length: the whole MP3, Info frame included
        # lame[32:34]: music CRC, left 0; lame[34:36]: the tag's CRC, over the frame up to it.
        frame[q:q + 36] = lame
        frame[q + 34:q + 36] = struct.pack(">H", _crc16(bytes(frame[:q + 34])))
        return bytes(frame)

    # ------------------------------------------------------------------ finishing

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._out(self._enc.flush())
            if self._first is not None:
                end = self._f.tell()
                self._f.seek(0)
                self._f.write(self._info_frame(end))
                self._f.seek(end)
            self._f.flush()
        finally:
            self._f.close()

    def __enter__(self) -> "Mp3Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
