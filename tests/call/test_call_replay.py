"""Recorded server traffic (reference §16, as JSON lines) replayed through the call logic."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from bridge.call.records import Role

from .test_call_logic import Harness

DATA = Path(__file__).resolve().parent.parent / "protocols" / "data"


def _replay(h: Harness, name: str, echo_marks: bool) -> list[dict[str, object]]:
    """Feed every server event; return what the phone was sent. Marks are echoed (the
    caller hears everything at once) unless ``echo_marks`` is false."""
    sent: list[dict[str, object]] = []
    for line in (DATA / name).read_text().splitlines():
        h.logic.receive_realtime(line, h.now)
        h._collect()
        h.now += 0.01
        out = h.to_phone()
        sent += out
        if echo_marks:
            for message in out:
                if message["event"] == "mark":
                    h.phone(event="mark", sequenceNumber="9", mark=message["mark"])
    return sent


def _deltas(name: str) -> bytes:
    events = [json.loads(line) for line in (DATA / name).read_text().splitlines()]
    return b"".join(
        base64.b64decode(e["delta"]) for e in events if e["type"].endswith("audio.delta")
    )


@pytest.mark.parametrize(
    ("dialect", "name"),
    [
        ("openai", "ga_turn.jsonl"),
        ("openai-beta", "beta_turn.jsonl"),
        ("inworld", "inworld_turn.jsonl"),
    ],
)
def test_recorded_turn(dialect: str, name: str) -> None:
    h = Harness(dialect)
    phone = _replay(h, name, echo_marks=True)
    media = b"".join(
        base64.b64decode(m["media"]["payload"])  # type: ignore[index]
        for m in phone
        if m["event"] == "media"
    )
    assert media == _deltas(name)  # pass-through, byte for byte
    turns = [h.turns[k] for k in sorted(h.turns)]
    assert [(t.role, t.text, t.interrupted) for t in turns] == [
        (Role.CALLER, "Hello, I need help.", False),
        (Role.AGENT, "Sure, I can help.", False),
    ]


@pytest.mark.parametrize(
    ("dialect", "name"), [("openai", "ga_barge_in.jsonl"), ("openai-beta", "beta_barge_in.jsonl")]
)
def test_recorded_barge_in(dialect: str, name: str) -> None:
    h = Harness(dialect)
    _replay(h, name, echo_marks=False)
    to_model = h.to_model()
    truncates = [m for m in to_model if m["type"] == "conversation.item.truncate"]
    assert [(t["item_id"], t["audio_end_ms"]) for t in truncates] == [("item_asst_001", 0)]
    assert not any(m["type"] == "response.cancel" for m in to_model)  # the server cancels
    agent = next(t for t in h.turns.values() if t.role is Role.AGENT)
    assert agent.interrupted and agent.text == ""
    assert agent.full_text and agent.full_text.startswith("Sure, I can help")
    assert [e.type for e in h.events] == ["barge_in"]
