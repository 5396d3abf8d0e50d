"""The database goes away in the middle of a call and comes back: nothing is lost.

A TCP relay stands between the bridge and PostgreSQL; cutting it drops every connection and
refuses new ones, as a failover or a network blip would.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from .conftest import REVIEW_TOKEN, RunningBridge, free_port
from .test_crash_recovery import get_call, start_call, wait_for

StartBridge = Callable[[dict[str, str]], RunningBridge]


class Relay:
    """Forwards 127.0.0.1:``port`` to ``target``; ``cut()`` and ``restore()`` the link."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def restore(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


class RelayThread:
    """Runs a ``Relay`` on an event loop of its own: the test's loop blocks while it starts
    bridge processes, and the bridge must reach its database all the same."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.relay = Relay(target)

    def _do(self, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        asyncio.run_coroutine_threadsafe(job(), self.loop).result(timeout=10)

    def restore(self) -> None:
        self._do(self.relay.restore)

    @staticmethod
    async def _cancel_pipes() -> None:
        pipes = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)

    def cut(self) -> None:
        self._do(self.relay.cut)

    def stop(self) -> None:
        self.cut()
        self._do(self._cancel_pipes)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def relay(pg_database: str) -> Iterator[tuple[RelayThread, str]]:
    url = make_url(pg_database)
    link = RelayThread((url.host or "127.0.0.1", url.port or 5432))
    link.restore()
    try:
        yield link, url.set(port=link.relay.port).render_as_string(hide_password=False)
    finally:
        link.stop()


async def test_a_database_outage_mid_call_loses_no_turn(
    bridge_factory: StartBridge, relay: tuple[RelayThread, str]
) -> None:
    link, url = relay
    bridge = bridge_factory({"BRIDGE_DATABASE_URL": url})
    call_sid = "CA" + uuid.uuid4().hex
    call = start_call(bridge, call_sid)  # greeting, then three exchanges with the local agent

    async def two_turns() -> Any:
        record = await get_call(bridge, call_sid)
        return record is not None and len(record["turns"]) >= 2

    await wait_for(two_turns, "the first turns")
    link.cut()
    async with httpx.AsyncClient(timeout=5) as http:
        # While the database is away the bridge says it is not ready, and keeps the call.
        ready = await http.get(f"{bridge.url}/readyz")
        assert ready.status_code == 503
        # The call log says it is unavailable rather than failing with a server error.
        headers = {"Authorization": f"Bearer {REVIEW_TOKEN}"}
        for path in ("/api/calls", f"/api/calls/{call_sid}", "/calls"):
            answer = await http.get(f"{bridge.url}{path}", headers=headers)
            assert answer.status_code == 503, path

    async def a_write_failed() -> bool:
        return "store.unavailable_retrying" in bridge.log()

    # Hold the outage until a finished turn has had to wait for the store.
    await wait_for(a_write_failed, "a write to meet the outage", 30)
    await asyncio.sleep(1.0)
    link.restore()

    result = await asyncio.wait_for(call, timeout=60)
    assert not result.timed_out

    async def finished() -> Any:
        record = await get_call(bridge, call_sid)
        return record if record is not None and record["status"] != "in_progress" else None

    record = await wait_for(finished, "the call's record to be finished", 30)
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    # The greeting and three exchanges: every turn, none lost while the store was away.
    assert [t["role"] for t in record["turns"]] == ["agent", *["caller", "agent"] * 3]
    assert [t["seq"] for t in record["turns"]] == list(range(1, 8))
    log = bridge.log()
    assert "store.unavailable_retrying" in log and "store.write_recovered" in log
    assert "store.writes_lost" not in log
    assert "Traceback" not in log
    assert REVIEW_TOKEN not in log
