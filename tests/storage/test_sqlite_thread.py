"""The SQLite store does its work on its own thread: a write waiting on the file's lock (another
process mid-write, a slow disk) holds up the calls' audio on the event loop not at all. What is
handed over while a commit is under way is committed together with one flush (group commit)."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Connection

from bridge.storage import engines, sqlite_store
from bridge.storage.base import CallStore, StoreUnavailableError, UnknownCallError
from tests.storage.samples import caller, new_call


@contextlib.asynccontextmanager
async def _held_store(tmp_path: Path) -> AsyncIterator[tuple[CallStore, sqlite3.Connection]]:
    """An open store holding call CA01, and another connection to its file holding the write
    lock (a slow disk, another process mid-write): ``COMMIT`` on it lets the store write."""
    db = tmp_path / "calls.db"
    store = sqlite_store(str(db))
    await store.open()
    other = sqlite3.connect(db, isolation_level=None)
    try:
        await store.create_call(new_call("CA01"))
        other.execute("BEGIN IMMEDIATE")
        yield store, other
    finally:
        other.close()
        await store.close()


async def test_a_write_waiting_for_another_process_leaves_the_event_loop_running(
    tmp_path: Path,
) -> None:
    async with _held_store(tmp_path) as (store, other):
        writing = asyncio.create_task(store.append_turn("CA01", caller(1, "still here", 0, 500)))
        ticks = 0
        for _ in range(30):
            await asyncio.sleep(0.01)
            ticks += 1
        # The loop went round 30 times while the write waited on the busy timeout.
        assert ticks == 30 and not writing.done()
        other.execute("COMMIT")
        await asyncio.wait_for(writing, 10)
        record = await store.get_call("CA01")
        assert record is not None and [t.text for t in record.turns] == ["still here"]


async def test_closing_the_store_finishes_what_was_handed_over_and_ends_its_thread(
    tmp_path: Path,
) -> None:
    before = set(threading.enumerate())
    db = str(tmp_path / "calls.db")
    store = sqlite_store(db)
    await store.open()
    await store.create_call(new_call("CA01"))
    writes = [
        asyncio.create_task(
            store.append_turn("CA01", caller(seq, f"turn {seq}", seq * 1000, seq * 1000 + 500))
        )
        for seq in range(1, 21)
    ]
    await asyncio.sleep(0)  # handed over, not yet written
    await store.close()
    await asyncio.gather(*writes)
    for _ in range(200):
        if set(threading.enumerate()) <= before:
            break
        await asyncio.sleep(0.01)
    assert set(threading.enumerate()) <= before, "the store's thread outlived close()"
    reopened = sqlite_store(db)
    await reopened.open()
    try:
        record = await reopened.get_call("CA01")
        assert record is not None and len(record.turns) == 20
    finally:
        await reopened.close()


def _count_commits(store: object) -> list[int]:
    """A list whose length is the number of transactions the store's engine commits."""
    commits: list[int] = []
    engine = store._engine.engine  # type: ignore[attr-defined]
    event.listen(engine, "commit", lambda _conn: commits.append(1))
    return commits


async def _wait_for_lock_waiter(writing: asyncio.Task[object]) -> None:
    """Let the first write reach the store's thread and wait there on the file's lock."""
    for _ in range(20):
        await asyncio.sleep(0.01)
    assert not writing.done()


async def test_writes_handed_over_during_a_commit_are_committed_together(tmp_path: Path) -> None:
    async with _held_store(tmp_path) as (store, other):
        commits = _count_commits(store)
        # The disk is slow: the first commit cannot finish while the lock is held.
        first = asyncio.create_task(store.append_turn("CA01", caller(1, "one", 0, 500)))
        await _wait_for_lock_waiter(first)
        rest = [
            asyncio.create_task(store.append_turn("CA01", caller(seq, f"t{seq}", seq, seq + 1)))
            for seq in range(2, 52)
        ]
        await asyncio.sleep(0.05)
        assert not any(task.done() for task in rest)  # none is answered before its commit
        other.execute("COMMIT")
        await asyncio.wait_for(asyncio.gather(first, *rest), 10)
        # The first, then all fifty behind it in one commit (before: one each, 51).
        assert len(commits) == 2
        record = await store.get_call("CA01")
        assert record is not None and len(record.turns) == 51
        assert [t.seq for t in record.turns] == list(range(1, 52))


async def test_a_write_refused_in_a_group_is_rolled_back_alone(tmp_path: Path) -> None:
    async with _held_store(tmp_path) as (store, other):
        commits = _count_commits(store)
        first = asyncio.create_task(store.append_turn("CA01", caller(1, "one", 0, 500)))
        await _wait_for_lock_waiter(first)
        before = asyncio.create_task(store.append_turn("CA01", caller(2, "two", 600, 900)))
        stray = asyncio.create_task(store.append_turn("CA99", caller(1, "nobody", 0, 10)))
        after = asyncio.create_task(store.append_turn("CA01", caller(3, "three", 950, 990)))
        other.execute("COMMIT")
        await asyncio.wait_for(asyncio.gather(first, before, after), 10)
        with pytest.raises(UnknownCallError):
            await stray
        assert len(commits) == 2  # the refused write did not cost its neighbours their group
        record = await store.get_call("CA01")
        assert record is not None and [t.text for t in record.turns] == ["one", "two", "three"]
        assert await store.get_call("CA99") is None


