"""The whole call path without sockets: a Twilio protocol object and a realtime protocol object
wired through the call logic, fed recorded JSON in the shapes of the wire references."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from bridge.call.call_logic import CallConfig, CallLogic, EventReady, Phase, TurnReady
from bridge.call.records import EndReason, Role
from bridge.protocols.dialects import DIALECTS, SessionConfig
from bridge.protocols.realtime import RealtimeConnection
from bridge.protocols.twilio import TwilioMediaStream

SID = "MZ" + "0" * 32
CALL = "CA" + "1" * 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Harness:
    """A call with a clock we move by hand."""

    def __init__(self, dialect: str = "openai", fmt: str = "pcmu", **config: Any) -> None:
        self.now = 100.0
        self.twilio = TwilioMediaStream()
        self.twilio.receive_text(
            json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        )
        self.twilio.receive_text(
            json.dumps(
                {
                    "event": "start",
                    "sequenceNumber": "1",
                    "streamSid": SID,
                    "start": {
                        "accountSid": "AC1",
                        "streamSid": SID,
                        "callSid": CALL,
                        "tracks": ["inbound"],
                        "customParameters": {"from": "+1", "to": "+2", "token": "t"},
                        "mediaFormat": {
                            "encoding": "audio/x-mulaw",
                            "sampleRate": 8000,
                            "channels": 1,
                        },
                    },
                }
            )
        )
        self.twilio.events_received()
        self.twilio.data_to_send()
        session = SessionConfig(instructions="Be brief.", voice=None, audio_format=fmt)
        self.realtime = RealtimeConnection(DIALECTS[dialect], fmt)
        self.logic = CallLogic(
            self.twilio, self.realtime, CallConfig(session=session, **config), self.now
        )
        self.ts = 0
        self.chunk = 0
        self.turns: dict[int, Any] = {}
        self.writes: list[Any] = []  # every turn handed to the store, in order
        self.events: list[Any] = []

    def model(self, **event: Any) -> None:
        self.logic.receive_realtime(json.dumps(event), self.now)
        self._collect()

    def phone(self, **event: Any) -> None:
        self.twilio.receive_text(json.dumps({"streamSid": SID, **event}))
        self.logic.receive_phone(self.twilio.events_received(), self.now)
        self._collect()

    def media(self, n: int = 1, byte: int = 0xFF) -> None:
        for _ in range(n):
            self.chunk += 1
            self.phone(
                event="media",
                sequenceNumber=str(self.chunk + 1),
                media={
                    "track": "inbound",
                    "chunk": str(self.chunk),
                    "timestamp": str(self.ts),
                    "payload": _b64(bytes([byte]) * 160),
                },
            )
            self.ts += 20
            self.now += 0.02

    def _collect(self) -> None:
        for out in self.logic.outputs():
            if isinstance(out, TurnReady):
                self.turns[out.turn.seq] = out.turn
                self.writes.append(out.turn)
            elif isinstance(out, EventReady):
                self.events.append(out.event)

    def to_model(self) -> list[dict[str, Any]]:
        return [json.loads(t) for t in self.realtime.data_to_send()]

    def to_phone(self) -> list[dict[str, Any]]:
        return [json.loads(t) for t in self.twilio.data_to_send()]

    def start_session(self) -> None:
        self.model(
            type="session.created", event_id="e1", session={"type": "realtime", "expires_at": 1}
        )
        self.model(type="session.updated", event_id="e2", session={"type": "realtime"})

    def answer(
        self,
        item: str = "item_a1",
        resp: str = "resp_1",
        ms: int = 1000,
        text: str = "Sure, I can help with that.",
        done: bool = True,
    ) -> bytes:
        audio = bytes(range(256)) * (ms * 8 // 256) + bytes(ms * 8 % 256)
        self.model(
            type="response.created",
            event_id="e3",
            response={"id": resp, "status": "in_progress", "output": []},
        )
        self.model(
            type="response.output_item.added",
            event_id="e4",
            response_id=resp,
            output_index=0,
            item={"id": item, "type": "message", "role": "assistant", "content": []},
        )
        self.model(
            type="response.output_audio_transcript.delta",
            event_id="e5",
            response_id=resp,
            item_id=item,
            output_index=0,
            content_index=0,
            delta=text,
        )
        for start in range(0, len(audio), 800):
            self.model(
                type="response.output_audio.delta",
                event_id="e6",
                response_id=resp,
                item_id=item,
                output_index=0,
                content_index=0,
                delta=_b64(audio[start : start + 800]),
            )
        if done:
            self.finish_answer(item, resp, text)
        return audio

    def finish_answer(self, item: str, resp: str, text: str, status: str = "completed") -> None:
        self.model(
            type="response.output_audio.done",
            event_id="e7",
            response_id=resp,
            item_id=item,
            output_index=0,
            content_index=0,
        )
        self.model(
            type="response.output_audio_transcript.done",
            event_id="e8",
            response_id=resp,
            item_id=item,
            output_index=0,
            content_index=0,
            transcript=text,
        )
        self.model(
            type="response.done",
            event_id="e9",
            response={
                "id": resp,
                "status": status,
                "status_details": None,
                "output": [
                    {
                        "id": item,
                        "type": "message",
                        "role": "assistant",
                        "status": status,
                        "content": [{"type": "output_audio", "transcript": text}],
                    }
                ],
            },
        )


def test_session_is_configured_first_and_early_audio_is_kept_in_order() -> None:
    h = Harness()
    h.media(3, byte=0x11)  # the caller talks before the model session is ready
    assert h.to_model() == []
    h.model(type="session.created", event_id="e1", session={})
    sent = h.to_model()
    assert sent[0]["type"] == "session.update"
    assert sent[0]["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    appends = [base64.b64decode(m["audio"]) for m in sent[1:]]
    assert b"".join(appends) == b"\x11" * 480
    assert h.logic.phase is Phase.ACTIVE


def test_pcmu_passes_through_byte_for_byte_in_both_directions() -> None:
    h = Harness()
    h.start_session()
    h.to_model()
    h.media(1, byte=0x42)
    assert [base64.b64decode(m["audio"]) for m in h.to_model()] == [b"\x42" * 160]
    audio = h.answer(ms=400)
    out = h.to_phone()
    media = [base64.b64decode(m["media"]["payload"]) for m in out if m["event"] == "media"]
    assert b"".join(media) == audio
    kinds = [m["event"] for m in out]
    assert kinds == ["media", "mark"] * 20  # every 20 ms chunk is followed by its own mark


def test_one_full_turn_makes_two_turns_in_speaking_order() -> None:
    h = Harness()
    h.start_session()
    h.media(50)  # 1 s
    h.model(
        type="input_audio_buffer.speech_started", event_id="e10", audio_start_ms=300, item_id="u1"
    )
    h.media(50)
    h.model(
        type="input_audio_buffer.speech_stopped", event_id="e11", audio_end_ms=1500, item_id="u1"
    )
    h.model(
        type="input_audio_buffer.committed", event_id="e12", previous_item_id=None, item_id="u1"
    )
    h.answer(ms=400)
    for mark in [m for m in h.to_phone() if m["event"] == "mark"]:
        h.phone(event="mark", sequenceNumber="9", mark=mark["mark"])
    # The caller's words arrive after the agent's answer, as they often do.
    h.model(
        type="conversation.item.input_audio_transcription.completed",
        event_id="e13",
        item_id="u1",
        content_index=0,
        transcript="Hello, I need help.",
    )
    caller, agent = h.turns[1], h.turns[2]
    assert caller.role is Role.CALLER and caller.text == "Hello, I need help."
    assert (caller.start_ms, caller.end_ms) == (600, 1000)  # padding and silence taken off
    assert agent.role is Role.AGENT and agent.text == "Sure, I can help with that."
    assert agent.end_ms - agent.start_ms == 400 and not agent.interrupted


@pytest.mark.parametrize("dialect", ["openai", "inworld"])
def test_barge_in_clears_first_truncates_at_what_was_heard_and_drops_the_rest(dialect: str) -> None:
    h = Harness(dialect)
    h.start_session()
    h.to_model()
    h.answer(ms=4000, done=False, text="one two three four five six seven eight")
    sent = h.to_phone()
    marks = [m["mark"]["name"] for m in sent if m["event"] == "mark"]
    assert len(marks) == 30  # 600 ms lead: the rest waits here, not in Twilio's buffer
    for name in marks[:25]:  # the caller has heard 500 ms
        h.phone(event="mark", sequenceNumber="5", mark={"name": name})
    h.to_phone()
    h.model(
        type="input_audio_buffer.speech_started", event_id="e20", audio_start_ms=900, item_id="u2"
    )
    out = h.to_phone()
    assert out[0] == {"event": "clear", "streamSid": SID}
    to_model = h.to_model()
    assert {
        "type": "conversation.item.truncate",
        "item_id": "item_a1",
        "content_index": 0,
        "audio_end_ms": 500,
    }.items() <= to_model[0].items()
    assert not any(m["type"] == "response.cancel" for m in to_model)  # the server cancels itself
    # Flushed marks echo after the clear: not heard. Late deltas are never played.
    for name in marks[25:]:
        h.phone(event="mark", sequenceNumber="6", mark={"name": name})
    h.model(
        type="response.output_audio.delta",
        event_id="e21",
        response_id="resp_1",
        item_id="item_a1",
        output_index=0,
        content_index=0,
        delta=_b64(b"\x01" * 800),
    )
    assert [m for m in h.to_phone() if m["event"] == "media"] == []
    h.finish_answer("item_a1", "resp_1", "one two three four five six seven eight", "cancelled")
    agent = h.turns[1]
    assert agent.interrupted and agent.end_ms - agent.start_ms == 500
    assert agent.full_text == "one two three four five six seven eight"
    assert agent.text and agent.full_text.startswith(agent.text) and len(agent.text) < 10
    assert [e.type for e in h.events] == ["barge_in"]


@pytest.mark.parametrize(("read_ms_before", "heard_ms"), [(None, 203), (12, 215)])
def test_an_echo_places_the_caller_as_of_when_it_was_read(
    read_ms_before: int | None, heard_ms: int
) -> None:
    # A busy loop may hand a mark echo over some milliseconds after the server read it; the
    # caller was that much further into the next chunk by then.
    h = Harness()
    h.start_session()
    h.to_model()
    h.answer(ms=2000, done=False, text="one two three four")
    marks = [m["mark"]["name"] for m in h.to_phone() if m["event"] == "mark"]
    h.now += 0.5
    h.twilio.receive_text(
        json.dumps({"streamSid": SID, "event": "mark", "mark": {"name": marks[9]}})
    )
    read_at = None if read_ms_before is None else h.now - read_ms_before / 1000
    h.logic.receive_phone(h.twilio.events_received(), h.now, read_at)  # 200 ms heard
    h.now += 0.003
    h.model(
        type="input_audio_buffer.speech_started", event_id="e20", audio_start_ms=900, item_id="u2"
    )
    truncate = next(m for m in h.to_model() if m["type"] == "conversation.item.truncate")
    assert truncate["audio_end_ms"] == heard_ms


def test_a_turn_is_written_again_only_when_it_changed() -> None:
    # The whole answer arrives first (models stream faster than real time), the caller cuts
    # in half-way through hearing it, then hangs up.
    h = Harness()
    h.start_session()
    h.to_model()
    h.answer(ms=1000, text="one two three four")
    marks = [m["mark"]["name"] for m in h.to_phone() if m["event"] == "mark"]
    assert [(t.seq, t.interrupted) for t in h.writes] == [(1, False)]
    for name in marks[:2]:  # some of it heard
        h.phone(event="mark", sequenceNumber="5", mark={"name": name})
    h.model(
        type="input_audio_buffer.speech_started", event_id="e20", audio_start_ms=900, item_id="u2"
    )
    assert [(t.seq, t.interrupted) for t in h.writes] == [(1, False), (1, True)]
    cut = h.writes[-1]
    h.now += 5.0
    h.logic.finish(h.now)
    h._collect()
    # At the end the cut turn comes back unchanged: no third commit of the same row (the
    # caller's turn, never transcribed, is written then).
    assert [t for t in h.writes if t.seq == 1] == [h.writes[0], cut]
    assert [t.seq for t in h.writes[2:]] == [2]
    assert h.turns[1] == cut and cut.interrupted


def test_no_truncate_when_the_caller_heard_everything() -> None:
    h = Harness()
    h.start_session()
    h.to_model()
    h.answer(ms=200)
    for m in h.to_phone():
        if m["event"] == "mark":
            h.phone(event="mark", sequenceNumber="5", mark=m["mark"])
    h.model(
        type="input_audio_buffer.speech_started", event_id="e20", audio_start_ms=900, item_id="u2"
    )
    assert h.to_phone() == []  # nothing queued: nothing to clear
    assert not any(m["type"] == "conversation.item.truncate" for m in h.to_model())
    assert not h.turns[1].interrupted


def test_client_cancels_when_the_server_does_not() -> None:
    h = Harness(server_cancels=False)
    h.start_session()
    h.to_model()
    h.answer(ms=1000, done=False)
    h.to_phone()
    h.model(type="input_audio_buffer.speech_started", event_id="e20", item_id="u2")
    kinds = [m["type"] for m in h.to_model()]
    assert "response.cancel" in kinds and "conversation.item.truncate" in kinds


def test_greeting_dtmf_and_hangup() -> None:
    h = Harness(greeting="Hello from the bridge.")
    h.start_session()
    sent = h.to_model()
    create = [m for m in sent if m["type"] == "response.create"]
    assert create and "Hello from the bridge." in create[0]["response"]["instructions"]
    h.phone(event="dtmf", sequenceNumber="7", dtmf={"track": "inbound_track", "digit": "5"})
    items = [m for m in h.to_model() if m["type"] == "conversation.item.create"]
    assert "5" in json.dumps(items)
    assert [(e.type, e.data) for e in h.events] == [("dtmf", {"digit": "5"})]
    h.phone(event="stop", sequenceNumber="8", stop={"accountSid": "AC1", "callSid": CALL})
    assert h.logic.end_reason is EndReason.CALLER_HANGUP


def test_refused_session_is_a_model_failure_for_the_session_to_handle() -> None:
    h = Harness()
    h.model(type="session.created", event_id="e1", session={})
    update = h.to_model()[0]
    h.model(
        type="error",
        event_id="e2",
        error={
            "type": "invalid_request_error",
            "code": "invalid_value",
            "message": "bad voice",
            "param": "session.audio.output.voice",
            "event_id": update.get("event_id"),
        },
    )
    # Not this provider's session, ever: the session tries the fallback or apologises.
    failure = h.logic.model_failure
    assert failure is not None and (failure.kind, failure.code) == ("refused", "invalid_value")
    assert h.logic.end_reason is None


def test_benign_errors_do_not_end_the_call() -> None:
    h = Harness()
    h.start_session()
    h.model(
        type="error",
        event_id="e2",
        error={
            "type": "invalid_request_error",
            "code": None,
            "message": "Audio content of 100ms is already shorter than 200ms",
            "param": None,
        },
    )
    h.model(
        type="error",
        event_id="e3",
        error={
            "type": "invalid_request_error",
            "code": "response_cancel_not_active",
            "message": "Cancellation failed: no active response found",
            "param": None,
        },
    )
    assert h.logic.end_reason is None


def test_hangup_mid_answer_keeps_what_the_caller_heard() -> None:
    h = Harness()
    h.start_session()
    h.answer(ms=2000)
    marks = [m["mark"]["name"] for m in h.to_phone() if m["event"] == "mark"]
    for name in marks[:10]:
        h.phone(event="mark", sequenceNumber="5", mark={"name": name})
    h.phone(event="stop", sequenceNumber="8", stop={})
    h.logic.finish(h.now)
    h._collect()
    turn = h.turns[1]
    assert turn.interrupted and turn.end_ms - turn.start_ms == 200


def test_pcm24k_resamples_both_ways_and_counts_model_time() -> None:
    h = Harness(fmt="pcm24k")
    h.start_session()
    sent = h.to_model()
    assert sent[0]["session"]["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    h.media(10)
    appended = sum(len(base64.b64decode(m["audio"])) for m in h.to_model())
    assert 0 < appended <= 10 * 160 * 2 * 3
    h.model(type="response.created", event_id="e3", response={"id": "r", "output": []})
    h.model(
        type="response.output_audio.delta",
        event_id="e4",
        response_id="r",
        item_id="i",
        output_index=0,
        content_index=0,
        delta=_b64(bytes(48 * 500)),
    )
    h.model(
        type="response.output_audio.done",
        event_id="e5",
        response_id="r",
        item_id="i",
        output_index=0,
        content_index=0,
    )
    media = [base64.b64decode(m["media"]["payload"]) for m in h.to_phone() if m["event"] == "media"]
    total = sum(len(m) for m in media)
    assert 500 * 8 - 160 <= total <= 560 * 8  # 500 ms of audio (+ the drained tail), as mu-law
