"""Marker tones: short bursts placed at known times in a call's audio, found again in its recording."""

from __future__ import annotations

import numpy as np


def marker_signal(seconds: float, at: list[float], rate: int = 8000, amp: float = 0.5, freq: float = 1000.0,
                  length_ms: float = 20.0) -> np.ndarray:
    """Silence with short tone bursts at the given times (a sample-accurate marker to find again)."""
    x = np.zeros(int(seconds * rate), np.float32)
    n = int(length_ms * rate / 1000)
    t = np.arange(n) / rate
    burst = amp * np.sin(2 * np.pi * freq * t) * np.hanning(n)
    for a in at:
        i = int(round(a * rate))
        x[i:i + n] += burst
    return (x * 32767).astype(np.int16)


def find_markers(x: np.ndarray, template: np.ndarray, threshold: float = 0.5) -> list[int]:
    """Sample offsets where `template` occurs (normalised cross-correlation peaks)."""
    x = x.astype(np.float64)
    t = template.astype(np.float64)
    corr = np.correlate(x, t, mode="valid")
    energy = np.convolve(x * x, np.ones(len(t)), mode="valid")
    norm = np.sqrt(energy * (t * t).sum()) + 1e-9
    c = np.where(energy > 0.25 * (t * t).sum(), corr / norm, 0.0)  # ignore faint codec pre-echo
    peaks = []
    i = 0
    while i < len(c):
        if c[i] > threshold:
            j = i + int(np.argmax(c[i:i + len(t)]))
            peaks.append(j)
            i = j + len(t)
        else:
            i += 1
    return peaks
