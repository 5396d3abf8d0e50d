"""The call store on SQLite (the stdlib ``sqlite3`` module), the default for one machine.

Every query runs on one dedicated worker thread: the connection is only ever touched from
that thread, and the event loop only awaits the result, so a slow disk never stalls audio.
Work is queued in the order it was asked for, which also keeps a call's writes in order.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from bridge.call.records import CallEvent, CallStatus, EndReason, Role, Turn
from bridge.errors import ConfigurationError, LocalProtocolError
from bridge.storage.base import (
    CallRecord,
    CallSummary,
    NewCall,
    StoreUnavailableError,
    UnknownCallError,
    require_aware,
)

T = TypeVar("T")

MEMORY = ":memory:"
SCHEMA_VERSION = 1

# The whole schema in one place. Times are integers, microseconds since the Unix epoch in
# UTC: they sort and compare exactly, and round-trip a datetime without loss. A later change
# replaces this with numbered migrations keyed on schema_version.
_SCHEMA_V1 = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS calls (
        call_sid    TEXT PRIMARY KEY,
        stream_sid  TEXT NOT NULL,
        from_number TEXT NOT NULL,
        to_number   TEXT NOT NULL,
        provider    TEXT NOT NULL,
        model       TEXT NOT NULL,
        started_at  INTEGER NOT NULL,
        ended_at    INTEGER,
        status      TEXT NOT NULL,
        end_reason  TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS calls_started_at ON calls (started_at)",
    """CREATE TABLE IF NOT EXISTS turns (
        call_sid    TEXT NOT NULL REFERENCES calls (call_sid) ON DELETE CASCADE,
        seq         INTEGER NOT NULL,
        role        TEXT NOT NULL,
        text        TEXT NOT NULL,
        start_ms    INTEGER NOT NULL,
        end_ms      INTEGER NOT NULL,
        interrupted INTEGER NOT NULL,
        full_text   TEXT,
        PRIMARY KEY (call_sid, seq)
    ) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS events (
        id       INTEGER PRIMARY KEY,
        call_sid TEXT NOT NULL REFERENCES calls (call_sid) ON DELETE CASCADE,
        type     TEXT NOT NULL,
        at_ms    INTEGER NOT NULL,
        data     TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS events_call ON events (call_sid, at_ms, id)",
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

_CALL_COLUMNS = (
    "call_sid, stream_sid, from_number, to_number, provider, model,"
    " started_at, ended_at, status, end_reason"
)


class _State(Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


def _to_us(value: datetime, name: str) -> int:
    return (require_aware(value, name) - _EPOCH) // _MICROSECOND


def _from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


class SqliteCallStore:
    """A ``CallStore`` in one SQLite file (or ``":memory:"`` for tests).

    Await ``open()`` first and ``close()`` when done; a closed store cannot be reopened, make
    a new one. The file's parent directory is created if missing.
    """

    def __init__(self, path: str, *, busy_timeout_ms: int = 5000) -> None:
        self.path = path
        self._busy_timeout_ms = busy_timeout_ms
        self._state = _State.NEW
        self._executor: ThreadPoolExecutor | None = None
        # Created, used and closed on the worker thread only.
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"SqliteCallStore({self.path!r}, state={self._state.value})"

    # -- life cycle -------------------------------------------------------------------

    async def open(self) -> None:
        if self._state is not _State.NEW:
            raise LocalProtocolError(f"store is {self._state.value}; open() it only once")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bridge-sqlite")
        self._state = _State.OPEN
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._open_on_worker)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._state is _State.CLOSED:
            return
        executor = self._executor
        try:
            if self._state is _State.OPEN and executor is not None:
                # Queued behind any work already asked for, so pending writes land first.
                await asyncio.get_running_loop().run_in_executor(executor, self._close_on_worker)
        finally:
            self._state = _State.CLOSED
            if executor is not None:
                # The worker is idle by now: it exits on its own, no need to block the loop.
                executor.shutdown(wait=False)

    async def ping(self) -> bool:
        if self._state is not _State.OPEN:
            return False
        try:
            row = await self._run(lambda conn: conn.execute("SELECT 1").fetchone())
        except Exception:
            return False
        return bool(row == (1,))

    # -- writes -----------------------------------------------------------------------

    async def create_call(self, call: NewCall) -> None:
        params = (
            call.call_sid,
            call.stream_sid,
            call.from_number,
            call.to_number,
            call.provider,
            call.model,
            _to_us(call.started_at, "started_at"),
            CallStatus.IN_PROGRESS.value,
        )
        await self._write(
            "INSERT INTO calls (call_sid, stream_sid, from_number, to_number, provider, model,"
            " started_at, status) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (call_sid) DO NOTHING",
            params,
            call.call_sid,
        )

    async def append_turn(self, call_sid: str, turn: Turn) -> None:
        params = (
            call_sid,
            turn.seq,
            turn.role.value,
            turn.text,
            turn.start_ms,
            turn.end_ms,
            int(turn.interrupted),
            turn.full_text,
        )
        await self._write(
            "INSERT INTO turns (call_sid, seq, role, text, start_ms, end_ms, interrupted,"
            " full_text) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (call_sid, seq) DO UPDATE SET role = excluded.role,"
            " text = excluded.text, start_ms = excluded.start_ms, end_ms = excluded.end_ms,"
            " interrupted = excluded.interrupted, full_text = excluded.full_text",
            params,
            call_sid,
        )

    async def append_event(self, call_sid: str, event: CallEvent) -> None:
        data = json.dumps(event.data, ensure_ascii=False, separators=(",", ":"))
        await self._write(
            "INSERT INTO events (call_sid, type, at_ms, data) VALUES (?, ?, ?, ?)",
            (call_sid, event.type, event.at_ms, data),
            call_sid,
        )

    async def finish_call(
        self, call_sid: str, status: CallStatus, end_reason: EndReason, ended_at: datetime
    ) -> None:
        if status is CallStatus.IN_PROGRESS:
            raise LocalProtocolError("finish_call needs a final status, not in_progress")
        # The status condition makes the first finish win: a status callback racing the
        # session's own finish cannot overwrite the reason recorded first.
        await self._write(
            "UPDATE calls SET status = ?, end_reason = ?, ended_at = ?"
            " WHERE call_sid = ? AND status = ?",
            (
                status.value,
                end_reason.value,
                _to_us(ended_at, "ended_at"),
                call_sid,
                CallStatus.IN_PROGRESS.value,
            ),
            call_sid,
        )

    # -- reads ------------------------------------------------------------------------

    async def get_call(self, call_sid: str) -> CallRecord | None:
        def read(conn: sqlite3.Connection) -> CallRecord | None:
            # One read transaction, so the call, its turns and events agree with each other.
            conn.execute("BEGIN")
            try:
                row = conn.execute(
                    f"SELECT {_CALL_COLUMNS} FROM calls WHERE call_sid = ?", (call_sid,)
                ).fetchone()
                if row is None:
                    return None
                turns = conn.execute(
                    "SELECT seq, role, text, start_ms, end_ms, interrupted, full_text"
                    " FROM turns WHERE call_sid = ? ORDER BY seq",
                    (call_sid,),
                ).fetchall()
                events = conn.execute(
                    "SELECT type, at_ms, data FROM events WHERE call_sid = ? ORDER BY at_ms, id",
                    (call_sid,),
                ).fetchall()
            finally:
                conn.execute("COMMIT")
            return _record(row, turns, events)

        return await self._run(read)

    async def list_calls(
        self, limit: int = 50, before: datetime | None = None
    ) -> list[CallSummary]:
        if limit < 0:
            raise ValueError("limit must not be negative")
        where = ""
        params: list[Any] = []
        if before is not None:
            where = " WHERE started_at < ?"
            params.append(_to_us(before, "before"))
        params.append(limit)
        sql = (
            f"SELECT {_CALL_COLUMNS},"
            " (SELECT COUNT(*) FROM turns t WHERE t.call_sid = calls.call_sid)"
            f" FROM calls{where} ORDER BY started_at DESC, rowid DESC LIMIT ?"
        )
        rows = await self._run(lambda conn: conn.execute(sql, params).fetchall())
        return [_summary(row) for row in rows]

    # -- the worker thread ------------------------------------------------------------

    async def _write(self, sql: str, params: tuple[Any, ...], call_sid: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            # Autocommit mode: the statement is committed when execute() returns.
            try:
                conn.execute(sql, params)
            except sqlite3.IntegrityError as exc:
                if "FOREIGN KEY" in str(exc):
                    raise UnknownCallError(f"no call {call_sid!r} in the store") from None
                raise LocalProtocolError(f"invalid write for call {call_sid!r}: {exc}") from exc

        await self._run(write)

    async def _run(self, job: Callable[[sqlite3.Connection], T]) -> T:
        if self._state is not _State.OPEN or self._executor is None:
            raise LocalProtocolError(f"store is {self._state.value}; await open() first")

        def call() -> T:
            conn = self._conn
            if conn is None:
                raise LocalProtocolError("store connection is gone")
            try:
                return job(conn)
            except sqlite3.Error as exc:
                raise StoreUnavailableError(f"sqlite store {self.path!r}: {exc}") from exc

        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def _open_on_worker(self) -> None:
        try:
            if self.path != MEMORY:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit, so each write is durable on return and
            # reads open their own transactions explicitly.
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout_ms / 1000, isolation_level=None
            )
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailableError(f"cannot open sqlite store {self.path!r}: {exc}") from exc
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            _create_schema(conn)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailableError(
                    f"cannot open sqlite store {self.path!r}: {exc}"
                ) from exc
            raise
        self._conn = conn

    def _close_on_worker(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _create_schema(conn: sqlite3.Connection) -> None:
    # IMMEDIATE takes the write lock up front, so two processes opening the same new file
    # do not both try to create the schema.
    conn.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA_V1:
            conn.execute(statement)
        row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        version = row[0] if row is not None else None
        if version is None:
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        elif version > SCHEMA_VERSION:
            raise ConfigurationError(
                f"the call store has schema version {version}; this bridge knows only"
                f" {SCHEMA_VERSION}: upgrade the bridge"
            )
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _summary(row: tuple[Any, ...]) -> CallSummary:
    return CallSummary(**_call_fields(row), turn_count=int(row[10]))


def _record(
    row: tuple[Any, ...], turns: list[tuple[Any, ...]], events: list[tuple[Any, ...]]
) -> CallRecord:
    return CallRecord(
        **_call_fields(row),
        turns=[
            Turn(
                seq=seq,
                role=Role(role),
                text=text,
                start_ms=start_ms,
                end_ms=end_ms,
                interrupted=bool(interrupted),
                full_text=full_text,
            )
            for seq, role, text, start_ms, end_ms, interrupted, full_text in turns
        ],
        events=[
            CallEvent(type=kind, at_ms=at_ms, data=json.loads(data)) for kind, at_ms, data in events
        ],
    )


def _call_fields(row: tuple[Any, ...]) -> dict[str, Any]:
    """The shared columns of ``_CALL_COLUMNS`` as keyword arguments."""
    started_at, ended_at, status, end_reason = row[6:10]
    return {
        "call_sid": row[0],
        "stream_sid": row[1],
        "from_number": row[2],
        "to_number": row[3],
        "provider": row[4],
        "model": row[5],
        "started_at": _from_us(started_at),
        "ended_at": None if ended_at is None else _from_us(ended_at),
        "status": CallStatus(status),
        "end_reason": None if end_reason is None else EndReason(end_reason),
    }
