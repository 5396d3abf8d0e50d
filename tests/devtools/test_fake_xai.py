"""The fake realtime server's xai dialect (reference §15, §16.5).

Most tests drive the sans-I/O :class:`FakeSession` with an explicit clock; one goes over a
real socket to check the handshake and the opening events.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect

from bridge.devtools.fake_config import Dialect
from bridge.devtools.fake_realtime import (
    FakeFaults,
    FakeRealtimeServer,
    FakeSessionRecord,
    add_fake_realtime_arguments,
)
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.fake_script import synthesize_voice as voice
from bridge.devtools.fake_session import CONVERSATION_DELAY_S, PING_INTERVAL_S, FakeSession
from bridge.devtools.fake_vad import VadParams
from bridge.protocols.dialects import DIALECTS, SessionConfig, build_session_update

SILENCE = b"\xff"
CALLER = "I would like to book a table for four tonight."
SCRIPT = FakeScript(
    replies=[Reply("Of course, at what time?", duration_ms=800)],
    caller_transcripts=[CALLER],
)
UPDATED = "conversation.item.input_audio_transcription.updated"
COMPLETED = "conversation.item.input_audio_transcription.completed"


def bridge_update(**config: Any) -> dict[str, Any]:
    """The session.update the bridge sends in the xai dialect."""
    session = SessionConfig(instructions="Be brief.", voice=None, audio_format="pcmu", **config)
    return build_session_update(DIALECTS["xai"], session)


class Harness:
    """One xai FakeSession and a clock; ``out`` collects everything it sent."""

    def __init__(self) -> None:
        self.now = 100.0
        self.record = FakeSessionRecord(dialect="xai")
        self.session = FakeSession(
            Dialect.XAI,
            self.record,
            script=SCRIPT,
            faults=FakeFaults(),
            vad=VadParams(),
            realtime_factor=50.0,
            now=self.now,
            epoch=1_767_225_600.0,
            tag="abc123",
        )
        self.out: list[dict[str, Any]] = []
        self.session.start()
        self._take()

    def _take(self) -> list[dict[str, Any]]:
        events = [e for e in self.session.data_to_send() if isinstance(e, dict)]
        self.out.extend(events)
        return events

    def advance(self, seconds: float) -> list[dict[str, Any]]:
        self.now += seconds
        self.session.advance(self.now)
        return self._take()

    def send(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        self.session.receive_text(json.dumps(event), self.now)
        return self._take()

    def ready(self) -> None:
        """Past conversation.created, configured the way the bridge configures it."""
        self.advance(CONVERSATION_DELAY_S)
        replies = self.send({"event_id": "evt_1", **bridge_update()})
        assert [e["type"] for e in replies] == ["session.updated"]

    def speak(self, audio: bytes) -> None:
        for i in range(0, len(audio), 160):
            chunk = base64.b64encode(audio[i : i + 160]).decode()
            self.now += 0.02
            self.send({"type": "input_audio_buffer.append", "audio": chunk})

    def run_until_idle(self) -> None:
        for _ in range(1000):
            deadline = self.session.next_deadline()
            if deadline is None or deadline - self.now >= PING_INTERVAL_S / 2:
                return  # only pings are left
            self.advance(max(0.0, deadline - self.now))
        raise AssertionError("the fake never settled")


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


# -- opening -------------------------------------------------------------------------


def test_session_created_then_conversation_created_a_moment_later() -> None:
    h = Harness()
    assert types(h.out) == ["session.created"]
    created = h.out[0]["session"]
    assert created["voice"] == "Eve" and created["model"] == "grok-voice-latest"
    assert "type" not in created and created["turn_detection"]["type"] == "server_vad"
    assert h.session.next_deadline() == pytest.approx(h.now + CONVERSATION_DELAY_S)
    (conversation,) = h.advance(CONVERSATION_DELAY_S)
    assert conversation["type"] == "conversation.created"
    assert conversation["conversation"] == {"id": "conv_abc123", "object": "realtime.conversation"}
    assert h.record.timeline == ["session.created", "conversation.created"]


def test_an_update_before_conversation_created_is_refused() -> None:
    h = Harness()
    (error,) = h.send({"event_id": "evt_early", **bridge_update()})
    assert error["type"] == "error"
    assert error["error"]["event_id"] == "evt_early" and error["error"]["code"] is None
    assert "conversation.created" in error["error"]["message"]
    h.advance(CONVERSATION_DELAY_S)
    (updated,) = h.send({"event_id": "evt_late", **bridge_update()})
    assert updated["type"] == "session.updated"
    assert h.record.timeline == [
        "session.created",
        "session.update refused",
        "conversation.created",
        "session.update",
        "session.updated",
    ]


def test_the_bridges_hybrid_update_is_applied_and_rendered_back() -> None:
    h = Harness()
    h.advance(CONVERSATION_DELAY_S)
    sent = bridge_update(transcription_language="fr")
    sent["session"]["voice"] = "Rex"
    (updated,) = h.send(sent)
    session = updated["session"]
    assert session["instructions"] == "Be brief." and session["voice"] == "Rex"
    assert session["audio"] == {
        "input": {
            "format": {"type": "audio/pcmu"},
            "transcription": {"model": "grok-transcribe", "language_hint": "fr"},
        },
        "output": {"format": {"type": "audio/pcmu"}, "speed": 1.0},
    }
    assert session["turn_detection"] == {
        "type": "server_vad",
        "threshold": 0.5,
        "silence_duration_ms": 500,
        "prefix_padding_ms": 300,
        "idle_timeout_ms": None,
    }


def _ga_session() -> dict[str, Any]:
    ga = SessionConfig(instructions="x", voice=None, audio_format="pcmu")
    return build_session_update(DIALECTS["openai"], ga)["session"]


def _with(path: str, value: Any) -> dict[str, Any]:
    session = copy.deepcopy(bridge_update()["session"])
    *parents, last = path.split(".")
    node = session
    for key in parents:
        node = node[key]
    node[last] = value
    return session


@pytest.mark.parametrize(
    ("session", "code", "param"),
    [
        (_ga_session(), "unknown_parameter", "session.type"),
        (_with("type", "realtime"), "unknown_parameter", "session.type"),
        (_with("model", "grok-2"), "unknown_parameter", "session.model"),
        (_with("tool_choice", "auto"), "unknown_parameter", "session.tool_choice"),
        (_with("output_modalities", ["audio"]), "unknown_parameter", "session.output_modalities"),
        (_with("audio.output.voice", "Eve"), "unknown_parameter", "session.audio.output.voice"),
        (
            _with("audio.input.turn_detection", {"type": "server_vad"}),
            "unknown_parameter",
            "session.audio.input.turn_detection",
        ),
        (
            _with("audio.input.transcription", {"model": "grok-transcribe", "language": "en"}),
            "unknown_parameter",
            "session.audio.input.transcription.language",
        ),
        (
            _with("turn_detection.create_response", True),
            "unknown_parameter",
            "session.turn_detection.create_response",
        ),
        # invalid_value comes with code null: xAI's codes are its own, match the message.
        (
            _with("turn_detection", {"type": "semantic_vad"}),
            None,
            "session.turn_detection.type",
        ),
        (
            _with("turn_detection.threshold", 0.95),
            "decimal_above_max_value",
            "session.turn_detection.threshold",
        ),
        (
            _with("audio.input.format", {"type": "audio/pcm", "rate": 22050}),
            None,
            "session.audio.input.format.rate",
        ),
        (_with("voice", ""), None, "session.voice"),
    ],
)
def test_the_hybrid_shape_is_validated_strictly(
    session: dict[str, Any], code: str | None, param: str
) -> None:
    h = Harness()
    h.advance(CONVERSATION_DELAY_S)
    (error,) = h.send({"type": "session.update", "event_id": "evt_bad", "session": session})
    assert error["type"] == "error"
    assert (error["error"]["code"], error["error"]["param"]) == (code, param)
    assert error["error"]["type"] == "invalid_request_error"
    assert h.record.timeline[-1] == "session.update"  # arrived in time, refused on its fields


def test_xai_extras_and_null_turn_detection_are_accepted() -> None:
    h = Harness()
    h.advance(CONVERSATION_DELAY_S)
    session = _with("audio.output.speed", 1.2)
    session["audio"]["input"]["format"] = {"type": "audio/pcm", "rate": 16000}
    session["audio"]["input"]["transcription"]["keyterms"] = ["Bistro"]
    session["turn_detection"] = None
    (updated,) = h.send({"type": "session.update", "session": session})
    assert updated["type"] == "session.updated"
    assert updated["session"]["turn_detection"] is None
    assert updated["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 16000}


# -- one turn ------------------------------------------------------------------------


def test_a_turn_has_cumulative_transcripts_no_item_done_and_null_previous_ids() -> None:
    h = Harness()
    h.ready()
    h.speak(SILENCE * 2000 + voice(1200) + SILENCE * 6000)
    h.run_until_idle()
    kinds = types(h.out)
    assert "conversation.item.done" not in kinds
    assert "response.output_audio.delta" in kinds and "response.audio.delta" not in kinds
    assert "response.output_audio_transcript.done" in kinds
    assert "rate_limits.updated" not in kinds
    assert "conversation.item.input_audio_transcription.delta" not in kinds
    linked = [e for e in h.out if "previous_item_id" in e]
    assert {e["type"] for e in linked} >= {
        "input_audio_buffer.committed",
        "conversation.item.added",
    }
    assert all(e["previous_item_id"] is None for e in linked)

    partials = [e["transcript"] for e in h.out if e["type"] == UPDATED]
    (completed,) = [e for e in h.out if e["type"] == COMPLETED]
    assert len(partials) >= 2 and partials[-1] == CALLER == completed["transcript"]
    assert all(CALLER.startswith(p) for p in partials)  # each one is the text so far
    assert kinds.index(COMPLETED) > max(i for i, k in enumerate(kinds) if k == UPDATED)
    (done,) = [e for e in h.out if e["type"] == "response.done"]
    assert done["response"]["status"] == "completed"
    assert done["response"]["output"][0]["content"][0]["transcript"] == "Of course, at what time?"


def test_pings_come_every_two_seconds_of_session_time() -> None:
    h = Harness()
    h.ready()
    assert h.session.next_deadline() == pytest.approx(100.0 + PING_INTERVAL_S)
    pings = []
    for _ in range(3):
        pings += [e for e in h.advance(PING_INTERVAL_S) if e["type"] == "ping"]
    assert len(pings) == 3
    assert all(isinstance(p["timestamp"], int) for p in pings)


def test_a_late_cancel_earns_a_message_matched_error() -> None:
    h = Harness()
    h.ready()
    (error,) = h.send({"type": "response.cancel", "event_id": "evt_c"})
    assert error["error"]["code"] is None
    assert "no active response" in error["error"]["message"]


# -- over a socket -------------------------------------------------------------------


async def test_xai_handshake_takes_a_bearer_key_and_opens_with_both_events() -> None:
    async with FakeRealtimeServer("xai", api_key="xai-key") as server:
        assert server.url.endswith("/v1/realtime")
        headers = {"Authorization": "Bearer xai-key"}
        async with connect(
            f"{server.url}?model=grok-voice-latest", additional_headers=headers
        ) as ws:
            first, second = [json.loads(await asyncio.wait_for(ws.recv(), 5.0)) for _ in range(2)]
            assert (first["type"], second["type"]) == ("session.created", "conversation.created")
            await ws.send(json.dumps(bridge_update()))
            updated = json.loads(await asyncio.wait_for(ws.recv(), 5.0))
            assert updated["type"] == "session.updated"
        record = server.sessions[0]
        assert record.query == {"model": "grok-voice-latest"}
        assert record.timeline == [
            "session.created",
            "conversation.created",
            "session.update",
            "session.updated",
        ]


def test_cli_offers_the_xai_dialect() -> None:
    parser = argparse.ArgumentParser()
    add_fake_realtime_arguments(parser)
    assert parser.parse_args(["--dialect", "xai"]).dialect == "xai"
