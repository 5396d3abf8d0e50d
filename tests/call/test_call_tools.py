"""Tool calls in the call logic, on a SIP leg with a clock moved by hand: the model's calls
answered with the same call id, the next response asked for once every call has its answer,
hang-up and transfer only after the agent's last words have gone out."""

from __future__ import annotations

import json
from typing import Any

from bridge.call.call_logic import (
    CallConfig,
    CallLogic,
    EventReady,
    ToolCallReady,
    TransferReady,
)
from bridge.call.limits import ARE_YOU_THERE, TIME_UP, LimitPolicy
from bridge.call.records import EndReason
from bridge.call.tools import ToolPolicy
from bridge.protocols.dialects import SessionConfig

from .test_call_logic_rtp import RtpHarness

SILENCE = b"\xff" * 160
POLICY = ToolPolicy(
    end_call=True, transfer_targets=("reception",), external=frozenset({"check_availability"})
)


class ToolHarness(RtpHarness):
    def __init__(self, policy: ToolPolicy = POLICY, limits: LimitPolicy | None = None) -> None:
        super().__init__()
        session = SessionConfig(instructions="Be brief.", voice=None, audio_format="pcmu")
        config = CallConfig(session=session, tools=policy, limits=limits or LimitPolicy())
        self.logic = CallLogic(self.leg, self.realtime, config, self.now)
        self.model(type="session.created", event_id="e1", session={})
        self.realtime.data_to_send()
        self.ready: list[Any] = []

    def _collect(self) -> None:
        self.logic.receive_phone(self.leg.events_received(), self.now)
        for output in self.logic.outputs():
            if isinstance(output, EventReady):
                self.events.append(output.event)
            elif isinstance(output, ToolCallReady | TransferReady):
                self.ready.append(output)

    def calls(self, resp: str, *calls: tuple[str, str, dict[str, Any]]) -> None:
        for call_id, name, arguments in calls:
            self.model(
                type="response.output_item.done",
                event_id="e6",
                response_id=resp,
                item={
                    "id": "fc_" + call_id,
                    "type": "function_call",
                    "call_id": call_id,
                    "name": name,
                    "arguments": json.dumps(arguments),
                },
            )

    def done(self, resp: str) -> None:
        self.model(
            type="response.done", event_id="e7", response={"id": resp, "status": "completed"}
        )

    def sent_to_model(self) -> list[dict[str, Any]]:
        return [json.loads(text) for text in self.realtime.data_to_send()]


