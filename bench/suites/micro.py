"""Per-frame micro-benchmarks in process (bench/micro.py: each stage, and the recording path without a
socket), json.loads vs orjson.loads on a Twilio media message (in bench/.venv-tools), and the encoders alone
side by side (bench/mp3_encoders.py: ours vs ffmpeg libmp3lame vs libsndfile MP3; OGG, FLAC)."""

from __future__ import annotations

import subprocess
import sys

from common import BENCH, ROOT, log
from venvs import VENV_BASELINES, VENV_TOOLS, ensure_venv, run_json


def run(args, R: dict) -> None:
    R["micro"] = run_json([sys.executable, str(BENCH / "micro.py"), "--minutes", "2" if args.quick else "10"],
                          timeout=600, env={"PYTHONPATH": str(ROOT)})
    py = ensure_venv(VENV_TOOLS, BENCH / "requirements-tools.txt")
    R["json_vs_orjson"] = run_json([str(py), str(BENCH / "micro.py"), "--json-only"], timeout=300)
    run_encoders(args, R)


def run_encoders(args, R: dict) -> None:
    """MP3 (ours, ffmpeg's libmp3lame, libsndfile's), OGG and FLAC alone on the same speech, per call-minute."""
    py = ensure_venv(VENV_BASELINES, BENCH / "requirements-baselines.txt")
    exe = subprocess.run([str(py), "-c", "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())"],
                         capture_output=True, text=True, check=True).stdout.strip()
    E = R["encoders"] = run_json([sys.executable, str(BENCH / "mp3_encoders.py"), "--minutes", "2" if args.quick else "5",
                                  "--ffmpeg", exe], timeout=900, env={"PYTHONPATH": str(ROOT)})
    log(f"  encoders alone, {E['minutes']} min of real speech each; CPU s per call-minute, SNR dB, exact length:")
    for c in E["configs"]:
        o, f, s = c["ours_mp3"], c.get("ffmpeg_libmp3lame") or {}, c["libsndfile_mp3"]
        log(f"  {c['rate'] // 1000} kHz {'mono' if c['channels'] == 1 else 'stereo'} {c['kbps']} kbps: "
            f"ours {o['cpu_per_min_s']:.3f} s, {o['snr_db']} dB, exact {o['exact_length']} | "
            f"ffmpeg libmp3lame {f.get('cpu_per_min_s', 0):.3f} s ({f.get('cpu_net_per_min_s', 0):.3f} without start-up), "
            f"{f.get('snr_db')} dB, exact {f.get('exact_length')} | libsndfile {s['cpu_per_min_s']:.3f} s, {s['snr_db']} dB | "
            f"ogg {c['ogg']['cpu_per_min_s']:.3f} s ({c['ogg']['kbps']} kbps) | flac {c['flac']['cpu_per_min_s']:.3f} s "
            f"({c['flac']['kbps']} kbps)")
