"""The encoders alone, side by side on the same real speech: ours (LAME via lameenc, app/audio/mp3.py) vs ffmpeg's
libmp3lame (the binary pydub uses, from bench/.venv-baselines) vs libsndfile's MP3 (what we used before), and
libsndfile's Vorbis and FLAC. Runs in the app's venv; `--ffmpeg` is the ffmpeg executable.

Audio: the caller is five LibriVox clips back to back, the other side the JFK inaugural (shared/testdata),
looped to `--minutes` of call; mono is the caller alone, stereo caller left / other right. Each encoder gets
the same int16 PCM at the same rate, channels and CBR bitrate: 64 kbps at 8 kHz (phone), 128 kbps at
16 kHz (browser), what MP3_BITRATE=128k gives at each. Ours and libsndfile are fed 1 s blocks, as the
exporter does; ffmpeg reads the raw PCM from a pipe (`-f s16le`) and writes an MP3 file.

Per encoder: CPU seconds per call-minute (ours: process CPU; ffmpeg: the child's user+sys, with its start-up
measured on 0.1 s and subtracted in `cpu_net`), the SNR of the decoded file against the source (decoded with
soundfile, i.e. mpg123, which honours the LAME/Info tag), and whether the decoded length equals the source's
sample count exactly. Prints one JSON document.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from app.audio.formats import FORMATS, encoder_kwargs, open_encoder  # noqa: E402
from app.audio.resample import resample  # noqa: E402
from tests.support.paths import TESTDATA  # noqa: E402

KBPS = {8000: 64, 16000: 128}


def _load(name: str, rate: int) -> np.ndarray:
    x, src = sf.read(TESTDATA / "speech" / name, dtype="float32", always_2d=True)
    return resample(x.mean(axis=1), src, rate)


def source(rate: int, channels: int, minutes: float) -> np.ndarray:
    names = [f"librivox-sense-and-sensibility-{k}.wav" for k in ("0870", "0880", "0890", "0920", "0930")]
    caller = np.concatenate([_load(n, rate) for n in names])
    n = int(minutes * 60 * rate)
    x = np.resize(caller, n)
    if channels == 2:
        x = np.stack([x, np.resize(_load("jfk-inaugural-1961.flac", rate), n)], axis=1)
    return np.clip(np.round(x * 32768), -32768, 32767).astype("<i2")


def check(path: str, pcm: np.ndarray) -> dict:
    dec, _ = sf.read(path, dtype="float32", always_2d=True)
    ref = pcm.reshape(len(pcm), -1).astype(np.float64) / 32768
    exact = dec.shape == ref.shape
    m = min(len(dec), len(ref))
    err = np.sum((ref[:m] - dec[:m]) ** 2)
    snr = round(float(10 * np.log10(np.sum(ref[:m] ** 2) / err)), 2) if err else None  # None: lossless
    return {"exact_length": exact, "length_diff": len(dec) - len(ref), "snr_db": snr,
            "kbps": round(os.path.getsize(path) * 8 / (len(ref) / RATE[0]) / 1000, 1)}


RATE = [8000]


def ours(path: str, fmt: str, pcm: np.ndarray, rate: int, kbps: int | None, libsndfile: bool = False, **kw) -> float:
    x = pcm.astype(np.float32) / 32768
    ch = 1 if pcm.ndim == 1 else 2
    c0 = time.process_time()
    if libsndfile:  # the encoder before issue 13: libsndfile (MP3 via its bundled LAME), same settings
        kwargs, _ = encoder_kwargs(FORMATS[fmt], rate, kbps)
        enc = sf.SoundFile(path, "w", rate, ch, **(kwargs | kw))
    else:
        enc, _ = open_encoder(path, FORMATS[fmt], rate, ch, kbps)
    for i in range(0, len(x), rate):
        enc.write(x[i:i + rate])
    enc.close()
    return time.process_time() - c0


def ffmpeg(exe: str, path: str, pcm: np.ndarray, rate: int, kbps: int) -> float:
    ch = 1 if pcm.ndim == 1 else 2
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run([exe, "-y", "-loglevel", "error", "-f", "s16le", "-ar", str(rate), "-ac", str(ch), "-i", "-",
                    "-c:a", "libmp3lame", "-b:a", f"{kbps}k", path], input=pcm.tobytes(), check=True)
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=5)
    ap.add_argument("--ffmpeg", default=None)
    args = ap.parse_args()
    res: dict = {"minutes": args.minutes, "configs": []}
    with tempfile.TemporaryDirectory() as d:
        for rate in (8000, 16000):
            for ch in (1, 2):
                RATE[0] = rate
                kbps = KBPS[rate]
                pcm = source(rate, ch, args.minutes)
                mins = len(pcm) / rate / 60
                row: dict = {"rate": rate, "channels": ch, "kbps": kbps}
                p = os.path.join(d, "x.mp3")
                row["ours_mp3"] = {"cpu_per_min_s": round(ours(p, "mp3", pcm, rate, kbps) / mins, 4)} | check(p, pcm)
                row["libsndfile_mp3"] = ({"cpu_per_min_s": round(ours(p, "mp3", pcm, rate, kbps, libsndfile=True) / mins, 4)}
                                         | check(p, pcm))
                if args.ffmpeg:
                    start = ffmpeg(args.ffmpeg, p, pcm[: rate // 10], rate, kbps)
                    t = ffmpeg(args.ffmpeg, p, pcm, rate, kbps)
                    row["ffmpeg_libmp3lame"] = {"cpu_per_min_s": round(t / mins, 4),
                                                "cpu_net_per_min_s": round((t - start) / mins, 4)} | check(p, pcm)
                for fmt in ("ogg", "flac"):
                    q = os.path.join(d, "x." + fmt)
                    row[fmt] = {"cpu_per_min_s": round(ours(q, fmt, pcm, rate, None) / mins, 4)} | check(q, pcm)
                res["configs"].append(row)
    res["ffmpeg"] = args.ffmpeg and subprocess.run([args.ffmpeg, "-version"], capture_output=True,
                                                   text=True).stdout.split("\n")[0][:60]
    print(json.dumps(res))


if __name__ == "__main__":
    main()
