"""The fake realtime server calls tools the way a real one does, and records the answers.

Every test speaks raw JSON over a real WebSocket, as the bridge's client would.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect

from bridge.devtools.fake_realtime import FakeRealtimeServer
from bridge.devtools.fake_script import FakeScript, Reply, ToolCall, load_script
from bridge.devtools.fake_script import synthesize_voice as voice
from bridge.errors import ConfigurationError
from bridge.protocols.dialects import DIALECTS
from bridge.protocols.realtime import RealtimeConnection
from bridge.protocols.realtime_events import AssistantItemStarted, ResponseDone

RECV_TIMEOUT = 5.0
SILENCE = b"\xff"  # one mu-law sample of digital silence
ANSWER = "We have a table at eight."
BOOKING_TOOL = {
    "type": "function",
    "name": "check_availability",
    "description": "Whether a table is free.",
    "parameters": {
        "type": "object",
        "properties": {"party": {"type": "integer"}, "time": {"type": "string"}},
        "required": ["party", "time"],
    },
}
CHECK = ToolCall("check_availability", {"party": 4, "time": "20:00"})
MENU = ToolCall("lookup_menu", {"dish": "risotto", "vegetarian": True})
DIALECT_NAMES = ("openai", "openai-beta", "inworld")
GA_CALL_EVENTS = [
    "response.output_item.added",
    "conversation.item.added",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "conversation.item.done",
    "response.output_item.done",
]
BETA_CALL_EVENTS = [
    "response.output_item.added",
    "conversation.item.created",
    "response.function_call_arguments.delta",
    "response.function_call_arguments.done",
    "response.output_item.done",
]


def session_with_tools(dialect: str, turn_detection: dict[str, Any] | None) -> dict[str, Any]:
    """A ``session.update`` body for ``dialect``: mu-law both ways, the booking tool."""
    if dialect == "openai-beta":
        return {
            "input_audio_format": "g711_ulaw",
            "output_audio_format": "g711_ulaw",
            "turn_detection": turn_detection,
            "tools": [BOOKING_TOOL],
            "tool_choice": "auto",
        }
    return {
        "type": "realtime",
        "audio": {
            "input": {"format": {"type": "audio/pcmu"}, "turn_detection": turn_detection},
            "output": {"format": {"type": "audio/pcmu"}},
        },
        "tools": [BOOKING_TOOL],
        "tool_choice": "auto",
    }


class Client:
    """A realtime client as these tests need it: raw events out, events back with a bound."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(event))

    async def recv(self) -> dict[str, Any]:
        async with asyncio.timeout(RECV_TIMEOUT):
            event: dict[str, Any] = json.loads(await self.ws.recv())
        self.seen.append(event)
        return event

    async def until(self, event_type: str) -> list[dict[str, Any]]:
        """Every event up to and including the first of ``event_type``, pings left out."""
        events = []
        for _ in range(10_000):
            event = await self.recv()
            if event["type"] == "ping":
                continue
            events.append(event)
            if event["type"] == event_type:
                return events
        raise AssertionError(f"no {event_type}")

    async def configure(self, session: dict[str, Any]) -> dict[str, Any]:
        await self.send({"type": "session.update", "event_id": "evt_cfg", "session": session})
        return (await self.until("session.updated"))[-1]

    async def give_output(self, call_id: str, output: str, event_id: str = "evt_out") -> None:
        item = {"type": "function_call_output", "call_id": call_id, "output": output}
        await self.send({"type": "conversation.item.create", "event_id": event_id, "item": item})


async def open_client(server: FakeRealtimeServer) -> Client:
    dialect = server.dialect.value
    query = "?key=call-1&protocol=realtime" if dialect == "inworld" else "?model=gpt-realtime"
    headers = {"OpenAI-Beta": "realtime=v1"} if dialect == "openai-beta" else {}
    ws = await connect(server.url + query, additional_headers=headers, open_timeout=5)
    client = Client(ws)
    assert (await client.until("session.created"))[-1]["type"] == "session.created"
    return client


def serve(dialect: str, *replies: Reply, factor: float = 50) -> FakeRealtimeServer:
    return FakeRealtimeServer(
        dialect, script=FakeScript(replies=list(replies)), realtime_factor=factor
    )


def types(events: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in events]


