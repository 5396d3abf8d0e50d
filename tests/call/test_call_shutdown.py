"""A call asked to end because the bridge is stopping, and the latencies the metrics see."""

from __future__ import annotations

import pytest

from bridge.call.call_logic import LatencyReady, Phase, TurnReady
from bridge.call.limits import GOODBYE_GRACE_S, SHUTTING_DOWN
from bridge.call.records import EndReason

from .test_call_logic import Harness


class Measured(Harness):
    """The call harness, keeping the latencies the logic reports as well."""

    def __init__(self, **kwargs: object) -> None:
        self.latencies: list[LatencyReady] = []
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def _collect(self) -> None:
        for out in self.logic.outputs():
            if isinstance(out, TurnReady):
                self.turns[out.turn.seq] = out.turn
            elif isinstance(out, LatencyReady):
                self.latencies.append(out)
            elif hasattr(out, "event"):
                self.events.append(out.event)

    def shut_down(self) -> None:
        self.logic.shut_down(self.now)
        self._collect()

    def hear_everything(self) -> None:
        for mark in [m for m in self.to_phone() if m["event"] == "mark"]:
            self.phone(event="mark", sequenceNumber="9", mark=mark["mark"])


def _goodbye_requests(h: Harness) -> list[dict[str, object]]:
    return [
        m
        for m in h.to_model()
        if m["type"] == "response.create"
        and m.get("response", {}).get("instructions") == SHUTTING_DOWN
    ]


def test_a_quiet_call_gets_a_goodbye_and_ends_once_it_was_heard() -> None:
    h = Measured()
    h.start_session()
    h.to_model()
    h.shut_down()
    assert len(_goodbye_requests(h)) == 1
    assert [e.type for e in h.events] == ["bridge_shutdown"]
    assert h.logic.end_reason is None  # not before the caller has heard it
    h.answer(item="item_bye", resp="resp_bye", ms=600, text="We have to end the call. Bye!")
    assert h.logic.end_reason is None  # the goodbye is still playing
    h.hear_everything()
    assert h.logic.end_reason is EndReason.BRIDGE_SHUTDOWN
    [turn] = h.turns.values()
    assert turn.text == "We have to end the call. Bye!" and not turn.interrupted


def test_the_agent_finishes_its_sentence_before_the_goodbye() -> None:
    h = Measured()
    h.start_session()
    h.to_model()
    h.answer(item="item_a", resp="resp_a", ms=400, done=False, text="Our hours are nine to")
    h.shut_down()
    assert _goodbye_requests(h) == []  # waits for the answer in flight
    h.finish_answer("item_a", "resp_a", "Our hours are nine to five.")
    assert len(_goodbye_requests(h)) == 1
    h.hear_everything()
    assert h.logic.end_reason is None  # the answer was heard, the goodbye not yet
    h.answer(item="item_bye", resp="resp_bye", ms=300, text="Goodbye!")
    h.hear_everything()
    assert h.logic.end_reason is EndReason.BRIDGE_SHUTDOWN
    assert [t.text for t in h.turns.values()] == ["Our hours are nine to five.", "Goodbye!"]


def test_a_goodbye_that_never_comes_ends_the_call_after_the_grace() -> None:
    h = Measured()
    h.start_session()
    h.shut_down()
    h.now += GOODBYE_GRACE_S - 1
    h.logic.tick(h.now)
    assert h.logic.end_reason is None
    h.now += 1
    h.logic.tick(h.now)
    assert h.logic.end_reason is EndReason.BRIDGE_SHUTDOWN


def test_a_call_without_a_model_session_ends_at_once() -> None:
    h = Measured()
    assert h.logic.phase is Phase.AWAITING_SESSION
    h.shut_down()
    assert h.logic.end_reason is EndReason.BRIDGE_SHUTDOWN
    assert _goodbye_requests(h) == []


def test_turn_latency_runs_from_the_end_of_speech_to_the_first_audio_sent() -> None:
    h = Measured()
    h.start_session()
    h.media(50)  # 1 s of stream
    h.model(
        type="input_audio_buffer.speech_started", event_id="e1", audio_start_ms=300, item_id="u1"
    )
    h.media(50)  # 2 s
    h.model(
        type="input_audio_buffer.speech_stopped", event_id="e2", audio_end_ms=1500, item_id="u1"
    )
    h.media(25)  # the model thinks for half a second
    h.answer(ms=200)
    [turn] = [lat for lat in h.latencies if lat.kind == "turn"]
    # Speech ended at 1000 ms of stream (1500 less the 500 ms of VAD silence); the first
    # audio went out at 2500 ms.
    assert turn.seconds == pytest.approx(1.5, abs=0.02)
    h.answer(item="item_2", resp="resp_2", ms=200)  # no caller turn before it: not a turn
    assert len([lat for lat in h.latencies if lat.kind == "turn"]) == 1


def test_clear_latency_runs_from_the_caller_starting_to_the_clear() -> None:
    h = Measured()
    h.start_session()
    h.to_model()
    h.answer(ms=4000, done=False)
    h.media(50)  # the agent has been talking for a second
    # The model's VAD reports speech that began 300 ms of padding before its audio_start_ms.
    h.model(
        type="input_audio_buffer.speech_started", event_id="e1", audio_start_ms=900, item_id="u1"
    )
    assert any(m["event"] == "clear" for m in h.to_phone())
    [clear] = [lat for lat in h.latencies if lat.kind == "clear"]
    assert 0.0 <= clear.seconds <= 0.5
