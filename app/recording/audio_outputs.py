"""A call's audio outputs: the conversation file, its per-track files and per-turn clips.

Which format a call is exported in (its choice, kept by the store's coordinator, else the default), the export
from the masters with its fallback (an encoder that fails must not lose the call: the masters
are exported to WAV instead), the rule of one conversation file per call, and the facts about
the file that the call's JSON reports. Each finished file is published through the store's
artefact store. Knows nothing of the journal, the transcript or the summary.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import soundfile as sf

from app.audio.formats import FORMATS, encoder_kwargs, get_format
from app.audio.resample import resample
from app.recording.events import read_span
from app.recording.export import ConversationExporter
from app.recording.summary import iso
from app.storage.paths import is_turn_clip, output_name, turn_clip_name
from app.storage.store import CallStore

if TYPE_CHECKING:
    from app.recording.encoder_pool import EncoderPool, PooledExporter

__all__ = ["ExportOptions", "ExportedAudio", "chosen_format", "make_exporter", "export_conversation",
           "write_turn_clips"]

log = logging.getLogger("callscribe.finalize")


@dataclass(frozen=True)
class ExportOptions:
    default_format: str = "mp3"
    mp3_kbps: int | None = 128
    channels: int = 1
    sample_rate: int | None = None  # None: the masters' own rate (the transport's native one)
    per_track_files: bool = False
    keep_masters: bool = True
    record_audio: bool = True  # RECORD_CONVERSATIONS=false: transcript and summary only, masters deleted
    per_turn_clips: bool = False  # one clip per turn: call_<sid>_turn<NN>_<role>.<ext>
    timeline_svg: bool = True  # the picture of the call: call_<sid>_timeline.svg
    # The encoder processes (app.recording.encoder_pool) that encode the calls of a server
    # (ENCODER_PROCESSES); None: in this process (the command line, tests, ENCODER_PROCESSES=0).
    encoder_pool: EncoderPool | None = field(default=None, compare=False, repr=False)


def chosen_format(store: CallStore, sid: str, opts: ExportOptions) -> tuple[str, int | None]:
    choice = store.coordinator.get_format(sid)
    if choice is None:
        return opts.default_format, opts.mp3_kbps
    return choice.format, choice.bitrate_kbps or opts.mp3_kbps


def make_exporter(store: CallStore, sid: str, opts: ExportOptions) -> ConversationExporter | PooledExporter:
    """The call's exporter: in an encoder process when ``opts`` has a pool, else in this one."""
    fmt_name, kbps = chosen_format(store, sid, opts)
    fmt = get_format(fmt_name)
    tracks = None
    if opts.per_track_files:
        tracks = (store.output(sid, "caller", fmt.extension), store.output(sid, "other", fmt.extension))
    if opts.encoder_pool is not None:
        try:
            return opts.encoder_pool.exporter(sid, store.files(sid).masters,
                                              store.output(sid, "conversation", fmt.extension), fmt,
                                              channels=opts.channels, sample_rate=opts.sample_rate, mp3_kbps=kbps,
                                              track_paths=tracks)
        except OSError as exc:  # no encoder process could be started (out of processes, memory): encode here
            log.error("call %s: no encoder process (%s); encoding in the server process", sid, type(exc).__name__)
    return ConversationExporter(store.files(sid).masters, store.output(sid, "conversation", fmt.extension),
                                fmt, channels=opts.channels, sample_rate=opts.sample_rate, mp3_kbps=kbps,
                                track_paths=tracks)


@dataclass
class ExportedAudio:
    """What the export step left: the file (None when no audio could be written), the exporter
    that wrote it (its talk statistics and track files), the JSON's `audio` facts, warnings, and
    the MP3 bitrate chosen (per-turn clips are encoded alike)."""

    path: Path | None
    exporter: ConversationExporter | None
    facts: dict[str, Any]
    kbps: int | None = None
    warnings: list[str] = field(default_factory=list)

    def talk_seconds(self, total: int) -> dict[str, float]:
        """Talk time per side, when the exporter saw the whole call."""
        ex = self.exporter
        return ex.talk.seconds() if ex is not None and ex.done >= total else {}

    def track_files(self) -> list[str]:
        return [Path(p).name for p in self.exporter.track_paths] if self.exporter and self.exporter.track_paths else []


