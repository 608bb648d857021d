"""Text-to-speech adapters producing PCM16 at the call's rate (8 kHz by default), streamed.

- :class:`HibariTTS`  default: hibari-tts "heart" voice (in the wheel, offline), ~30 ms to first audio
- :class:`EspeakTTS`  fallback and test voice: espeak-ng via ``espeakng-loader`` + ctypes (robotic)
- :class:`OpenAITTS`  OpenAI-compatible ``POST {base_url}/v1/audio/speech``, ``response_format=pcm``

Local engines run in a worker thread and hand each sentence's audio to the event loop as soon
as it is made; closing the async iterator (e.g. on barge-in) stops the worker after the
sentence in progress. Text is expected already normalised (``normalize.py``).
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import numpy as np

from app.agent.http import auth_headers, endpoint
from app.agent.errors import ProviderError
from app.agent.sentences import split_sentences
from app.audio.resample import StreamResampler, float_to_pcm16, to_pcm16

__all__ = ["EspeakTTS", "HibariTTS", "OpenAITTS"]

_DONE = object()


async def _stream_from_thread(produce: Callable[[threading.Event], Iterator[bytes]]) -> AsyncIterator[bytes]:
    """Run the blocking generator ``produce(stop)`` in a thread; yield its items on the loop."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Any] = asyncio.Queue()
    stop = threading.Event()

    def put(item: Any) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # loop closed: nobody is listening any more
            stop.set()

    def work() -> None:
        try:
            for chunk in produce(stop):
                if stop.is_set():
                    break
                put(chunk)
        except BaseException as exc:  # handed to the consumer, re-raised there
            put(exc)
        finally:
            put(_DONE)

    worker = asyncio.ensure_future(asyncio.to_thread(work))
    try:
        while True:
            item = await queue.get()
            if item is _DONE:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        if not worker.done():
            # Do not wait for the sentence in progress; the thread notices ``stop`` and exits.
            worker.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)


class HibariTTS:
    """hibari-tts with its bundled "heart" voice (24 kHz float32 per sentence → PCM16 at `rate`).

    One engine is shared by all calls: G2P is serialised by a lock, the ONNX model runs
    concurrently. ``load()`` takes ~0.5 s; call it at start-up (in a thread) to warm up.
    """

    def __init__(self, *, threads: int = 1, speed: float = 1.0, seed: int | None = None, rate: int = 8000) -> None:
        self.rate = rate
        self.threads = threads
        self.speed = speed
        self.seed = seed
        self._engine: Any = None
        self._load_lock = threading.Lock()
        self._g2p_lock = threading.Lock()

    def load(self) -> None:
        """Load the model and G2P (idempotent, thread-safe, blocking)."""
        if self._engine is not None:
            return
        with self._load_lock:
            if self._engine is None:
                from hibari import Hibari

                engine = Hibari(threads=self.threads)
                engine("Ready.")  # builds the G2P and warms the session
                self._engine = engine

    def synth_sentences(self, text: str, stop: threading.Event | None = None,
                        rate: int | None = None) -> Iterator[bytes]:
        """Blocking: PCM16 bytes at `rate` (default: the engine's), one item per sentence."""
        rate = rate or self.rate
        self.load()
        engine = self._engine
        rng = np.random.default_rng(self.seed)
        with self._g2p_lock:
            phonemes = engine.phonemize(text)
        for ps in phonemes:
            if stop is not None and stop.is_set():
                return
            audio = engine.from_ids(engine.ids(ps), self.speed, rng)
            if len(audio):
                yield to_pcm16(audio, engine.sample_rate, rate)

    async def stream(self, text: str, rate: int | None = None) -> AsyncIterator[bytes]:
        async for chunk in _stream_from_thread(lambda stop: self.synth_sentences(text, stop, rate)):
            yield chunk


# espeak-ng keeps one global engine per process: initialise once, synthesise under a lock.
_ESPEAK_LOCK = threading.Lock()
_ESPEAK: dict[str, Any] = {}
_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


def _espeak() -> dict[str, Any]:
    if not _ESPEAK:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        rate = lib.espeak_Initialize(2, 0, espeakng_loader.get_data_path().encode(), 0)  # 2 = SYNCHRONOUS
        if rate <= 0:
            raise RuntimeError("espeak_Initialize failed")
        chunks: list[np.ndarray] = []

        def on_audio(wav: Any, n: int, _events: Any) -> int:
            if n > 0:
                chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
            return 0

        cb = _CB(on_audio)
        lib.espeak_SetSynthCallback(cb)
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        _ESPEAK.update(lib=lib, rate=rate, cb=cb, chunks=chunks)  # keep ``cb`` referenced
    return _ESPEAK


