"""The SQLite store does its work on its own thread: a write waiting on the file's lock (another
process mid-write, a slow disk) holds up the calls' audio on the event loop not at all."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from bridge.storage import sqlite_store
from tests.storage.samples import caller, new_call


async def test_a_write_waiting_for_another_process_leaves_the_event_loop_running(
    tmp_path: Path,
) -> None:
    db = tmp_path / "calls.db"
    store = sqlite_store(str(db))
    await store.open()
    other = sqlite3.connect(db, isolation_level=None)
    try:
        await store.create_call(new_call("CA01"))
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
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
    finally:
        other.close()
        await store.close()


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
