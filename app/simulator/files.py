"""Files around a simulated call: audio in and out as 8 kHz WAV, and the call's files on the server.

``load_wav_8k`` reads the caller's audio from any file soundfile can read; ``write_wav_8k``
writes what the caller heard. After the call, ``wait_for_call_files`` polls
``GET /calls/{sid}`` until the server has written the call's files (finalised, with the
transcript of the last turns), or raises ``FilesNotReady`` saying why not.
"""

from __future__ import annotations

import os
import time
from typing import Any

import httpx
import numpy as np

from app.simulator.config import RATE

__all__ = ["load_wav_8k", "write_wav_8k", "wait_for_call_files", "FilesNotReady"]


def load_wav_8k(path: str | os.PathLike[str]) -> np.ndarray:
    """Read any audio file soundfile can (any rate, channels, subtype) → mono int16 at 8 kHz."""
    import soundfile as sf

    from app.audio.resample import resample

    data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if rate != RATE:
        mono = resample(mono, int(rate), RATE)
    return np.clip(np.round(mono * 32767.0), -32768, 32767).astype(np.int16)


def write_wav_8k(path: str | os.PathLike[str], audio: np.ndarray) -> None:
    """Write int16 audio at 8 kHz as a 16-bit PCM WAV."""
    import soundfile as sf

    sf.write(str(path), np.asarray(audio, np.int16), RATE, subtype="PCM_16")


class FilesNotReady(RuntimeError):
    """``wait_for_call_files`` gave up: the server did not show the call as finalised in time."""


def wait_for_call_files(
    base_url: str,
    call_sid: str,
    *,
    headers: dict[str, str] | None = None,
    timeout_s: float = 60.0,
    interval_s: float = 0.2,
    transport: httpx.BaseTransport | None = None,
) -> dict[str, Any]:
    """Poll ``GET {base_url}/calls/{sid}`` until the call is ``finalized`` and its transcript complete.

    Raises ``FilesNotReady`` with a message saying why: still live or being finalised when the
    time ran out, unknown to the server, the API key missing or wrong, the server unreachable.
    """
    url = f"{base_url.rstrip('/')}/calls/{call_sid}"
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    with httpx.Client(timeout=10, trust_env=False, headers=headers or {}, transport=transport) as client:
        while True:
            try:
                resp = client.get(url)
            except httpx.HTTPError as exc:
                last = f"GET {url} failed: {exc!r}"
            else:
                try:
                    body = resp.json() if resp.status_code == 200 else {}
                except ValueError:
                    body = None
                if resp.status_code == 200 and not isinstance(body, dict):
                    last = "the answer is not a JSON object"
                elif resp.status_code == 200:
                    if body.get("state") == "finalized" and not body.get("transcript_pending"):
                        return body  # the transcript of the last turns is written a moment after the audio
                    last = (f"the call is still {body.get('state')!r}" if body.get("state") != "finalized"
                            else "the transcript of the call's last turns is still being made")
                elif resp.status_code in (401, 403):
                    raise FilesNotReady(
                        f"GET {url} → HTTP {resp.status_code}: the server wants its API key to show the call; "
                        "pass --api-key (or set $API_KEY)"
                    )
                elif resp.status_code == 404:
                    last = "the server does not know the call (HTTP 404)"
                else:
                    last = f"GET {url} → HTTP {resp.status_code}: {resp.text[:200]}"
            if time.monotonic() >= deadline:
                raise FilesNotReady(f"gave up waiting for the call's files after {timeout_s:g} s: {last}")
            time.sleep(min(interval_s, max(0.0, deadline - time.monotonic())))
