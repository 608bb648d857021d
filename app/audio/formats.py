"""The one format registry: name → how to encode it. `/audio/formats` lists it; set-format validates against it.

Encoders stream (constant memory) and need no system ffmpeg. MP3 goes through LAME from `lameenc`
(app/audio/mp3.py: LAME quality 5 as ffmpeg's libmp3lame, plus the LAME/Info tag that makes decoders trim
the encoder delay, so durations are exact); it is a third of libsndfile's MP3 cost at the same bitrate.
WAV, Vorbis and FLAC go through soundfile's bundled libsndfile (and MP3 too if lameenc is missing). A
format whose encoder is missing from this libsndfile build is dropped at import. `open_encoder()` is the
one way to open a streaming encoder for a format.

MP3 bitrates: libsndfile picks the bitrate from `compression_level` (0 = the highest the sample
rate allows, 1 = the lowest) and ignores `bitrate_mode` unless `compression_level` is set. The
MPEG version follows the sample rate, and with it the ceiling: 64 kbps at 8–12 kHz (MPEG-2.5),
160 kbps at 16–24 kHz (MPEG-2), 320 kbps at 32–48 kHz (MPEG-1). `mp3_plan()` turns a requested
bitrate into the bitrate actually used and the level that gives it, so the summary can say so.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

import soundfile as sf

from app.audio import mp3 as _mp3

__all__ = ["parse_bitrate", "AudioFormat", "FORMATS", "Mp3Plan", "mp3_plan", "get_format", "choose_format", "UnsupportedFormatError",
           "InvalidFormatChoice", "encoder_kwargs", "open_encoder"]

def parse_bitrate(value: str | int | None) -> int | None:
    """'128k' / '128' / 128000 → kbps (int). None/'' → None."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value // 1000 if value >= 1000 else value
    m = re.fullmatch(r"\s*(\d+)\s*(k|kbps|kb/s)?\s*", str(value).lower())
    if not m:
        raise ValueError(f"bitrate {value!r} is not a number of kbps like '64k' or '128k'")
    n = int(m.group(1))
    return n // 1000 if n >= 1000 and not m.group(2) else n



