"""CallSession in-process: a real store, recorder and masters, a fake transport and participant.

Where the caller's audio lands (Twilio timestamps, or speech-only arrival), where the assistant's
audio plays and what of it is recorded, clear and the hang-up cut, the length limit, DTMF and
marks, the embedder's events, and the end through the registry (the four files)."""

from __future__ import annotations

import threading

import numpy as np
import soundfile as sf

from app.call import registry as registry_module
from app.call.end import EndReason
from app.call.session import CallLimits, CallSession
from app.recording.journal import read_journal
from app.recording.timeline import SpeechOnlyClock
from tests.call.fakes import Chunks, FakeParticipant, Wall, level

RATE = 8000
WIDEBAND = 16000  # a browser call's rate


def feed(call: CallSession, start_ms: int, stop_ms: int, value: int, track: str = "inbound") -> None:
    """Twilio-style 20 ms frames of one level with timestamps [start_ms, stop_ms)."""
    for ts in range(start_ms, stop_ms, 20):
        call.on_audio(track, ts, level(value, 20))


def records(call: CallSession, kind: str) -> list[dict]:
    return [r for r in read_journal(call.recorder.journal.path) if r["t"] == kind]


def heard(value: int) -> int:
    """What the fake line lets the caller hear of a sample (it halves them)."""
    return value // 2


# ------------------------------------------------------------------------------------------ caller audio


async def test_caller_frames_land_at_their_twilio_timestamps_and_reach_the_assistant_placed(open_call):
    call = open_call()
    call.agent = agent = FakeParticipant()
    call.on_audio("inbound", 120, level(1000, 20))
    call.on_audio("inbound", 140, level(2000, 20))
    call.on_audio("inbound", 200, level(3000, 20))  # a 40 ms hole before it
    call.on_audio("inbound", 160, level(4000, 20))  # late: fills the first half of the hole
    x = call.read_track("inbound", 0, 1760)
    assert (x[:960] == 0).all()  # before Twilio's first timestamp: silence
    assert (x[960:1120] == 1000).all() and (x[1120:1280] == 2000).all()
    assert (x[1280:1440] == 4000).all() and (x[1440:1600] == 0).all() and (x[1600:] == 3000).all()
    assert call.stream_sample() == 1760
    assert [start for start, _ in agent.fed] == [960, 1120, 1600, 1280]
    assert [int(samples[0]) for _, samples in agent.fed] == [1000, 2000, 3000, 4000]


def speech_only_call(open_call) -> tuple[CallSession, SpeechOnlyClock]:
    """A 16 kHz call whose caller audio comes only while the caller speaks (a browser's), at wall 0."""
    wall = Wall()
    clock = SpeechOnlyClock(rate=WIDEBAND, wall=wall)
    return open_call(rate=WIDEBAND, clock=clock, wall=wall), clock


async def test_speech_only_bursts_sit_where_they_were_spoken_with_silence_between(open_call):
    call, clock = speech_only_call(open_call)
    call.wall_clock.t = 1.0
    clock.begin_burst()
    for _ in range(5):  # a burst that arrives all at once at 1.0 s: contiguous, its first chunk ending then
        call.on_audio("inbound", 1.0, level(1000, 20, WIDEBAND))
    clock.begin_burst()
    for i in range(3):  # two seconds later, a burst arriving in real time
        call.wall_clock.t = 3.0 + 0.02 * i
        call.on_audio("inbound", call.wall_clock.t, level(2000, 20, WIDEBAND))
    x = call.read_track("inbound", 0, 50000)
    first, second = round(0.98 * WIDEBAND), round(2.98 * WIDEBAND)
    assert (x[:first] == 0).all()
    assert (x[first:first + 5 * 320] == 1000).all()
    assert (x[first + 5 * 320:second] == 0).all()
    assert (x[second:second + 3 * 320] == 2000).all() and (x[second + 3 * 320:] == 0).all()
    assert clock.discontinuities == 0