class EspeakTTS:
    """espeak-ng through ``espeakng-loader`` (no system espeak). Robotic; for fallback and tests."""

    def __init__(self, voice: str = "en-us", wpm: int = 165, rate: int = 8000) -> None:
        self.rate = rate
        self.voice = voice
        self.wpm = wpm

    def synth(self, text: str) -> tuple[np.ndarray, int]:
        """Blocking: int16 samples and their rate (22 050 Hz) for ``text``."""
        with _ESPEAK_LOCK:
            e = _espeak()
            lib, chunks = e["lib"], e["chunks"]
            lib.espeak_SetVoiceByName(self.voice.encode())
            lib.espeak_SetParameter(1, self.wpm, 0)  # 1 = espeakRATE
            chunks.clear()
            data = text.encode() + b"\0"
            if lib.espeak_Synth(data, len(data), 0, 0, 0, 1, None, None):  # 1 = espeakCHARS_UTF8
                raise RuntimeError("espeak_Synth failed")
            audio = np.concatenate(chunks) if chunks else np.zeros(0, np.int16)
            chunks.clear()
            return audio, int(e["rate"])

    def synth_sentences(self, text: str, stop: threading.Event | None = None,
                        rate: int | None = None) -> Iterator[bytes]:
        """Blocking: PCM16 bytes at `rate` (default: the engine's), one item per sentence."""
        out_rate = rate or self.rate
        for sentence in split_sentences(text):
            if stop is not None and stop.is_set():
                return
            audio, rate = self.synth(sentence)
            if len(audio):
                yield to_pcm16(audio.astype(np.float32) / 32768.0, rate, out_rate)

    async def stream(self, text: str, rate: int | None = None) -> AsyncIterator[bytes]:
        async for chunk in _stream_from_thread(lambda stop: self.synth_sentences(text, stop, rate)):
            yield chunk


class OpenAITTS:
    """OpenAI-compatible ``POST {base_url}/v1/audio/speech`` streamed as raw PCM.

    ``response_format="pcm"`` is 24 kHz, 16-bit signed little-endian mono (OpenAI's documented
    format); it is resampled as it arrives and yielded in pieces of at least ``min_chunk_ms``.
    """

    SOURCE_RATE = 24_000

    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str = "https://api.openai.com",
        api_key: str = "",
        model: str = "gpt-4o-mini-tts",
        voice: str = "alloy",
        *,
        min_chunk_ms: int = 100,
        timeout: float = 30.0,
        rate: int = 8000,
    ) -> None:
        self.client = client
        self.url = endpoint(base_url, "/v1/audio/speech")
        self.api_key = api_key
        self.model = model
        self.voice = voice
        self.rate = rate
        self.min_chunk_ms = min_chunk_ms
        self.timeout = timeout

    async def stream(self, text: str, rate: int | None = None) -> AsyncIterator[bytes]:
        rate = rate or self.rate
        min_chunk = self.min_chunk_ms * rate // 1000
        body = {"model": self.model, "input": text, "voice": self.voice, "response_format": "pcm"}
        headers = auth_headers(self.api_key)
        resampler = StreamResampler(self.SOURCE_RATE, rate)
        carry = b""
        pending: list[np.ndarray] = []
        pending_n = 0
        try:
            async with self.client.stream("POST", self.url, json=body, headers=headers, timeout=self.timeout) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    raise ProviderError.from_status("text-to-speech", resp.status_code, resp.text)
                async for piece in resp.aiter_bytes():
                    data = carry + piece
                    cut = len(data) - len(data) % 2  # a sample may straddle two network chunks
                    carry = data[cut:]
                    if not cut:
                        continue
                    out = resampler.process(np.frombuffer(data[:cut], "<i2").astype(np.float32) / 32768.0)
                    if len(out):
                        pending.append(out)
                        pending_n += len(out)
                    if pending_n >= min_chunk:
                        yield float_to_pcm16(np.concatenate(pending))
                        pending, pending_n = [], 0
        except httpx.HTTPError as exc:
            raise ProviderError(f"text-to-speech request failed: {type(exc).__name__}", retryable=True) from exc
        tail = resampler.process(np.zeros(0, np.float32), last=True)
        if len(tail):
            pending.append(tail)
        if pending:
            yield float_to_pcm16(np.concatenate(pending))