async def test_a_group_whose_commit_fails_fails_every_write_in_it_and_the_next_one_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engines, "SQLITE_BUSY_TIMEOUT_MS", 300)  # the lock is held past it
    async with _held_store(tmp_path) as (store, other):
        first = asyncio.create_task(store.append_turn("CA01", caller(1, "one", 0, 500)))
        await asyncio.sleep(0.05)
        group = [
            asyncio.create_task(store.append_turn("CA01", caller(seq, "x", seq, seq + 1)))
            for seq in range(2, 5)
        ]
        results = await asyncio.wait_for(asyncio.gather(first, *group, return_exceptions=True), 10)
        assert all(isinstance(r, StoreUnavailableError) for r in results), results
        other.execute("COMMIT")
        await store.append_turn("CA01", caller(9, "after", 9000, 9500))
        record = await store.get_call("CA01")
        assert record is not None and [t.text for t in record.turns] == ["after"]


async def test_a_waiter_that_gives_up_leaves_the_others_their_answers(tmp_path: Path) -> None:
    async with _held_store(tmp_path) as (store, other):
        first = asyncio.create_task(store.append_turn("CA01", caller(1, "one", 0, 500)))
        await _wait_for_lock_waiter(first)
        impatient = asyncio.create_task(store.append_turn("CA01", caller(2, "two", 600, 900)))
        patient = asyncio.create_task(store.append_turn("CA01", caller(3, "three", 950, 990)))
        await asyncio.sleep(0.01)
        impatient.cancel()
        other.execute("COMMIT")
        await asyncio.wait_for(asyncio.gather(first, patient), 10)
        assert impatient.cancelled()
        # Handed over is handed over: the write it gave up waiting for is still made.
        record = await store.get_call("CA01")
        assert record is not None and [t.text for t in record.turns] == ["one", "two", "three"]


async def test_a_group_whose_transaction_the_database_cancelled_reports_no_write_as_made(
    tmp_path: Path,
) -> None:
    """On some errors (a full disk, an I/O error) SQLite rolls back the whole transaction,
    not only the failed statement. The writes before it in the group are then gone, and the
    ones after it must not run outside any transaction: each is reported failed, so its
    writer tries again, and none is reported made that is not on disk."""
    db = tmp_path / "plain.db"
    engine = engines.sqlite_engine(str(db))
    await engine.run(lambda conn: conn.exec_driver_sql("CREATE TABLE t (k TEXT)"))
    other = sqlite3.connect(db, isolation_level=None)

    def insert(k: str) -> Callable[[Connection], None]:
        return lambda conn: conn.exec_driver_sql(f"INSERT INTO t VALUES ('{k}')") and None

    def cancelled_by_the_database(conn: Connection) -> None:
        conn.exec_driver_sql("ROLLBACK")  # what SQLite does itself on such an error
        raise sqlite3.OperationalError("database or disk is full")

    try:
        other.execute("BEGIN IMMEDIATE")
        first = asyncio.create_task(engine.run(insert("first")))
        await _wait_for_lock_waiter(first)
        group = [
            asyncio.create_task(engine.run(job))
            for job in (insert("before"), cancelled_by_the_database, insert("after"))
        ]
        await asyncio.sleep(0.01)
        other.execute("COMMIT")
        outcomes = await asyncio.wait_for(asyncio.gather(*group, return_exceptions=True), 10)
        await first
        on_disk = {row[0] for row in other.execute("SELECT k FROM t")}
        assert on_disk == {"first"}
        assert all(isinstance(outcome, Exception) for outcome in outcomes), outcomes
        await engine.run(insert("again"))  # the writer's retry
        assert {row[0] for row in other.execute("SELECT k FROM t")} == {"first", "again"}
    finally:
        other.close()
        await engine.dispose()


class _Bug(BaseException):
    """Raised past ``except Exception``, as only a bug would."""


async def test_a_transaction_that_raises_past_exception_still_answers_and_the_thread_goes_on(
    tmp_path: Path,
) -> None:
    engine = engines.sqlite_engine(str(tmp_path / "plain.db"))

    def bug(_conn: Connection) -> None:
        raise _Bug

    try:
        with pytest.raises(_Bug):
            await asyncio.wait_for(engine.run(bug), 10)
        one = await asyncio.wait_for(
            engine.run(lambda conn: conn.exec_driver_sql("SELECT 1").scalar()), 10
        )
        assert one == 1
    finally:
        await engine.dispose()
