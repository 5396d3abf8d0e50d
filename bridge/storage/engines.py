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

PostgreSQL: asyncpg with a small pool, each transaction run in SQLAlchemy's greenlet
(``run_sync``) on an event loop of the store's own, in a thread of its own, so that the
calls' loop only hands it over and gets the outcome back; connections are checked before use
so the bridge recovers by itself after the database restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import QueuePool

from bridge.errors import ConfigurationError

T = TypeVar("T")

SQLITE_BUSY_TIMEOUT_MS = 10_000
# A bound on one group commit, so that a long queue is written in transactions of sensible size.
MAX_GROUP = 256
PG_POOL_SIZE = 5
PG_MAX_OVERFLOW = 10
PG_CONNECT_TIMEOUT_S = 5.0
PG_COMMAND_TIMEOUT_S = 30.0
_STOP_S = 10.0  # how long closing the PostgreSQL store waits for its thread to end


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
    """A synchronous engine whose transactions all run, in order, on one thread of its own.

    Transactions handed over while the thread is busy (above all, waiting for a commit's
    ``fsync``) are committed together when it is free: one commit, one ``fsync``, for all of
    them (group commit). Each still runs inside a savepoint of its own, so one that raises is
    rolled back alone, and each is answered only once its commit is on disk. A disk that
    flushes slowly then costs more turns per flush, not a longer and longer queue: with one
    commit at a time the store could write no more turns a second than the disk flushes."""

    def __init__(self, engine: Engine, thread_name: str) -> None:
        self.engine = engine
        self.dialect_name = engine.dialect.name
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._lock = threading.Lock()
        self._pending: list[_Handed[Any]] = []
        self._draining = False

    async def run(self, job: Callable[[Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        handed: _Handed[T] = _Handed(job, loop.create_future(), loop)
        with self._lock:
            self._pending.append(handed)
            idle, self._draining = not self._draining, True
        if idle:
            try:
                self._thread.submit(self._drain)
            except RuntimeError:  # disposed: the thread takes no more work
                with self._lock:
                    self._pending.remove(handed)
                    self._draining = False
                raise
        return await handed.future

    def _drain(self) -> None:
        """On the store's thread: commit what was handed over, batch by batch, until none is
        left."""
        batch: list[_Handed[Any]] = []
        try:
            while True:
                with self._lock:
                    batch, self._pending = self._pending[:MAX_GROUP], self._pending[MAX_GROUP:]
                    if not batch:
                        self._draining = False
                        return
                for handed, outcome in zip(batch, self._commit(batch), strict=True):
                    handed.settle(outcome)
        except BaseException as exc:  # a bug: answer the batch, and leave no later one waiting
            for handed in batch:
                handed.settle((False, exc))
            with self._lock:
                if self._pending:
                    self._thread.submit(self._drain)
                else:
                    self._draining = False
            raise

    def _commit(self, batch: list[_Handed[Any]]) -> list[_Outcome]:
        if len(batch) == 1:  # the usual case on a quiet store: no savepoint needed
            try:
                with self.engine.begin() as conn:
                    return [(True, batch[0].job(conn))]
            except Exception as exc:
                return [(False, exc)]
        outcomes: list[_Outcome] = []
        try:
            with self.engine.begin() as conn:
                driver = conn.connection.dbapi_connection
                for handed in batch:
                    try:
                        with conn.begin_nested():
                            outcomes.append((True, handed.job(conn)))
                    except Exception as exc:
                        outcomes.append((False, exc))
                        # On some errors (a full disk, an I/O error) SQLite rolls back the
                        # whole transaction: what came before is gone, and what came after
                        # would run outside any transaction.
                        if not getattr(driver, "in_transaction", True):
                            raise _TransactionLost from exc
        except Exception as exc:  # BEGIN, a savepoint or the COMMIT failed: nothing is written
            failed: _Outcome = (False, exc.__cause__ if isinstance(exc, _TransactionLost) else exc)
            return [o if not o[0] else failed for o in outcomes] + [failed] * (
                len(batch) - len(outcomes)
            )
        return outcomes

    async def dispose(self) -> None:
        # Behind whatever was handed over already: the thread runs one thing at a time, and
        # a batch under way goes on until nothing handed over is left.
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self.engine.dispose)
        finally:
            self._thread.shutdown(wait=False)


class _TransactionLost(Exception):
    """The database rolled back a group's transaction by itself; its cause says why."""


_Outcome = tuple[bool, Any]


class _Handed(Generic[T]):
    """One transaction handed to the store's thread, and where its outcome goes."""

    __slots__ = ("future", "job", "loop")

    def __init__(
        self,
        job: Callable[[Connection], T],
        future: asyncio.Future[T],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.job = job
        self.future = future
        self.loop = loop

    def settle(self, outcome: _Outcome) -> None:
        """From the store's thread: hand the outcome to the loop that waits for it."""
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits
            self.loop.call_soon_threadsafe(self._set, outcome)

    def _set(self, outcome: _Outcome) -> None:
        if self.future.done():  # the waiter was cancelled; the transaction ran regardless
            return
        ok, value = outcome
        if ok:
            self.future.set_result(value)
        else:
            self.future.set_exception(value)


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


class OwnLoopEngine:
    """An asyncio engine whose transactions run on an event loop of their own, in a thread of
    the store's own, started at the first transaction (so after a worker's fork).

    Run on the loop that carries the calls' audio, every turn written to PostgreSQL cost that
    loop its round trips through asyncpg and SQLAlchemy's greenlet, about 0.8 ms of CPU per
    turn: 6-14% more of the bridge's CPU at 100 calls than with the work here, in steps that
    stood between the calls' frames. Here it costs that loop one hop to the store's loop and
    one back, as the SQLite thread does. The transactions still overlap there, up to the
    pool's size."""

    def __init__(self, inner: GreenletEngine, thread_name: str) -> None:
        self.inner = inner
        self.engine = inner.engine
        self.dialect_name = inner.dialect_name
        self._thread_name = thread_name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    async def run(self, job: Callable[[Connection], T]) -> T:
        handed = asyncio.run_coroutine_threadsafe(self.inner.run(job), self._store_loop())
        # Cancelling the waiter cancels the transaction on the store's loop, as it did on
        # the caller's own.
        return await asyncio.wrap_future(handed)

    async def dispose(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            await self.inner.dispose()  # never used: nothing runs anywhere
            return
        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.inner.dispose(), loop))
        finally:
            loop.call_soon_threadsafe(loop.stop)
            # Bounded: a job stuck in its own code must not hold up the bridge's exit.
            await asyncio.get_running_loop().run_in_executor(None, thread.join, _STOP_S)
            with self._lock:
                self._loop = self._thread = None

    def _store_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = _new_loop()
                thread = threading.Thread(
                    target=_run_forever, args=(loop,), name=self._thread_name, daemon=True
                )
                thread.start()
                self._loop, self._thread = loop, thread
            return self._loop


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn's standard extras
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def _run_forever(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    try:
        loop.run_forever()
    finally:
        loop.close()


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


def postgres_engine(url: str | URL, *, schema: str | None = None) -> OwnLoopEngine:
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
    pooled = create_async_engine(
        parsed,
        pool_size=PG_POOL_SIZE,
        max_overflow=PG_MAX_OVERFLOW,
        pool_pre_ping=True,
        connect_args=connect_args,
    )
    return OwnLoopEngine(GreenletEngine(pooled), thread_name="postgres-store")