class UnsupportedFormatError(ValueError):
    """A format name that is not in the registry. The message lists the accepted names."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unsupported format {name!r}; accepted: {', '.join(sorted(FORMATS))}")
        self.name = name


class InvalidFormatChoice(ValueError):
    """A known format with an option it cannot take (a bitrate for a lossless format, or out of range)."""


@dataclass(frozen=True)
class AudioFormat:
    name: str
    extension: str
    description: str
    lossless: bool
    sf_format: str
    sf_subtype: str
    media_type: str
    # Typical kilobits per second for 8 kHz mono telephony speech, measured on this machine.
    typical_kbps_8k_mono: float
    options: dict[str, str] = field(default_factory=dict)


_ALL = [
    AudioFormat("mp3", "mp3", "MPEG-1/2 Layer III (LAME); plays everywhere", False, "MP3", "MPEG_LAYER_III",
                "audio/mpeg", 32.0, {"bitrate": "kbps, e.g. 32k/64k/128k (MP3_BITRATE); capped by the sample rate"}),
    AudioFormat("wav", "wav", "PCM 16-bit WAV; uncompressed, exact", True, "WAV", "PCM_16", "audio/wav", 128.0),
    AudioFormat("ogg", "ogg", "Ogg Vorbis; small, open", False, "OGG", "VORBIS", "audio/ogg", 25.0),
    AudioFormat("flac", "flac", "FLAC; lossless and about half the size of WAV", True, "FLAC", "PCM_16",
                "audio/flac", 74.0),
]


def _available(fmt: AudioFormat) -> bool:
    try:
        return fmt.sf_subtype in sf.available_subtypes(fmt.sf_format)
    except Exception:  # pragma: no cover - depends on the libsndfile build
        return False


FORMATS: dict[str, AudioFormat] = {f.name: f for f in _ALL if _available(f)}


def get_format(name: str) -> AudioFormat:
    key = (name or "").lower().strip().lstrip(".")
    if key not in FORMATS:
        raise UnsupportedFormatError(name)
    return FORMATS[key]


def choose_format(name: str, bitrate: str | int | None = None) -> tuple[AudioFormat, int | None]:
    """A call's format choice, validated: the format, and the MP3 bitrate in kbps (None: the default).

    The one rule for set-format and `callscribe export`. Raises UnsupportedFormatError for a name
    not in the registry and InvalidFormatChoice for a bitrate that does not apply or parse.
    """
    fmt = get_format(name)
    if bitrate is None or bitrate == "":
        return fmt, None
    if fmt.name != "mp3":
        raise InvalidFormatChoice(f"bitrate applies to mp3 only, not {fmt.name}")
    try:
        kbps = parse_bitrate(bitrate)
    except ValueError as e:
        raise InvalidFormatChoice(str(e)) from None
    if not kbps or not 8 <= kbps <= 320:
        raise InvalidFormatChoice("bitrate must be between 8k and 320k")
    return fmt, kbps


# ------------------------------------------------------------------------------------------ MP3

_MPEG1 = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG2 = (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_MPEG25 = (8, 16, 24, 32, 40, 48, 56, 64)


@dataclass(frozen=True)
class Mp3Plan:
    requested_kbps: int | None
    used_kbps: int
    max_kbps: int
    compression_level: float
    note: str


def _table(rate: int) -> tuple[int, ...]:
    if rate >= 32000:
        return _MPEG1
    if rate >= 16000:
        return _MPEG2
    return _MPEG25


def mp3_plan(sample_rate: int, requested_kbps: int | None) -> Mp3Plan:
    """Constant-bitrate plan for libsndfile: the bitrate used and the compression level giving it."""
    table = _table(sample_rate)
    lo, hi = table[0], table[-1]
    want = requested_kbps if requested_kbps else 32
    used = max([b for b in table if b <= want] or [lo])
    # libsndfile: kbps = hi - level * (hi - lo), snapped down to a valid bitrate. Aim a hair above.
    level = 0.0 if used >= hi else max(0.0, (hi - used) / (hi - lo) - 0.001)
    note = f"{used} kbps CBR"
    if requested_kbps and used != requested_kbps:
        note = (f"{used} kbps CBR (MP3_BITRATE asked for {requested_kbps}k; at {sample_rate} Hz MP3 allows at most "
                f"{hi} kbps — set OUTPUT_SAMPLE_RATE=16000 or more for higher bitrates)")
    return Mp3Plan(requested_kbps, used, hi, round(level, 4), note)


def encoder_kwargs(fmt: AudioFormat, sample_rate: int, mp3_kbps: int | None) -> tuple[dict, str]:
    """soundfile.SoundFile keyword arguments for this format, and a human note on the settings used.

    For MP3 these are libsndfile's (the fallback, and one-shot writers); `open_encoder` uses LAME directly."""
    kwargs: dict = {"format": fmt.sf_format, "subtype": fmt.sf_subtype}
    if fmt.name == "mp3":
        plan = mp3_plan(sample_rate, mp3_kbps)
        kwargs.update(compression_level=plan.compression_level, bitrate_mode="CONSTANT")
        return kwargs, plan.note
    if fmt.name == "flac":
        return kwargs, "lossless FLAC, 16-bit"
    if fmt.name == "ogg":
        return kwargs, "Vorbis, default quality (~25 kbps for 8 kHz speech)"
    return kwargs, "16-bit PCM"


class _Encoder(Protocol):
    def write(self, data: np.ndarray) -> object: ...
    def close(self) -> None: ...


def open_encoder(path: str | os.PathLike, fmt: AudioFormat, sample_rate: int, channels: int,
                 mp3_kbps: int | None) -> tuple[_Encoder, str]:
    """A streaming encoder writing `path` (`.write(float32 block)`, `.close()`), and the note on its settings."""
    kwargs, note = encoder_kwargs(fmt, sample_rate, mp3_kbps)
    if fmt.name == "mp3" and _mp3.available():
        plan = mp3_plan(sample_rate, mp3_kbps)
        return _mp3.Mp3Writer(path, sample_rate, channels, plan.used_kbps), note
    return sf.SoundFile(path, "w", sample_rate, channels, **kwargs), note
