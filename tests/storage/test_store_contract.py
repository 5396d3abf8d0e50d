"""The CallStore contract: every backend must pass this suite (the backends are in
``conftest.py``)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

import pytest

from bridge.call.records import CallEvent, CallStatus, EndReason
from bridge.storage import CallFilter, CallStore, RefusedValueError, UnknownCallError
from tests.storage.conftest import Backend
from tests.storage.samples import T0, agent, caller, new_call

# -- creating and finishing ---------------------------------------------------------------


async def test_new_call_is_in_progress_with_no_end(store: CallStore) -> None:
    await store.create_call(new_call())
    record = await store.get_call("CA0001")
    assert record is not None
    assert record.status is CallStatus.IN_PROGRESS
    assert record.ended_at is None and record.end_reason is None
    assert record.started_at == T0
    assert (record.from_number, record.to_number) == ("+15551230000", "+15557650000")
    assert (record.provider, record.model, record.stream_sid) == (
        "openai",
        "gpt-realtime",
        "MZ0001",
    )
    assert record.turns == [] and record.events == []
    assert record.to_json()["ended_at"] is None
    assert record.to_json()["end_reason"] is None


async def test_create_is_idempotent(store: CallStore) -> None:
    await store.create_call(new_call())
    await store.append_turn("CA0001", caller(1, "hello", 100, 900))
    # A retried create (say the stream reconnected) must not reset the call or its turns.
    await store.create_call(new_call(from_number="+19990000000", started_at=T0 + timedelta(1)))
    record = await store.get_call("CA0001")
    assert record is not None
    assert record.from_number == "+15551230000"
    assert record.started_at == T0
    assert len(record.turns) == 1
    assert len(await store.list_calls()) == 1


async def test_finish_records_status_reason_and_end(store: CallStore) -> None:
    await store.create_call(new_call())
    ended = T0 + timedelta(minutes=2, seconds=13, milliseconds=500)
    await store.finish_call("CA0001", CallStatus.COMPLETED, EndReason.CALLER_HANGUP, ended)
    record = await store.get_call("CA0001")
    assert record is not None
    assert record.status is CallStatus.COMPLETED
    assert record.end_reason is EndReason.CALLER_HANGUP
    assert record.ended_at == ended
    assert record.duration_ms == 133_500


async def test_only_the_first_finish_counts(store: CallStore) -> None:
    await store.create_call(new_call())
    first_end = T0 + timedelta(seconds=30)
    await store.finish_call("CA0001", CallStatus.COMPLETED, EndReason.AGENT_HANGUP, first_end)
    # The status callback arrives later and says something else: it must not win.
    await store.finish_call(
        "CA0001", CallStatus.FAILED, EndReason.PROVIDER_ERROR, first_end + timedelta(seconds=5)
    )
    record = await store.get_call("CA0001")
    assert record is not None
    assert (record.status, record.end_reason) == (CallStatus.COMPLETED, EndReason.AGENT_HANGUP)
    assert record.ended_at == first_end


async def test_finish_of_unknown_call_is_a_no_op(store: CallStore) -> None:
    await store.finish_call("CA404", CallStatus.COMPLETED, EndReason.CALLER_HANGUP, T0)
    assert await store.get_call("CA404") is None
    assert await store.list_calls() == []


async def test_get_missing_call_is_none(store: CallStore) -> None:
    await store.create_call(new_call("CA0001"))
    assert await store.get_call("CA0002") is None


async def test_writes_for_an_unknown_call_are_refused(store: CallStore) -> None:
    with pytest.raises(UnknownCallError):
        await store.append_turn("CA404", caller(1, "hi", 0, 10))
    with pytest.raises(UnknownCallError):
        await store.append_event("CA404", CallEvent("barge_in", 5))
    assert await store.get_call("CA404") is None


async def test_a_value_the_database_cannot_hold_is_refused_for_good(store: CallStore) -> None:
    # Refused as such, not reported as an outage: a writer would retry an outage until its
    # call ended, holding up the rest of the call's record behind the one bad write.
    await store.create_call(new_call())
    with pytest.raises(RefusedValueError):
        await store.append_turn("CA0001", caller(1, "far too late", 2**64, 2**64 + 1))
    await store.append_turn("CA0001", caller(2, "still written", 100, 900))
    record = await store.get_call("CA0001")
    assert record is not None and [t.seq for t in record.turns] == [2]
    # Nor is such a value in any row: a lookup or a search with one finds nothing.
    assert await store.get_call("CA0001\x00") is None
    assert await store.list_calls(filters=CallFilter(text="still\x00")) == []
    assert await store.list_calls(filters=CallFilter(number="sip:alice\x00")) == []
    assert len(await store.list_calls()) == 1


async def test_naive_datetimes_are_refused(store: CallStore) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await store.create_call(new_call(started_at=datetime(2026, 11, 21, 10, 0)))


async def test_ping_answers_while_open(backend: Backend) -> None:
    store = backend.make()
    await store.open()
    assert await store.ping() is True
    await store.close()
    assert await store.ping() is False
    await store.close()  # closing twice is harmless


# -- turns and events ---------------------------------------------------------------------


async def test_turns_come_back_in_seq_order(store: CallStore) -> None:
    await store.create_call(new_call())
    await store.append_turn("CA0001", agent(2, "Sure!", 3100, 3600))
    await store.append_turn("CA0001", caller(1, "Hi there.", 1020, 2700))
    await store.append_turn("CA0001", caller(3, "Two people.", 5000, 5900))
    record = await store.get_call("CA0001")
    assert record is not None
    assert [t.seq for t in record.turns] == [1, 2, 3]
    assert record.turns[0] == caller(1, "Hi there.", 1020, 2700)
    assert record.turns[1] == agent(2, "Sure!", 3100, 3600)


async def test_same_seq_replaces_the_turn(store: CallStore) -> None:
    await store.create_call(new_call())
    full = "Sure! For how many people, and at what time?"
    await store.append_turn("CA0001", agent(2, full, 3100, 6000))
    # Barge-in later cut it: the same seq comes again with what the caller really heard.
    cut = agent(2, "Sure! For how many people", 3100, 4900, full_text=full)
    await store.append_turn("CA0001", cut)
    record = await store.get_call("CA0001")
    assert record is not None
    assert record.turns == [cut]
    assert record.turns[0].interrupted is True
    assert record.turns[0].full_text == full


async def test_turns_do_not_leak_between_calls(store: CallStore) -> None:
    await store.create_call(new_call("CA0001"))
    await store.create_call(new_call("CA0002", T0 + timedelta(seconds=1)))
    await store.append_turn("CA0001", caller(1, "first call", 0, 10))
    await store.append_turn("CA0002", caller(1, "second call", 0, 10))
    await store.append_event("CA0002", CallEvent("dtmf", 50, {"digit": "9"}))
    one = await store.get_call("CA0001")
    two = await store.get_call("CA0002")
    assert one is not None and two is not None
    assert [t.text for t in one.turns] == ["first call"]
    assert one.events == []
    assert [t.text for t in two.turns] == ["second call"]


async def test_events_ordered_by_time_then_insertion(store: CallStore) -> None:
    await store.create_call(new_call())
    await store.append_event("CA0001", CallEvent("dtmf", 8000, {"digit": "1"}))
    await store.append_event("CA0001", CallEvent("barge_in", 4900))
    await store.append_event("CA0001", CallEvent("dtmf", 8000, {"digit": "2"}))
    await store.append_event("CA0001", CallEvent("mark", 4900, {"name": "greeting", "n": 3}))
    record = await store.get_call("CA0001")
    assert record is not None
    assert [e.to_json() for e in record.events] == [
        {"type": "barge_in", "at_ms": 4900},
        {"type": "mark", "at_ms": 4900, "name": "greeting", "n": 3},
        {"type": "dtmf", "at_ms": 8000, "digit": "1"},
        {"type": "dtmf", "at_ms": 8000, "digit": "2"},
    ]


async def test_unicode_text_round_trips(store: CallStore) -> None:
    await store.create_call(new_call())
    text = "Grüß Gott — ¿mesa para 2? 👍"
    await store.append_turn("CA0001", caller(1, text, 0, 10))
    await store.append_event("CA0001", CallEvent("note", 1, {"text": text}))
    record = await store.get_call("CA0001")
    assert record is not None
    assert record.turns[0].text == text
    assert record.events[0].data == {"text": text}


async def test_concurrent_writes_all_land(store: CallStore) -> None:
    await store.create_call(new_call())
    await asyncio.gather(
        *(
            store.append_turn("CA0001", caller(seq, f"turn {seq}", seq, seq + 1))
            for seq in range(1, 41)
        ),
        *(
            store.append_event("CA0001", CallEvent("dtmf", n, {"digit": str(n % 10)}))
            for n in range(20)
        ),
    )
    record = await store.get_call("CA0001")
    assert record is not None
    assert [t.seq for t in record.turns] == list(range(1, 41))
    assert [e.at_ms for e in record.events] == list(range(20))


# -- listing ------------------------------------------------------------------------------


async def _three_calls(store: CallStore) -> None:
    # Created out of order on purpose: the list is ordered by started_at, not by insertion.
    await store.create_call(new_call("CA0002", T0 + timedelta(minutes=2)))
    await store.create_call(new_call("CA0001", T0))
    await store.create_call(new_call("CA0003", T0 + timedelta(minutes=5)))


async def test_list_is_newest_first_with_turn_counts(store: CallStore) -> None:
    await _three_calls(store)
    await store.append_turn("CA0002", caller(1, "a", 0, 1))
    await store.append_turn("CA0002", agent(2, "b", 2, 3))
    await store.append_turn("CA0002", agent(2, "b, cut", 2, 3, full_text="b, cut short"))
    await store.finish_call(
        "CA0002", CallStatus.COMPLETED, EndReason.CALLER_HANGUP, T0 + timedelta(minutes=3)
    )
    calls = await store.list_calls()
    assert [c.call_sid for c in calls] == ["CA0003", "CA0002", "CA0001"]
    by_sid = {c.call_sid: c for c in calls}
    assert by_sid["CA0002"].turn_count == 2
    assert by_sid["CA0001"].turn_count == 0
    assert by_sid["CA0002"].status is CallStatus.COMPLETED
    assert by_sid["CA0002"].end_reason is EndReason.CALLER_HANGUP
    assert by_sid["CA0002"].duration_ms == 60_000
    assert by_sid["CA0003"].status is CallStatus.IN_PROGRESS
    assert by_sid["CA0003"].duration_ms is None


async def test_list_limit(store: CallStore) -> None:
    await _three_calls(store)
    assert [c.call_sid for c in await store.list_calls(limit=2)] == ["CA0003", "CA0002"]
    assert [c.call_sid for c in await store.list_calls(limit=1)] == ["CA0003"]


async def test_list_before_is_strict_and_pages(store: CallStore) -> None:
    await _three_calls(store)
    first_page = await store.list_calls(limit=2)
    second_page = await store.list_calls(limit=2, before=first_page[-1].started_at)
    assert [c.call_sid for c in second_page] == ["CA0001"]
    # Strictly before: a call started exactly at `before` is on the previous page, not this one.
    exact = await store.list_calls(before=T0 + timedelta(minutes=5))
    assert [c.call_sid for c in exact] == ["CA0002", "CA0001"]
    assert await store.list_calls(before=T0) == []


async def test_list_before_accepts_any_time_zone(store: CallStore) -> None:
    await _three_calls(store)
    # 11:03 at UTC+1 is 10:03 UTC: after CA0002 (10:02), before CA0003 (10:05).
    plus_one = datetime(2026, 11, 21, 11, 3, tzinfo=timezone(timedelta(hours=1)))
    assert [c.call_sid for c in await store.list_calls(before=plus_one)] == ["CA0002", "CA0001"]


# -- the JSON shape -----------------------------------------------------------------------

# The example of CONTRACT.md, verbatim.
CONTRACT_EXAMPLE = """{
  "call_sid": "CA0001", "stream_sid": "MZ0001", "from": "+15551230000", "to": "+15557650000",
  "provider": "openai", "model": "gpt-realtime",
  "started_at": "2026-11-21T10:00:00.000Z", "ended_at": "2026-11-21T10:02:13.500Z",
  "status": "completed",
  "end_reason": "caller_hangup",
  "turns": [
    {"seq": 1, "role": "caller", "text": "Hi, I'd like to book a table.", "start_ms": 1020, "end_ms": 2700},
    {"seq": 2, "role": "agent", "text": "Sure! For how many people", "start_ms": 3100, "end_ms": 4900,
     "interrupted": true, "full_text": "Sure! For how many people, and at what time?"}
  ],
  "events": [
    {"type": "barge_in", "at_ms": 4900},
    {"type": "dtmf", "at_ms": 8000, "digit": "1"}
  ]
}"""


async def _contract_call(store: CallStore) -> None:
    await store.create_call(new_call("CA0001"))
    await store.append_turn("CA0001", caller(1, "Hi, I'd like to book a table.", 1020, 2700))
    await store.append_turn(
        "CA0001",
        agent(
            2,
            "Sure! For how many people",
            3100,
            4900,
            full_text="Sure! For how many people, and at what time?",
        ),
    )
    await store.append_event("CA0001", CallEvent("barge_in", 4900))
    await store.append_event("CA0001", CallEvent("dtmf", 8000, {"digit": "1"}))
    await store.finish_call(
        "CA0001",
        CallStatus.COMPLETED,
        EndReason.CALLER_HANGUP,
        T0 + timedelta(minutes=2, seconds=13, milliseconds=500),
    )


async def test_record_json_is_the_contract_shape(store: CallStore) -> None:
    await _contract_call(store)
    record = await store.get_call("CA0001")
    assert record is not None
    example = json.loads(CONTRACT_EXAMPLE)
    turns, events = example.pop("turns"), example.pop("events")
    # The example's keys in its order, then what the contract's "Channels" section adds and
    # the providers that served the call; same values all the way down.
    expected = {
        **example,
        "channel": "twilio",
        "agent": "default",
        "providers": ["openai"],
        "turns": turns,
        "events": events,
    }
    assert json.dumps(record.to_json()) == json.dumps(expected)


async def test_summary_json_is_the_record_without_turns_and_events(store: CallStore) -> None:
    await _contract_call(store)
    [summary] = await store.list_calls()
    expected = json.loads(CONTRACT_EXAMPLE)
    del expected["turns"], expected["events"]
    expected |= {"channel": "twilio", "agent": "default"}
    assert summary.to_json() == {**expected, "duration_ms": 133_500, "turn_count": 2}
    assert list(summary.to_json())[:12] == list(expected)


# -- durability ---------------------------------------------------------------------------


async def test_everything_written_survives_a_reopen(backend: Backend) -> None:
    if not backend.durable:
        pytest.skip(f"{backend.name} keeps nothing once closed")
    first = backend.make()
    await first.open()
    await first.create_call(new_call("CA0001"))
    await first.create_call(new_call("CA0002", T0 + timedelta(seconds=1)))
    for seq in range(1, 21):
        await first.append_turn("CA0001", caller(seq, f"turn {seq}", seq * 100, seq * 100 + 50))
    await first.append_event("CA0001", CallEvent("barge_in", 4900))
    await first.finish_call(
        "CA0001", CallStatus.COMPLETED, EndReason.CALLER_HANGUP, T0 + timedelta(1)
    )
    before_close = await first.get_call("CA0001")
    await first.close()

    second = backend.make()
    await second.open()
    try:
        after = await second.get_call("CA0001")
        assert after == before_close
        assert after is not None and len(after.turns) == 20
        live = await second.get_call("CA0002")
        assert live is not None and live.status is CallStatus.IN_PROGRESS
        # The reopened store keeps working on the same calls.
        await second.append_turn("CA0002", caller(1, "still here", 0, 10))
        assert [c.turn_count for c in await second.list_calls()] == [1, 20]
    finally:
        await second.close()


async def test_each_write_is_committed_when_it_returns(backend: Backend) -> None:
    # What a crash would leave: a second connection sees every write at once, without the
    # writer ever closing (a crash never gets to close).
    if not backend.durable:
        pytest.skip(f"{backend.name} cannot be opened twice")
    writer, reader = backend.make(), backend.make()
    await writer.open()
    await reader.open()
    try:
        await writer.create_call(new_call("CA0001"))
        for seq in range(1, 4):
            await writer.append_turn("CA0001", caller(seq, f"turn {seq}", seq, seq + 1))
            seen = await reader.get_call("CA0001")
            assert seen is not None and [t.seq for t in seen.turns] == list(range(1, seq + 1))
        await writer.finish_call("CA0001", CallStatus.FAILED, EndReason.PROVIDER_ERROR, T0)
        seen = await reader.get_call("CA0001")
        assert seen is not None and seen.end_reason is EndReason.PROVIDER_ERROR
    finally:
        await writer.close()
        await reader.close()


async def test_a_sip_call_keeps_its_channel_agent_and_sip_call_id(store: CallStore) -> None:
    sid = "SI" + "ab" * 16
    await store.create_call(
        new_call(sid, channel="sip", agent="front-desk", sip_call_id="1-7111@127.0.0.1")
    )
    record = await store.get_call(sid)
    assert record is not None
    shown = record.to_json()
    assert (shown["channel"], shown["agent"], shown["sip_call_id"]) == (
        "sip",
        "front-desk",
        "1-7111@127.0.0.1",
    )
    [summary] = await store.list_calls()
    assert summary.to_json()["channel"] == "sip" and summary.turn_count == 0
