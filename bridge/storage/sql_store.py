"""The call store on SQLAlchemy Core: one implementation for SQLite and PostgreSQL.

The two backends differ only in their engine (``engines.py``) and in the spelling of an
upsert, which SQLAlchemy's dialect ``insert`` constructs cover. Each write runs in its own
transaction, committed before the method returns, so a crash loses at most the turn still
being spoken. Every write is idempotent: a retried turn, event or finish leaves one row.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any, TypeVar

from sqlalchemy import (
    ColumnElement,
    delete,
    exists,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from bridge.call.records import CallEvent, CallStatus, EndReason, Role, Turn
from bridge.errors import LocalProtocolError
from bridge.storage.base import (
    CallFilter,
    CallRecord,
    CallSummary,
    Instance,
    InstanceLease,
    NewCall,
    RefusedValueError,
    StoreUnavailableError,
    UnknownCallError,
    require_aware,
)
from bridge.storage.engines import StoreEngine
from bridge.storage.migrate import migrate
from bridge.storage.tables import calls, events, instances, turns

T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
# Deletes go in slices so one purge never builds a statement with a million parameters.
_PURGE_BATCH = 500

_CALL_COLUMNS = (
    calls.c.call_sid,
    calls.c.stream_sid,
    calls.c.from_number,
    calls.c.to_number,
    calls.c.provider,
    calls.c.model,
    calls.c.started_at,
    calls.c.ended_at,
    calls.c.status,
    calls.c.end_reason,
    calls.c.channel,
    calls.c.agent,
    calls.c.sip_call_id,
)


class _State(Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


def to_us(value: datetime, name: str = "time") -> int:
    """Microseconds since the epoch for an aware ``value``: how the tables keep time."""
    return (require_aware(value, name) - _EPOCH) // _MICROSECOND


def from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


class SqlCallStore:
    """A ``CallStore`` over a ``StoreEngine`` built by ``bridge.storage.engines``.

    ``instance`` names the running bridge: calls it creates carry its id, and its lease
    (``renew_lease``) keeps other instances from ending them. Tools that only read (the
    ``bridge calls`` commands) pass none. Await ``open()`` first (it migrates the schema) and
    ``close()`` when done; a closed store cannot be reopened.
    """

    def __init__(
        self,
        make_engine: Callable[[], StoreEngine],
        *,
        description: str,
        instance: Instance | None = None,
    ) -> None:
        self._make_engine = make_engine
        self.description = description
        self.instance = instance
        self._engine: StoreEngine | None = None
        self._state = _State.NEW
        # Statements of the frequent writes, built on first use (they depend on the dialect).
        self._turn_stmt: Any = None
        self._event_stmt: Any = None

    def __repr__(self) -> str:
        return f"SqlCallStore({self.description!r}, state={self._state.value})"

    # -- life cycle -------------------------------------------------------------------

    async def open(self) -> None:
        if self._state is not _State.NEW:
            raise LocalProtocolError(f"store is {self._state.value}; open() it only once")
        self._engine = self._make_engine()
        self._state = _State.OPEN
        try:
            await migrate(self._engine)
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            await self.close()
            raise StoreUnavailableError(f"cannot open {self.description}: {_reason(exc)}") from exc
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        if self._engine is not None:
            await self._engine.dispose()

    async def ping(self) -> bool:
        if self._state is not _State.OPEN:
            return False
        try:
            value = await self._require_engine().run(lambda conn: conn.scalar(select(1)))
        except Exception:
            return False
        return value == 1

    # -- writes -----------------------------------------------------------------------

    async def create_call(self, call: NewCall) -> None:
        await self._write(self._creator(call), call.call_sid)

    async def claim_call(self, call: NewCall) -> bool:
        create = self._creator(call)
        own = None if self.instance is None else self.instance.instance_id

        def claim(conn: Connection) -> bool:
            if create(conn):
                return True
            # Already there: ours only if this very stream on this instance created it (an
            # earlier attempt committed but its answer was lost).
            row = conn.execute(
                select(calls.c.stream_sid, calls.c.instance_id).where(
                    calls.c.call_sid == call.call_sid
                )
            ).first()
            return row is not None and tuple(row) == (call.stream_sid, own)

        try:
            return await self._transaction(claim)
        except IntegrityError as exc:
            raise LocalProtocolError(f"invalid call {call.call_sid!r}: {_reason(exc)}") from None

    def _creator(self, call: NewCall) -> Callable[[Connection], bool]:
        """A job that inserts ``call`` unless it exists; it answers whether it inserted."""
        values = {
            "call_sid": call.call_sid,
            "stream_sid": call.stream_sid,
            "from_number": call.from_number,
            "to_number": call.to_number,
            "provider": call.provider,
            "model": call.model,
            "started_at": to_us(call.started_at, "started_at"),
            "status": CallStatus.IN_PROGRESS.value,
            "instance_id": None if self.instance is None else self.instance.instance_id,
            "channel": call.channel,
            "agent": call.agent,
            "sip_call_id": call.sip_call_id,
        }

        def create(conn: Connection) -> bool:
            stmt = (
                self._insert(calls)
                .values(values)
                .on_conflict_do_nothing(index_elements=["call_sid"])
            )
            return bool(conn.execute(stmt).rowcount)

        return create

    async def append_turn(self, call_sid: str, turn: Turn) -> None:
        values = {
            "call_sid": call_sid,
            "seq": turn.seq,
            "role": turn.role.value,
            "text": turn.text,
            "start_ms": turn.start_ms,
            "end_ms": turn.end_ms,
            "interrupted": turn.interrupted,
            "full_text": turn.full_text,
        }

        upsert = self._turn_upsert()

        def write(conn: Connection) -> None:
            conn.execute(upsert, values)

        await self._write(write, call_sid)

    def _event_insert(self) -> Any:
        """The event insert, built once (as the turn upsert)."""
        if self._event_stmt is None:
            self._event_stmt = self._insert(events).on_conflict_do_nothing()
        return self._event_stmt

    def _turn_upsert(self) -> Any:
        """The turn upsert, built once: a turn is written every few seconds per call, and
        building the statement cost more than running it."""
        if self._turn_stmt is None:
            stmt = self._insert(turns)
            replace = {
                key: stmt.excluded[key]
                for key in ("role", "text", "start_ms", "end_ms", "interrupted", "full_text")
            }
            self._turn_stmt = stmt.on_conflict_do_update(
                index_elements=["call_sid", "seq"], set_=replace
            )
        return self._turn_stmt

    async def append_event(self, call_sid: str, event: CallEvent) -> None:
        values = {
            "call_sid": call_sid,
            "type": event.type,
            "at_ms": event.at_ms,
            # Sorted keys: the same event always serialises the same, so a retry is a duplicate.
            "data": json.dumps(
                event.data, ensure_ascii=False, separators=(",", ":"), sort_keys=True
            ),
        }

        insert = self._event_insert()

        def write(conn: Connection) -> None:
            conn.execute(insert, values)

        await self._write(write, call_sid)

    async def finish_call(
        self, call_sid: str, status: CallStatus, end_reason: EndReason, ended_at: datetime
    ) -> None:
        if status is CallStatus.IN_PROGRESS:
            raise LocalProtocolError("finish_call needs a final status, not in_progress")
        ended_us = to_us(ended_at, "ended_at")

        def write(conn: Connection) -> None:
            # The status condition makes the first finish win: a status callback racing the
            # session's own finish cannot overwrite the reason recorded first.
            conn.execute(
                update(calls)
                .where(calls.c.call_sid == call_sid, calls.c.status == CallStatus.IN_PROGRESS.value)
                .values(status=status.value, end_reason=end_reason.value, ended_at=ended_us)
            )

        await self._write(write, call_sid)

    async def finish_unowned_call(
        self,
        call_sid: str,
        status: CallStatus,
        end_reason: EndReason,
        ended_at: datetime,
        lapsed_before: datetime,
    ) -> bool:
        if status is CallStatus.IN_PROGRESS:
            raise LocalProtocolError("finish_unowned_call needs a final status, not in_progress")
        ended_us = to_us(ended_at, "ended_at")
        lapsed_us = to_us(lapsed_before, "lapsed_before")
        own = None if self.instance is None else self.instance.instance_id

        def finish(conn: Connection) -> bool:
            live_elsewhere = select(instances.c.instance_id).where(
                instances.c.renewed_at >= lapsed_us, instances.c.instance_id != (own or "")
            )
            owner = conn.execute(
                select(calls.c.instance_id).where(
                    calls.c.call_sid == call_sid,
                    calls.c.status == CallStatus.IN_PROGRESS.value,
                    calls.c.instance_id.in_(live_elsewhere),
                )
            ).first()
            if owner is not None:
                return False
            conn.execute(
                update(calls)
                .where(calls.c.call_sid == call_sid, calls.c.status == CallStatus.IN_PROGRESS.value)
                .values(status=status.value, end_reason=end_reason.value, ended_at=ended_us)
            )
            return True

        return await self._transaction(finish)

    async def purge_calls(self, started_before: datetime) -> list[str]:
        cutoff = to_us(started_before, "started_before")

        def purge(conn: Connection) -> list[str]:
            result = conn.execute(
                select(calls.c.call_sid).where(
                    calls.c.started_at < cutoff,
                    calls.c.status != CallStatus.IN_PROGRESS.value,
                )
            )
            sids = [row[0] for row in result]
            for start in range(0, len(sids), _PURGE_BATCH):
                batch = sids[start : start + _PURGE_BATCH]
                # Children first: a backend without cascading deletes must not be left with
                # turns of calls that are gone.
                conn.execute(delete(turns).where(turns.c.call_sid.in_(batch)))
                conn.execute(delete(events).where(events.c.call_sid.in_(batch)))
                conn.execute(delete(calls).where(calls.c.call_sid.in_(batch)))
            return sids

        return await self._transaction(purge)

    # -- leases -----------------------------------------------------------------------

    async def renew_lease(self, now: datetime) -> None:
        instance = self._own_instance()
        values = {
            "instance_id": instance.instance_id,
            "host": instance.host,
            "pid": instance.pid,
            "renewed_at": to_us(now, "now"),
        }

        def renew(conn: Connection) -> None:
            stmt = self._insert(instances).values(values)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["instance_id"], set_={"renewed_at": stmt.excluded.renewed_at}
                )
            )

        await self._transaction(renew)

    async def list_leases(self) -> list[InstanceLease]:
        def read(conn: Connection) -> list[InstanceLease]:
            result = conn.execute(select(instances).order_by(instances.c.renewed_at.desc()))
            return [
                InstanceLease(
                    instance=Instance(row.instance_id, row.host, row.pid),
                    renewed_at=from_us(row.renewed_at),
                )
                for row in result
            ]

        return await self._transaction(read)

    async def end_orphaned_calls(
        self, now: datetime, lapsed_before: datetime, dead: frozenset[str] = frozenset()
    ) -> list[str]:
        lapsed_us = to_us(lapsed_before, "lapsed_before")
        now_us = to_us(now, "now")
        own = None if self.instance is None else self.instance.instance_id

        def sweep(conn: Connection) -> list[str]:
            alive = select(instances.c.instance_id).where(
                instances.c.renewed_at >= lapsed_us,
                instances.c.instance_id.not_in(sorted(dead)) if dead else true(),
            )
            orphaned: list[ColumnElement[bool]] = [
                calls.c.status == CallStatus.IN_PROGRESS.value,
                or_(calls.c.instance_id.is_(None), calls.c.instance_id.not_in(alive)),
            ]
            if own is not None:
                orphaned.append(or_(calls.c.instance_id.is_(None), calls.c.instance_id != own))
            last_turn = (
                select(func.max(turns.c.end_ms))
                .where(turns.c.call_sid == calls.c.call_sid)
                .scalar_subquery()
            )
            last_event = (
                select(func.max(events.c.at_ms))
                .where(events.c.call_sid == calls.c.call_sid)
                .scalar_subquery()
            )
            rows = conn.execute(
                select(calls.c.call_sid, calls.c.started_at, last_turn, last_event).where(*orphaned)
            ).all()
            ended: list[str] = []
            for sid, started_us, turn_ms, event_ms in rows:
                # The call's last sign of life is the best guess of when it ended; the time of
                # this sweep could be hours later and would make the call look that long.
                last_ms = max(turn_ms or 0, event_ms or 0)
                ended_us = min(now_us, started_us + last_ms * 1000)
                result = conn.execute(
                    update(calls)
                    .where(calls.c.call_sid == sid, calls.c.status == CallStatus.IN_PROGRESS.value)
                    .values(
                        status=CallStatus.FAILED.value,
                        end_reason=EndReason.UNKNOWN.value,
                        ended_at=ended_us,
                    )
                )
                if result.rowcount:
                    ended.append(sid)
            # Leases of instances known gone are of no further use.
            gone = [lid for lid in dead if lid != own]
            stale = instances.c.renewed_at < lapsed_us
            conn.execute(
                delete(instances).where(
                    or_(stale, instances.c.instance_id.in_(gone)) if gone else stale,
                    instances.c.instance_id != (own or ""),
                )
            )
            return ended

        return await self._transaction(sweep)

    async def release_lease(self) -> None:
        instance = self._own_instance()

        def release(conn: Connection) -> None:
            conn.execute(delete(instances).where(instances.c.instance_id == instance.instance_id))

        await self._transaction(release)

    # -- reads ------------------------------------------------------------------------

    async def get_call(self, call_sid: str) -> CallRecord | None:
        def read(conn: Connection) -> CallRecord | None:
            # One transaction, so the call, its turns and its events agree with each other.
            row = conn.execute(select(*_CALL_COLUMNS).where(calls.c.call_sid == call_sid)).first()
            if row is None:
                return None
            turn_rows = conn.execute(
                select(
                    turns.c.seq,
                    turns.c.role,
                    turns.c.text,
                    turns.c.start_ms,
                    turns.c.end_ms,
                    turns.c.interrupted,
                    turns.c.full_text,
                )
                .where(turns.c.call_sid == call_sid)
                .order_by(turns.c.seq)
            )
            event_rows = conn.execute(
                select(events.c.type, events.c.at_ms, events.c.data)
                .where(events.c.call_sid == call_sid)
                .order_by(events.c.at_ms, events.c.id)
            )
            return CallRecord(
                **_call_fields(row),
                turns=[_turn(r) for r in turn_rows],
                events=[
                    CallEvent(type=kind, at_ms=at_ms, data=json.loads(data))
                    for kind, at_ms, data in event_rows
                ],
            )

        try:
            return await self._transaction(read)
        except RefusedValueError:  # a sid PostgreSQL cannot hold (a NUL in it) is in no row
            return None

    async def list_calls(
        self,
        limit: int = 50,
        before: datetime | None = None,
        filters: CallFilter | None = None,
    ) -> list[CallSummary]:
        if limit < 0:
            raise ValueError("limit must not be negative")
        conditions = list(_filter_conditions(filters or CallFilter()))
        if before is not None:
            conditions.append(calls.c.started_at < to_us(before, "before"))
        turn_count = (
            select(func.count())
            .select_from(turns)
            .where(turns.c.call_sid == calls.c.call_sid)
            .scalar_subquery()
        )
        query = (
            select(*_CALL_COLUMNS, turn_count)
            .where(*conditions)
            .order_by(calls.c.started_at.desc(), calls.c.call_sid.desc())
            .limit(limit)
        )

        def read(conn: Connection) -> list[CallSummary]:
            rows = conn.execute(query)
            count = len(_CALL_COLUMNS)
            return [CallSummary(**_call_fields(row), turn_count=int(row[count])) for row in rows]

        try:
            return await self._transaction(read)
        except RefusedValueError:  # a search PostgreSQL cannot hold (a NUL in it) matches none
            return []

    # -- plumbing ---------------------------------------------------------------------

    def _insert(self, table: Any) -> Any:
        """The dialect's INSERT, which knows ``ON CONFLICT`` on both backends."""
        if self._require_engine().dialect_name == "postgresql":
            return postgresql.insert(table)
        return sqlite.insert(table)

    def _own_instance(self) -> Instance:
        if self.instance is None:
            raise LocalProtocolError("this store was opened without an instance; it holds no lease")
        return self.instance

    def _require_engine(self) -> StoreEngine:
        if self._state is not _State.OPEN or self._engine is None:
            raise LocalProtocolError(f"store is {self._state.value}; await open() first")
        return self._engine

    async def _write(self, job: Callable[[Connection], object], call_sid: str) -> None:
        try:
            await self._transaction(job)
        except IntegrityError as exc:
            if "foreign key" in str(exc.orig).lower():
                raise UnknownCallError(f"no call {call_sid!r} in the store") from None
            raise LocalProtocolError(
                f"invalid write for call {call_sid!r}: {_reason(exc)}"
            ) from None

    async def _transaction(self, job: Callable[[Connection], T]) -> T:
        engine = self._require_engine()
        try:
            return await engine.run(job)
        except IntegrityError:
            raise
        except OverflowError:  # SQLite's driver, for an integer past 64 bits
            raise RefusedValueError(f"{self.description}: an integer out of range") from None
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            # A refused value is no outage: a record writer retrying it as one would hold
            # every later write of its call behind it until the call ends, then lose them.
            if isinstance(exc, SQLAlchemyError) and (refusal := _data_refusal(exc)):
                raise RefusedValueError(f"{self.description}: {refusal}") from None
            raise StoreUnavailableError(f"{self.description}: {_reason(exc)}") from exc


