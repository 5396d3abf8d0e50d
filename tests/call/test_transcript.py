from __future__ import annotations

from bridge.call.records import Role
from bridge.call.transcript import INAUDIBLE, TranscriptBuilder, heard_text


def test_heard_text_cuts_at_a_word_boundary_and_never_says_more() -> None:
    full = "Sure! For how many people, and at what time?"
    assert heard_text(full, 1000, 1000) == full
    assert heard_text(full, 0, 1000) == ""
    half = heard_text(full, 500, 1000)
    assert full.startswith(half)
    assert len(half) <= len(full) // 2
    assert not half.endswith(" ")
    assert half == "Sure! For how many people"[: len(half)]


def test_turns_are_numbered_in_the_order_people_spoke() -> None:
    tb = TranscriptBuilder()
    tb.caller_started("u1", 1000)
    tb.caller_stopped("u1", 2000)
    tb.agent_started("a1")
    tb.agent_audio_scheduled("a1", 2500)
    tb.agent_delta("a1", "Hello ")
    tb.agent_delta("a1", "there.")
    tb.agent_received("a1", 1200)
    agent = tb.agent_done("a1", 2600)
    caller = tb.caller_text("u1", "Hi", 2700)  # transcription lands after the answer
    assert agent is not None and caller is not None
    assert caller.seq < agent.seq
    assert (caller.role, caller.text, caller.start_ms, caller.end_ms) == (
        Role.CALLER,
        "Hi",
        1000,
        2000,
    )
    assert (agent.text, agent.start_ms, agent.end_ms, agent.interrupted) == (
        "Hello there.",
        2500,
        3700,
        False,
    )


def test_a_cut_turn_keeps_what_was_heard_and_the_full_text() -> None:
    tb = TranscriptBuilder()
    tb.agent_started("a1")
    tb.agent_audio_scheduled("a1", 0)
    tb.agent_text("a1", "one two three four")
    tb.agent_received("a1", 4000)
    turn = tb.agent_cut("a1", 2000, 2100)
    assert turn is not None
    assert turn.interrupted and turn.full_text == "one two three four"
    assert turn.text == "one two"
    assert turn.end_ms == 2000
    # The response's end arrives later: the turn stays cut.
    again = tb.agent_done("a1", 2200)
    assert again is not None and again.interrupted and again.seq == turn.seq


def test_failed_transcription_is_marked_inaudible_once() -> None:
    tb = TranscriptBuilder()
    tb.caller_started("u1", 10)
    turn = tb.caller_text("u1", "", 900)
    assert turn is not None and turn.text == INAUDIBLE
    assert tb.caller_text("u1", "late", 950) is None
    assert not tb.awaiting_caller_text
