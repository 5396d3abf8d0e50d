"""Draining: a bridge told to stop takes no new calls and lets the live ones finish.

A deploy must not cut anyone off. On SIGTERM the bridge turns away new calls at once
(``/readyz`` answers 503 so the load balancer stops sending them; the voice webhook, SIP
INVITEs and the outbound API refuse politely), then waits for the live calls to end by
themselves. Calls still going after ``BRIDGE_DRAIN_S`` are asked to end: the agent says a
short goodbye and the call ends as ``bridge_shutdown``. The server exits once the last call's
record is written.

Every :class:`~bridge.session.CallSession` registers itself here for as long as it runs, on
whatever phone leg it came.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

import structlog

from bridge.metrics import BridgeMetrics

log = structlog.get_logger("bridge.drain")

# After the goodbye is asked for: how long calls get to say it and write their records (the
# goodbye is bounded by the call logic's own grace, the record by its close timeout).
GOODBYE_WAIT_S = 45.0


class Endable(Protocol):
    def end_for_shutdown(self) -> None:
        """Say a short goodbye and end the call as ``bridge_shutdown``; returns at once."""


class Drain:
    """The live calls of this process, and whether it still takes new ones."""

    def __init__(self, metrics: BridgeMetrics | None = None) -> None:
        self.metrics = metrics
        self.draining = False
        self._live: set[Endable] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._on_begin: list[Callable[[], None]] = []

    @property
    def live_calls(self) -> int:
        return len(self._live)

    def add(self, call: Endable) -> None:
        self._live.add(call)
        self._idle.clear()

    def discard(self, call: Endable) -> None:
        self._live.discard(call)
        if not self._live:
            self._idle.set()

    def on_begin(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the drain begins (a listener that must refuse calls)."""
        self._on_begin.append(callback)
        if self.draining:
            callback()

    def begin(self) -> None:
        """Take no new calls from now on. Idempotent."""
        if self.draining:
            return
        self.draining = True
        if self.metrics is not None:
            self.metrics.draining.set(1)
        for callback in self._on_begin:
            callback()

    async def run(self, limit_s: float, goodbye_wait_s: float = GOODBYE_WAIT_S) -> int:
        """Drain: wait up to ``limit_s`` for the live calls to end, then ask the rest to say
        goodbye and wait up to ``goodbye_wait_s`` for them. Returns how many were still
        live at the very end (0 when every call ended and its record was written)."""
        self.begin()
        log.info("bridge.draining", live_calls=self.live_calls, drain_s=limit_s)
        if await self._wait_idle(limit_s):
            log.info("bridge.drained", ended_by_themselves=True)
            return 0
        asked = list(self._live)
        log.warning("bridge.drain_limit", live_calls=len(asked), drain_s=limit_s)
        for call in asked:
            call.end_for_shutdown()
        if await self._wait_idle(goodbye_wait_s):
            log.info("bridge.drained", ended_by_themselves=False, asked_to_end=len(asked))
            return 0
        log.error("bridge.drain_incomplete", live_calls=self.live_calls)
        return self.live_calls

    async def _wait_idle(self, timeout_s: float) -> bool:
        try:
            async with asyncio.timeout(max(timeout_s, 0.0)):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
