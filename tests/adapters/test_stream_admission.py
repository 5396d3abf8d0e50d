"""The gate before a model session: a bad token or a second stream for a call is refused, on
this instance from memory and across instances through the store; a store that cannot answer
in time lets the call through unchecked rather than leave a caller waiting."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from bridge.adapters import stream_admission
from bridge.adapters.stream_admission import Admission, StreamAdmission
from bridge.protocols.stream_token import mint_stream_token
from bridge.storage import Instance, NewCall, SqlCallStore, postgres_store, sqlite_store
from tests.conftest import PG_URL

SECRET = b"s" * 32
NOW = 1_800_000_000.0
LOG = structlog.get_logger("test")


def _call(sid: str, stream: str = "MZ1") -> NewCall:
    return NewCall(sid, stream, "+1555", "+1666", "openai", "gpt-realtime", datetime.now(UTC))


async def _store(path: Path, instance: str) -> SqlCallStore:
    store = sqlite_store(str(path), instance=Instance(instance, "host", 1))
    await store.open()
    return store


@pytest.fixture
async def stores(tmp_path: Path) -> AsyncIterator[tuple[SqlCallStore, SqlCallStore]]:
    a, b = await _store(tmp_path / "calls.db", "a"), await _store(tmp_path / "calls.db", "b")
    yield a, b
    await a.close()
    await b.close()


async def test_a_call_is_admitted_once_here_and_on_any_other_instance(
    stores: tuple[SqlCallStore, SqlCallStore],
) -> None:
    a, b = (StreamAdmission(store, SECRET, lambda: NOW) for store in stores)
    token = mint_stream_token(SECRET, "CA1", NOW)
    assert a.check("CA1", "0" + token) is Admission.BAD_TOKEN
    assert a.check("CA2", token) is Admission.BAD_TOKEN
    assert a.check("CA1", token) is None
    assert await a.claim(_call("CA1"), LOG) is Admission.CLAIMED
    # The same call again: here from memory, elsewhere from the store.
    assert a.check("CA1", mint_stream_token(SECRET, "CA1", NOW + 5)) is Admission.SECOND_STREAM
    assert b.check("CA1", token) is None
    assert await b.claim(_call("CA1", "MZ2"), LOG) is Admission.SECOND_STREAM


async def test_a_store_that_cannot_answer_in_time_lets_the_call_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_admission, "CLAIM_TIMEOUT_S", 0.3)
    store = await _store(tmp_path / "calls.db", "a")
    blocker = sqlite3.connect(tmp_path / "calls.db", isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database
        admission = StreamAdmission(store, SECRET, lambda: NOW)
        assert await admission.claim(_call("CA9"), LOG) is Admission.UNCHECKED
        blocker.execute("COMMIT")
        # The late claim lands by itself once the database is free.
        for _ in range(50):
            if await store.get_call("CA9") is not None:
                break
            await asyncio.sleep(0.1)
        assert await store.get_call("CA9") is not None
        # Let the late claim finish returning its connection before the store closes.
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        await asyncio.wait_for(asyncio.gather(*others, return_exceptions=True), 5)
    finally:
        blocker.close()
        await store.close()


async def test_a_call_whose_record_the_store_refuses_is_still_answered(pg_schema: str) -> None:
    # A value the database cannot hold (here a number past PostgreSQL's 128 characters) is
    # no reason to turn the caller away; the record writer counts the record lost.
    store = postgres_store(PG_URL, schema=pg_schema, instance=Instance("a", "host", 1))
    await store.open()
    try:
        admission = StreamAdmission(store, SECRET, lambda: NOW)
        call = NewCall("CA1", "MZ1", "+1" * 100, "+1666", "openai", "m", datetime.now(UTC))
        assert await admission.claim(call, LOG) is Admission.UNCHECKED
        assert await store.get_call("CA1") is None
    finally:
        await store.close()
