"""Tool calls on the realtime connection: tools declared in the session, the model's
function calls reported once whatever events carry them, outputs given back."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bridge.errors import LocalProtocolError
from bridge.protocols.dialects import DIALECTS, SessionConfig
from bridge.protocols.realtime import MAX_TOOL_OUTPUT_CHARS, RealtimeConnection
from bridge.protocols.realtime_events import FunctionCallRequested, RealtimeEvent

TOOL = {
    "type": "function",
    "name": "check_availability",
    "description": "Free tables for a date and party size.",
    "parameters": {"type": "object", "properties": {"date": {"type": "string"}}},
}


def feed(conn: RealtimeConnection, *messages: dict[str, Any]) -> list[RealtimeEvent]:
    events: list[RealtimeEvent] = []
    for message in messages:
        conn.receive_text(json.dumps(message))
        events += conn.events_received()
    return events


def call_item(**overrides: Any) -> dict[str, Any]:
    item = {
        "id": "item_fc_1",
        "object": "realtime.item",
        "type": "function_call",
        "status": "completed",
        "name": "check_availability",
        "call_id": "call_abc",
        "arguments": '{"date":"2026-12-24"}',
    }
    return item | overrides


@pytest.mark.parametrize("dialect", ["openai", "openai-beta", "azure", "inworld"])
def test_the_agents_tools_go_into_the_session(dialect: str) -> None:
    conn = RealtimeConnection(DIALECTS[dialect], "pcmu")
    conn.send_session_update(SessionConfig("Be brief.", None, "pcmu", tools=(TOOL,)))
    [update] = [json.loads(text) for text in conn.data_to_send()]
    assert update["session"]["tools"] == [TOOL]
    assert update["session"]["tool_choice"] == "auto"


def test_no_tools_leaves_the_dialects_default() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    conn.send_session_update(SessionConfig("Be brief.", None, "pcmu"))
    [update] = [json.loads(text) for text in conn.data_to_send()]
    assert update["session"]["tools"] == []


def test_a_ga_function_call_is_reported_once() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    events = feed(
        conn,
        {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}},
        {
            "type": "response.output_item.added",
            "response_id": "resp_1",
            "output_index": 0,
            "item": call_item(status="in_progress", arguments=""),
        },
        {
            "type": "response.function_call_arguments.delta",
            "response_id": "resp_1",
            "item_id": "item_fc_1",
            "call_id": "call_abc",
            "delta": '{"date":',
        },
        {
            "type": "response.function_call_arguments.done",
            "response_id": "resp_1",
            "item_id": "item_fc_1",
            "call_id": "call_abc",
            "name": "check_availability",
            "arguments": '{"date":"2026-12-24"}',
        },
        {"type": "response.output_item.done", "response_id": "resp_1", "item": call_item()},
    )
    calls = [e for e in events if isinstance(e, FunctionCallRequested)]
    assert calls == [
        FunctionCallRequested(
            "resp_1", "item_fc_1", "call_abc", "check_availability", '{"date":"2026-12-24"}'
        )
    ]


def test_a_name_left_out_of_arguments_done_comes_from_the_announced_item() -> None:
    conn = RealtimeConnection(DIALECTS["inworld"], "pcmu")
    events = feed(
        conn,
        {"type": "response.output_item.added", "item": call_item(arguments="")},
        {
            "type": "response.function_call_arguments.done",
            "item_id": "item_fc_1",
            "call_id": "call_abc",
            "arguments": "{}",
        },
    )
    [call] = [e for e in events if isinstance(e, FunctionCallRequested)]
    assert (call.name, call.arguments) == ("check_availability", "{}")


@pytest.mark.parametrize(
    "item",
    [
        call_item(call_id=None),
        call_item(name=None, id="item_unknown"),
        call_item(call_id="x" * 500),
    ],
    ids=["no-call-id", "no-name", "long-call-id"],
)
def test_a_call_that_cannot_be_answered_is_not_reported(item: dict[str, Any]) -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    events = feed(conn, {"type": "response.output_item.done", "item": item})
    assert not [e for e in events if isinstance(e, FunctionCallRequested)]


def test_arguments_that_are_not_text_or_too_long_arrive_as_not_json() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    events = feed(
        conn,
        {"type": "response.output_item.done", "item": call_item(arguments={"date": 1})},
        {
            "type": "response.output_item.done",
            "item": call_item(call_id="call_2", arguments="x" * 70_000),
        },
    )
    calls = [e for e in events if isinstance(e, FunctionCallRequested)]
    assert [c.arguments for c in calls] == ["", ""]


def test_the_output_goes_back_with_the_same_call_id_then_a_response() -> None:
    conn = RealtimeConnection(DIALECTS["openai"], "pcmu")
    conn.send_function_output("call_abc", '{"tables": 2}')
    conn.create_response()
    out = [json.loads(text) for text in conn.data_to_send()]
    assert out[0]["type"] == "conversation.item.create"
    assert out[0]["item"] == {
        "type": "function_call_output",
        "call_id": "call_abc",
        "output": '{"tables": 2}',
    }
    assert out[1]["type"] == "response.create"
    with pytest.raises(LocalProtocolError):
        conn.send_function_output("call_abc", "x" * (MAX_TOOL_OUTPUT_CHARS + 1))


@pytest.mark.parametrize(
    ("dialect", "where"),
    [
        ("openai", ("audio", "input", "transcription")),
        ("azure", ("audio", "input", "transcription")),
        ("inworld", ("audio", "input", "transcription")),
        ("openai-beta", ("input_audio_transcription",)),
    ],
)
def test_an_agents_transcription_model_and_language_replace_the_dialects(
    dialect: str, where: tuple[str, ...]
) -> None:
    conn = RealtimeConnection(DIALECTS[dialect], "pcmu")
    config = SessionConfig(
        "Sprich Deutsch.",
        None,
        "pcmu",
        transcription_model="my-whisper-deployment",
        transcription_language="de",
    )
    conn.send_session_update(config)
    [update] = [json.loads(text) for text in conn.data_to_send()]
    value: Any = update["session"]
    for key in where:
        value = value[key]
    assert value == {"model": "my-whisper-deployment", "language": "de"}
