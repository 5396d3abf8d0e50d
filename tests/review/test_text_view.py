"""The text `bridge calls list` and `bridge calls show` print."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from bridge.call.records import CallEvent, CallStatus, EndReason, Role, Turn
from bridge.review.text_view import format_call, format_call_list
from bridge.storage import CallRecord, CallSummary

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def summary(
    sid: str,
    started: datetime,
    ended: datetime | None = None,
    reason: EndReason | None = None,
    turns: int = 0,
) -> CallSummary:
    return CallSummary(
        call_sid=sid,
        stream_sid="MZ" + sid[2:],
        from_number="+15551230000",
        to_number="+15557650000",
        provider="openai",
        model="gpt-realtime",
        started_at=started,
        ended_at=ended,
        status=CallStatus.IN_PROGRESS if ended is None else CallStatus.COMPLETED,
        end_reason=reason,
        turn_count=turns,
    )


def record(turns: list[Turn], events: list[CallEvent], ended: datetime | None = None) -> CallRecord:
    return CallRecord(
        call_sid="CA0001",
        stream_sid="MZ0001",
        from_number="+15551230000",
        to_number="+15557650000",
        provider="openai",
        model="gpt-realtime",
        started_at=T0,
        ended_at=ended,
        status=CallStatus.IN_PROGRESS if ended is None else CallStatus.COMPLETED,
        end_reason=None if ended is None else EndReason.CALLER_HANGUP,
        turns=turns,
        events=events,
    )


CONTRACT_TURNS = [
    Turn(1, Role.CALLER, "Hi, I'd like to book a table.", 1020, 2700),
    Turn(
        2,
        Role.AGENT,
        "Sure! For how many people",
        3100,
        4900,
        interrupted=True,
        full_text="Sure! For how many people, and at what time?",
    ),
    Turn(3, Role.CALLER, "Four, at eight.", 5200, 6300),
]
CONTRACT_EVENTS = [CallEvent("dtmf", 8000, {"digit": "1"}), CallEvent("barge_in", 4900)]


def test_empty_list() -> None:
    assert format_call_list([]) == "No calls yet."


def test_list_is_a_table_in_the_given_order() -> None:
    calls = [
        summary("CA0002", T0 + timedelta(hours=1)),
        summary(
            "CA0001",
            T0,
            T0 + timedelta(minutes=2, seconds=13, milliseconds=500),
            EndReason.CALLER_HANGUP,
            turns=12,
        ),
    ]
    text = format_call_list(calls, tz=UTC)
    assert text.splitlines() == [
        "STARTED                    FROM          TO            STATUS       END REASON"
        "     DURATION  TURNS  CALL SID",
        "2026-11-21 11:00:00+00:00  +15551230000  +15557650000  in_progress  -"
        "                  live      0  CA0002",
        "2026-11-21 10:00:00+00:00  +15551230000  +15557650000  completed    caller_hangup"
        "     2m13s     12  CA0001",
    ]


def test_list_times_in_the_zone_asked_for() -> None:
    text = format_call_list([summary("CA0001", T0)], tz=timezone(timedelta(hours=-5)))
    assert "2026-11-21 05:00:00-05:00" in text


def test_list_durations() -> None:
    long_call = summary("CA0001", T0, T0 + timedelta(hours=1, minutes=2, seconds=3), turns=1)
    short_call = summary("CA0002", T0, T0 + timedelta(seconds=7, milliseconds=900))
    text = format_call_list([long_call, short_call], tz=UTC)
    assert "1h02m03s" in text
    assert " 7s " in text


def test_show_conversation_with_cut_off_agent_and_events() -> None:
    ended = T0 + timedelta(minutes=2, seconds=13, milliseconds=500)
    text = format_call(record(CONTRACT_TURNS, CONTRACT_EVENTS, ended), tz=UTC)
    header, conversation = text.split("\n\n")
    assert header.splitlines() == [
        "Call CA0001",
        "  from     +15551230000",
        "  to       +15557650000",
        "  agent    default",
        "  model    openai / gpt-realtime",
        "  stream   MZ0001",
        "  started  2026-11-21 10:00:00+00:00",
        "  ended    2026-11-21 10:02:13+00:00 (2m13s)",
        "  status   completed, caller_hangup",
        "  turns    3, events 2",
    ]
    assert conversation.splitlines() == [
        "[  1.02s] caller: Hi, I'd like to book a table.",
        "[  3.10s] agent:  Sure! For how many people",
        "                  (cut off; the model had said: Sure! For how many people,"
        " and at what time?)",
        "[  4.90s] -- barge-in",
        "[  5.20s] caller: Four, at eight.",
        "[  8.00s] -- keypress 1",
    ]


def test_show_live_call_and_empty_conversation() -> None:
    text = format_call(record([], []), tz=UTC)
    assert "  ended    - (still in progress)" in text
    assert "  status   in_progress" in text
    assert text.endswith("(nothing was said)")


def test_show_agent_cut_before_anything_was_heard() -> None:
    turn = Turn(1, Role.AGENT, "", 500, 520, interrupted=True, full_text="Hello and welcome")
    text = format_call(record([turn], [CallEvent("barge_in", 520)]), tz=UTC)
    assert text.splitlines()[-2:] == [
        "[  0.50s] agent:  (cut off; the model had said: Hello and welcome)",
        "[  0.52s] -- barge-in",
    ]


def test_show_other_events_and_multiline_turns() -> None:
    turns = [Turn(1, Role.AGENT, "First line.\nSecond line.", 100, 900)]
    events = [CallEvent("provider_error", 950, {"code": "rate_limited"})]
    lines = format_call(record(turns, events), tz=UTC).splitlines()
    assert lines[-3:] == [
        "[  0.10s] agent:  First line.",
        "                  Second line.",
        "[  0.95s] -- provider-error code=rate_limited",
    ]


def test_terminal_control_characters_are_neutralised() -> None:
    # Transcripts come from outside: an escape sequence must not reach the terminal.
    turns = [Turn(1, Role.CALLER, "hi\x1b[2J there\rX", 0, 10)]
    call = summary("CA\x1b[31m1", T0)
    text = format_call(record(turns, []), tz=UTC) + format_call_list([call], tz=UTC)
    assert "\x1b" not in text and "\r" not in text
    assert "hi\\u001b[2J there X" in text


def test_show_tool_calls_and_a_transfer() -> None:
    turns = [
        Turn(1, Role.CALLER, "A table for four on Christmas Eve?", 1000, 3000),
        Turn(2, Role.AGENT, "Let me check.", 3400, 4200),
        Turn(3, Role.AGENT, "Putting you through to reception.", 11_000, 12_500),
    ]
    events = [
        CallEvent("tool_call", 4300, {"name": "check_availability",
                                      "arguments": {"date": "2026-12-24", "people": 4},
                                      "ok": True, "ms": 120}),
        CallEvent("tool_call", 9500, {"name": "note", "arguments": {"text": "<b>x</b>\x1b[2J"},
                                      "ok": False, "ms": 5003}),
        CallEvent("tool_call", 13_000, {"name": "transfer_call",
                                        "arguments": {"target": "reception"},
                                        "ok": True, "ms": 850}),
        CallEvent("transfer", 13_000, {"target": "reception"}),
    ]  # fmt: skip
    call = replace(
        record(turns, events, T0 + timedelta(seconds=14)),
        agent="front-desk",
        end_reason=EndReason.TRANSFERRED,
    )
    header, conversation = format_call(call, tz=UTC).split("\n\n")
    assert "  agent    front-desk" in header.splitlines()
    assert "  status   completed, transferred" in header.splitlines()
    assert conversation.splitlines() == [
        "[  1.00s] caller: A table for four on Christmas Eve?",
        "[  3.40s] agent:  Let me check.",
        "[  4.30s] -- called check_availability (date: 2026-12-24, people: 4) — ok, 120 ms",
        # Arguments come from the model: shown as text, never as terminal control codes.
        "[  9.50s] -- called note (text: <b>x</b>\\u001b[2J) — failed, 5003 ms",
        "[ 11.00s] agent:  Putting you through to reception.",
        "[ 13.00s] -- called transfer_call (target: reception) — ok, 850 ms",
        "[ 13.00s] -- transferred to reception",
    ]
