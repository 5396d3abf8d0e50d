"""SQLAlchemy engines for the two backends, each tuned for how the bridge uses it.

SQLite: one connection through aiosqlite (its own thread, so a slow disk never blocks the
event loop). In-process work queues for that connection in order; other processes sharing
the file wait on the busy timeout. WAL lets readers in other processes run beside the writer,
and ``synchronous = FULL`` makes each committed turn survive a power cut, not only a crash.
Every transaction starts with ``BEGIN IMMEDIATE``: a transaction that reads and then writes
would otherwise fail at once with "database is locked" instead of waiting its turn.

PostgreSQL: asyncpg with a small pool; connections are checked before use so the bridge
recovers by itself after the database restarts.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util import await_only

from bridge.errors import ConfigurationError

SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_POOL_SIZE = 5
PG_MAX_OVERFLOW = 10
PG_CONNECT_TIMEOUT_S = 5.0
PG_COMMAND_TIMEOUT_S = 30.0


def sqlite_engine(path: str) -> AsyncEngine:
    """An engine over the SQLite file at ``path`` (or ``":memory:"``)."""
    engine = create_async_engine(
        URL.create("sqlite+aiosqlite", database=path),
        # One connection, queued for: SQLite has one writer anyway, and for ":memory:" the
        # connection is the database (SQLAlchemy's default there would share it unguarded).
        poolclass=AsyncAdaptedQueuePool,
        pool_size=1,
        max_overflow=0,
        # A memory database lives in its one connection: never recycle it.
        pool_recycle=-1,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control from the driver: SQLAlchemy's begin event below issues it.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            _switch_to_wal(cursor)
            cursor.execute("PRAGMA synchronous = FULL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _switch_to_wal(cursor: Any) -> None:
    """Put the file in WAL mode, waiting out other processes as the busy timeout would.

    Switching the journal mode needs the file to itself, and SQLite gives up on it at once
    with "database is locked" instead of calling the busy handler while another connection
    (a second bridge opening the same new file) holds a lock. So wait here up to the same
    timeout. This runs inside SQLAlchemy's greenlet on the event loop, so the pause is an
    asyncio sleep: blocking would stall the very connection that holds the lock when both
    are in one process. Once the file is in WAL mode the setting is a no-op.
    """
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    pause_s = 0.005
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
        await_only(asyncio.sleep(pause_s))
        pause_s = min(pause_s * 2, 0.1)


def postgres_engine(url: str | URL, *, schema: str | None = None) -> AsyncEngine:
    """A pooled asyncpg engine for ``url``; ``schema``, if given, is the search path."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"BRIDGE_DATABASE_URL is not a database URL: {exc}") from None
    parsed = parsed.set(drivername="postgresql+asyncpg")
    connect_args: dict[str, Any] = {
        "timeout": PG_CONNECT_TIMEOUT_S,
        "command_timeout": PG_COMMAND_TIMEOUT_S,
        "server_settings": {"application_name": "bridge"},
    }
    if schema is not None:
        connect_args["server_settings"]["search_path"] = schema
    return create_async_engine(
        parsed,
        pool_size=PG_POOL_SIZE,
        max_overflow=PG_MAX_OVERFLOW,
        pool_pre_ping=True,
        connect_args=connect_args,
    )
