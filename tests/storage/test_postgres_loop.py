"""The PostgreSQL store runs its transactions on an event loop and a thread of its own: the
SQLAlchemy and asyncpg work of every turn written stays off the loop that carries the calls'
audio, which only hands the transaction over and gets its outcome back."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection

from bridge.storage.engines import postgres_engine
from tests.conftest import PG_URL


async def test_a_transaction_busy_in_python_leaves_the_calls_loop_running(pg_schema: str) -> None:
    engine = postgres_engine(PG_URL, schema=pg_schema)
    let_go = threading.Event()

    def busy(conn: Connection) -> tuple[bool, int]:
        # Stands for a transaction's own work (building rows, a migration): it holds its
        # loop until the calls' loop has run a step of its own. On the calls' loop it
        # would wait out the whole timeout.
        released = let_go.wait(timeout=5.0)
        return released, conn.execute(text("SELECT 1")).scalar_one()

    async def calls_loop_step() -> None:
        await asyncio.sleep(0.01)
        let_go.set()

    try:
        stepper = asyncio.create_task(calls_loop_step())
        assert await engine.run(busy) == (True, 1)
        await stepper
    finally:
        await engine.dispose()


async def test_the_jobs_run_on_one_thread_that_is_not_the_callers(pg_schema: str) -> None:
    engine = postgres_engine(PG_URL, schema=pg_schema)
    try:
        where = await asyncio.gather(
            *(engine.run(lambda _c: threading.get_ident()) for _ in range(4))
        )
    finally:
        await engine.dispose()
    assert len(set(where)) == 1
    assert where[0] != threading.get_ident()


async def test_disposing_stops_the_store_thread(pg_schema: str) -> None:
    before = set(threading.enumerate())
    engine = postgres_engine(PG_URL, schema=pg_schema)
    await engine.run(lambda conn: conn.execute(text("SELECT 1")).scalar_one())
    started = [t for t in threading.enumerate() if t not in before and t.name == "postgres-store"]
    assert len(started) == 1
    await engine.dispose()
    assert not started[0].is_alive()


async def test_an_engine_never_used_disposes_without_starting_a_thread(pg_schema: str) -> None:
    before = {t.ident for t in threading.enumerate()}
    engine = postgres_engine(PG_URL, schema=pg_schema)
    await engine.dispose()
    assert {t.ident for t in threading.enumerate()} <= before


async def test_a_failing_transaction_raises_its_error_in_the_caller(pg_schema: str) -> None:
    engine = postgres_engine(PG_URL, schema=pg_schema)

    def broken(conn: Connection) -> None:
        conn.execute(text("SELECT no_such_column FROM no_such_table"))

    try:
        with pytest.raises(Exception, match="no_such_table"):
            await engine.run(broken)
        # The pool still serves the next transaction.
        assert await engine.run(lambda conn: conn.execute(text("SELECT 2")).scalar_one()) == 2
    finally:
        await engine.dispose()


async def test_a_transaction_given_up_on_is_cancelled_where_it_runs(pg_schema: str) -> None:
    engine = postgres_engine(PG_URL, schema=pg_schema)
    marker = f"given_up_{uuid.uuid4().hex}"
    slow = text(f"SELECT pg_sleep(30) /* {marker} */")
    still_running = text(
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE :pattern"
    )

    def running(conn: Connection) -> int:
        return conn.execute(still_running, {"pattern": f"%{marker} */"}).scalar_one()

    try:
        async with asyncio.timeout(20):
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(engine.run(lambda conn: conn.execute(slow)), 0.3)
            # The query itself was cancelled on the server, not left to run its 30 s.
            for _ in range(100):
                if await engine.run(running) == 0:
                    break
                await asyncio.sleep(0.05)
            assert await engine.run(running) == 0
    finally:
        await engine.dispose()
