"""Where a recording puts each sound: caller audio by its timestamp, agent audio where Twilio
played it, and only what the caller heard."""

from __future__ import annotations

import base64

from bridge.call.recording import CallRecorder, Channel, Segment

from .test_call_logic import Harness

SILENCE = 0xFF


def render(segments: list[Segment]) -> dict[Channel, bytearray]:
    """Lay segments out as the writer would: each at its sample, gaps silent, later wins."""
    tracks = {channel: bytearray() for channel in Channel}
    for seg in segments:
        track = tracks[seg.channel]
        if len(track) < seg.end:
            track += bytes([SILENCE]) * (seg.end - len(track))
        track[seg.start : seg.end] = seg.ulaw
    return tracks


def chunk(byte: int, ms: int = 20) -> bytes:
    return bytes([byte]) * (ms * 8)


def test_caller_frames_land_at_their_timestamps_and_gaps_stay_silent() -> None:
    rec = CallRecorder()
    rec.caller_audio(chunk(0x10), 0)
    rec.caller_audio(chunk(0x11), 20)
    rec.caller_audio(chunk(0x12), 100)  # Twilio skipped 60 ms
    segments = rec.segments_to_write()
    # Contiguous frames come out as one segment: few, large writes.
    assert [(s.channel, s.start, len(s.ulaw)) for s in segments] == [
        (Channel.CALLER, 0, 320),
        (Channel.CALLER, 800, 160),
    ]
    track = render(segments)[Channel.CALLER]
    assert track[:160] == chunk(0x10) and track[160:320] == chunk(0x11)
    assert track[320:800] == bytes([SILENCE]) * 480
    assert track[800:960] == chunk(0x12)
    assert rec.segments_to_write() == []  # handed out once


def test_frames_split_across_drains_still_join_up() -> None:
    rec = CallRecorder()
    rec.caller_audio(chunk(0x10), 40)
    first = rec.segments_to_write()
    rec.caller_audio(chunk(0x11), 60)
    track = render(first + rec.segments_to_write())[Channel.CALLER]
    assert track[320:480] == chunk(0x10) and track[480:640] == chunk(0x11)


def test_agent_audio_is_recorded_only_once_its_mark_comes_back() -> None:
    rec = CallRecorder()
    rec.agent_sent("m1", chunk(0x21), 1000)
    rec.agent_sent("m2", chunk(0x22), 1000)
    assert rec.segments_to_write() == []
    rec.mark_played("m1")
    assert [(s.channel, s.start, s.ulaw) for s in rec.segments_to_write()] == [
        (Channel.AGENT, 8000, chunk(0x21))
    ]
    rec.mark_played("m2")
    assert [(s.start, s.ulaw) for s in rec.segments_to_write()] == [(8160, chunk(0x22))]


def test_a_later_mark_means_the_chunks_before_it_were_heard_too() -> None:
    rec = CallRecorder()
    for n in range(3):
        rec.agent_sent(f"m{n}", chunk(0x30 + n), 0)
    rec.mark_played("m2")
    track = render(rec.segments_to_write())[Channel.AGENT]
    assert track == chunk(0x30) + chunk(0x31) + chunk(0x32)
    assert rec.awaiting_marks == 0


def test_chunks_sent_ahead_play_back_to_back_and_a_late_one_plays_when_sent() -> None:
    rec = CallRecorder()
    # Three chunks go out at once (the playout lead), one more while they still play...
    for n in range(3):
        rec.agent_sent(f"a{n}", chunk(0x40 + n), 500)
    rec.agent_sent("a3", chunk(0x43), 530)
    # ... and one after Twilio's queue ran dry: it starts when it was sent, not before.
    rec.agent_sent("b0", chunk(0x50), 900)
    rec.mark_played("b0")
    segments = rec.segments_to_write()
    assert [s.start for s in segments] == [500 * 8, 900 * 8]  # one run, a gap, one more
    track = render(segments)[Channel.AGENT]
    assert track[4000:4640] == chunk(0x40) + chunk(0x41) + chunk(0x42) + chunk(0x43)
    assert track[4640:7200] == bytes([SILENCE]) * 2560
    assert track[7200:] == chunk(0x50)


def test_a_clear_drops_what_was_not_heard_and_its_late_echoes_change_nothing() -> None:
    rec = CallRecorder()
    for n in range(5):
        rec.agent_sent(f"g0-{n}", chunk(0x60 + n), 0)
    rec.mark_played("g0-1")  # 40 ms heard
    rec.clear()
    # Twilio echoes the marks of the dropped audio too: they must not bring it back.
    for n in range(5):
        rec.mark_played(f"g0-{n}")
    rec.agent_sent("g1-0", chunk(0x70), 300)
    rec.mark_played("g1-0")
    track = render(rec.segments_to_write())[Channel.AGENT]
    assert track[:320] == chunk(0x60) + chunk(0x61)
    assert track[320:2400] == bytes([SILENCE]) * 2080  # where the cut audio would have played
    assert track[2400:2560] == chunk(0x70)  # the next reply plays when sent
    for n in range(2, 5):
        assert chunk(0x60 + n) not in track


def test_audio_never_heard_before_the_end_is_left_out() -> None:
    rec = CallRecorder()
    rec.caller_audio(chunk(0x10), 0)
    rec.agent_sent("m1", chunk(0x21), 0)
    rec.agent_sent("m2", chunk(0x22), 0)
    rec.mark_played("m1")
    segments = rec.segments_to_write()
    assert {s.channel for s in segments} == {Channel.CALLER, Channel.AGENT}
    assert render(segments)[Channel.AGENT] == chunk(0x21)
    assert rec.awaiting_marks == 1


def test_through_the_call_logic_a_barge_in_keeps_only_what_the_caller_heard() -> None:
    h = Harness()
    rec = CallRecorder()
    h.logic.recorder = rec
    h.start_session()
    h.media(10, byte=0x11)  # 200 ms of caller audio, stamped 0..180
    h.answer(ms=2000, done=False)
    sent = h.to_phone()
    media = [m for m in sent if m["event"] == "media"]
    marks = [m["mark"]["name"] for m in sent if m["event"] == "mark"]
    assert len(media) == len(marks) == 30  # 600 ms went out, the rest is held
    h.media(5, byte=0x12)
    # Twilio played 100 ms, then the caller talks over the agent.
    for name in marks[:5]:
        h.phone(event="mark", sequenceNumber="9", mark={"name": name})
    h.model(
        type="input_audio_buffer.speech_started", event_id="e20", audio_start_ms=250, item_id="u2"
    )
    assert h.to_phone()[0]["event"] == "clear"
    for name in marks[5:]:  # Twilio echoes the marks of the cleared audio as well
        h.phone(event="mark", sequenceNumber="9", mark={"name": name})
    h.media(5, byte=0x13)

    tracks = render(rec.segments_to_write())
    caller = tracks[Channel.CALLER]
    assert caller == bytes([0x11]) * 1600 + bytes([0x12]) * 800 + bytes([0x13]) * 800
    agent = tracks[Channel.AGENT]
    heard = b"".join(base64.b64decode(m["media"]["payload"]) for m in media[:5])
    # The answer went out once the caller's 200 ms had arrived: that is where it plays.
    assert agent == bytes([SILENCE]) * 1600 + heard
