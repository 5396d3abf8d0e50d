"""Writes one call's record in order, off the audio path, riding out store outages.

The call session hands over the call, its turns and events as they happen and never waits
for the database: a slow or restarting store must not hold up audio, nor delay answering the
phone. When the store is unavailable the same write is retried with backoff, so a database
failover mid-call loses nothing; every write is idempotent, so a retry of a write that did
land (the connection died after the commit) leaves one row. Writes stay in the order they
were handed over: a turn is never written before its call, nor the finish before the turns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bridge.call.records import CallEvent, CallStatus, EndReason, Turn
from bridge.metrics import BridgeMetrics
from bridge.storage.base import CallStore, NewCall, StoreUnavailableError

# Seconds between attempts at one write; the last repeats until the call's record is closed.
RETRY_DELAYS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0)


@dataclass(frozen=True, slots=True)
class _Finish:
    status: CallStatus
    end_reason: EndReason
    ended_at: datetime


_Item = NewCall | Turn | CallEvent | _Finish


class CallRecordWriter:
    """The store writer of one call. ``start()`` it, hand it writes, ``await close()`` once."""

    def __init__(
        self,
        store: CallStore,
        call_sid: str,
        log: Any,
        retry_delays_s: tuple[float, ...] = RETRY_DELAYS_S,
        metrics: BridgeMetrics | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.call_sid = call_sid
        self.log = log
        self._delays = retry_delays_s
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Writes given up on: refused by the store, or still pending when ``close`` gave up.
        self.lost = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"record-writer-{self.call_sid}")

    def create(self, call: NewCall) -> None:
        self._put(call)

    def turn(self, turn: Turn) -> None:
        self._put(turn)

    def event(self, event: CallEvent) -> None:
        self._put(event)

    async def close(
        self, status: CallStatus, end_reason: EndReason, ended_at: datetime, timeout_s: float
    ) -> None:
        """Queue the finish, then wait up to ``timeout_s`` for everything to be written."""
        self._put(_Finish(status, end_reason, ended_at))
        self._closed = True
        self._queue.put_nowait(None)
        task = self._task
        if task is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout_s)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            # The write in flight and everything queued behind it, less the end marker.
            left = self._queue.qsize()
            self.lost += left
            if self.metrics is not None:
                self.metrics.store_queue.dec(left)
            self.log.error("store.writes_lost", count=self.lost, waited_s=timeout_s)

    def _put(self, item: _Item) -> None:
        if self._closed:
            raise RuntimeError("the call's record is already closed")
        self._queue.put_nowait(item)
        if self.metrics is not None:
            self.metrics.store_queue.inc()

    async def _run(self) -> None:
        while (item := await self._queue.get()) is not None:
            began = time.perf_counter()
            await self._write_until_done(item)
            if self.metrics is not None:
                self.metrics.store_queue.dec()
                self.metrics.store_write.observe(time.perf_counter() - began)

    async def _write_until_done(self, item: _Item) -> None:
        attempt = 0
        while True:
            try:
                await self._write(item)
            except StoreUnavailableError as exc:
                if attempt == 0:
                    self.log.warning("store.unavailable_retrying", error=str(exc))
                await asyncio.sleep(self._delays[min(attempt, len(self._delays) - 1)])
                attempt += 1
                continue
            except Exception as exc:  # refused for good (a bug, bad data): keep the call going
                self.lost += 1
                self.log.error("store.write_failed", write=type(item).__name__, error=str(exc))
                return
            if attempt:
                self.log.info("store.write_recovered", attempts=attempt + 1)
            return

    async def _write(self, item: _Item) -> None:
        match item:
            case NewCall():
                await self.store.create_call(item)
            case Turn():
                await self.store.append_turn(self.call_sid, item)
                self.log.debug("turn.saved", seq=item.seq, role=item.role.value, text=item.text)
            case CallEvent():
                await self.store.append_event(self.call_sid, item)
            case _Finish():
                await self.store.finish_call(
                    self.call_sid, item.status, item.end_reason, item.ended_at
                )