def _filter_conditions(filters: CallFilter) -> Iterable[ColumnElement[bool]]:
    if filters.number is not None and filters.number.strip():
        wanted = filters.number.strip()
        digits = re.sub(r"\D", "", wanted)
        # "(555) 123-0000" means the digits; "sip:alice" has none and is matched as written.
        needle = digits if digits else wanted
        yield or_(
            calls.c.from_number.icontains(needle, autoescape=True),
            calls.c.to_number.icontains(needle, autoescape=True),
        )
    if filters.text is not None and filters.text.strip():
        needle = filters.text.strip()
        yield exists().where(
            turns.c.call_sid == calls.c.call_sid,
            or_(
                turns.c.text.icontains(needle, autoescape=True),
                turns.c.full_text.icontains(needle, autoescape=True),
            ),
        )
    if filters.started_from is not None:
        yield calls.c.started_at >= to_us(filters.started_from, "started_from")
    if filters.started_until is not None:
        yield calls.c.started_at < to_us(filters.started_until, "started_until")
    if filters.status is not None:
        yield calls.c.status == filters.status.value


def _call_fields(row: Sequence[Any]) -> dict[str, Any]:
    started_at, ended_at, status, end_reason = row[6:10]
    return {
        "call_sid": row[0],
        "stream_sid": row[1],
        "from_number": row[2],
        "to_number": row[3],
        "provider": row[4],
        "model": row[5],
        "started_at": from_us(started_at),
        "ended_at": None if ended_at is None else from_us(ended_at),
        "status": CallStatus(status),
        "end_reason": None if end_reason is None else EndReason(end_reason),
        "channel": row[10],
        "agent": row[11],
        "sip_call_id": row[12],
    }


