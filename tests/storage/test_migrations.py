"""The schema is created and changed only by the Alembic migrations, on both backends."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.engine import Connection

from bridge.errors import ConfigurationError
from bridge.storage import SqlCallStore, postgres_store, sqlite_store
from bridge.storage.engines import postgres_engine, sqlite_engine
from bridge.storage.migrate import alembic_config, head_revision
from bridge.storage.tables import metadata
from tests.conftest import PG_URL
from tests.storage.samples import caller, new_call

# The schema the bridge created by hand before it had migrations, as its users have it.
_LEGACY_DDL = (
    "CREATE TABLE schema_version (version INTEGER NOT NULL)",
    "INSERT INTO schema_version VALUES (1)",
    """CREATE TABLE calls (call_sid TEXT PRIMARY KEY, stream_sid TEXT NOT NULL,
        from_number TEXT NOT NULL, to_number TEXT NOT NULL, provider TEXT NOT NULL,
        model TEXT NOT NULL, started_at INTEGER NOT NULL, ended_at INTEGER,
        status TEXT NOT NULL, end_reason TEXT)""",
    "CREATE INDEX calls_started_at ON calls (started_at)",
    """CREATE TABLE turns (call_sid TEXT NOT NULL REFERENCES calls (call_sid) ON DELETE CASCADE,
        seq INTEGER NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL,
        start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, interrupted INTEGER NOT NULL,
        full_text TEXT, PRIMARY KEY (call_sid, seq)) WITHOUT ROWID""",
    """CREATE TABLE events (id INTEGER PRIMARY KEY,
        call_sid TEXT NOT NULL REFERENCES calls (call_sid) ON DELETE CASCADE,
        type TEXT NOT NULL, at_ms INTEGER NOT NULL, data TEXT NOT NULL)""",
    "CREATE INDEX events_call ON events (call_sid, at_ms, id)",
    "INSERT INTO calls VALUES ('CA01', 'MZ01', '+1555', '+1666', 'openai', 'gpt-realtime',"
    " 1795000000000000, NULL, 'in_progress', NULL)",
    "INSERT INTO turns VALUES ('CA01', 1, 'caller', 'kept across the upgrade', 10, 900, 0, NULL)",
    "INSERT INTO events (call_sid, type, at_ms, data) VALUES ('CA01', 'dtmf', 5, '{\"digit\":\"1\"}')",
    "INSERT INTO events (call_sid, type, at_ms, data) VALUES ('CA01', 'dtmf', 5, '{\"digit\":\"1\"}')",
)


def _schema_diff(connection: Connection) -> list[Any]:
    return list(compare_metadata(MigrationContext.configure(connection), metadata))


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def test_sqlite_file_is_migrated_to_head_in_wal_mode(tmp_path: Path) -> None:
    db = tmp_path / "nested" / "calls.db"
    store = sqlite_store(str(db))
    await store.open()
    await store.close()
    engine = sqlite_engine(str(db))
    assert await engine.run(_revision) == head_revision()
    assert await engine.run(_schema_diff) == []
    assert (
        await engine.run(lambda conn: conn.execute(text("PRAGMA journal_mode")).scalar()) == "wal"
    )
    await engine.dispose()


async def test_postgres_schema_is_migrated_to_head_and_matches_the_tables(pg_schema: str) -> None:
    store = postgres_store(PG_URL, schema=pg_schema)
    await store.open()
    await store.close()
    engine = postgres_engine(PG_URL, schema=pg_schema)
    assert await engine.run(_revision) == head_revision()
    assert await engine.run(_schema_diff) == []
    await engine.dispose()


async def test_migrations_go_down_and_up_again_on_postgres(pg_schema: str) -> None:
    store = postgres_store(PG_URL, schema=pg_schema)
    await store.open()
    await store.close()
    engine = postgres_engine(PG_URL, schema=pg_schema)

    def down_and_up(connection: Connection) -> list[str | None]:
        config = alembic_config(connection)
        command.downgrade(config, "base")
        at_base = _revision(connection)
        command.upgrade(config, "head")
        return [at_base, _revision(connection)]

    assert await engine.run(down_and_up) == [None, head_revision()]
    assert await engine.run(_schema_diff) == []
    await engine.dispose()


async def test_a_database_from_before_migrations_is_upgraded_keeping_its_calls(
    tmp_path: Path,
) -> None:
    db = tmp_path / "old.db"
    with sqlite3.connect(db) as conn:
        for statement in _LEGACY_DDL:
            conn.execute(statement)
    conn.close()

    store = sqlite_store(str(db))
    await store.open()
    try:
        record = await store.get_call("CA01")
        assert record is not None
        assert [t.text for t in record.turns] == ["kept across the upgrade"]
        # The duplicate event the old schema allowed is folded into one.
        assert [e.to_json() for e in record.events] == [{"type": "dtmf", "at_ms": 5, "digit": "1"}]
        await store.append_turn("CA01", caller(2, "and written to after it", 1000, 1500))
    finally:
        await store.close()
    with sqlite3.connect(db) as conn:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        version = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    conn.close()
    assert "schema_version" not in tables and "instances" in tables
    assert version == [(head_revision(),)]


async def test_a_schema_newer_than_the_bridge_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    store = sqlite_store(str(db))
    await store.open()
    await store.close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0099'")
    conn.close()
    newer = sqlite_store(str(db))
    with pytest.raises(ConfigurationError, match="newer than this bridge"):
        await newer.open()
    assert await newer.ping() is False


async def test_many_bridges_starting_at_once_on_a_new_sqlite_file(tmp_path: Path) -> None:
    db = str(tmp_path / "shared.db")
    await _open_together([sqlite_store(db) for _ in range(4)])


async def test_many_bridges_starting_at_once_on_a_new_postgres_schema(pg_schema: str) -> None:
    await _open_together([postgres_store(PG_URL, schema=pg_schema) for _ in range(4)])


async def _open_together(stores: list[SqlCallStore]) -> None:
    # Each store has its own engine and connections, as separate processes would.
    await asyncio.gather(*(store.open() for store in stores))
    try:
        await stores[0].create_call(new_call("CA01"))
        for store in stores:
            assert await store.get_call("CA01") is not None
    finally:
        await asyncio.gather(*(store.close() for store in stores))


async def test_a_bridge_opening_a_new_sqlite_file_another_process_holds_waits_its_turn(
    tmp_path: Path,
) -> None:
    # Another process is mid-write on a file still in rollback-journal mode: switching it to
    # WAL fails at once with "database is locked" unless the bridge waits, as it does for
    # every other lock.
    db = tmp_path / "busy.db"
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("CREATE TABLE other_process (x INTEGER)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO other_process VALUES (1)")
    store = sqlite_store(str(db))
    opening = asyncio.create_task(store.open())
    try:
        await asyncio.sleep(0.3)
        assert not opening.done()
        other.execute("COMMIT")
        await asyncio.wait_for(opening, 10)
        await store.create_call(new_call("CA01"))
        assert await store.get_call("CA01") is not None
    finally:
        other.close()
        await store.close()