async def test_speech_only_assistant_audio_plays_at_the_wall_clock_while_the_caller_is_silent(open_call):
    call, clock = speech_only_call(open_call)
    call.wall_clock.t = 1.0
    clock.begin_burst()
    call.on_audio("inbound", 1.0, level(1000, 20, WIDEBAND))
    call.wall_clock.t = 1.5  # the caller is silent: nothing arrives, the call's clock is the wall's
    assert await call.play(level(3000, 100, WIDEBAND)) == (24000, 25600)


# ------------------------------------------------------------------------------------------ assistant audio


async def test_assistant_audio_plays_after_the_queue_or_now_and_the_recording_holds_what_was_heard(open_call):
    call = open_call()
    line = call.transport
    feed(call, 0, 500, 100)
    first, second, third = level(3000, 1000), level(5000, 500), level(7000, 100)
    assert await call.play(first) == (4000, 12000)  # plays now
    assert await call.play(second) == (12000, 16000)  # queued behind the first
    feed(call, 500, 3000, 100)
    assert await call.play(third) == (24000, 24800)  # the queue has drained: plays now again
    assert line.sent == [first, second, third]  # the transport gets what the session was given
    out = call.read_track("outbound", 0, 24800)
    assert (out[:4000] == 0).all()
    assert (out[4000:12000] == heard(3000)).all() and (out[12000:16000] == heard(5000)).all()
    assert (out[16000:24000] == 0).all() and (out[24000:] == heard(7000)).all()


async def test_between_frames_the_clock_runs_on_for_one_frame_at_most(open_call):
    call = open_call()
    feed(call, 0, 1000, 100)
    call.wall_clock.t += 0.01
    assert call.stream_sample() == 8000 + 80
    call.wall_clock.t += 5.0  # a stalled stream: the clock waits for Twilio's next frame
    assert call.stream_sample() == 8000 + 160
    assert (await call.play(level(3000, 20)))[0] == 8160


async def test_a_reply_after_the_line_ran_dry_starts_in_a_slot_of_the_lines_frame_grid(open_call):
    """Twilio plays 20 ms packets on the stream's grid: audio sent between two frames starts where
    the latest frame ended, and one frame later once the next frame is overdue (never mid-slot)."""
    call = open_call()
    feed(call, 0, 1000, 100)
    call.wall_clock.t += 0.012
    assert call.stream_sample() == 8000 + 96  # barge-ins and DTMF still read the wall between frames
    assert await call.play(level(3000, 20)) == (8000, 8160)
    feed(call, 1000, 1100, 100)  # the reply has played out; the line runs dry
    call.wall_clock.t += 0.025  # the next frame is overdue: the line has moved on a slot
    assert await call.play(level(3000, 20)) == (8960, 9120)


async def test_clear_cuts_what_was_queued_after_now_and_the_next_reply_plays_now(open_call):
    call = open_call()
    feed(call, 0, 1000, 100)
    assert await call.play(level(3000, 2000)) == (8000, 24000)
    feed(call, 1000, 1500, 100)
    await call.clear()
    assert call.transport.clears == 1
    out = call.read_track("outbound", 0, 24000)
    assert (out[8000:12000] == heard(3000)).all() and (out[12000:] == 0).all()
    [clear] = records(call, "clear")
    assert (clear["at_sample"], clear["cut_samples"], clear["cut_ms"]) == (12000, 12000, 1500.0)
    assert await call.play(level(5000, 100)) == (12000, 12800)


async def test_listen_calls_place_both_tracks_by_timestamp_and_send_nothing(open_call):
    call = open_call("listen")
    feed(call, 0, 200, 1000, "inbound")
    feed(call, 100, 300, 2000, "outbound")
    assert await call.play(level(3000, 100)) is None
    await call.mark("m")
    await call.clear()
    assert (call.transport.sent, call.transport.marks, call.transport.clears) == ([], [], 0)
    assert (call.read_track("inbound", 0, 1600) == 1000).all()
    out = call.read_track("outbound", 0, 2400)
    assert (out[:800] == 0).all() and (out[800:] == 2000).all()


# ------------------------------------------------------------------------------------------ events on the call


