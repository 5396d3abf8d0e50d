"""The call logic on a call whose audio the provider carries (OpenAI's SIP sideband):
configured at accept, turns timed by their words, hang-up after the reported playout."""

from __future__ import annotations

import json
from typing import Any

from bridge.call.call_logic import CallConfig, CallLogic, TurnReady
from bridge.call.limits import SHUTTING_DOWN
from bridge.call.records import EndReason
from bridge.call.tools import ToolPolicy
from bridge.openai_sip import NoMediaLeg
from bridge.protocols.dialects import DIALECTS, SessionConfig
from bridge.protocols.realtime import RealtimeConnection


def _logic(greeting: str | None = "Hello!") -> CallLogic:
    config = CallConfig(
        session=SessionConfig("Be brief.", None, "pcmu"),
        greeting=greeting,
        tools=ToolPolicy(end_call=True),
        media=False,
    )
    return CallLogic(NoMediaLeg(), RealtimeConnection(DIALECTS["openai"], "pcmu"), config, 0.0)


def _feed(logic: CallLogic, now: float, **event: Any) -> None:
    logic.receive_realtime(json.dumps(event), now)


def _sent(logic: CallLogic) -> list[dict[str, Any]]:
    return [json.loads(text) for text in logic.realtime.data_to_send()]


def _reply(logic: CallLogic, at: float, rid: str, item: str, text: str, call: bool = False) -> None:
    _feed(logic, at, type="response.created", response={"id": rid})
    _feed(logic, at, type="response.output_item.added", response_id=rid,
          item={"id": item, "type": "message", "role": "assistant"})  # fmt: skip
    _feed(logic, at, type="output_audio_buffer.started", response_id=rid)
    for n, word in enumerate(text.split(" ")):
        _feed(logic, at + 0.1 * n, type="response.output_audio_transcript.delta",
              response_id=rid, item_id=item, delta=word if n == 0 else " " + word)  # fmt: skip
    if call:
        _feed(logic, at + 1, type="response.function_call_arguments.done", response_id=rid,
              item_id="fc1", call_id="call_1", name="end_call", arguments="{}")  # fmt: skip
    _feed(logic, at + 1, type="response.done", response={"id": rid, "status": "completed"})


def test_the_greeting_goes_out_at_once_and_no_session_update_is_sent() -> None:
    logic = _logic()
    [create] = _sent(logic)
    assert create["type"] == "response.create" and "Hello!" in create["response"]["instructions"]
    _feed(logic, 0.1, type="session.created", session={})
    _feed(logic, 0.2, type="session.updated", session={})
    assert _sent(logic) == []


def test_agent_turns_land_with_text_timed_by_their_words() -> None:
    logic = _logic(greeting=None)
    _reply(logic, 2.0, "r1", "i1", "Hi there, how can I help?")
    [turn] = [o.turn for o in logic.outputs() if isinstance(o, TurnReady)]
    assert turn.text == "Hi there, how can I help?" and not turn.interrupted
    assert turn.start_ms == 2000 and turn.end_ms == 2500


def test_caller_speech_is_not_a_barge_in_the_bridge_acts_on() -> None:
    logic = _logic(greeting=None)
    _feed(logic, 1.0, type="response.created", response={"id": "r1"})
    _feed(logic, 1.1, type="input_audio_buffer.speech_started", item_id="u1", audio_start_ms=0)
    assert _sent(logic) == []  # the provider cuts and truncates its own playout
    assert logic.barge_ins == 0


def test_end_call_waits_for_the_goodbye_to_stop_playing() -> None:
    logic = _logic(greeting=None)
    _reply(logic, 1.0, "r1", "i1", "Goodbye!", call=True)
    assert logic.end_reason is None  # response done, but OpenAI is still playing it
    logic.tick(3.0)
    assert logic.end_reason is None
    _feed(logic, 3.5, type="output_audio_buffer.stopped", response_id="r1")
    assert logic.end_reason is EndReason.AGENT_HANGUP


def test_end_call_hangs_up_after_the_bound_when_playout_is_never_reported() -> None:
    logic = _logic(greeting=None)
    _feed(logic, 1.0, type="response.created", response={"id": "r1"})
    _feed(logic, 1.5, type="response.function_call_arguments.done", response_id="r1",
          item_id="fc1", call_id="call_1", name="end_call", arguments="{}")  # fmt: skip
    _feed(logic, 2.0, type="response.done", response={"id": "r1", "status": "completed"})
    logic.tick(6.0)
    assert logic.end_reason is None
    logic.tick(7.0)
    assert logic.end_reason is EndReason.AGENT_HANGUP


def test_a_stopping_bridge_has_the_provider_say_goodbye_and_ends_once_it_stopped() -> None:
    logic = _logic(greeting=None)
    _sent(logic)
    logic.shut_down(1.0)
    [create] = _sent(logic)
    assert create["type"] == "response.create"
    assert create["response"]["instructions"] == SHUTTING_DOWN
    _reply(logic, 1.2, "r1", "i1", "Sorry, I have to go now. Goodbye.")
    assert logic.end_reason is None  # OpenAI is still playing it
    _feed(logic, 3.5, type="output_audio_buffer.stopped", response_id="r1")
    assert logic.end_reason is EndReason.BRIDGE_SHUTDOWN
