"""What the call page shows, worked out without HTTP: order, heard/unheard, latency, times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge.call.records import CallEvent, CallStatus, EndReason, Role, Turn
from bridge.review.timeline import (
    END_REASON_LABELS,
    MODEL_SAID,
    NOT_HEARD,
    EventRow,
    TurnRow,
    build_timeline,
    end_label,
    event_label,
    format_arguments,
    format_duration,
    format_offset,
    format_started,
    response_latency_ms,
    split_heard,
)
from bridge.storage.base import CallRecord

T0 = datetime(2026, 11, 21, 19, 30, tzinfo=UTC)


def record(
    turns: list[Turn],
    events: list[CallEvent] | None = None,
    *,
    status: CallStatus = CallStatus.COMPLETED,
    end_reason: EndReason | None = EndReason.CALLER_HANGUP,
) -> CallRecord:
    return CallRecord(
        call_sid="CA1",
        stream_sid="MZ1",
        from_number="+14155550123",
        to_number="+14155550199",
        provider="openai",
        model="gpt-realtime",
        started_at=T0,
        ended_at=None if status is CallStatus.IN_PROGRESS else T0 + timedelta(seconds=75),
        status=status,
        end_reason=end_reason,
        turns=turns,
        events=events or [],
    )


def test_rows_follow_time_with_events_inline() -> None:
    rows = build_timeline(
        record(
            [
                Turn(1, Role.CALLER, "Hi, a table for tonight?", 1000, 2600),
                Turn(2, Role.AGENT, "Of course. For how", 3020, 4400, True,
                     "Of course. For how many people?"),
                Turn(3, Role.CALLER, "Four.", 4400, 5000),
                Turn(4, Role.AGENT, "Press 1 to confirm.", 5600, 7000),
            ],
            [CallEvent("dtmf", 8000, {"digit": "1"}), CallEvent("barge_in", 4400)],
        )
    )  # fmt: skip
    kinds = [(row.kind, row.at) for row in rows]
    assert kinds == [
        ("turn", "0:01.0"),
        ("turn", "0:03.0"),
        # The barge-in comes before the caller's words that started with it.
        ("event", "0:04.4"),
        ("turn", "0:04.4"),
        ("turn", "0:05.6"),
        ("event", "0:08.0"),
    ]
    barge, dtmf = rows[2], rows[5]
    assert isinstance(barge, EventRow) and barge.type == "barge_in"
    assert isinstance(dtmf, EventRow) and dtmf.label == "pressed 1 (DTMF)"


def test_turns_out_of_seq_order_are_shown_in_time_order() -> None:
    rows = build_timeline(
        record([Turn(2, Role.AGENT, "later", 5000, 6000), Turn(1, Role.CALLER, "first", 100, 900)])
    )
    assert [row.text for row in rows if isinstance(row, TurnRow)] == ["first", "later"]


def test_latency_only_for_an_agent_answering_the_caller() -> None:
    rows = build_timeline(
        record(
            [
                Turn(1, Role.AGENT, "Bella Cucina, how can I help?", 200, 1800),
                Turn(2, Role.CALLER, "A table, please.", 2500, 3700),
                Turn(3, Role.AGENT, "Sure.", 4120, 4600),
                Turn(4, Role.AGENT, "For when?", 4700, 5200),
            ]
        )
    )
    assert [row.latency_ms for row in rows if isinstance(row, TurnRow)] == [None, None, 420, None]


def test_latency_rule() -> None:
    caller = Turn(1, Role.CALLER, "hi", 1000, 2000)
    assert response_latency_ms(Turn(2, Role.AGENT, "yes", 2350, 3000), caller) == 350
    assert response_latency_ms(Turn(2, Role.AGENT, "yes", 2000, 3000), caller) == 0
    # Overlapping transcripts (the agent started first) give no misleading negative figure.
    assert response_latency_ms(Turn(2, Role.AGENT, "yes", 1900, 3000), caller) is None
    assert response_latency_ms(Turn(2, Role.AGENT, "yes", 2350, 3000), None) is None
    assert response_latency_ms(Turn(2, Role.CALLER, "more", 2350, 3000), caller) is None


def test_interrupted_turn_splits_heard_from_unheard() -> None:
    (row,) = build_timeline(
        record([Turn(1, Role.AGENT, "Sure! For how", 3100, 4900, True,
                     "Sure! For how many people, and at what time?")])
    )  # fmt: skip
    assert isinstance(row, TurnRow) and row.interrupted
    assert row.text == "Sure! For how"
    assert row.unheard == "many people, and at what time?"
    assert row.unheard_label == NOT_HEARD
    assert row.gap


@pytest.mark.parametrize(
    ("heard", "full", "expected"),
    [
        # Spacing differences do not matter.
        ("Sure!  For\nhow", "Sure! For how many?", ("Sure! For how", "many?", NOT_HEARD, True)),
        # Cut inside a word: no space between the two parts.
        ("Sure! For ho", "Sure! For how many?", ("Sure! For ho", "w many?", NOT_HEARD, False)),
        # Nothing heard at all: everything is unheard.
        ("", "Sure! For how many?", ("", "Sure! For how many?", NOT_HEARD, False)),
        # Heard everything: nothing greyed.
        ("Sure!", "Sure! ", ("Sure!", "", NOT_HEARD, False)),
        # The transcripts disagree: show what the model said as a whole.
        (
            "Sure, for how",
            "Sure! For how many?",
            ("Sure, for how", "Sure! For how many?", MODEL_SAID, True),
        ),
        # No full text stored.
        ("Sure! For how", None, ("Sure! For how", "", "", False)),
    ],
)
def test_split_heard(heard: str, full: str | None, expected: tuple[str, str, str, bool]) -> None:
    assert split_heard(heard, full) == expected


def test_interrupted_turn_with_nothing_unheard_has_no_label() -> None:
    (row,) = build_timeline(record([Turn(1, Role.AGENT, "Sure!", 0, 900, True, "Sure!")]))
    assert isinstance(row, TurnRow)
    assert row.interrupted and row.unheard == "" and row.unheard_label == ""


def test_plain_turn_keeps_its_text_as_stored() -> None:
    (row,) = build_timeline(record([Turn(1, Role.CALLER, "Line one\nline two", 0, 900)]))
    assert isinstance(row, TurnRow)
    assert row.text == "Line one\nline two" and not row.interrupted and row.unheard == ""


@pytest.mark.parametrize(
    ("ms", "text"),
    [(0, "0:00.0"), (3100, "0:03.1"), (3149, "0:03.1"), (3150, "0:03.2"), (59_960, "1:00.0"),
     (61_250, "1:01.2"), (3_725_000, "62:05.0"), (-5, "0:00.0")],
)  # fmt: skip
def test_format_offset(ms: int, text: str) -> None:
    assert format_offset(ms) == text


@pytest.mark.parametrize(
    ("ms", "text"),
    [(None, "live"), (0, "0:00"), (999, "0:00"), (133_500, "2:13"), (3_600_000, "1:00:00"),
     (3_725_999, "1:02:05")],
)  # fmt: skip
def test_format_duration(ms: int | None, text: str) -> None:
    assert format_duration(ms) == text


def test_format_started_is_utc() -> None:
    from datetime import timezone

    paris = timezone(timedelta(hours=1))
    assert format_started(datetime(2026, 11, 21, 20, 30, 5, tzinfo=paris)) == "2026-11-21 19:30:05"


def test_event_labels() -> None:
    assert event_label(CallEvent("dtmf", 0, {"digit": "#"})) == "pressed # (DTMF)"
    assert event_label(CallEvent("dtmf", 0)) == "keypad"
    assert event_label(CallEvent("barge_in", 0)) == "caller talked over the agent"
    assert event_label(CallEvent("transfer_requested", 0, {"to": "+14155550100"})) == (
        "transfer requested: to +14155550100"
    )


def test_model_session_events_read_as_what_happened_to_the_call() -> None:
    dropped = CallEvent("reconnect", 0, {"reason": "dropped", "provider": "openai"})
    assert event_label(dropped) == "model session replaced (its connection dropped) — openai"
    rolled = CallEvent("reconnect", 0, {"reason": "rollover", "provider": "xai"})
    assert event_label(rolled) == "model session replaced (ahead of its session limit) — xai"
    moved = CallEvent("provider_fallback", 0, {"from": "openai", "to": "inworld"})
    assert event_label(moved) == "moved from openai to inworld"


def test_end_labels() -> None:
    assert end_label(record([])) == "Call ended: caller hung up"
    assert end_label(record([], status=CallStatus.FAILED, end_reason=EndReason.PROVIDER_ERROR)) == (
        "Call ended: model provider error"
    )
    live = record([], status=CallStatus.IN_PROGRESS, end_reason=None)
    assert end_label(live) == "Call still in progress"
    assert build_timeline(live) == []


def test_every_end_reason_has_a_label() -> None:
    assert set(END_REASON_LABELS) == set(EndReason)
    transferred = record([], end_reason=EndReason.TRANSFERRED)
    assert end_label(transferred) == "Call ended: transferred to a person"
    assert end_label(record([], end_reason=EndReason.AGENT_HANGUP)) == "Call ended: agent hung up"


def tool_call(at_ms: int, name: str, arguments: dict[str, object], ok: bool, ms: int) -> CallEvent:
    return CallEvent("tool_call", at_ms, {"name": name, "arguments": arguments, "ok": ok, "ms": ms})


def test_tool_calls_and_a_transfer_read_in_time_order() -> None:
    rows = build_timeline(
        record(
            [
                Turn(1, Role.CALLER, "A table for four on Christmas Eve?", 1000, 3000),
                Turn(2, Role.AGENT, "Let me check.", 3400, 4200),
                Turn(3, Role.AGENT, "Putting you through to reception.", 11_000, 12_500),
            ],
            [
                # Written as the call logic writes them: the transfer_call tool call, then
                # the transfer itself, both at the moment the phone leg moved.
                tool_call(13_000, "transfer_call", {"target": "reception"}, True, 850),
                CallEvent("transfer", 13_000, {"target": "reception"}),
                tool_call(4300, "check_availability", {"date": "2026-12-24", "people": 4},
                          True, 120),
                tool_call(9500, "check_availability", {"date": "2026-12-25"}, False, 5003),
            ],
            end_reason=EndReason.TRANSFERRED,
        )
    )  # fmt: skip
    events = [row for row in rows if isinstance(row, EventRow)]
    assert [(row.kind, row.at) for row in rows] == [
        ("turn", "0:01.0"),
        ("turn", "0:03.4"),
        ("event", "0:04.3"),
        ("event", "0:09.5"),
        ("turn", "0:11.0"),
        ("event", "0:13.0"),
        ("event", "0:13.0"),
    ]
    assert [(row.type, row.label, row.failed) for row in events] == [
        ("tool_call", "called check_availability (date: 2026-12-24, people: 4) — ok, 120 ms",
         False),
        ("tool_call", "called check_availability (date: 2026-12-25) — failed, 5003 ms", True),
        ("tool_call", "called transfer_call (target: reception) — ok, 850 ms", False),
        ("transfer", "transferred to reception", False),
    ]  # fmt: skip


def test_tool_call_labels_are_compact() -> None:
    assert event_label(tool_call(0, "end_call", {}, True, 0)) == "called end_call — ok, 0 ms"
    # Values other than strings appear as compact JSON; markup is left to the template to
    # escape (the label is plain text).
    label = event_label(
        tool_call(0, "note", {"text": "<b>x</b>", "vip": True, "items": [1, 2], "x": None}, True, 7)
    )
    assert label == "called note (text: <b>x</b>, vip: true, items: [1,2], x: null) — ok, 7 ms"
    # A record missing fields says only what it knows.
    assert event_label(CallEvent("tool_call", 0, {"name": "lookup"})) == "called lookup"
    assert event_label(CallEvent("tool_call", 0)) == "called a tool"
    assert event_label(CallEvent("transfer", 0)) == "transferred"


def test_long_arguments_are_cut() -> None:
    long = "A note that goes on and on about the party, the cake, the candles and the band."
    text = format_arguments({"note": long})
    assert text.startswith("note: A note that goes on") and text.endswith("…")
    assert len(text) == len("note: ") + 60
    # Newlines and runs of spaces fold into one line.
    assert format_arguments({"address": "1 Main St\n\n  Springfield"}) == (
        "address: 1 Main St Springfield"
    )
    many = {f"k{n}": n for n in range(9)}
    assert format_arguments(many) == "k0: 0, k1: 1, k2: 2, k3: 3, k4: 4, k5: 5, …"
    assert format_arguments({f"k{n}": n for n in range(6)}).endswith("k5: 5")
    # Whatever the model sent when it was not an object still shows, cut short.
    assert format_arguments("x" * 100) == "x" * 59 + "…"