def after_created(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events of one response after ``response.created``, audio deltas left out."""
    start = types(events).index("response.created") + 1
    return [e for e in events[start:] if not e["type"].endswith("audio.delta")]


def collapse(names: list[str]) -> list[str]:
    """Consecutive repeats folded into one: argument deltas come in a varying number."""
    return [n for i, n in enumerate(names) if i == 0 or names[i - 1] != n]


def caller_turn() -> bytes:
    """0.5 s of silence, 1 s of voice, 1 s of silence, as 8 kHz mu-law."""
    return SILENCE * 4000 + voice(1000, pitch_hz=180.0) + SILENCE * 8000


@pytest.fixture
async def ga() -> AsyncIterator[FakeRealtimeServer]:
    async with serve("openai", Reply(tool_calls=(CHECK,)), Reply(ANSWER)) as server:
        yield server


# ---------------------------------------------------------------- declared tools


async def test_session_update_records_the_declared_tools_and_tool_choice(
    ga: FakeRealtimeServer,
) -> None:
    client = await open_client(ga)
    updated = await client.configure(session_with_tools("openai", None))
    assert updated["session"]["tools"] == [BOOKING_TOOL]
    assert updated["session"]["tool_choice"] == "auto"
    record = ga.sessions[0]
    assert record.tools == [BOOKING_TOOL]
    assert record.tool_choice == "auto"

    forced = {"type": "function", "name": "check_availability"}
    await client.configure({"type": "realtime", "tool_choice": forced})
    assert record.tool_choice == forced
    assert record.tools == [BOOKING_TOOL]  # a partial update leaves the tools alone
    await client.configure({"type": "realtime", "tools": []})
    assert record.tools == []
    await client.ws.close()


@pytest.mark.parametrize(
    ("field", "value", "code", "param"),
    [
        ("tools", {"type": "function"}, "invalid_type", "session.tools"),
        ("tools", [{"name": "x"}], "missing_required_parameter", "session.tools[0].type"),
        ("tools", [{"type": "retrieval"}], "invalid_value", "session.tools[0].type"),
        ("tools", [{"type": "function"}], "missing_required_parameter", "session.tools[0].name"),
        ("tools", [{"type": "function", "name": 7}], "invalid_type", "session.tools[0].name"),
        ("tools", [{"type": "function", "name": ""}], "empty_string", "session.tools[0].name"),
        (
            "tools",
            [{"type": "function", "name": "check availability"}],
            "invalid_value",
            "session.tools[0].name",
        ),
        (
            "tools",
            [{"type": "function", "name": "x" * 65}],
            "string_above_max_length",
            "session.tools[0].name",
        ),
        (
            "tools",
            [BOOKING_TOOL, {"type": "function", "name": "x", "parameters": {"type": "string"}}],
            "invalid_function_parameters",
            "session.tools[1].parameters",
        ),
        (
            "tools",
            [{"type": "function", "name": "x", "parameters": []}],
            "invalid_function_parameters",
            "session.tools[0].parameters",
        ),
        (
            "tools",
            [{"type": "function", "name": "x", "parameters": {"type": "object", "properties": 1}}],
            "invalid_function_parameters",
            "session.tools[0].parameters",
        ),
        (
            "tools",
            [{"type": "function", "name": "x", "strict": True}],
            "unknown_parameter",
            "session.tools[0].strict",
        ),
        ("tool_choice", "sometimes", "invalid_value", "session.tool_choice"),
        (
            "tool_choice",
            {"type": "function"},
            "missing_required_parameter",
            "session.tool_choice.name",
        ),
    ],
)
async def test_a_malformed_tool_definition_is_refused_and_the_update_not_applied(
    ga: FakeRealtimeServer, field: str, value: Any, code: str, param: str
) -> None:
    client = await open_client(ga)
    await client.configure(session_with_tools("openai", None))
    bad = {"type": "realtime", "instructions": "Be brief.", field: value}
    await client.send({"type": "session.update", "event_id": "evt_bad", "session": bad})
    error = (await client.until("error"))[-1]["error"]
    assert error["type"] == "invalid_request_error"
    assert (error["code"], error["param"], error["event_id"]) == (code, param, "evt_bad")
    record = ga.sessions[0]
    assert record.tools == [BOOKING_TOOL]
    assert record.tool_choice == "auto"
    # The whole update was refused: the instructions in it did not apply either.
    updated = await client.configure({"type": "realtime"})
    assert updated["session"]["instructions"] == ""
    await client.ws.close()


async def test_beta_and_inworld_check_tool_definitions_too() -> None:
    async with serve("openai-beta") as server:
        client = await open_client(server)
        tools = [{"type": "mcp", "server_label": "x"}]
        await client.send({"type": "session.update", "session": {"tools": tools}})
        error = (await client.until("error"))[-1]["error"]
        assert (error["code"], error["param"]) == ("invalid_value", "session.tools[0].type")
        await client.ws.close()
    async with serve("inworld") as server:
        client = await open_client(server)
        tools = [{"type": "function", "name": "a.b"}]
        await client.send(
            {"type": "session.update", "session": {"type": "realtime", "tools": tools}}
        )
        error = (await client.until("error"))[-1]["error"]
        assert error["param"] == "session.tools[0].name"
        await client.ws.close()


# ---------------------------------------------------------------- calls and outputs


async def test_a_caller_turn_gets_a_tool_call_and_the_output_gets_the_next_reply(
    ga: FakeRealtimeServer,
) -> None:
    client = await open_client(ga)
    vad = {"type": "server_vad", "silence_duration_ms": 500}
    await client.configure(session_with_tools("openai", vad))
    turn = caller_turn()
    for i in range(0, len(turn), 160):
        chunk = base64.b64encode(turn[i : i + 160]).decode()
        await client.send({"type": "input_audio_buffer.append", "audio": chunk})
    first = await client.until("response.done")

    events = after_created(first)
    assert collapse(types(events)) == [*GA_CALL_EVENTS, "response.done"]
    added, done = events[0]["item"], events[-2]["item"]
    call_id = added["call_id"]
    assert call_id.startswith("call_") and len(call_id) > len("call_")
    assert added == {
        "id": added["id"],
        "object": "realtime.item",
        "type": "function_call",
        "status": "in_progress",
        "name": "check_availability",
        "call_id": call_id,
        "arguments": "",
    }
    assert done == {**added, "status": "completed", "arguments": CHECK.arguments_json}
    deltas = [e for e in events if e["type"] == "response.function_call_arguments.delta"]
    arguments_done = next(e for e in events if e["type"].endswith("arguments.done"))
    assert "".join(e["delta"] for e in deltas) == arguments_done["arguments"]
    assert json.loads(arguments_done["arguments"]) == {"party": 4, "time": "20:00"}
    for event in [*deltas, arguments_done]:
        assert (event["item_id"], event["call_id"], event["output_index"]) == (
            added["id"],
            call_id,
            0,
        )
    assert arguments_done["name"] == "check_availability"
    response = first[-1]["response"]
    assert response["status"] == "completed"
    assert response["output"] == [done]

    record = ga.sessions[0]
    [call] = record.tool_calls
    assert (call.response_id, call.item_id, call.call_id) == (response["id"], added["id"], call_id)
    assert (call.name, call.arguments, call.declared) == (
        "check_availability",
        CHECK.arguments_json,
        True,
    )
    assert record.unanswered_calls == [call_id]

    # The model waits for the output: nothing more comes until the client answers.
    assert (await client.recv())["type"] == "rate_limits.updated"
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await client.ws.recv()

    await client.give_output(call_id, '{"free": true, "time": "20:00"}')
    stored = await client.until("conversation.item.done")
    assert types(stored) == ["conversation.item.added", "conversation.item.done"]
    assert stored[-1]["previous_item_id"] == added["id"]
    assert stored[-1]["item"]["call_id"] == call_id
    await client.send({"type": "response.create", "event_id": "evt_next"})
    second = await client.until("response.done")
    transcript = next(e for e in second if e["type"] == "response.output_audio_transcript.done")
    assert transcript["transcript"] == ANSWER
    assert second[-1]["response"]["output"][0]["content"][0]["transcript"] == ANSWER

    [output] = record.tool_outputs
    assert (output.call_id, output.name, output.output) == (
        call_id,
        "check_availability",
        '{"free": true, "time": "20:00"}',
    )
    [follow_up] = record.responses_after_tools
    assert follow_up.response_id == second[-1]["response"]["id"]
    assert follow_up.call_ids == (call_id,)
    assert output.at <= follow_up.at
    assert record.unanswered_calls == []
    assert [status for _, status, _ in record.responses] == ["completed", "completed"]
    await client.ws.close()


async def test_a_reply_can_speak_and_call_two_tools_in_one_response() -> None:
    both = Reply("Let me check both.", duration_ms=300, tool_calls=(CHECK, MENU))
    async with serve("openai", both, Reply(ANSWER)) as server:
        client = await open_client(server)
        await client.configure(session_with_tools("openai", None))
        await client.send({"type": "response.create"})
        events = after_created(await client.until("response.done"))

        names = collapse([t for t in types(events) if "audio" not in t and "content" not in t])
        assert names == [
            "response.output_item.added",
            "conversation.item.added",
            "conversation.item.done",
            "response.output_item.done",
            *GA_CALL_EVENTS,
            *GA_CALL_EVENTS,
            "response.done",
        ]
        output = events[-1]["response"]["output"]
        assert [item["type"] for item in output] == ["message", "function_call", "function_call"]
        assert output[0]["content"][0]["transcript"] == "Let me check both."
        assert [item["name"] for item in output[1:]] == ["check_availability", "lookup_menu"]
        assert json.loads(output[2]["arguments"]) == {"dish": "risotto", "vegetarian": True}
        call_ids = [item["call_id"] for item in output[1:]]
        assert len(set(call_ids)) == 2
        indexes = {
            e["call_id"]: e["output_index"]
            for e in events
            if e["type"] == "response.function_call_arguments.done"
        }
        assert indexes == {call_ids[0]: 1, call_ids[1]: 2}
        chained = [e for e in events if e["type"] == "conversation.item.added"]
        assert [e["previous_item_id"] for e in chained[1:]] == [output[0]["id"], output[1]["id"]]

        record = server.sessions[0]
        assert [(c.name, c.declared) for c in record.tool_calls] == [
            ("check_availability", True),
            ("lookup_menu", False),  # not in session.tools: the fake calls it anyway
        ]
        await client.give_output(call_ids[1], "Risotto is vegetarian.", "evt_1")
        await client.give_output(call_ids[0], "Free at 20:00.", "evt_2")
        await client.send({"type": "response.create"})
        second = await client.until("response.done")
        assert second[-1]["response"]["output"][0]["content"][0]["transcript"] == ANSWER
        assert [(o.call_id, o.name) for o in record.tool_outputs] == [
            (call_ids[1], "lookup_menu"),
            (call_ids[0], "check_availability"),
        ]
        assert record.responses_after_tools[0].call_ids == (call_ids[1], call_ids[0])
        await client.ws.close()


async def test_an_output_for_an_unknown_call_id_is_refused_like_openai(
    ga: FakeRealtimeServer,
) -> None:
    client = await open_client(ga)
    await client.configure(session_with_tools("openai", None))
    await client.give_output("call_nope", "{}", "evt_7")
    error = await client.until("error")
    assert error[-1]["error"] == {
        "type": "invalid_request_error",
        "code": "invalid_tool_call_id",
        "message": "Tool call ID 'call_nope' not found in conversation.",
        "param": None,
        "event_id": "evt_7",
    }
    record = ga.sessions[0]
    assert record.tool_outputs == []

    # A call the client put in the conversation itself can be answered like the model's.
    call = {
        "type": "function_call",
        "call_id": "call_own",
        "name": "check_availability",
        "arguments": "{}",
    }
    await client.send({"type": "conversation.item.create", "item": call})
    await client.until("conversation.item.done")
    await client.give_output("call_own", "ok")
    await client.until("conversation.item.done")
    assert [(o.call_id, o.name) for o in record.tool_outputs] == [
        ("call_own", "check_availability")
    ]
    await client.send({"type": "response.create"})
    await client.until("response.done")
    assert record.responses_after_tools[0].call_ids == ("call_own",)
    await client.ws.close()


async def test_a_cancelled_response_makes_no_calls() -> None:
    long = Reply("This will take a while to say.", duration_ms=20_000, tool_calls=(CHECK,))
    async with serve("openai", long, factor=2) as server:
        client = await open_client(server)
        await client.configure(session_with_tools("openai", None))
        await client.send({"type": "response.create"})
        await client.until("response.output_audio.delta")
        await client.send({"type": "response.cancel"})
        events = await client.until("response.done")
        assert "response.function_call_arguments.done" not in types(events)
        response = events[-1]["response"]
        assert response["status"] == "cancelled"
        assert [item["type"] for item in response["output"]] == ["message"]
        assert server.sessions[0].tool_calls == []
        await client.ws.close()


# ---------------------------------------------------------------- dialects


@pytest.mark.parametrize("dialect", DIALECT_NAMES)
async def test_each_dialect_spells_the_call_its_way_and_the_bridge_client_reads_it(
    dialect: str,
) -> None:
    async with serve(dialect, Reply(tool_calls=(CHECK,)), Reply(ANSWER)) as server:
        client = await open_client(server)
        await client.configure(session_with_tools(dialect, None))
        await client.send({"type": "response.create"})
        first = await client.until("response.done")
        events = after_created(first)
        expected = BETA_CALL_EVENTS if dialect == "openai-beta" else GA_CALL_EVENTS
        assert collapse(types(events)) == [*expected, "response.done"]
        arguments_done = next(e for e in events if e["type"].endswith("arguments.done"))
        if dialect == "inworld":
            assert "name" not in arguments_done  # clients resolve it from the item
        else:
            assert arguments_done["name"] == "check_availability"
        call_id = arguments_done["call_id"]
        assert events[-1]["response"]["output"][0]["call_id"] == call_id

        await client.give_output(call_id, "Free at 20:00.")
        await client.send({"type": "response.create"})
        second = await client.until("response.done")
        spoken = "response.audio_transcript.done"
        if dialect != "openai-beta":
            spoken = "response.output_audio_transcript.done"
        assert next(e for e in second if e["type"] == spoken)["transcript"] == ANSWER
        assert server.sessions[0].tool_outputs[0].name == "check_availability"
        await client.ws.close()

    connection = RealtimeConnection(DIALECTS[dialect], "pcmu")
    for event in client.seen:
        connection.receive_text(json.dumps(event))
    decoded = connection.events_received()
    done = [e for e in decoded if isinstance(e, ResponseDone)]
    assert [e.status for e in done] == ["completed", "completed"]
    started = {e.item_id for e in decoded if isinstance(e, AssistantItemStarted)}
    assert arguments_done["item_id"] not in started  # a function call carries no speech
    # Whatever the client makes of a call, it must carry the call's own id and name.
    for event in decoded:
        if getattr(event, "call_id", None) is not None:
            assert event.call_id == call_id
            assert getattr(event, "name", "check_availability") == "check_availability"


@pytest.mark.parametrize("dialect", DIALECT_NAMES)
async def test_every_event_of_a_tool_exchange_validates_against_the_openai_models(
    dialect: str,
) -> None:
    pydantic = pytest.importorskip("pydantic")
    if dialect == "openai-beta":
        models = pytest.importorskip("openai.types.beta.realtime")
    else:
        models = pytest.importorskip("openai.types.realtime")
    adapter = pydantic.TypeAdapter(models.RealtimeServerEvent)
    both = Reply("Let me check.", duration_ms=200, tool_calls=(CHECK, MENU))
    async with serve(dialect, both, Reply(ANSWER, duration_ms=200)) as server:
        client = await open_client(server)
        await client.configure(session_with_tools(dialect, None))
        await client.send({"type": "response.create"})
        events = await client.until("response.done")
        calls = events[-1]["response"]["output"][1:]
        for call in calls:
            await client.give_output(call["call_id"], "ok")
        await client.give_output("call_nope", "ok")
        await client.until("error")
        await client.send({"type": "response.create"})
        await client.until("response.done")
        await client.ws.close()

    names = {call["call_id"]: call["name"] for call in calls}
    checked = set()
    for event in client.seen:
        if event["type"] == "ping":
            continue  # Inworld's keep-alive is not in OpenAI's union
        if dialect == "inworld" and event["type"] == "response.function_call_arguments.done":
            # The one documented difference: Inworld leaves the name to the call's item.
            event = {**event, "name": names[event["call_id"]]}
        adapter.validate_python(event)
        checked.add(event["type"])
    assert {
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.done",
        "error",
    } <= checked


# ---------------------------------------------------------------- script


def test_tool_calls_validate_and_load_from_a_json_script(tmp_path: Path) -> None:
    assert CHECK.arguments_json == '{"party":4,"time":"20:00"}'
    assert Reply(tool_calls=(CHECK,)).speaks is False
    assert Reply("Hold on.", tool_calls=(CHECK,)).speaks is True
    assert Reply("").speaks is True  # a reply without tools always speaks
    with pytest.raises(ConfigurationError):
        ToolCall("check availability")
    with pytest.raises(ConfigurationError):
        ToolCall("x" * 65)
    with pytest.raises(ConfigurationError):
        ToolCall("f", {"when": object()})

    path = tmp_path / "script.json"
    path.write_text(
        json.dumps(
            {
                "replies": [
                    {"tool_calls": [{"name": "check_availability", "arguments": CHECK.arguments}]},
                    {"text": "Checking.", "tool_calls": [{"name": "end_call"}]},
                    ANSWER,
                ]
            }
        ),
        encoding="utf-8",
    )
    script = load_script(path)
    assert script.replies[0] == Reply("", tool_calls=(CHECK,))
    assert script.replies[1].tool_calls == (ToolCall("end_call", {}),)
    assert script.replies[2] == Reply(ANSWER)
    path.write_text(json.dumps({"replies": [{"tool_calls": [{"name": "a b"}]}]}))
    with pytest.raises(ConfigurationError, match="tool name"):
        load_script(path)