def outputs(events: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    return [
        (e["item"]["call_id"], json.loads(e["item"]["output"]))
        for e in events
        if e["type"] == "conversation.item.create" and e["item"]["type"] == "function_call_output"
    ]


def test_an_http_tool_is_run_and_its_result_goes_back_before_the_next_response() -> None:
    h = ToolHarness()
    h.model(type="response.created", event_id="e3", response={"id": "r1", "output": []})
    h.calls("r1", ("call_1", "check_availability", {"date": "2026-12-24"}))
    h.done("r1")
    assert h.ready == [ToolCallReady("call_1", "check_availability", {"date": "2026-12-24"})]
    assert h.sent_to_model() == []  # nothing until the tool answers
    h.now += 0.12
    h.logic.tool_finished("call_1", True, '{"tables":2}', h.now)
    h._collect()
    sent = h.sent_to_model()
    assert outputs(sent) == [("call_1", {"tables": 2})]
    assert sent[-1]["type"] == "response.create"
    [event] = [e for e in h.events if e.type == "tool_call"]
    assert event.data == {
        "name": "check_availability",
        "arguments": {"date": "2026-12-24"},
        "ok": True,
        "ms": 120,
    }


def test_parallel_calls_get_one_response_after_the_last_answer() -> None:
    h = ToolHarness()
    h.model(type="response.created", event_id="e3", response={"id": "r1", "output": []})
    h.calls("r1", ("c1", "check_availability", {}), ("c2", "check_availability", {"date": "x"}))
    h.done("r1")
    h.logic.tool_finished("c2", False, '{"error":"the tool did not answer within 5 s"}', h.now)
    h._collect()
    assert [e["type"] for e in h.sent_to_model()] == ["conversation.item.create"]
    h.logic.tool_finished("c1", True, "{}", h.now)
    h._collect()
    assert [e["type"] for e in h.sent_to_model()] == ["conversation.item.create", "response.create"]
    assert [(e.data["ok"]) for e in h.events if e.type == "tool_call"] == [False, True]


def test_an_unknown_tool_or_bad_arguments_are_answered_with_an_error_at_once() -> None:
    h = ToolHarness()
    h.model(type="response.created", event_id="e3", response={"id": "r1", "output": []})
    h.calls("r1", ("c1", "launch_rockets", {}))
    h.model(
        type="response.output_item.done",
        event_id="e6",
        response_id="r1",
        item={"type": "function_call", "call_id": "c2", "name": "end_call", "arguments": "[1]"},
    )
    h.done("r1")
    sent = h.sent_to_model()
    assert outputs(sent) == [
        ("c1", {"error": "there is no tool named 'launch_rockets'"}),
        ("c2", {"error": "arguments are not a JSON object"}),
    ]
    assert sent[-1]["type"] == "response.create" and h.ready == []
    assert h.logic.end_reason is None  # end_call with bad arguments does not hang up


def test_end_call_hangs_up_once_the_goodbye_has_gone_out_and_not_before() -> None:
    h = ToolHarness()
    goodbye = h.agent_says(600, resp="r1")
    h.calls("r1", ("c1", "end_call", {}))
    h.done("r1")
    assert outputs(h.sent_to_model()) == [("c1", {"ok": True})]  # and no response.create
    h.tick(400)
    assert h.logic.end_reason is None  # still saying goodbye
    h.tick(300)
    assert h.logic.end_reason is EndReason.AGENT_HANGUP
    voiced = b"".join(p for p in h.payloads() if p != SILENCE)
    assert voiced == goodbye  # every frame of it went out first


def test_transfer_waits_for_the_last_words_then_ends_as_transferred() -> None:
    h = ToolHarness()
    h.agent_says(300, resp="r1")
    h.calls("r1", ("c1", "transfer_call", {"target": "reception"}))
    h.done("r1")
    assert h.ready == []
    h.tick(400)
    assert h.ready == [TransferReady("c1", "reception")]
    h.logic.transfer_finished(True, "", h.now)
    h._collect()
    assert h.logic.end_reason is EndReason.TRANSFERRED
    assert [e.type for e in h.events] == ["tool_call", "transfer"]
    assert h.events[1].data == {"target": "reception"}


def test_a_refused_transfer_is_told_to_the_model_and_the_call_goes_on() -> None:
    h = ToolHarness()
    h.calls("r1", ("c1", "transfer_call", {"target": "reception"}))
    h.done("r1")
    h.tick(40)
    h.logic.transfer_finished(False, "SIP 403", h.now)
    h._collect()
    sent = h.sent_to_model()
    [(call_id, output)] = outputs(sent)
    assert call_id == "c1" and "SIP 403" in output["error"]
    assert sent[-1]["type"] == "response.create"
    assert h.logic.end_reason is None


def test_a_made_up_transfer_target_is_refused() -> None:
    h = ToolHarness()
    h.calls("r1", ("c1", "transfer_call", {"target": "+15550009999"}))
    h.done("r1")
    [(_, output)] = outputs(h.sent_to_model())
    assert output == {"error": "unknown transfer target '+15550009999'; choose one of: reception"}
    h.tick(100)
    assert h.ready == [] and h.logic.end_reason is None


def test_tools_the_agent_does_not_offer_are_refused_even_if_built_in() -> None:
    h = ToolHarness(ToolPolicy())
    h.calls("r1", ("c1", "end_call", {}))
    h.done("r1")
    [(_, output)] = outputs(h.sent_to_model())
    assert output == {"error": "there is no tool named 'end_call'"}
    h.tick(100)
    assert h.logic.end_reason is None


def creates(sent: list[dict[str, Any]]) -> list[str | None]:
    return [
        e.get("response", {}).get("instructions") for e in sent if e["type"] == "response.create"
    ]


def test_at_the_time_limit_the_agent_says_goodbye_and_the_call_ends_once_it_is_heard() -> None:
    h = ToolHarness(limits=LimitPolicy(max_duration_s=60))
    h.tick(59_000)
    h.logic.tick(h.now)
    assert creates(h.sent_to_model()) == []
    h.tick(1_000)
    h.logic.tick(h.now)
    assert creates(h.sent_to_model()) == [TIME_UP]
    h.model(type="response.created", event_id="e3", response={"id": "bye", "output": []})
    h.agent_says(500, item="item_bye", resp="bye")
    h.done("bye")
    h.tick(200)
    h.logic.tick(h.now)
    assert h.logic.end_reason is None  # still saying goodbye
    h.tick(500)
    assert h.logic.end_reason is EndReason.TIMEOUT


def test_a_silent_caller_is_prompted_once_then_the_call_ends() -> None:
    h = ToolHarness(limits=LimitPolicy(silence_timeout_s=10))
    for _ in range(9):
        h.tick(1_000)
        h.logic.tick(h.now)
    assert creates(h.sent_to_model()) == []
    h.tick(1_000)
    h.logic.tick(h.now)
    assert creates(h.sent_to_model()) == [ARE_YOU_THERE]
    h.model(type="response.created", event_id="e3", response={"id": "p", "output": []})
    h.agent_says(1000, item="item_p", resp="p")
    h.done("p")
    for _ in range(10):  # the prompt plays (1 s), then 9 s of silence: not yet
        h.tick(1_000)
        h.logic.tick(h.now)
    assert h.logic.end_reason is None
    h.tick(1_000)
    h.logic.tick(h.now)
    assert h.logic.end_reason is EndReason.TIMEOUT


def test_a_caller_who_speaks_is_not_hung_up_on() -> None:
    h = ToolHarness(limits=LimitPolicy(silence_timeout_s=5))
    for second in range(30):
        if second % 4 == 0:
            h.model(
                type="input_audio_buffer.speech_started",
                event_id="s",
                audio_start_ms=0,
                item_id="u",
            )
        h.tick(1_000)
        h.logic.tick(h.now)
    assert creates(h.sent_to_model()) == [] and h.logic.end_reason is None
