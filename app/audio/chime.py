"""The built-in greeting when the assistant is off: a short two-note chime as PCM16."""

from __future__ import annotations

import numpy as np

__all__ = ["chime"]


def chime(rate: int, seconds: float = 0.6, freqs: tuple[float, ...] = (440.0, 660.0)) -> bytes:
    """Two notes with 20 ms fades, PCM16 LE mono at `rate`."""
    parts = []
    for f in freqs:
        t = np.arange(int(seconds * rate) // len(freqs)) / rate
        env = np.minimum(1, np.minimum(t, t[::-1]) / 0.02)
        parts.append(0.4 * env * np.sin(2 * np.pi * f * t))
    return (np.concatenate(parts) * 32767).astype("<i2").tobytes()
