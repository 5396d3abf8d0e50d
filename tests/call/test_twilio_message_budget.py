"""What one second of agent audio costs in messages to Twilio, and that the larger chunks
keep what the caller heard exact: the playout clock between two mark echoes."""

from __future__ import annotations

import base64
from typing import Any

from bridge.call.playback import Playback
from bridge.twilio_session import TwilioDriver

from .test_call_logic import Harness


def _messages_for(ms: int, chunk_ms: int, mark_chunks: int = 1) -> list[dict[str, Any]]:
    """Everything sent to Twilio for an answer of ``ms`` that the model streams in 100 ms
    deltas faster than real time, with every mark echoed as the caller's playback reaches
    it."""
    h = Harness(chunk_ms=chunk_ms, mark_chunks=mark_chunks)
    h.start_session()
    h.to_model()
    h.answer(ms=ms)
    sent: list[dict[str, Any]] = []
    for _ in range(1000):
        out = h.to_phone()
        if not out:
            break
        sent += out
        for mark in [m for m in out if m["event"] == "mark"]:
            h.phone(event="mark", sequenceNumber="9", mark=mark["mark"])
    return sent


def _counts(sent: list[dict[str, Any]]) -> tuple[int, int]:
    kinds = [m["event"] for m in sent]
    return kinds.count("media"), kinds.count("mark")


def test_ten_seconds_of_agent_audio_are_137_messages_to_twilio() -> None:
    # Pinned so that the saving cannot quietly regress: 100 media of 100 ms and 37 marks (and
    # 37 echoes back). A mark per 100 ms chunk made 100 + 100, per 20 ms chunk 500 + 500.
    assert (TwilioDriver.chunk_ms, TwilioDriver.mark_chunks) == (100, 3)
    sent = _messages_for(10_000, TwilioDriver.chunk_ms, TwilioDriver.mark_chunks)
    assert _counts(sent) == (100, 37)
    assert _counts(_messages_for(10_000, 100)) == (100, 100)
    assert _counts(_messages_for(10_000, 20)) == (500, 500)
    # Media stay the size Twilio's guidance asks for (reference §6): 100 ms at most, and a
    # mark follows at most three of them.
    run = 0
    for message in sent:
        if message["event"] == "media":
            assert len(base64.b64decode(message["media"]["payload"])) <= 800
            run += 1
        else:
            assert 1 <= run <= 3
            run = 0
    assert run == 0  # the last media has its mark too


def test_the_playout_clock_places_the_caller_inside_the_chunk_playing() -> None:
    playback = Playback(max_lead_ms=600, chunk_ms=100)
    playback.add_audio("a", bytes(8 * 1000), 1000.0)
    chunks = playback.release(now=10.0)
    assert [len(c.audio) for c in chunks] == [800] * 6
    assert playback.played_ms("a", now=10.040) == 40.0  # 40 ms into the first chunk
    playback.mark_played(chunks[1].mark, now=10.205)  # two chunks played
    assert playback.played_ms("a") == 200.0  # echoed, exact
    assert playback.played_ms("a", now=10.235) == 230.0
    # Never past the chunk playing: an echo that is late does not make audio heard twice.
    assert playback.played_ms("a", now=11.0) == 300.0
    cut = playback.interrupt(now=10.262)
    assert (cut.item_id, cut.played_ms, cut.received_ms) == ("a", 257.0, 1000.0)
    assert cut.flush_needed


def test_a_barge_in_truncates_at_the_playout_clock_not_at_the_last_echo() -> None:
    h = Harness(chunk_ms=100)
    h.start_session()
    h.to_model()
    h.answer(ms=1000, done=False)
    out = h.to_phone()
    marks = [m["mark"]["name"] for m in out if m["event"] == "mark"]
    h.now += 0.1
    h.phone(event="mark", sequenceNumber="9", mark={"name": marks[0]})
    h.now += 0.073  # 73 ms into the second chunk
    h.model(type="input_audio_buffer.speech_started", event_id="s1", audio_start_ms=0, item_id="u1")
    [truncate] = [e for e in h.to_model() if e["type"] == "conversation.item.truncate"]
    assert truncate["audio_end_ms"] == 173


def test_runs_under_one_mark_keep_the_lead_between_its_low_water_mark_and_its_bound() -> None:
    playback = Playback(max_lead_ms=800, chunk_ms=100, mark_chunks=3)
    # A response starts playing with its first chunk, not when a run of three is ready.
    playback.add_audio("a", bytes(800), 100.0)
    [first] = playback.release(now=1.0)
    assert len(first.audio) == 800
    # Below the low-water mark (800 - 300 ms) each chunk goes out as it comes.
    singles = []
    for _ in range(4):
        playback.add_audio("a", bytes(800), 100.0)
        singles += playback.release(now=1.0)
    assert [len(c.audio) for c in singles] == [800] * 4
    # At 500 ms queued the lead is healthy: a run waits until it is whole.
    playback.add_audio("a", bytes(1600), 200.0)
    assert playback.release(now=1.0) == []
    playback.add_audio("a", bytes(8 * 3000), 3000.0)
    [run] = playback.release(now=1.0)
    assert len(run.audio) == 2400 and run.ahead_ms == 500.0
    # Echoes of single chunks do not let a run out until it fits under the bound.
    assert playback.mark_played(first.mark, now=1.1) == "a"
    assert playback.release(now=1.1) == []
    assert playback.mark_played(singles[1].mark, now=1.3) == "a"  # two more played
    [next_run] = playback.release(now=1.3)
    assert len(next_run.audio) == 2400 and next_run.ahead_ms == 500.0
    # Played out to the end, the item's last run goes even though it is short.
    playback.finish_item("a")
    queued = [c.mark for c in [*singles[2:], run, next_run]]
    sizes = []
    for _ in range(100):
        if not queued:
            break
        playback.mark_played(queued.pop(0), now=2.0)
        released = playback.release(now=2.0)
        sizes += [len(c.audio) for c in released]
        queued += [c.mark for c in released]
    assert not playback.is_playing
    assert sizes[-1] == 1600 and set(sizes[:-1]) == {2400}
    assert playback.played_ms("a") == playback.received_ms("a") == 3700.0


def test_a_barge_in_inside_a_run_truncates_at_the_playout_clock() -> None:
    h = Harness(chunk_ms=100, mark_chunks=3)
    h.start_session()
    h.to_model()
    h.answer(ms=3000, done=False)
    out = h.to_phone()
    marks = [m["mark"]["name"] for m in out if m["event"] == "mark"]
    # Five single chunks, then runs of three: echo the singles as they play.
    for name in marks[:5]:
        h.now += 0.1
        h.phone(event="mark", sequenceNumber="9", mark={"name": name})
    runs = [m for m in h.to_phone() if m["event"] == "mark"]
    assert runs  # the echoes let a run out
    h.now += 0.2  # 200 ms into the run of three that was playing after the singles
    h.model(type="input_audio_buffer.speech_started", event_id="s1", audio_start_ms=0, item_id="u1")
    [truncate] = [e for e in h.to_model() if e["type"] == "conversation.item.truncate"]
    assert truncate["audio_end_ms"] == 700