def export_conversation(store: CallStore, sid: str, opts: ExportOptions, masters: tuple[Path, Path], total: int,
                        rate: int, exporter: ConversationExporter | None = None) -> ExportedAudio:
    """Encode samples [0, total) of the masters into the call's one conversation file.

    ``exporter``: the live call's, which has already encoded the settled part; it is used when it
    writes the chosen format, else aborted. ``rate``: the masters' sample rate."""
    fmt_name, kbps = chosen_format(store, sid, opts)
    out = ExportedAudio(None, None, {"requested_format": fmt_name}, kbps)
    try:
        if not opts.record_audio:
            if exporter is not None:
                exporter.abort()
            exporter = None
            out.facts["error"] = "audio recording is off (RECORD_CONVERSATIONS=false)"
        elif exporter is None or exporter.fmt.name != fmt_name:
            if exporter is not None:
                exporter.abort()
            exporter = make_exporter(store, sid, opts)
        if exporter is not None:
            out.path = exporter.finish(total)
            out.facts.update(format=exporter.fmt.name, settings=exporter.settings_note)
        out.exporter = exporter
    except Exception as exc:  # an encoder failure must not lose the call
        log.error("call %s: %s export failed (%s); writing WAV instead, masters kept", sid, fmt_name, type(exc).__name__)
        if exporter is not None:
            exporter.abort()
        out.facts["error"] = f"the {fmt_name} encoder failed: {type(exc).__name__}: {exc}"
        out.warnings.append(f"{fmt_name.upper()} export failed ({type(exc).__name__}); "
                            "the conversation was written as WAV instead")
        _export_wav_fallback(store, sid, opts, masters, total, out)
    _drop_other_conversation_files(store, sid, keep=out.path)
    if out.path is not None:
        info = sf.info(str(out.path))
        for name in out.track_files():
            store.artefacts.publish(name)
        st = store.artefacts.publish(out.path.name)
        out.facts.update(file=out.path.name, path=str(out.path), bytes=st.size, created_at=iso(st.modified),
                         sample_rate=info.samplerate, channels=info.channels, duration_s=round(total / rate, 3),
                         media_type=FORMATS[out.facts["format"]].media_type)
    return out


def _export_wav_fallback(store: CallStore, sid: str, opts: ExportOptions, masters: tuple[Path, Path], total: int,
                         out: ExportedAudio) -> None:
    """The chosen encoder failed: the masters go to WAV, which needs no encoder."""
    fallback = None
    try:
        fallback = ConversationExporter(masters, store.output(sid, "conversation", "wav"), FORMATS["wav"],
                                        channels=opts.channels, sample_rate=opts.sample_rate)
        out.path = fallback.finish(total)
        out.exporter = fallback
        out.facts.update(format="wav", settings=fallback.settings_note)
    except Exception as exc:  # a full disk, say: the masters and journal stay for a later attempt
        if fallback is not None:
            fallback.abort()
        d = masters[0].parent
        log.error("call %s: WAV fallback failed too (%s); masters kept in %s", sid, type(exc).__name__, d)
        out.warnings.append(f"WAV fallback failed too ({type(exc).__name__}); the masters in {d} hold the audio")
        out.exporter = None


def _drop_other_conversation_files(store: CallStore, sid: str, keep: Path | None) -> None:
    """Only one conversation file per call: drop ones of other formats (a format change re-exports)."""
    for f in FORMATS.values():
        name = output_name(sid, "conversation", f.extension)
        if keep is None or name != keep.name:
            store.artefacts.delete(name)


def write_turn_clips(store: CallStore, sid: str, turns: list[dict[str, Any]], masters: tuple[Path, Path],
                     fmt_name: str, kbps: int | None, rate: int, source_rate: int) -> list[str]:
    """One file per turn, from the track of whoever spoke: role, index and text are in the JSON.

    Each turn gets its clip's name under ``"clip"``. ``rate``: the clips'; ``source_rate``: the masters'."""
    fmt = FORMATS[fmt_name]
    kwargs, _ = encoder_kwargs(fmt, rate, kbps)
    names = []
    for old in store.artefacts.list(sid):
        if is_turn_clip(sid, old):
            store.artefacts.delete(old)
    for i, t in enumerate(turns):
        if t["end_sample"] <= t["start_sample"]:
            continue
        master = masters[0] if t["role"] == "caller" else masters[1]
        audio = read_span(master, t["start_sample"], t["end_sample"]).astype("float32") / 32768
        name = turn_clip_name(sid, i, t["role"], fmt.extension)
        sf.write(str(store.artefacts.local_path(name)), resample(audio, source_rate, rate), rate, **kwargs)
        store.artefacts.publish(name)
        t["clip"] = name
        names.append(name)
    return names
