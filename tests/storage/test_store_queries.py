"""Searching, idempotent writes and purging: contract tests run on every backend."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bridge.call.records import CallEvent, CallStatus, EndReason
from bridge.storage import CallFilter, CallStore
from tests.storage.samples import T0, agent, caller, new_call


async def _log(store: CallStore) -> None:
    """Four calls over three days with distinct numbers, texts and outcomes."""
    await store.create_call(new_call("CA01", T0, from_number="+15551230000"))
    await store.append_turn("CA01", caller(1, "I'd like to book a table for two", 900, 2500))
    await store.append_turn(
        "CA01", agent(2, "Sure, for what", 2900, 3600, "Sure, for what time tonight?")
    )
    await store.finish_call(
        "CA01", CallStatus.COMPLETED, EndReason.CALLER_HANGUP, T0 + timedelta(minutes=2)
    )

    await store.create_call(new_call("CA02", T0 + timedelta(days=1), from_number="+447700900123"))
    await store.append_turn("CA02", caller(1, "Where is my PARCEL?", 500, 1500))
    await store.finish_call(
        "CA02", CallStatus.FAILED, EndReason.PROVIDER_ERROR, T0 + timedelta(days=1, minutes=1)
    )

    await store.create_call(
        new_call(
            "CA03", T0 + timedelta(days=2), from_number="client:alice", to_number="+15559990000"
        )
    )
    await store.append_turn("CA03", caller(1, "100% sure_about that", 0, 900))

    await store.create_call(new_call("CA04", T0 + timedelta(days=2, hours=1)))
    await store.append_turn("CA04", caller(1, "Another table booking", 0, 900))


async def _sids(store: CallStore, **fields: object) -> list[str]:
    calls = await store.list_calls(filters=CallFilter(**fields))  # type: ignore[arg-type]
    return [c.call_sid for c in calls]


# -- search -------------------------------------------------------------------------------


async def test_no_filter_lists_everything_newest_first(store: CallStore) -> None:
    await _log(store)
    assert await _sids(store) == ["CA04", "CA03", "CA02", "CA01"]


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("+15551230000", ["CA04", "CA01"]),
        ("(555) 123-0000", ["CA04", "CA01"]),  # punctuation ignored, digits matched
        ("7700 900", ["CA02"]),
        ("9990000", ["CA03"]),  # the called number counts too
        ("ALICE", ["CA03"]),  # no digits: matched as written, ignoring case
        ("0000000", []),
    ],
)
async def test_search_by_number(store: CallStore, number: str, expected: list[str]) -> None:
    await _log(store)
    assert await _sids(store, number=number) == expected


async def test_search_by_transcript_text_ignores_case_and_reads_unheard_text(
    store: CallStore,
) -> None:
    await _log(store)
    assert await _sids(store, text="TABLE") == ["CA04", "CA01"]
    assert await _sids(store, text="parcel") == ["CA02"]
    # Only in the part of the agent's answer the caller never heard.
    assert await _sids(store, text="time tonight") == ["CA01"]
    assert await _sids(store, text="nobody said this") == []


async def test_search_text_wildcards_are_literal(store: CallStore) -> None:
    await _log(store)
    assert await _sids(store, text="100%") == ["CA03"]
    assert await _sids(store, text="sure_about") == ["CA03"]
    # A bare % or _ must not match every call.
    assert await _sids(store, text="%") == ["CA03"]
    assert await _sids(store, text="_") == ["CA03"]


async def test_search_by_date_range_is_half_open(store: CallStore) -> None:
    await _log(store)
    day2 = T0 + timedelta(days=1)
    assert await _sids(store, started_from=day2) == ["CA04", "CA03", "CA02"]
    assert await _sids(store, started_until=day2) == ["CA01"]
    assert await _sids(store, started_from=day2, started_until=day2 + timedelta(days=1)) == ["CA02"]


async def test_search_by_status(store: CallStore) -> None:
    await _log(store)
    assert await _sids(store, status=CallStatus.IN_PROGRESS) == ["CA04", "CA03"]
    assert await _sids(store, status=CallStatus.FAILED) == ["CA02"]


async def test_filters_combine_and_page(store: CallStore) -> None:
    await _log(store)
    wanted = CallFilter(number="555 123", text="table")
    first = await store.list_calls(limit=1, filters=wanted)
    assert [c.call_sid for c in first] == ["CA04"]
    second = await store.list_calls(limit=1, before=first[-1].started_at, filters=wanted)
    assert [c.call_sid for c in second] == ["CA01"]
    assert await store.list_calls(limit=1, before=second[-1].started_at, filters=wanted) == []


async def test_blank_filters_match_everything(store: CallStore) -> None:
    await _log(store)
    assert await _sids(store, number="  ", text="") == ["CA04", "CA03", "CA02", "CA01"]


# -- idempotent writes --------------------------------------------------------------------


async def test_retried_writes_leave_one_row_each(store: CallStore) -> None:
    await store.create_call(new_call("CA01"))
    for _ in range(3):
        await store.create_call(new_call("CA01"))
        await store.append_turn("CA01", caller(1, "hello", 0, 500))
        await store.append_event("CA01", CallEvent("dtmf", 800, {"digit": "5"}))
        await store.append_event("CA01", CallEvent("barge_in", 900))
        await store.finish_call("CA01", CallStatus.COMPLETED, EndReason.CALLER_HANGUP, T0)
    record = await store.get_call("CA01")
    assert record is not None
    assert len(record.turns) == 1
    assert [e.to_json() for e in record.events] == [
        {"type": "dtmf", "at_ms": 800, "digit": "5"},
        {"type": "barge_in", "at_ms": 900},
    ]
    assert [c.call_sid for c in await store.list_calls()] == ["CA01"]


async def test_distinct_events_at_one_moment_are_all_kept(store: CallStore) -> None:
    await store.create_call(new_call("CA01"))
    await store.append_event("CA01", CallEvent("dtmf", 800, {"digit": "5"}))
    await store.append_event("CA01", CallEvent("dtmf", 800, {"digit": "6"}))
    await store.append_event("CA01", CallEvent("barge_in", 800))
    record = await store.get_call("CA01")
    assert record is not None and len(record.events) == 3


async def test_event_data_key_order_does_not_make_a_new_event(store: CallStore) -> None:
    await store.create_call(new_call("CA01"))
    await store.append_event("CA01", CallEvent("transfer", 10, {"to": "+1555", "ok": True}))
    await store.append_event("CA01", CallEvent("transfer", 10, {"ok": True, "to": "+1555"}))
    record = await store.get_call("CA01")
    assert record is not None and len(record.events) == 1


# -- purge --------------------------------------------------------------------------------


async def test_purge_removes_old_finished_calls_with_their_turns_and_events(
    store: CallStore,
) -> None:
    await _log(store)
    await store.append_event("CA01", CallEvent("dtmf", 100, {"digit": "1"}))
    cutoff = T0 + timedelta(days=2, minutes=30)
    purged = await store.purge_calls(cutoff)
    # CA03 is older than the cut-off but still live: a live call is never purged.
    assert sorted(purged) == ["CA01", "CA02"]
    assert await store.get_call("CA01") is None
    assert await _sids(store) == ["CA04", "CA03"]
    assert await _sids(store, text="table") == ["CA04"]
    # A call created again under a purged SID starts clean: no turns or events left behind.
    await store.create_call(new_call("CA01", T0 + timedelta(days=9)))
    again = await store.get_call("CA01")
    assert again is not None and again.turns == [] and again.events == []
    assert await store.purge_calls(cutoff) == []
