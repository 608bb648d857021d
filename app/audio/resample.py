"""Sample-rate conversion (soxr), one-shot and streaming."""

from __future__ import annotations

import numpy as np
import soxr

__all__ = ["resample", "StreamResampler", "float_to_pcm16", "to_pcm16"]


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """Resample a float32 mono or (n, channels) array."""
    if rate_in == rate_out:
        return np.asarray(x, np.float32)
    return soxr.resample(np.asarray(x, np.float32), rate_in, rate_out, quality="HQ")


class StreamResampler:
    """Incremental resampler: ``process(block)`` then ``flush()`` at the end.

    Keeps only the filter state, so a three-hour export resamples in constant memory.
    """

    def __init__(self, rate_in: int, rate_out: int, channels: int = 1) -> None:
        self.passthrough = rate_in == rate_out
        self._rs = None if self.passthrough else soxr.ResampleStream(rate_in, rate_out, channels, dtype="float32", quality="HQ")

    def process(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        block = np.asarray(block, np.float32)
        if self._rs is None:
            return block
        return self._rs.resample_chunk(block, last=last)


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """float samples in [-1, 1] → little-endian int16 PCM bytes (clipped)."""
    x = np.clip(np.round(np.asarray(samples, np.float64) * 32767.0), -32768, 32767)
    return x.astype("<i2").tobytes()


def to_pcm16(samples: np.ndarray, rate: int, out_rate: int) -> bytes:
    """float audio at `rate` → PCM16 bytes at `out_rate` (what a call's transport is given)."""
    return float_to_pcm16(resample(np.asarray(samples, np.float32), rate, out_rate))
