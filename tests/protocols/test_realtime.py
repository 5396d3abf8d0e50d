"""RealtimeConnection: recorded server sequences in, events out; requests in, wire JSON out."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from bridge.errors import LocalProtocolError, RemoteProtocolError
from bridge.protocols.dialects import DIALECTS, SessionConfig
from bridge.protocols.realtime import RealtimeConnection, ResponseState
from bridge.protocols.realtime_events import (
    AssistantItemStarted,
    AudioDelta,
    AudioDone,
    InputCommitted,
    InputTranscriptCompleted,
    InputTranscriptFailed,
    ItemTruncated,
    RealtimeError,
    RealtimeEvent,
    ResponseCreated,
    ResponseDone,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptDone,
    provider_limit,
)

DATA = Path(__file__).parent / "data"
SILENCE = b"\xff" * 8  # what "//////////8=" decodes to
USER, ASST, RESP = "item_user_001", "item_asst_001", "resp_001"


def fixture_lines(name: str) -> list[str]:
    return (DATA / name).read_text().splitlines()


def feed(conn: RealtimeConnection, lines: list[str]) -> list[RealtimeEvent]:
    events: list[RealtimeEvent] = []
    for line in lines:
        conn.receive_text(line)
        events.extend(conn.events_received())
    return events


def sent(conn: RealtimeConnection) -> list[dict[str, Any]]:
    return [json.loads(text) for text in conn.data_to_send()]


def server(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, "event_id": "event_x", **fields})


def error_text(code: str | None, message: str, event_id: str | None = None, **extra: Any) -> str:
    error = {"type": "invalid_request_error", "code": code, "message": message, "param": None}
    error.update(event_id=event_id, **extra)
    return json.dumps({"type": "error", "event_id": "event_e", "error": error})


def created(response_id: str = RESP) -> str:
    return server("response.created", response={"id": response_id, "status": "in_progress"})


def done(response_id: str = RESP, status: str = "completed") -> str:
    return server("response.done", response={"id": response_id, "status": status, "output": []})


def turn_events() -> list[RealtimeEvent]:
    """The assistant part of the reference turn, shared by every dialect."""
    return [
        TranscriptDelta(RESP, ASST, "Sure, "),
        AudioDelta(RESP, ASST, SILENCE),
        TranscriptDelta(RESP, ASST, "I can help."),
        AudioDelta(RESP, ASST, SILENCE),
        AudioDone(RESP, ASST),
        TranscriptDone(RESP, ASST, "Sure, I can help."),
        ResponseDone(RESP, "completed", None, {ASST: "Sure, I can help."}),
    ]


# -- replays of the reference sequences (§16) -----------------------------------------------


def test_ga_turn() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    events = feed(conn, fixture_lines("ga_turn.jsonl"))
    assert events == [
        SessionCreated(1767229200),
        SessionUpdated(),
        SpeechStarted(USER, 1000),
        SpeechStopped(USER, 2700),
        InputCommitted(USER),
        ResponseCreated(RESP),
        InputTranscriptCompleted(USER, "Hello, I need help."),
        AssistantItemStarted(RESP, ASST),
        *turn_events(),
    ]
    assert not conn.response_in_flight
    assert conn.data_to_send() == []  # the server's events need no replies


def test_ga_barge_in() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    lines = fixture_lines("ga_barge_in.jsonl")
    split = next(i for i, line in enumerate(lines) if '"event_0030"' in line)
    before = feed(conn, lines[:split])
    assert before[-1] == AudioDelta(RESP, ASST, SILENCE)
    assert conn.response_in_flight and conn.active_response_id == RESP

    assert feed(conn, lines[split : split + 1]) == [SpeechStarted("item_user_002", 4200)]
    conn.truncate(ASST, 800)
    [truncate] = sent(conn)
    assert truncate == {
        "type": "conversation.item.truncate",
        "event_id": truncate["event_id"],
        "item_id": ASST,
        "content_index": 0,
        "audio_end_ms": 800,
    }
    after = feed(conn, lines[split + 1 :])
    assert after == [
        AudioDone(RESP, ASST),
        TranscriptDone(RESP, ASST, "Sure, I can help with"),
        ResponseDone(RESP, "cancelled", "turn_detected", {ASST: "Sure, I can help with"}),
        ItemTruncated(ASST, 800),
        SpeechStopped("item_user_002", 5600),
        InputCommitted("item_user_002"),
        ResponseCreated("resp_002"),
    ]
    assert conn.active_response_id == "resp_002"


def test_beta_turn() -> None:
    conn = RealtimeConnection(DIALECTS["openai-beta"], "pcmu")
    events = feed(conn, fixture_lines("beta_turn.jsonl"))
    assert events == [
        SessionCreated(1767229200),
        SessionUpdated(),
        SpeechStarted(USER, 1000),
        SpeechStopped(USER, 2700),
        InputCommitted(USER),
        ResponseCreated(RESP),
        AssistantItemStarted(RESP, ASST),
        TranscriptDelta(RESP, ASST, "Sure, "),
        AudioDelta(RESP, ASST, SILENCE),
        InputTranscriptCompleted(USER, "Hello, I need help."),
        *turn_events()[2:],
    ]


def test_beta_barge_in() -> None:
    conn = RealtimeConnection(DIALECTS["openai-beta"], "pcmu")
    events = feed(conn, fixture_lines("beta_barge_in.jsonl"))
    barge = events.index(SpeechStarted("item_user_002", 4200))
    assert events[barge - 1] == AudioDelta(RESP, ASST, SILENCE)
    assert events[barge + 1 :] == [
        AudioDone(RESP, ASST),
        TranscriptDone(RESP, ASST, "Sure, I can help with"),
        ResponseDone(RESP, "cancelled", "turn_detected", {ASST: "Sure, I can help with"}),
        ItemTruncated(ASST, 800),
        SpeechStopped("item_user_002", 5600),
        InputCommitted("item_user_002"),
        ResponseCreated("resp_002"),
    ]


def test_inworld_variations() -> None:
    # ping and back-channel events, speech events without times, no expires_at, item status
    # missing, part type "output_audio", usage at the top level, the caller's transcript after
    # the response, and an error with code null.
    conn = RealtimeConnection(DIALECTS["inworld"], "pcmu")
    events = feed(conn, fixture_lines("inworld_turn.jsonl"))
    assert events == [
        SessionCreated(None),
        SessionUpdated(),
        SpeechStarted(USER, None),
        SpeechStopped(USER, None),
        InputCommitted(USER),
        ResponseCreated(RESP),
        AssistantItemStarted(RESP, ASST),
        *turn_events(),
        InputTranscriptCompleted(USER, "Hello, I need help."),
        RealtimeError(None, "Failed to read content stream.", None, None, False, False),
    ]


def test_ignored_events_produce_nothing() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    for text in (
        '{"type":"ping","event_id":"event_p1","timestamp":1767225600000}',
        server("rate_limits.updated", rate_limits=[]),
        server("response.something_new", data=1),
        server("conversation.item.input_audio_transcription.delta", item_id=USER, delta="Hel"),
        '{"no_type": true}',
        '{"type": ["not", "a", "string"]}',
    ):
        conn.receive_text(text)
    assert conn.events_received() == []


# -- malformed input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "[1, 2]",
        '"a string"',
        server("response.output_audio.delta", response_id=RESP, item_id=ASST, delta="%%%%"),
        server("response.output_audio.delta", response_id=RESP, item_id=ASST, delta="//8"),
        server("response.audio.delta", response_id=RESP, item_id=ASST, delta="ab=c"),
        server("response.output_audio.delta", response_id=RESP, delta="//////////8="),
        server("response.output_audio_transcript.done", response_id=RESP),
    ],
)
def test_garbage_is_a_remote_protocol_error_with_code_1007(text: str) -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    with pytest.raises(RemoteProtocolError) as caught:
        conn.receive_text(text)
    assert caught.value.close_code == 1007


# -- assistant items ---------------------------------------------------------------------


def test_assistant_item_is_announced_once_whichever_event_comes_first() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    item = {"id": ASST, "type": "message", "role": "assistant", "content": []}
    events = feed(
        conn,
        [
            created(),
            server("conversation.item.added", previous_item_id=None, item=item),
            server("response.output_item.added", response_id=RESP, output_index=0, item=item),
            server("conversation.item.created", item=item),
            server("conversation.item.done", item=item),
        ],
    )
    assert events == [ResponseCreated(RESP), AssistantItemStarted(RESP, ASST)]


def test_user_items_and_function_calls_are_not_assistant_speech() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    user = {"id": USER, "type": "message", "role": "user", "content": []}
    call = {"id": "item_fc", "type": "function_call", "role": "assistant", "name": "end_call"}
    events = feed(
        conn,
        [
            server("conversation.item.added", item=user),
            server("response.output_item.added", response_id=RESP, item=call),
        ],
    )
    assert events == []


def test_audio_for_an_unannounced_item_starts_it() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    delta = server("response.output_audio.delta", response_id=RESP, item_id=ASST, delta="/w==")
    assert feed(conn, [delta, delta]) == [
        AssistantItemStarted(RESP, ASST),
        AudioDelta(RESP, ASST, b"\xff"),
        AudioDelta(RESP, ASST, b"\xff"),
    ]


def test_response_done_transcripts_and_reasons() -> None:
    conn = RealtimeConnection(DIALECTS["inworld"], "pcmu")
    output = [
        {
            "id": "a",
            "type": "message",
            "role": "assistant",
            "content": [
                {"type": "output_audio", "transcript": "Spoken."},
                {"type": "output_text", "text": "Spoken."},
            ],
        },
        {"id": "b", "role": "assistant", "content": [{"type": "output_text", "text": "Written."}]},
        {"id": "c", "type": "function_call", "name": "end_call", "arguments": "{}"},
    ]
    failed = {"type": "failed", "error": {"type": "server_error", "code": "internal_error"}}
    conn.receive_text(
        server(
            "response.done",
            response={"id": RESP, "status": "failed", "status_details": failed, "output": output},
        )
    )
    conn.receive_text(server("response.done", response={}))
    assert conn.events_received() == [
        ResponseDone(RESP, "failed", "internal_error", {"a": "Spoken.", "b": "Written."}),
        ResponseDone(None, "unknown", None, {}),
    ]


def test_input_transcription_failure_and_truncation_events() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    events = feed(
        conn,
        [
            server(
                "conversation.item.input_audio_transcription.failed",
                item_id=USER,
                content_index=0,
                error={"type": "transcription_error", "message": "Audio unintelligible"},
            ),
            server("conversation.item.truncated", item_id=ASST, content_index=0, audio_end_ms=640),
        ],
    )
    assert events == [InputTranscriptFailed(USER, "Audio unintelligible"), ItemTruncated(ASST, 640)]


# -- sending -----------------------------------------------------------------------------


def test_session_update_carries_an_event_id() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    conn.send_session_update(SessionConfig("Be brief.", None, "pcmu"))
    [message] = sent(conn)
    assert message["type"] == "session.update"
    assert message["event_id"] == "evt_1"
    assert message["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert message["session"]["instructions"] == "Be brief."


def test_session_update_in_another_format_is_a_local_error() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    with pytest.raises(LocalProtocolError):
        conn.send_session_update(SessionConfig("x", None, "pcm24k"))


def test_client_events_are_numbered_and_appends_are_not() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    conn.add_user_text("(The caller has just connected.)")
    conn.append_audio(b"\xff" * 160)
    conn.create_response()
    conn.truncate(ASST, -11)
    messages = sent(conn)
    assert [m.get("event_id") for m in messages] == ["evt_1", None, "evt_2", "evt_3"]
    assert messages[0] == {
        "type": "conversation.item.create",
        "event_id": "evt_1",
        "item": {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "(The caller has just connected.)"}],
        },
    }
    assert set(messages[1]) == {"type", "audio"}
    assert messages[2] == {"type": "response.create", "event_id": "evt_2"}
    assert messages[3]["audio_end_ms"] == 0  # the server rejects negative times


# -- audio batching ----------------------------------------------------------------------


def appended(messages: list[dict[str, Any]]) -> list[bytes]:
    assert all(m["type"] == "input_audio_buffer.append" for m in messages)
    return [base64.b64decode(m["audio"]) for m in messages]


def frames(count: int, size: int) -> list[bytes]:
    return [bytes([n]) * size for n in range(count)]


@pytest.mark.parametrize(("audio_format", "frame"), [("pcmu", 160), ("pcm24k", 960)])
def test_openai_appends_every_20ms_frame(audio_format: str, frame: int) -> None:
    conn = RealtimeConnection(DIALECTS["openai"], audio_format)
    for chunk in frames(5, frame):
        conn.append_audio(chunk)
        assert len(conn.data_to_send()) == 1
    assert conn.appended_ms == 100.0


def test_inworld_batches_pcmu_frames_into_60ms_appends() -> None:
    conn = RealtimeConnection(DIALECTS["inworld"], "pcmu")
    chunks = frames(7, 160)
    out: list[bytes] = []
    for number, chunk in enumerate(chunks, start=1):
        conn.append_audio(chunk)
        out += appended(sent(conn))
        assert len(out) == number // 3
    assert [len(a) for a in out] == [480, 480]
    assert conn.appended_ms == 120.0
    conn.flush_audio()
    out += appended(sent(conn))
    assert b"".join(out) == b"".join(chunks)  # nothing lost, nothing reordered
    assert conn.appended_ms == 140.0
    conn.flush_audio()
    assert conn.data_to_send() == []


def test_inworld_batches_pcm24k_frames_too() -> None:
    conn = RealtimeConnection(DIALECTS["inworld"], "pcm24k")
    for chunk in frames(6, 960):
        conn.append_audio(chunk)
    assert [len(a) for a in appended(sent(conn))] == [2880, 2880]
    assert conn.appended_ms == 120.0


def test_short_frames_are_batched_to_the_minimum() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    for chunk in frames(5, 80):
        conn.append_audio(chunk)
    assert [len(a) for a in appended(sent(conn))] == [160, 160]
    assert conn.appended_ms == 40.0


# -- responses: queueing and cancelling ---------------------------------------------------


def test_create_response_waits_for_the_response_in_flight() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    conn.create_response("Greet the caller.")
    [first] = sent(conn)
    assert first == {
        "type": "response.create",
        "event_id": "evt_1",
        "response": {"instructions": "Greet the caller."},
    }
    assert conn.response_state is ResponseState.REQUESTED
    conn.create_response("Say one thing.")  # requested, not created yet: must wait
    assert conn.data_to_send() == []
    conn.receive_text(created())
    conn.create_response("Say another thing.")  # only the latest waiting request is kept
    assert conn.data_to_send() == []
    assert conn.response_in_flight
    conn.receive_text(done())
    [second] = sent(conn)
    assert second["type"] == "response.create"
    assert second["response"] == {"instructions": "Say another thing."}
    conn.receive_text(created("resp_002"))
    conn.receive_text(done("resp_002"))
    assert conn.data_to_send() == []


def test_create_that_lost_to_the_server_vad_is_sent_again_at_response_done() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    conn.create_response("Greet the caller.")
    [create] = sent(conn)
    conn.receive_text(created("resp_vad"))  # the server's VAD started a response first
    conn.receive_text(
        error_text(
            "conversation_already_has_active_response",
            "Conversation already has an active response in progress: resp_vad.",
            event_id=create["event_id"],
        )
    )
    [error] = conn.events_received()[1:]
    assert error == RealtimeError(
        "conversation_already_has_active_response",
        "Conversation already has an active response in progress: resp_vad.",
        None,
        "response.create",
        True,
        False,
    )
    assert conn.data_to_send() == []
    conn.receive_text(done("resp_vad"))
    [again] = sent(conn)
    assert again["type"] == "response.create"
    assert again["response"] == {"instructions": "Greet the caller."}
    assert again["event_id"] != create["event_id"]


def test_a_refused_create_releases_the_waiting_one() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    conn.create_response("x" * 10)
    [create] = sent(conn)
    conn.create_response("Second.")
    conn.receive_text(
        error_text("invalid_value", "Invalid instructions", event_id=create["event_id"])
    )
    [retry] = sent(conn)
    assert retry["response"] == {"instructions": "Second."}


def test_cancel_only_while_a_response_is_in_flight() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    conn.cancel_response()
    assert conn.data_to_send() == []
    conn.create_response()
    sent(conn)
    conn.cancel_response()  # requested but not created: nothing to cancel yet
    assert conn.data_to_send() == []
    conn.receive_text(created())
    conn.cancel_response()
    [cancel] = sent(conn)
    assert cancel == {
        "type": "response.cancel",
        "event_id": cancel["event_id"],
        "response_id": RESP,
    }
    conn.cancel_response()  # already asked
    assert conn.data_to_send() == []
    assert conn.response_in_flight
    conn.receive_text(done(status="cancelled"))
    assert not conn.response_in_flight and conn.active_response_id is None
    conn.cancel_response()
    assert conn.data_to_send() == []


# -- error classification ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("response_cancel_not_active", "Cancellation failed: no active response found"),
        ("conversation_already_has_active_response", "Conversation already has an active..."),
        ("input_audio_buffer_commit_empty", "Error committing input audio buffer"),
        ("item_truncate_invalid_item_id", "Item with item_id not found: x"),
        (None, "Audio content of 13600ms is already shorter than 55960ms"),
        ("xai_specific", "There is no active response to cancel"),
        (None, "The conversation already has an active response"),
    ],
)
def test_benign_errors(code: str | None, message: str) -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    conn.receive_text(error_text(code, message))
    assert conn.events_received() == [RealtimeError(code, message, None, None, True, False)]


@pytest.mark.parametrize(
    "code", ["invalid_api_key", "insufficient_quota", "rate_limit_exceeded", "session_expired"]
)
def test_fatal_errors(code: str) -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    message = "Your session hit the maximum duration of 60 minutes."
    conn.receive_text(error_text(code, message))
    assert conn.events_received() == [RealtimeError(code, message, None, None, False, True)]


def test_error_caused_by_session_update_is_fatal_and_names_its_cause() -> None:
    conn = RealtimeConnection(DIALECTS["inworld"], "pcmu")
    conn.send_session_update(SessionConfig("x", None, "pcmu"))
    [update] = sent(conn)
    conn.receive_text(
        error_text(
            "invalid_value",
            "Invalid value: 'nope'",
            event_id=update["event_id"],
            param="session.audio.input.transcription.model",
        )
    )
    assert conn.events_received() == [
        RealtimeError(
            "invalid_value",
            "Invalid value: 'nope'",
            "session.audio.input.transcription.model",
            "session.update",
            False,
            True,
        )
    ]


def test_other_errors_are_neither_benign_nor_fatal() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    conn.truncate(ASST, 100)
    [truncate] = sent(conn)
    conn.receive_text(
        error_text("integer_below_min_value", "Invalid 'audio_end_ms'", truncate["event_id"])
    )
    conn.receive_text('{"type":"error","event_id":"event_e"}')
    assert conn.events_received() == [
        RealtimeError(
            "integer_below_min_value",
            "Invalid 'audio_end_ms'",
            None,
            "conversation.item.truncate",
            False,
            False,
        ),
        RealtimeError(None, "", None, None, False, False),
    ]


def test_only_recent_client_events_are_remembered() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    conn.send_session_update(SessionConfig("x", None, "pcmu"))
    for _ in range(200):
        conn.truncate(ASST, 1)
    conn.receive_text(error_text("invalid_value", "old", event_id="evt_1"))
    conn.receive_text(error_text("invalid_value", "new", event_id="evt_201"))
    old, new = conn.events_received()
    assert isinstance(old, RealtimeError) and old.caused_by is None
    assert isinstance(new, RealtimeError) and new.caused_by == "conversation.item.truncate"


def test_a_transcript_done_without_its_text_leaves_the_deltas_to_speak() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    conn.receive_text(
        server("response.output_audio_transcript.done", response_id=RESP, item_id=ASST)
    )
    assert conn.events_received() == []


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("rate_limit_exceeded", "Rate limit reached for requests."),
        ("insufficient_quota", "You exceeded your current quota."),
        (None, "Too many concurrent sessions for this account."),  # Inworld: code null
        (None, "Packet rate exceeded: 1000 packets/s."),
    ],
)
def test_account_limits_are_fatal_and_named_as_limits(code: str | None, message: str) -> None:
    conn = RealtimeConnection(DIALECTS["inworld"], "pcmu")
    conn.receive_text(error_text(code, message))
    [error] = conn.events_received()
    assert isinstance(error, RealtimeError) and error.fatal
    assert provider_limit(error.code, error.message)


def test_a_bad_key_is_fatal_but_not_a_limit() -> None:
    assert not provider_limit("invalid_api_key", "Incorrect API key provided.")