def _turn(row: Sequence[Any]) -> Turn:
    seq, role, text_, start_ms, end_ms, interrupted, full_text = row
    return Turn(
        seq=seq,
        role=Role(role),
        text=text_,
        start_ms=start_ms,
        end_ms=end_ms,
        interrupted=bool(interrupted),
        full_text=full_text,
    )


def _data_refusal(exc: SQLAlchemyError) -> str | None:
    """Why the database refused a statement's values for good (SQLSTATE class 22: a value
    too long, out of range or not valid in its encoding, found by the server or by the
    driver), or None when the error may pass. Without the driver's message: asyncpg's quotes
    the value, which may be words of a transcript."""
    orig = getattr(exc, "orig", None)
    sqlstate = getattr(orig, "sqlstate", None)
    if not (isinstance(exc, DataError) or (isinstance(sqlstate, str) and sqlstate[:2] == "22")):
        return None
    # SQLAlchemy's asyncpg adapter keeps asyncpg's own error, the one that names the problem.
    name = type(getattr(orig, "__cause__", None) or orig or exc).__name__
    return f"{name} (SQLSTATE {sqlstate})" if sqlstate else name


def _reason(exc: BaseException) -> str:
    """A one-line reason without SQL text or parameters (which may hold transcript words)."""
    orig = getattr(exc, "orig", None)
    source = orig if orig is not None else exc
    if isinstance(source, TimeoutError):
        return "timed out"
    first = str(source).strip().splitlines()[0] if str(source).strip() else ""
    return f"{type(source).__name__}: {first}" if first else type(source).__name__
