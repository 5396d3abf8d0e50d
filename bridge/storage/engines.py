"""Where the store's transactions run, for each backend, tuned for how the bridge uses it.

The store writes every transaction as a plain function of a SQLAlchemy ``Connection`` and
hands it to a :class:`StoreEngine`, which runs it inside ``BEGIN`` ... ``COMMIT`` and hands
back its result:

SQLite: one connection of the standard ``sqlite3`` driver, owned by one worker thread of
the store's own, which runs each transaction whole. A slow disk never blocks the event loop,
and a transaction costs the loop one hop to the thread and back; an asyncio driver would
hop for every cursor, statement and commit (about eight per turn written, which made the
store the largest cost of a call after its sockets). Transactions queue for the thread in
order; other processes sharing the file wait on the busy timeout. WAL lets readers in other
processes run beside the writer, and ``synchronous = FULL`` makes each committed turn survive
a power cut, not only a crash. Every transaction starts with ``BEGIN IMMEDIATE``: one that
reads and then writes would otherwise fail at once with "database is locked" instead of
waiting its turn.

PostgreSQL: asyncpg with a small pool, the transaction run in SQLAlchemy's greenlet on the
loop (``run_sync``); connections are checked before use so the bridge recovers by itself
after the database restarts.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from bridge.errors import ConfigurationError

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_POOL_SIZE = 5
PG_MAX_OVERFLOW = 10
PG_CONNECT_TIMEOUT_S = 5.0
PG_COMMAND_TIMEOUT_S = 30.0


class StoreEngine(Protocol):
    """Runs the store's transactions against one database."""

    #: SQLAlchemy's name of the backend's dialect: ``"sqlite"`` or ``"postgresql"``.
    dialect_name: str

    async def run(self, job: Callable[[Connection], T]) -> T:
        """``job(connection)`` in one transaction, committed if it returns, rolled back if it
        raises (and the exception raised here)."""
        ...

    async def dispose(self) -> None:
        """Close the connections; wait for transactions already handed over first."""
        ...


class ThreadedEngine:
    """A synchronous engine whose transactions all run, in order, on one thread of its own."""

    def __init__(self, engine: Engine, thread_name: str) -> None:
        self.engine = engine
        self.dialect_name = engine.dialect.name
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)

    async def run(self, job: Callable[[Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._run, job)

    def _run(self, job: Callable[[Connection], T]) -> T:
        with self.engine.begin() as conn:
            return job(conn)

    async def dispose(self) -> None:
        # Behind whatever was handed over already: the thread runs one thing at a time.
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self.engine.dispose)
        finally:
            self._thread.shutdown(wait=False)


class GreenletEngine:
    """An asyncio engine: each transaction runs in SQLAlchemy's greenlet on the loop."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.dialect_name = engine.dialect.name

    async def run(self, job: Callable[[Connection], T]) -> T:
        async with self.engine.begin() as conn:
            return await conn.run_sync(job)

    async def dispose(self) -> None:
        await self.engine.dispose()


def sqlite_engine(path: str) -> ThreadedEngine:
    """An engine over the SQLite file at ``path`` (or ``":memory:"``)."""
    engine = create_engine(
        URL.create("sqlite+pysqlite", database=path),
        # One connection: SQLite has one writer anyway, and for ":memory:" the connection is
        # the database. Only the store's thread ever uses it.
        poolclass=QueuePool,
        pool_size=1,
        max_overflow=0,
        # A memory database lives in its one connection: never recycle it.
        pool_recycle=-1,
    )

    @event.listens_for(engine, "connect")
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

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return ThreadedEngine(engine, thread_name="sqlite-store")


def _switch_to_wal(cursor: Any) -> None:
    """Put the file in WAL mode, waiting out other connections as the busy timeout would.

    Switching the journal mode needs the file to itself, and SQLite gives up on it at once
    with "database is locked" instead of calling the busy handler while another connection
    (a second bridge opening the same new file) holds a lock. So wait here up to the same
    timeout. This runs on the store's own thread, so sleeping holds up nothing else. Once the
    file is in WAL mode the setting is a no-op.
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
        time.sleep(pause_s)
        pause_s = min(pause_s * 2, 0.1)


def postgres_engine(url: str | URL, *, schema: str | None = None) -> GreenletEngine:
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
    return GreenletEngine(
        create_async_engine(
            parsed,
            pool_size=PG_POOL_SIZE,
            max_overflow=PG_MAX_OVERFLOW,
            pool_pre_ping=True,
            connect_args=connect_args,
        )
    )