async def test_dtmf_and_mark_echoes_are_journaled_at_the_call_clock_and_passed_to_the_assistant(open_call):
    call = open_call()
    call.agent = agent = FakeParticipant()
    feed(call, 0, 500, 100)
    call.on_dtmf("7")
    await call.mark("reply-1")
    call.on_mark("reply-1")
    assert call.transport.marks == ["reply-1"]
    assert (agent.digits, agent.marks) == (["7"], ["reply-1"])
    [dtmf] = records(call, "dtmf")
    assert (dtmf["digit"], dtmf["at_sample"], dtmf["at_ms"]) == ("7", 4000, 500.0)
    [mark] = records(call, "mark")
    assert (mark["name"], mark["at_ms"]) == ("reply-1", 500.0)


async def test_turns_are_journaled_with_integer_sample_indexes_and_their_audio_emitted(open_call):
    events = Chunks()
    call = open_call(events=events)
    feed(call, 0, 1000, 1200)
    span = await call.play(level(4000, 300))
    call.add_turn("assistant", "Hello, Riverside Office.", *span)
    call.add_turn("caller", "hi", np.int64(800), np.int64(2400))  # numpy indexes, as a detector gives them
    turns = records(call, "turn")
    assert [(t["role"], t["start_sample"], t["end_sample"]) for t in turns] == [
        ("assistant", 8000, 10400), ("caller", 800, 2400)]
    assert all(type(t["start_sample"]) is int and type(t["end_sample"]) is int for t in turns)
    assert (turns[0]["start_ms"], turns[0]["end_ms"]) == (1000.0, 1300.0)
    [(r1, i1, text, audio), (r2, i2, _, caller)] = events.turns
    assert (r1, i1, text, r2, i2) == ("assistant", 0, "Hello, Riverside Office.", "caller", 1)
    assert len(audio) == 2400 and (audio == heard(4000)).all()
    assert len(caller) == 1600 and (caller == 1200).all()


async def test_chunk_events_cover_settled_audio_and_add_up_to_the_recording(open_call, registry):
    events = Chunks()
    call = open_call(events=events, chunk_bytes=3200, limits=CallLimits(reorder_window_ms=100))
    rng = np.random.default_rng(5)
    for ts in range(0, 1040, 20):
        call.on_audio("inbound", ts, rng.integers(-8000, 8000, 160).astype("<i2").tobytes())
        if ts == 200:  # at 220 ms
            await call.play(level(6000, 300))
    # 8320 samples so far, the last 800 (the reorder window) may still change: four chunks of 1600.
    assert [len(c) for c in events.tracks["inbound"]] == [1600] * 4
    await registry.finish(call, EndReason.CALLER_HUNG_UP)
    assert [len(c) for c in events.tracks["inbound"]] == [1600] * 5 + [320]  # the rest at hang-up
    inbound, outbound = (np.concatenate(events.tracks[t]) for t in ("inbound", "outbound"))
    assert np.array_equal(inbound, sf.read(call.recorder.call_dir / "inbound.wav", dtype="int16")[0])
    assert np.array_equal(outbound, sf.read(call.recorder.call_dir / "outbound.wav", dtype="int16")[0])
    assert not outbound[:1760].any() and (outbound[1760:4160] == heard(6000)).all()
    assert np.array_equal(np.concatenate(events.mixed), inbound + outbound)  # no clipping at these levels
    assert events.rates == {RATE}


# ------------------------------------------------------------------------------------------ the end


async def test_the_longest_call_ends_at_max_call_seconds(open_call, registry):
    call = open_call(limits=CallLimits(max_call_seconds=1))
    feed(call, 0, 980, 100)
    assert call.end_reason is None
    feed(call, 980, 1200, 100)
    assert call.end_reason is EndReason.LONGEST_CALL
    result = await registry.finish(call, EndReason.CALLER_DISCONNECTED)
    assert result["end_reason"] == "longest call reached" and result["duration_s"] == 1.0


