"""Per-frame path, in process (the app's venv): what each stage costs, and the whole recording path
without a socket (parse → decode → place → write, then the export and finalisation), so it can be
set beside pipecat's serializer + AudioBufferProcessor measured the same way.

`--json-only` runs just json.loads vs orjson.loads (used in the tools venv, which has orjson).
Prints one JSON document.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import CACHE, FIRST_TS, MEDIA, load_payloads  # noqa: E402

SID = "MZ" + "ab" * 16


def best_us(stmt, number: int, repeat: int = 5) -> float:
    return round(min(timeit.repeat(stmt, number=number, repeat=repeat)) / number * 1e6, 3)


def sample_message() -> str:
    pin, _ = load_payloads()
    return MEDIA % (1234, "inbound", 617, FIRST_TS + 20 * 616, pin[616], SID)


def json_only() -> dict:
    msg = sample_message()
    out = {"message_bytes": len(msg), "json_loads_us": best_us(lambda: json.loads(msg), 100_000)}
    try:
        import orjson

        out["orjson_loads_us"] = best_us(lambda: orjson.loads(msg), 100_000)
        out["orjson_version"] = orjson.__version__ if hasattr(orjson, "__version__") else "?"
    except ImportError:
        out["orjson_loads_us"] = None
    return out


def stages() -> dict:
    import numpy as np

    from app.audio import mulaw
    from app.recording.recorder import CallRecorder
    from app.twilio.protocol import StreamProtocol

    pin, pout = load_payloads()
    msg = sample_message()
    payload_b64 = pin[616]
    payload = base64.b64decode(payload_b64)
    proto = StreamProtocol()
    proto.receive('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    proto.receive(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": SID,
                              "start": {"accountSid": "AC" + "0" * 32, "streamSid": SID, "callSid": "CA" + "0" * 32,
                                        "tracks": ["inbound", "outbound"], "customParameters": {}}}))
    res = {
        "json_loads_us": best_us(lambda: json.loads(msg), 50_000),
        "protocol_receive_us": best_us(lambda: proto.receive(msg), 50_000),
        "b64decode_us": best_us(lambda: base64.b64decode(payload_b64, validate=True), 100_000),
        "mulaw_decode_bytes_us": best_us(lambda: mulaw.decode_bytes(payload), 100_000),
    }
    with tempfile.TemporaryDirectory() as d:
        rec = CallRecorder(Path(d) / "c", "CA" + "0" * 32)
        state = {"k": 0}

        def place() -> None:
            k = state["k"]
            state["k"] = k + 1
            rec.on_audio("inbound", FIRST_TS + 20 * k, mulaw.decode_bytes(payload))  # the Twilio edge decodes

        res["recorder_on_media_us"] = best_us(place, 20_000)
        fd = os.open(Path(d) / "w.bin", os.O_RDWR | os.O_CREAT)
        pcm = bytes(320)
        pos = {"o": 0}

        def pw() -> None:
            os.pwrite(fd, pcm, 44 + pos["o"])
            pos["o"] += 320

        res["pwrite_320B_us"] = best_us(pw, 20_000)
        os.close(fd)
        rec.close("done")
    res["np_frombuffer_take_us"] = best_us(lambda: np.frombuffer(payload, np.uint8), 100_000)
    return res


def inprocess_path(minutes: int) -> dict:
    """Our recording path without a socket: StreamProtocol → CallRecorder (masters) → export → finalize."""
    from app.audio import mulaw
    from app.recording.finalize import ExportOptions, finalize_call, make_exporter
    from app.recording.recorder import CallRecorder
    from app.storage.store import CallStore
    from app.twilio.protocol import StreamProtocol

    pin, pout = load_payloads()
    sid = "CA" + "1" * 32
    with tempfile.TemporaryDirectory() as d:
        store = CallStore(Path(d) / "responses")
        opts = ExportOptions(default_format="mp3", mp3_kbps=128)
        t_cpu = 0.0
        t0 = time.process_time()
        proto = StreamProtocol()
        proto.receive('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        proto.receive(json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": SID,
                                  "start": {"accountSid": "AC" + "0" * 32, "streamSid": SID, "callSid": sid,
                                            "tracks": ["inbound", "outbound"], "customParameters": {}}}))
        rec = CallRecorder(store.files(sid, create=True).folder, sid)
        exporter = make_exporter(store, sid, opts)
        t_cpu += time.process_time() - t0
        seq = 1
        n = minutes * 3000
        block = 250  # 5 s of audio: the export interval's worth at real time
        parse = place = export = 0.0
        for k0 in range(0, n, block):
            msgs = []
            for k in range(k0, min(n, k0 + block)):
                j = k % len(pin)
                seq += 2
                msgs.append(MEDIA % (seq, "inbound", k + 1, FIRST_TS + 20 * k, pin[j], SID))
                msgs.append(MEDIA % (seq + 1, "outbound", k + 1, FIRST_TS + 20 * k, pout[j], SID))
            a = time.process_time()
            evs = [proto.receive(m) for m in msgs]
            b = time.process_time()
            for ev in evs:
                rec.on_audio(ev.track, ev.timestamp, mulaw.decode_bytes(ev.payload))
            c = time.process_time()
            settled = rec.stream_samples - rec.clock.window
            if settled > exporter.done:
                exporter.advance(settled)
            e = time.process_time()
            parse += b - a
            place += c - b
            export += e - c
        a = time.process_time()
        total = rec.close("caller hung up (stop)")
        result = finalize_call(store, sid, opts, exporter=exporter, total=total)
        fin = time.process_time() - a
        total_cpu = t_cpu + parse + place + export + fin
        assert result["audio"]["format"] == "mp3", result["audio"]
    msgs_n = 2 * n
    return {
        "minutes": minutes, "messages": msgs_n,
        "parse_us_per_msg": round(parse / msgs_n * 1e6, 2),
        "place_write_us_per_msg": round(place / msgs_n * 1e6, 2),
        "export_s_per_min": round(export / minutes, 4),
        "finalize_s": round(fin, 3),
        "cpu_per_call_min_s": round(total_cpu / minutes, 5),
        "block_samples": 8000,  # the exporter reads 1 s of the masters at a time
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json-only", action="store_true")
    ap.add_argument("--minutes", type=int, default=10)
    args = ap.parse_args()
    if args.json_only:
        print(json.dumps(json_only()))
        return
    print(json.dumps({"stages": stages(), "inprocess": inprocess_path(args.minutes),
                      "cache": str(CACHE)}))


if __name__ == "__main__":
    main()
