"""RealtimeConnection in the xai dialect: what xAI does differently from OpenAI GA (§15, §16.5)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.protocols.dialects import DIALECTS, SessionConfig
from bridge.protocols.realtime import RealtimeConnection
from bridge.protocols.realtime_events import (
    AssistantItemStarted,
    AudioDelta,
    InputTranscriptCompleted,
    RealtimeError,
    RealtimeEvent,
    ResponseCreated,
    ResponseDone,
    SessionCreated,
    TranscriptDelta,
    TranscriptDone,
)

SILENCE = b"\xff" * 8
USER, ASST, RESP = "item_user_001", "item_asst_001", "resp_001"
UPDATED = "conversation.item.input_audio_transcription.updated"
COMPLETED = "conversation.item.input_audio_transcription.completed"


def server(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, "event_id": "event_x", **fields})


def feed(conn: RealtimeConnection, *lines: str) -> list[RealtimeEvent]:
    events: list[RealtimeEvent] = []
    for line in lines:
        conn.receive_text(line)
        events.extend(conn.events_received())
    return events


def xai() -> RealtimeConnection:
    return RealtimeConnection(DIALECTS["xai"], "pcmu")


SESSION_CREATED = server(
    "session.created",
    session={"id": "sess_001", "object": "realtime.session", "expires_at": 1767229200},
)
CONVERSATION_CREATED = server(
    "conversation.created", conversation={"id": "conv_001", "object": "realtime.conversation"}
)


def test_xai_is_configured_at_conversation_created_not_session_created() -> None:
    conn = xai()
    assert feed(conn, SESSION_CREATED) == []
    assert feed(conn, CONVERSATION_CREATED) == [SessionCreated(1767229200)]


def test_openai_ignores_conversation_created_and_configures_at_session_created() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    assert feed(conn, SESSION_CREATED) == [SessionCreated(1767229200)]
    assert feed(conn, CONVERSATION_CREATED) == []


def test_xai_conversation_created_without_session_created_still_opens() -> None:
    # The expiry is unknown then, which the rollover logic treats as "no limit known".
    assert feed(xai(), CONVERSATION_CREATED) == [SessionCreated(None)]


def test_session_update_sent_after_conversation_created_is_the_hybrid_shape() -> None:
    conn = xai()
    feed(conn, SESSION_CREATED, CONVERSATION_CREATED)
    conn.send_session_update(SessionConfig(instructions="Hi.", voice=None, audio_format="pcmu"))
    (text,) = conn.data_to_send()
    update = json.loads(text)
    assert update["type"] == "session.update" and update["event_id"]
    assert update["session"]["voice"] == "Eve"
    assert update["session"]["turn_detection"]["type"] == "server_vad"
    assert "type" not in update["session"]


def test_cumulative_transcription_makes_no_event_until_completed() -> None:
    conn = xai()
    partials = [
        server(UPDATED, item_id=USER, content_index=0, transcript="Hello"),
        server(UPDATED, item_id=USER, content_index=0, transcript="Hello, I need"),
        # Cumulative text may revise what came before.
        server(UPDATED, item_id=USER, content_index=0, transcript="Hello, I need help."),
    ]
    assert feed(conn, *partials) == []
    assert conn.partial_input_transcript(USER) == "Hello, I need help."
    done = server(COMPLETED, item_id=USER, content_index=0, transcript="Hello, I need help.")
    assert feed(conn, done) == [InputTranscriptCompleted(USER, "Hello, I need help.")]
    assert conn.partial_input_transcript(USER) is None


def test_the_completed_text_wins_over_the_latest_partial() -> None:
    conn = xai()
    feed(conn, server(UPDATED, item_id=USER, transcript="Hello I knead"))
    events = feed(conn, server(COMPLETED, item_id=USER, transcript="Hello, I need help."))
    assert events == [InputTranscriptCompleted(USER, "Hello, I need help.")]


@pytest.mark.parametrize(
    "fields",
    [{}, {"item_id": USER}, {"item_id": USER, "transcript": 7}, {"item_id": "", "transcript": "x"}],
)
def test_a_malformed_partial_is_ignored_not_fatal(fields: dict[str, Any]) -> None:
    conn = xai()
    assert feed(conn, server(UPDATED, **fields)) == []
    assert conn.partial_input_transcript(USER) is None


def test_partials_are_bounded() -> None:
    conn = xai()
    for n in range(100):
        feed(conn, server(UPDATED, item_id=f"item_{n}", transcript="words"))
    assert conn.partial_input_transcript("item_0") is None
    assert conn.partial_input_transcript("item_99") == "words"


def test_pings_text_deltas_and_empty_deletions_are_ignored() -> None:
    conn = xai()
    noise = [
        server("ping", timestamp=1767225600000),
        server("ping"),
        server("response.text.delta", response_id=RESP, item_id=ASST, delta="Sure"),
        server("response.text.delta"),  # even without the fields an OpenAI one has
        server("conversation.item.deleted", item_id=""),
        server("conversation.item.deleted"),
    ]
    assert feed(conn, *noise) == []


def test_a_turn_without_item_done_and_with_null_previous_ids() -> None:
    conn = xai()
    item = {"id": ASST, "object": "realtime.item", "type": "message", "role": "assistant"}
    events = feed(
        conn,
        server("input_audio_buffer.committed", previous_item_id=None, item_id=USER),
        server("response.created", response={"id": RESP, "status": "in_progress"}),
        server("conversation.item.added", previous_item_id=None, item={**item, "content": []}),
        server("response.output_item.added", response_id=RESP, output_index=0, item=item),
        server("ping"),
        server(
            "response.output_audio_transcript.delta", response_id=RESP, item_id=ASST, delta="Sure."
        ),
        server("response.output_audio.delta", response_id=RESP, item_id=ASST, delta="//////////8="),
        server(
            "response.output_audio_transcript.done",
            response_id=RESP,
            item_id=ASST,
            transcript="Sure.",
        ),
        server("response.done", response={"id": RESP, "status": "completed", "output": []}),
    )
    assert ResponseCreated(RESP) in events
    # Announced once, at conversation.item.added: no conversation.item.done is needed.
    assert events.count(AssistantItemStarted(RESP, ASST)) == 1
    assert TranscriptDelta(RESP, ASST, "Sure.") in events
    assert AudioDelta(RESP, ASST, SILENCE) in events
    assert TranscriptDone(RESP, ASST, "Sure.") in events
    assert isinstance(events[-1], ResponseDone) and events[-1].status == "completed"


@pytest.mark.parametrize(
    "message",
    [
        "No active response to cancel.",
        "Cannot truncate: the item is already past that point.",
        "Conversation already has an active response.",
    ],
)
def test_xai_errors_with_codes_of_their_own_are_benign_by_wording(message: str) -> None:
    conn = xai()
    error = {"type": "invalid_request_error", "code": "xai_specific", "message": message}
    (event,) = feed(conn, server("error", error=error))
    assert isinstance(event, RealtimeError)
    assert event.benign and not event.fatal
