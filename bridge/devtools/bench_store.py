"""How fast the call store writes turns and answers the review pages, as printed figures.

Seeds a call log (``calls`` calls of ``turns`` turns each) through the real store, then times:

* committed turn writes per second, one call writing at a time and 20 calls at once, against
  a baseline measured in the same run: the bare driver committing the same rows (stdlib
  ``sqlite3`` for SQLite, ``asyncpg`` for PostgreSQL) with no store around it;
* the list page (newest 50), a search by number, and a search by transcript text.

PostgreSQL runs when ``--postgres URL`` is given, in a schema of its own that is dropped after.
"""

from __future__ import annotations

import asyncio
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bridge.call.records import CallStatus, EndReason, Role, Turn
from bridge.storage.base import CallFilter, CallStore, NewCall
from bridge.storage.factory import postgres_store, sqlite_store

_WORDS = [
    *("table", "booking", "tonight", "parcel", "delivery", "refund", "invoice", "account"),
    *("password", "weather", "train", "ticket", "doctor", "appointment", "pizza", "order"),
    *("cancel", "change", "address", "thanks", "hello"),
]
_T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class StoreFigures:
    backend: str
    calls: int
    turns: int
    writes_per_s: float
    baseline_writes_per_s: float
    concurrent_writes_per_s: float
    list_ms: float
    number_ms: float
    text_ms: float


def _text(n: int) -> str:
    return " ".join(_WORDS[(n * 7 + k * 3) % len(_WORDS)] for k in range(12))


async def _timed(job: Callable[[], Awaitable[object]], repeat: int = 9) -> float:
    """The median of ``repeat`` runs, in milliseconds."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        await job()
        runs.append((time.perf_counter() - start) * 1000)
    return statistics.median(runs)


async def _seed(store: CallStore, calls: int, turns: int) -> None:
    for c in range(calls):
        sid = f"CA{c:032d}"
        await store.create_call(
            NewCall(
                sid,
                f"MZ{c:032d}",
                f"+1555{c:07d}",
                "+15557650000",
                "openai",
                "gpt-realtime",
                _T0 + timedelta(minutes=c),
            ),
        )
        await asyncio.gather(
            *(
                store.append_turn(
                    sid,
                    Turn(
                        seq,
                        Role(("caller", "agent")[seq % 2]),
                        _text(c * turns + seq),
                        seq * 1000,
                        seq * 1000 + 800,
                    ),
                )
                for seq in range(1, turns + 1)
            ),
        )
        await store.finish_call(sid, CallStatus.COMPLETED, EndReason.CALLER_HANGUP,
                                _T0 + timedelta(minutes=c, seconds=90))  # fmt: skip


async def _write_rate(store: CallStore, sid: str, n: int, concurrent: int) -> float:
    async def writer(offset: int) -> None:
        for k in range(n // concurrent):
            seq = 10_000 + offset * n + k
            await store.append_turn(sid, Turn(seq, Role.CALLER, _text(seq), seq, seq + 1))

    start = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(concurrent)))
    return (n // concurrent * concurrent) / (time.perf_counter() - start)


async def _measure(
    name: str, store: CallStore, calls: int, turns: int, baseline: Callable[[int], Awaitable[float]]
) -> StoreFigures:
    await store.open()
    try:
        await _seed(store, calls, turns)
        sid = f"CA{0:032d}"
        writes = await _write_rate(store, sid, 400, 1)
        concurrent = await _write_rate(store, sid, 400, 20)
        base = await baseline(400)
        list_ms = await _timed(lambda: store.list_calls(limit=51))
        number_ms = await _timed(
            lambda: store.list_calls(limit=51, filters=CallFilter(number="555 000 12"))
        )
        text_ms = await _timed(
            lambda: store.list_calls(limit=51, filters=CallFilter(text="pizza order"))
        )
    finally:
        await store.close()
    return StoreFigures(
        name, calls, calls * turns, writes, base, concurrent, list_ms, number_ms, text_ms
    )


def _sqlite_baseline(path: Path) -> Callable[[int], Awaitable[float]]:
    async def run(n: int) -> float:
        def work() -> float:
            conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("CREATE TABLE IF NOT EXISTS plain (k INTEGER PRIMARY KEY, v TEXT)")
            start = time.perf_counter()
            for k in range(n):
                conn.execute("INSERT INTO plain VALUES (?, ?)", (k, _text(k)))
            took = time.perf_counter() - start
            conn.close()
            return n / took

        return await asyncio.to_thread(work)

    return run


def _postgres_baseline(url: str, schema: str) -> Callable[[int], Awaitable[float]]:
    async def run(n: int) -> float:
        import asyncpg

        conn = await asyncpg.connect(url, server_settings={"search_path": schema})
        try:
            await conn.execute("CREATE TABLE plain (k INTEGER PRIMARY KEY, v TEXT)")
            start = time.perf_counter()
            for k in range(n):
                await conn.execute("INSERT INTO plain VALUES ($1, $2)", k, _text(k))
            return n / (time.perf_counter() - start)
        finally:
            await conn.close()

    return run


async def run_store_bench(calls: int, turns: int, postgres_url: str | None) -> list[StoreFigures]:
    figures = []
    with tempfile.TemporaryDirectory(prefix="bridge-bench-") as tmp:
        store = sqlite_store(str(Path(tmp) / "calls.db"))
        baseline = _sqlite_baseline(Path(tmp) / "plain.db")
        figures.append(await _measure("sqlite", store, calls, turns, baseline))
    if postgres_url is not None:
        import asyncpg

        schema = "bench_" + uuid.uuid4().hex[:12]
        admin = await asyncpg.connect(postgres_url)
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            store = postgres_store(postgres_url, schema=schema)
            baseline = _postgres_baseline(postgres_url, schema)
            figures.append(await _measure("postgresql", store, calls, turns, baseline))
        finally:
            await admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
            await admin.close()
    return figures


def format_store(figures: list[StoreFigures]) -> str:
    lines = ["call store: committed turn writes and review queries (median of 9)"]
    for f in figures:
        lines += [
            f"  {f.backend}: {f.calls} calls, {f.turns} turns",
            f"    turn writes, one call:     {f.writes_per_s:8.0f}/s"
            f"  (bare driver {f.baseline_writes_per_s:.0f}/s: "
            f"{f.writes_per_s / f.baseline_writes_per_s:.2f}x)",
            f"    turn writes, 20 calls:     {f.concurrent_writes_per_s:8.0f}/s",
            f"    list page (newest 50):     {f.list_ms:8.1f} ms",
            f"    search by number:          {f.number_ms:8.1f} ms",
            f"    search by transcript text: {f.text_ms:8.1f} ms",
        ]
    return "\n".join(lines)
