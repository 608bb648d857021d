"""Settings: the only module that reads the environment, `.env` and `audio_config.env`.

Precedence (highest first): process environment, `.env`, `audio_config.env`, defaults.
Build one `Settings` at start-up (`Settings.load()`) and pass it down; nothing else reads env.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.audio.formats import FORMATS, parse_bitrate
from app.recording.track import WRITE_MODES

__all__ = ["Settings"]


def _one_of(name: str, value: str, allowed, shown: str) -> str:  # type: ignore[no-untyped-def]
    """A setting that names one of a few choices: case and spaces ignored, anything else refused by name."""
    v = value.lower().strip()
    if v not in allowed:
        raise ValueError(f"{name}={v!r} is not one of {shown}")
    return v


class Settings(BaseSettings):
    """Every setting, with its default. `.env.example` documents each one."""

    model_config = SettingsConfigDict(
        # Later files win over earlier ones; the process environment wins over both.
        env_file=("audio_config.env", ".env"),
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
    )

    # --- recording (the original keys) ---
    default_audio_format: str = "mp3"
    mp3_bitrate: str = "128k"
    record_conversations: bool = True
    recordings_directory: Path = Path("responses")
    recording_channels: int = 1
    output_sample_rate: int | None = None  # None: the call's native rate (phone 8000, browser 16000)
    keep_masters: bool = True
    per_track_files: bool = False
    per_turn_clips: bool = False
    timeline_svg: bool = True  # write call_<sid>_timeline.svg (the picture of the call) with the other outputs

    # --- Twilio side ---
    public_base_url: str | None = None
    twilio_auth_token: str | None = None
    call_mode: Literal["assistant", "listen"] = "assistant"
    forward_to: str | None = None
    greeting: Literal["tone", "assistant", "none"] = "assistant"

    # --- management API ---
    api_key: str | None = None

    # --- browser calls (WS /web-call, the Micdrop protocol) ---
    allowed_origins: str | None = None  # comma-separated origins allowed to open /web-call; unset: any
    web_call_token_ttl_s: int = 120  # life of a browser-call token from POST /web-call/tokens
    web_call_resume_s: int = 30  # a dropped browser call may reconnect this long; then it is finalised

    # --- limits ---
    max_ws_message_bytes: int = 64 * 1024
    max_call_seconds: int = 4 * 3600
    max_concurrent_calls: int = 200
    max_body_bytes: int = 64 * 1024
    reorder_window_ms: int = 2000
    max_clock_jump_s: int = 600

    # --- assistant (issue 3) ---
    stt_provider: Literal["local", "openai", "none"] = "local"
    stt_model_path: str | None = None
    tts_provider: Literal["local", "espeak", "openai"] = "local"
    responder: Literal["receptionist", "openai"] = "receptionist"
    openai_base_url: str = "https://api.openai.com"
    openai_api_key: str | None = None
    openai_chat_model: str = "gpt-4o-mini"
    openai_stt_model: str = "whisper-1"
    openai_tts_model: str = "tts-1"
    openai_tts_voice: str = "alloy"
    business_name: str = "Riverside Office"
    assistant_name: str = "Jarvis"
    opening_hours: str = "Monday to Friday, nine in the morning to five in the evening"
    # The silence that ends a caller's turn (phone calls; a browser's client ends its own turns).
    # The turn so far is transcribed after a short pause and its words choose the wait
    # (app/agent/end_of_turn.py): a finished sentence END_OF_TURN_COMPLETE_MS, a turn left hanging
    # ("and", "so", "my number is", a number) END_OF_TURN_INCOMPLETE_MS, anything else (no words,
    # no final punctuation, a lone "yes"/"hi") END_OF_TURN_MS. All three equal: the fixed wait of before.
    end_of_turn_ms: int = 700
    end_of_turn_complete_ms: int = 250
    end_of_turn_incomplete_ms: int = 1500
    stt_window_s: float = 10.0  # local Whisper's encoder window for the assistant's caller turns (30: Whisper's own)
    barge_in: bool = True
    transcribe: bool = True  # transcribe calls the assistant does not answer (listen-only, or no assistant)

    # --- S3-compatible storage (on when S3_BUCKET is set): segments during the call, the outputs at hang-up ---
    s3_endpoint_url: str | None = None  # e.g. http://127.0.0.1:8333 (SeaweedFS, MinIO, R2); unset: AWS
    s3_bucket: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_region: str = "us-east-1"
    s3_prefix: str = "responses/"
    segment_seconds: float = 10.0  # settled audio per segment object: a host that dies loses at most this + 2 s
    catalog_sync_seconds: float = 10.0  # how often each host's call list takes in the bucket's (other hosts') calls

    # --- Redis coordination (on when REDIS_URL is set): ownership, heartbeats, format choices, the stream secret ---
    redis_url: str | None = None  # redis://[:password@]host:6379/0, rediss:// (TLS) or unix://; unset: one host
    host_id: str | None = None  # this process in the cluster; unset: host name and process id (each worker its own)

    # --- misc ---
    log_level: str = "INFO"
    finalize_workers: int = 2
    export_interval_s: float = 5.0
    # Encoder processes for the incremental export of live calls (unset: 2, or 1 on a one-core machine;
    # 0: threads of the serving process, as before). Each runs at ENCODER_NICE, so frames come first;
    # with ENCODER_IDLE, live calls' encoding runs under SCHED_IDLE (only on a core nothing else wants)
    # and a hang-up's finish at ENCODER_NICE (needs CAP_SYS_NICE or RLIMIT_NICE; else ENCODER_NICE only).
    encoder_processes: int | None = None
    encoder_nice: int = 5
    encoder_idle: bool = True
    # How a frame reaches its master: "mapped" (a copy into a mapped window of the file: no system call),
    # "pwrite" (one system call per frame), "auto" (mapped on ext4, xfs and tmpfs, pwrite elsewhere).
    master_writes: str = "auto"

    @field_validator("default_audio_format")
    @classmethod
    def _known_format(cls, v: str) -> str:
        return _one_of("DEFAULT_AUDIO_FORMAT", v, FORMATS, str(sorted(FORMATS)))

    @field_validator("master_writes")
    @classmethod
    def _master_writes(cls, v: str) -> str:
        return _one_of("MASTER_WRITES", v, WRITE_MODES, ", ".join(WRITE_MODES))

    @field_validator("mp3_bitrate")
    @classmethod
    def _bitrate(cls, v: str) -> str:
        parse_bitrate(v)
        return v

    @field_validator("recording_channels")
    @classmethod
    def _channels(cls, v: int) -> int:
        if v not in (1, 2):
            raise ValueError(f"RECORDING_CHANNELS={v} must be 1 (mono mix) or 2 (caller left, assistant right)")
        return v

    @field_validator("output_sample_rate", mode="before")
    @classmethod
    def _rate(cls, v: object) -> int | None:
        if v is None or (isinstance(v, str) and v.strip().lower() in ("", "native")):
            return None
        v = int(v)  # type: ignore[call-overload]
        allowed = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
        if v not in allowed:
            raise ValueError(f"OUTPUT_SAMPLE_RATE={v} is not one of {allowed}")
        return v

    @field_validator("public_base_url")
    @classmethod
    def _base_url(cls, v: str | None) -> str | None:
        if not v:
            return None
        v = v.rstrip("/")
        if not re.match(r"^https?://[^/\s]+$", v):
            raise ValueError(f"PUBLIC_BASE_URL={v!r} must be an origin like https://calls.example.com")
        return v

    @model_validator(mode="after")
    def _listen_needs_target(self) -> "Settings":
        if self.call_mode == "listen" and not self.forward_to:
            raise ValueError("CALL_MODE=listen needs FORWARD_TO (the number <Dial> rings)")
        return self

    @field_validator("segment_seconds")
    @classmethod
    def _segment(cls, v: float) -> float:
        if not 1 <= v <= 300:
            raise ValueError(f"SEGMENT_SECONDS={v} must be between 1 and 300 (10 loses at most ~12 s when a host dies)")
        return v

    @field_validator("catalog_sync_seconds")
    @classmethod
    def _catalog_sync(cls, v: float) -> float:
        if not 0.2 <= v <= 3600:
            raise ValueError(f"CATALOG_SYNC_SECONDS={v} must be between 0.2 and 3600")
        return v

    @field_validator("s3_bucket", "s3_endpoint_url")
    @classmethod
    def _blank_is_unset(cls, v: str | None) -> str | None:
        return v.strip() or None if v else None

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if not v or not v.strip():
            return None
        v = v.strip()
        if not re.match(r"^(redis|rediss|unix)://\S+$", v):
            raise ValueError("REDIS_URL must look like redis://host:6379/0 (rediss:// for TLS, unix:///path.sock)")
        return v

    @field_validator("host_id")
    @classmethod
    def _host_id(cls, v: str | None) -> str | None:
        if not v or not v.strip():
            return None
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", v.strip()):
            raise ValueError(f"HOST_ID={v!r} must be 1 to 100 letters, digits, '.', '_' or '-'")
        return v.strip()

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: str | None) -> str | None:
        if not v or not v.strip():
            return None
        for o in v.split(","):
            if not re.match(r"^https?://[^/\s]+$", o.strip().rstrip("/")):
                raise ValueError(f"ALLOWED_ORIGINS entry {o.strip()!r} must be an origin like https://shop.example.com")
        return v

    @property
    def origins(self) -> frozenset[str]:
        """ALLOWED_ORIGINS as a set (empty: any origin may open a browser call)."""
        return frozenset(o.strip().rstrip("/") for o in (self.allowed_origins or "").split(",") if o.strip())

    @property
    def mp3_kbps(self) -> int | None:
        return parse_bitrate(self.mp3_bitrate)

    @classmethod
    def load(cls, **overrides: object) -> "Settings":
        return cls(**overrides)  # type: ignore[arg-type]
