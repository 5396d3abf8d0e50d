"""A call's record writer rides out a store outage without losing or reordering anything."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import structlog

from bridge.call.records import CallEvent, CallStatus, EndReason
from bridge.storage import CallStore, StoreUnavailableError, sqlite_store
from bridge.storage.record_writer import CallRecordWriter
from tests.storage.samples import T0, agent, caller, new_call

FAST = (0.001, 0.002, 0.005)


class FlakyStore:
    """A real store behind a switch: while ``down``, every write fails as an outage would.
    With ``commit_then_fail`` the write lands but the caller is told it failed (the
    connection died after the commit), so the writer's retry repeats a landed write."""

    def __init__(self, store: CallStore) -> None:
        self.store = store
        self.down = False
        self.commit_then_fail = False
        self.failures = 0
        self.writes: list[str] = []

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.store, name)
        if name not in {"create_call", "append_turn", "append_event", "finish_call"}:
            return real

        async def write(*args: Any) -> None:
            if self.down:
                self.failures += 1
                raise StoreUnavailableError("connection refused")
            await real(*args)
            self.writes.append(name)
            if self.commit_then_fail:
                self.commit_then_fail = False
                raise StoreUnavailableError("connection reset after commit")

        return write


@pytest.fixture
async def flaky() -> AsyncIterator[FlakyStore]:
    store = sqlite_store(":memory:")
    await store.open()
    yield FlakyStore(store)
    await store.close()


def _writer(store: FlakyStore) -> CallRecordWriter:
    writer = CallRecordWriter(store, "CA0001", structlog.get_logger("test"), FAST)  # type: ignore[arg-type]
    writer.start()
    return writer


async def _wait(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.002)
    raise AssertionError("condition never held")


async def test_an_outage_mid_call_loses_nothing_and_keeps_the_order(flaky: FlakyStore) -> None:
    writer = _writer(flaky)
    writer.create(new_call())
    writer.turn(caller(1, "hello", 0, 900))
    await _wait(lambda: flaky.writes == ["create_call", "append_turn"])

    flaky.down = True
    writer.turn(agent(2, "Hi! How can", 1000, 1800, "Hi! How can I help?"))
    writer.event(CallEvent("barge_in", 1800))
    writer.turn(caller(3, "a table please", 1900, 2600))
    await _wait(lambda: flaky.failures >= 5)  # retried, not dropped
    flaky.down = False

    await writer.close(CallStatus.COMPLETED, EndReason.CALLER_HANGUP, T0, timeout_s=5)
    assert writer.lost == 0
    record = await flaky.store.get_call("CA0001")
    assert record is not None
    assert [t.seq for t in record.turns] == [1, 2, 3]
    assert record.turns[1].interrupted and record.turns[1].full_text == "Hi! How can I help?"
    assert [e.type for e in record.events] == ["barge_in"]
    assert (record.status, record.end_reason) == (CallStatus.COMPLETED, EndReason.CALLER_HANGUP)
    # Written in the order handed over, the finish last.
    assert flaky.writes == [
        "create_call", "append_turn", "append_turn", "append_event", "append_turn", "finish_call",
    ]  # fmt: skip


async def test_a_retried_write_that_had_landed_leaves_one_row(flaky: FlakyStore) -> None:
    writer = _writer(flaky)
    writer.create(new_call())
    await _wait(lambda: flaky.writes == ["create_call"])
    flaky.commit_then_fail = True
    writer.event(CallEvent("dtmf", 500, {"digit": "7"}))
    await writer.close(CallStatus.COMPLETED, EndReason.CALLER_HANGUP, T0, timeout_s=5)
    record = await flaky.store.get_call("CA0001")
    assert record is not None and len(record.events) == 1
    assert flaky.writes.count("append_event") == 2


async def test_the_call_is_answered_while_the_store_is_down(flaky: FlakyStore) -> None:
    flaky.down = True
    writer = _writer(flaky)
    writer.create(new_call())  # returns at once: nothing waits on the store
    writer.turn(caller(1, "hello?", 0, 700))
    await _wait(lambda: flaky.failures >= 2)
    assert await flaky.store.get_call("CA0001") is None
    flaky.down = False
    await writer.close(CallStatus.COMPLETED, EndReason.CALLER_HANGUP, T0, timeout_s=5)
    record = await flaky.store.get_call("CA0001")
    assert record is not None and [t.text for t in record.turns] == ["hello?"]


async def test_a_store_down_for_good_gives_up_when_closing_and_counts_the_loss(
    flaky: FlakyStore,
) -> None:
    writer = _writer(flaky)
    writer.create(new_call())
    await _wait(lambda: flaky.writes == ["create_call"])
    flaky.down = True
    writer.turn(caller(1, "lost", 0, 700))
    writer.turn(caller(2, "also lost", 800, 1500))
    await writer.close(CallStatus.COMPLETED, EndReason.CALLER_HANGUP, T0, timeout_s=0.2)
    assert writer.lost == 3  # two turns and the finish
    with pytest.raises(RuntimeError, match="closed"):
        writer.turn(caller(3, "too late", 1600, 1700))


async def test_a_refused_write_is_counted_and_the_rest_still_land(flaky: FlakyStore) -> None:
    writer = _writer(flaky)
    writer.turn(caller(1, "before the call exists", 0, 10))  # refused: unknown call
    writer.create(new_call())
    writer.turn(caller(2, "after", 20, 30))
    await writer.close(CallStatus.COMPLETED, EndReason.CALLER_HANGUP, T0, timeout_s=5)
    assert writer.lost == 1
    record = await flaky.store.get_call("CA0001")
    assert record is not None and [t.seq for t in record.turns] == [2]


async def test_a_turn_the_database_refuses_is_lost_alone(store: CallStore) -> None:
    # On every backend: the one turn is counted lost at once, and what the call writes after
    # it, its finish included, still lands.
    writer = CallRecordWriter(store, "CA0001", structlog.get_logger("test"), FAST)
    writer.start()
    writer.create(new_call())
    writer.turn(caller(1, "out of range", 2**64, 2**64 + 1))
    writer.turn(caller(2, "after", 20, 30))
    await writer.close(CallStatus.COMPLETED, EndReason.CALLER_HANGUP, T0, timeout_s=10)
    assert writer.lost == 1
    record = await store.get_call("CA0001")
    assert record is not None and [t.seq for t in record.turns] == [2]
    assert record.status is CallStatus.COMPLETED
