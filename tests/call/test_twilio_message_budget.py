"""What one second of agent audio costs in messages to Twilio, and that the larger chunks
keep what the caller heard exact: the playout clock between two mark echoes."""

from __future__ import annotations

from typing import Any

from bridge.call.playback import Playback
from bridge.twilio_session import TwilioDriver

from .test_call_logic import Harness


def _messages_for_one_second(chunk_ms: int) -> list[dict[str, Any]]:
    h = Harness(chunk_ms=chunk_ms)
    h.start_session()
    h.to_model()
    h.answer(ms=1000)
    sent: list[dict[str, Any]] = []
    for _ in range(100):
        out = h.to_phone()
        if not out:
            break
        sent += out
        for mark in [m for m in out if m["event"] == "mark"]:
            h.phone(event="mark", sequenceNumber="9", mark=mark["mark"])
    return sent


def test_a_second_of_agent_audio_is_twenty_messages_to_twilio() -> None:
    # Pinned so that the saving cannot quietly regress: 10 media + 10 marks (and 10 echoes
    # back), where 20 ms chunks made 50 + 50 (+ 50).
    assert TwilioDriver.chunk_ms == 100
    sent = _messages_for_one_second(TwilioDriver.chunk_ms)
    kinds = [m["event"] for m in sent]
    assert (kinds.count("media"), kinds.count("mark")) == (10, 10)
    assert len(sent) == 20
    assert len(_messages_for_one_second(20)) == 100


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
