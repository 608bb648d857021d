"""Baselines, run in bench/.venv-baselines: pipecat's Twilio serializer + AudioBufferProcessor, and pydub.

Fed the same Twilio media messages (same audio loops, same JSON shape) as our server, both tracks:
every message goes through `TwilioFrameSerializer.deserialize` (json, base64, μ-law → PCM, the
stream resampler); inbound frames are fed to `AudioBufferProcessor.process_frame` as the user's
audio (`InputAudioRawFrame`, as the serializer returns them) and outbound ones as the bot's audio
(`OutputAudioRawFrame`, how a pipecat app would record the other side). No network, no pipeline
task: the processor is set up and driven directly, so only the recording path itself is measured.

Measured:
* memory: process RSS growth per call at each checkpoint (1, 10, 60 minutes of audio);
* CPU: process CPU of deserialize + process_frame (message strings are built outside the timing);
* hang-up: at each checkpoint, call 0's buffers are merged (pipecat's own `merge_audio_buffers`)
  and written: MP3 via pydub `AudioSegment.export` (ffmpeg from imageio-ffmpeg, 64 kbps like ours
  at 8 kHz), and WAV via the `wave` module (what pipecat's examples do). Wall time, our CPU and
  the ffmpeg child's CPU (RUSAGE_CHILDREN) are reported.
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import resource
import sys
import tempfile
import time
import warnings
import wave

warnings.filterwarnings("ignore")


def rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


async def run(args: argparse.Namespace) -> dict:
    from loguru import logger

    logger.remove()
    from pipecat.clocks.system_clock import SystemClock
    from pipecat.frames.frames import OutputAudioRawFrame, StartFrame
    from pipecat.processors.audio.audio_buffer_processor import AudioBufferProcessor
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessorSetup
    from pipecat.serializers.twilio import TwilioFrameSerializer
    from pipecat.utils.asyncio.task_manager import TaskManager

    import imageio_ffmpeg
    from pydub import AudioSegment

    AudioSegment.converter = imageio_ffmpeg.get_ffmpeg_exe()

    raw_in = open(os.path.join(args.audio, "inbound.ulaw"), "rb").read()
    raw_out = open(os.path.join(args.audio, "outbound.ulaw"), "rb").read()
    pin = [base64.b64encode(raw_in[i:i + 160]).decode() for i in range(0, len(raw_in), 160)]
    pout = [base64.b64encode(raw_out[i:i + 160]).decode() for i in range(0, len(raw_out), 160)]
    tmpl = ('{"event":"media","sequenceNumber":"%d","media":{"track":"%s","chunk":"%d","timestamp":"%d",'
            '"payload":"%s"},"streamSid":"%s"}')

    tm = TaskManager(loop=asyncio.get_running_loop())
    setup = FrameProcessorSetup(clock=SystemClock(), task_manager=tm, pipeline_worker=None,
                                audio_in_sample_rate=8000, audio_out_sample_rate=8000)
    gc.collect()
    base_rss = rss()
    calls = []
    for c in range(args.calls):
        sid = "MZ%032x" % c
        ser = TwilioFrameSerializer(sid, params=TwilioFrameSerializer.InputParams(auto_hang_up=False))
        await ser.setup(setup)
        abp = AudioBufferProcessor(sample_rate=8000, num_channels=1)
        await abp.setup(setup)
        await abp.process_frame(StartFrame(audio_in_sample_rate=8000, audio_out_sample_rate=8000),
                                FrameDirection.DOWNSTREAM)
        await abp.start_recording()
        calls.append((sid, ser, abp))
    await asyncio.sleep(0)
    gc.collect()
    setup_rss = rss()
    checkpoints = sorted(args.minutes)
    slot = 0
    cpu = 0.0
    points = [{"minutes": 0, "rss_mb": round(setup_rss / 1e6, 2),
               "per_call_mb": round((setup_rss - base_rss) / args.calls / 1e6, 3)}]
    hangups = {}
    down = FrameDirection.DOWNSTREAM
    block = 3000  # build one minute of messages at a time, outside the timed part
    for m in checkpoints:
        while slot < m * 3000:
            k1 = min(m * 3000, slot + block)
            msgs = []
            for sid, ser, abp in calls:
                lst = []
                for k in range(slot, k1):
                    j = k % len(pin)
                    lst.append((tmpl % (2 * k + 2, "inbound", k + 1, 120 + 20 * k, pin[j], sid),
                                tmpl % (2 * k + 3, "outbound", k + 1, 120 + 20 * k, pout[j], sid)))
                msgs.append(lst)
            t = time.process_time()
            for i in range(k1 - slot):
                for c, (sid, ser, abp) in enumerate(calls):
                    mi, mo = msgs[c][i]
                    f = await ser.deserialize(mi)
                    await abp.process_frame(f, down)
                    f = await ser.deserialize(mo)
                    await abp.process_frame(OutputAudioRawFrame(audio=f.audio, sample_rate=f.sample_rate,
                                                                num_channels=1), down)
            cpu += time.process_time() - t
            slot = k1
            del msgs
        gc.collect()
        r = rss()
        points.append({"minutes": m, "rss_mb": round(r / 1e6, 2), "per_call_mb": round((r - base_rss) / args.calls / 1e6, 3),
                       "cpu_s": round(cpu, 3)})
        # Hang-up of a call of m minutes (call 0): pipecat's final merge, then the file.
        abp = calls[0][2]
        out = {}
        for fmt in ("mp3", "wav"):
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            c0 = time.process_time()
            t0 = time.perf_counter()
            abp._align_track_buffers()
            merged = abp.merge_audio_buffers()
            path = os.path.join(args.tmp, f"pipecat_{m}.{fmt}")
            if fmt == "mp3":
                seg = AudioSegment(data=merged, sample_width=2, frame_rate=8000, channels=1)
                seg.export(path, format="mp3", bitrate="64k").close()
                del seg
            else:
                with wave.open(path, "wb") as w:
                    w.setnchannels(1)
                    w.setsampwidth(2)
                    w.setframerate(8000)
                    w.writeframes(merged)
            wall = time.perf_counter() - t0
            cself = time.process_time() - c0
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            child = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
            out[fmt] = {"wall_s": round(wall, 3), "cpu_self_s": round(cself, 3), "cpu_child_s": round(child, 3),
                        "bytes": os.path.getsize(path), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1)}
            os.unlink(path)
            del merged
            gc.collect()
        hangups[m] = out
    M = checkpoints[-1]
    per_min_stream = cpu / (args.calls * M)
    final = hangups[M]
    return {
        "calls": args.calls, "base_rss_mb": round(base_rss / 1e6, 2), "points": points,
        "cpu_stream_s": round(cpu, 3), "messages": 2 * args.calls * M * 3000,
        "us_per_message": round(cpu / (2 * args.calls * M * 3000) * 1e6, 2),
        "cpu_per_call_min_stream_s": round(per_min_stream, 5),
        "cpu_per_call_min_mp3_s": round(per_min_stream + (final["mp3"]["cpu_self_s"] + final["mp3"]["cpu_child_s"]) / M, 5),
        "cpu_per_call_min_wav_s": round(per_min_stream + (final["wav"]["cpu_self_s"] + final["wav"]["cpu_child_s"]) / M, 5),
        "hangup": hangups,
        "versions": {"pipecat-ai": _ver("pipecat-ai"), "pydub": _ver("pydub"), "imageio-ffmpeg": _ver("imageio-ffmpeg"),
                     "ffmpeg": _ffmpeg_version(imageio_ffmpeg.get_ffmpeg_exe())},
    }


def _ver(name: str) -> str:
    from importlib.metadata import version

    try:
        return version(name)
    except Exception:
        return "?"


def _ffmpeg_version(exe: str) -> str:
    import subprocess

    try:
        return subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=20).stdout.split("\n")[0][:60]
    except Exception:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 60])
    ap.add_argument("--calls", type=int, default=2)
    ap.add_argument("--audio", required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = tmp
        res = asyncio.run(run(args))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