async def test_the_assistant_hanging_up_closes_the_transport_and_is_the_end_reason(open_call, registry):
    call = open_call()
    feed(call, 0, 500, 100)
    await call.hangup()
    assert call.transport.closed == [(1000, "call ended by the assistant")]
    result = await registry.finish(call, EndReason.CALLER_DISCONNECTED)  # the socket closing follows
    assert result["end_reason"] == str(EndReason.ASSISTANT_HUNG_UP)


async def test_hanging_up_cuts_the_unheard_reply_and_the_call_lasts_as_long_as_its_stream(open_call, registry):
    call = open_call()
    feed(call, 0, 500, 100)
    assert await call.play(level(3000, 2000)) == (4000, 20000)
    feed(call, 500, 1000, 100)  # the caller hangs up 0.5 s into the 2 s reply
    result = await registry.finish(call, EndReason.CALLER_HUNG_UP)
    [cut] = records(call, "hangup_cut")
    assert (cut["at_sample"], cut["cut_samples"]) == (8000, 12000)
    assert not records(call, "clear")  # not a barge-in
    assert result["duration_s"] == 1.0 and result["stats"]["clears"] == 0
    out, rate = sf.read(call.recorder.call_dir / "outbound.wav", dtype="int16")
    assert rate == RATE and len(out) == 8000 and (out[4000:] == heard(3000)).all()
    conversation = registry.store.root / result["files"]["conversation"]
    assert sf.info(conversation).frames == 8000
    assert await call.play(level(3000, 100)) is None and len(call.transport.sent) == 1  # over: nothing goes out


async def test_finish_writes_the_four_files_on_the_registrys_thread_and_releases_the_call(
        open_call, registry, monkeypatch):
    threads = []
    finalize = registry_module.finalize_call

    def spy(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return finalize(*args, **kwargs)

    monkeypatch.setattr(registry_module, "finalize_call", spy)
    call = open_call()
    call.agent = agent = FakeParticipant()
    feed(call, 0, 1000, 1000)
    call.on_dtmf("3")
    result = await registry.finish(call, EndReason.CALLER_HUNG_UP)
    assert threads and all(name.startswith("callscribe-export") for name in threads)
    store, sid = registry.store, call.sid
    names = {"conversation": f"call_{sid}_conversation.wav", "transcript": f"call_{sid}.txt",
             "summary": f"call_{sid}_summary.txt", "json": f"call_{sid}.json", "timeline": f"call_{sid}_timeline.svg"}
    assert result["files"] == names and all((store.root / n).is_file() for n in names.values())
    assert store.read_result(sid) == result
    assert (result["duration_s"], result["end_reason"], result["mode"]) == (1.0, "caller hung up (stop)", "assistant")
    assert result["dtmf"] == [{"digit": "3", "at_ms": 1000.0}]
    assert "(pressed 3)" in (store.root / names["transcript"]).read_text()
    assert sid in (store.root / names["summary"]).read_text()
    x, rate = sf.read(store.root / names["conversation"], dtype="int16")
    assert rate == RATE and len(x) == 8000 and (x == 1000).all()
    assert agent.closed and registry.live == {} and registry.finalized_count == 1 and store.is_finalized(sid)
    assert await registry.finish(call, EndReason.CALLER_HUNG_UP) is None  # a second finish does nothing
    lock = store.coordinator.acquire(sid)  # the call's lock was released
    assert lock is not None
    lock.release()


async def test_turns_left_at_hang_up_are_transcribed_after_the_files_and_written_into_them(open_call, registry):
    call = open_call()
    call.agent = FakeParticipant(add_turn=call.add_turn, tail=[("caller", "see you tomorrow", 4000, 8000)])
    feed(call, 0, 1000, 1000)
    result = await registry.finish(call, EndReason.CALLER_HUNG_UP)
    assert result["transcript_pending"] is False
    assert [(t["role"], t["text"], t["start_sample"]) for t in result["turns"]] == [
        ("caller", "see you tomorrow", 4000)]
    assert "Caller: see you tomorrow" in (registry.store.root / result["files"]["transcript"]).read_text()
    assert registry.store.read_result(call.sid)["transcript_pending"] is False
