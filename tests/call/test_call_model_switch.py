"""A model session replaced mid-call, in the pure call logic: rollover before the session's
limit at a quiet moment, and a fresh session re-seeded with the call so far."""

from __future__ import annotations

import base64
from typing import Any

from bridge.call.call_logic import RolloverReady
from bridge.protocols.dialects import DIALECTS
from bridge.protocols.realtime import RealtimeConnection

from .test_call_logic import Harness

WALL = 1_800_000_000.0  # Unix time at the harness's loop time 100.0


def _harness() -> Harness:
    h = Harness()
    h.logic.wall_offset = WALL - h.now
    return h


def _open(h: Harness, lifetime_s: float) -> None:
    expires = int(WALL + (h.now - 100.0) + lifetime_s)
    h.model(
        type="session.created", event_id="e1", session={"type": "realtime", "expires_at": expires}
    )
    h.model(type="session.updated", event_id="e2", session={"type": "realtime"})


def _rollovers(h: Harness, until: float) -> list[float]:
    """Tick once a second until ``until``; the times a rollover was asked for."""
    asked = []
    while h.now < until:
        h.now += 1.0
        h.logic.tick(h.now)
        if any(isinstance(o, RolloverReady) for o in h.logic.outputs()):
            asked.append(h.now)
    return asked


def _switch(h: Harness) -> RealtimeConnection:
    h.realtime = RealtimeConnection(DIALECTS["openai"], "pcmu")
    h.logic.switch_model(h.realtime, h.now)
    return h.realtime


def _items(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (e["item"]["role"], e["item"]["content"][0]["text"])
        for e in events
        if e["type"] == "conversation.item.create"
    ]


def test_a_rollover_is_asked_for_once_near_the_limit_and_again_in_the_next_session() -> None:
    h = _harness()
    _open(h, lifetime_s=120)
    h.to_model()
    # A third of a short limit before its end (for 60 minutes: three minutes before).
    assert _rollovers(h, until=100 + 119) == [180.0]
    _switch(h)
    opened = h.now
    _open(h, lifetime_s=120)
    assert _rollovers(h, until=opened + 119) == [opened + 80.0]


def test_no_rollover_while_the_agent_is_talking() -> None:
    h = _harness()
    _open(h, lifetime_s=40)
    h.now += 31
    h.answer(done=False)
    h.logic.tick(h.now)
    assert not any(isinstance(o, RolloverReady) for o in h.logic.outputs())


def _caller_says(h: Harness, item: str, text: str) -> None:
    h.model(
        type="input_audio_buffer.speech_started", event_id="s1", audio_start_ms=100, item_id=item
    )
    h.media(10)
    h.model(type="input_audio_buffer.speech_stopped", event_id="s2", audio_end_ms=300, item_id=item)
    h.model(
        type="conversation.item.input_audio_transcription.completed",
        event_id="s3",
        item_id=item,
        content_index=0,
        transcript=text,
    )


def _played(h: Harness) -> None:
    for mark in [m for m in h.to_phone() if m["event"] == "mark"]:
        h.phone(event="mark", sequenceNumber="9", mark=mark["mark"])


def test_a_fresh_session_is_configured_and_told_the_call_so_far() -> None:
    h = _harness()
    h.start_session()
    _caller_says(h, "u1", "Do you deliver?")
    h.answer(item="a1", resp="r1", text="Yes, within five miles.")
    _played(h)
    h.to_model()
    new = _switch(h)
    assert new.data_to_send() == []  # nothing until the new session says it is there
    h.model(type="session.created", event_id="n1", session={"type": "realtime"})
    sent = h.to_model()
    assert sent[0]["type"] == "session.update"
    assert sent[0]["session"]["instructions"] == "Be brief."
    assert _items(sent) == [("user", "Do you deliver?"), ("assistant", "Yes, within five miles.")]
    # The caller had their answer: the new session waits for the caller.
    assert [e["type"] for e in sent if e["type"] == "response.create"] == []


def test_an_unanswered_question_is_answered_by_the_fresh_session() -> None:
    h = _harness()
    h.start_session()
    _caller_says(h, "u1", "Do you deliver?")
    h.to_model()
    _switch(h)
    h.model(type="session.created", event_id="n1", session={"type": "realtime"})
    sent = h.to_model()
    assert _items(sent) == [("user", "Do you deliver?")]
    assert sent[-1]["type"] == "response.create"


def test_an_answer_cut_by_the_drop_plays_out_what_arrived_and_is_not_asked_for_again() -> None:
    h = _harness()
    h.start_session()
    _caller_says(h, "u1", "Do you deliver?")
    audio = h.answer(item="a1", resp="r1", text="Yes, within five miles.", ms=1000, done=False)
    h.to_model()
    _switch(h)
    # What the old session sent still reaches the caller, to the last byte.
    sent = b""
    for _ in range(20):
        out = h.to_phone()
        if not out:
            break
        sent += b"".join(
            base64.b64decode(m["media"]["payload"]) for m in out if m["event"] == "media"
        )
        for mark in [m for m in out if m["event"] == "mark"]:
            h.phone(event="mark", sequenceNumber="9", mark=mark["mark"])
    assert sent == audio
    h.model(type="session.created", event_id="n1", session={"type": "realtime"})
    out = h.to_model()
    assert _items(out) == [("user", "Do you deliver?"), ("assistant", "Yes, within five miles.")]
    assert not [e for e in out if e["type"] in ("response.create", "conversation.item.truncate")]
    [agent] = [t for t in h.turns.values() if t.role.value == "agent"]
    assert (agent.end_ms - agent.start_ms, agent.interrupted) == (1000, False)


def test_the_re_seed_keeps_the_newest_turns_within_its_budget() -> None:
    from bridge.call.call_logic import RESEED_CHARS

    h = _harness()
    h.start_session()
    n = 0
    long = "x" * (RESEED_CHARS // 4)
    for n in range(1, 5):
        _caller_says(h, f"u{n}", f"{n}{long}")
    h.to_model()
    _switch(h)
    h.model(type="session.created", event_id="n1", session={"type": "realtime"})
    texts = [text[:1] for _, text in _items(h.to_model())]
    assert texts == ["2", "3", "4"]  # the oldest did not fit; the rest in call order
