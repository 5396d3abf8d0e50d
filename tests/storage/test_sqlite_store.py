"""What is particular to the SQLite store and to choosing a store from the database URL."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.call.records import Role, Turn
from bridge.errors import ConfigurationError, LocalProtocolError
from bridge.storage import (
    NewCall,
    SqliteCallStore,
    StoreUnavailableError,
    open_store,
)

CALL = NewCall(
    call_sid="CA0001",
    stream_sid="MZ0001",
    from_number="+15551230000",
    to_number="+15557650000",
    provider="local",
    model="echo",
    started_at=datetime(2026, 11, 21, 10, 0, tzinfo=UTC),
)


async def test_file_is_created_with_schema_v1_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "dir" / "calls.db"
    store = SqliteCallStore(str(db))
    await store.open()
    await store.create_call(CALL)
    await store.close()

    assert db.exists()
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert {"calls", "turns", "events", "schema_version", "calls_started_at"} <= tables
    conn.close()


async def test_reopening_keeps_one_schema_version_row(tmp_path: Path) -> None:
    db = str(tmp_path / "calls.db")
    for _ in range(3):
        store = SqliteCallStore(db)
        await store.open()
        await store.close()
    conn = sqlite3.connect(db)
    assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone() == (1,)
    conn.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = str(tmp_path / "calls.db")
    store = SqliteCallStore(db)
    await store.open()
    await store.close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE schema_version SET version = 99")
    conn.commit()
    conn.close()

    newer = SqliteCallStore(db)
    with pytest.raises(ConfigurationError, match="schema version 99"):
        await newer.open()
    assert await newer.ping() is False


async def test_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    # A directory where the file should be.
    store = SqliteCallStore(str(tmp_path))
    with pytest.raises(StoreUnavailableError, match="cannot open"):
        await store.open()


async def test_misuse_is_a_local_error(tmp_path: Path) -> None:
    store = SqliteCallStore(":memory:")
    with pytest.raises(LocalProtocolError, match="open"):
        await store.create_call(CALL)
    await store.open()
    with pytest.raises(LocalProtocolError):
        await store.open()
    await store.close()
    with pytest.raises(LocalProtocolError):
        await store.get_call("CA0001")


async def test_connection_lives_on_one_worker_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    # sqlite3 connections refuse use from any thread but their own (check_same_thread), so
    # every query succeeding proves the worker is the only user; here we check it is not
    # the event loop's thread.
    threads: list[int] = []
    real_connect = sqlite3.connect

    def connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        threads.append(threading.get_ident())
        return real_connect(*args, **kwargs)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(sqlite3, "connect", connect)
    store = SqliteCallStore(":memory:")
    await store.open()
    try:
        await store.create_call(CALL)
        await store.append_turn("CA0001", Turn(1, Role.CALLER, "hi", 0, 100))
        record = await store.get_call("CA0001")
        assert record is not None and len(record.turns) == 1
    finally:
        await store.close()
    assert len(threads) == 1
    assert threads[0] != threading.get_ident()


async def test_stores_are_not_tied_to_one_event_loop() -> None:
    # The review API may run the store from another loop (a test client's, uvicorn's).
    store = SqliteCallStore(":memory:")
    await store.open()
    try:
        await asyncio.to_thread(lambda: asyncio.run(store.create_call(CALL)))
        assert await store.get_call("CA0001") is not None
    finally:
        await store.close()


# -- open_store -----------------------------------------------------------------------------


def test_relative_absolute_and_memory_urls(tmp_path: Path) -> None:
    relative = open_store("sqlite:///./bridge.db")
    assert isinstance(relative, SqliteCallStore) and relative.path == "./bridge.db"
    absolute = open_store(f"sqlite:///{tmp_path}/calls.db")
    assert isinstance(absolute, SqliteCallStore) and absolute.path == f"{tmp_path}/calls.db"
    assert absolute.path.startswith("/")
    memory = open_store("sqlite:///:memory:")
    assert isinstance(memory, SqliteCallStore) and memory.path == ":memory:"


async def test_open_store_does_not_open(tmp_path: Path) -> None:
    db = tmp_path / "later.db"
    store = open_store(f"sqlite:///{db}")
    assert not db.exists()
    await store.open()
    await store.close()
    assert db.exists()


def test_postgres_is_not_available_yet() -> None:
    with pytest.raises(ConfigurationError, match="PostgreSQL support is not available yet"):
        open_store("postgresql://bridge@db:5432/bridge")


@pytest.mark.parametrize(
    "url",
    ["", "bridge.db", "mysql://u@h/db", "sqlite://host/bridge.db", "sqlite:///", "sqlite:"],
)
def test_other_urls_are_configuration_errors(url: str) -> None:
    with pytest.raises(ConfigurationError, match="BRIDGE_DATABASE_URL"):
        open_store(url)
