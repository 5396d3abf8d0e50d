"""The uvicorn server that drains before it stops.

uvicorn on its own ends every connection at SIGTERM, so a deploy would cut every live call.
Here the first SIGTERM starts the app's :class:`~bridge.drain.Drain` instead:
the server keeps listening (so ``/readyz`` can say 503 and late callers are sent elsewhere)
while the live calls finish, then shuts down as usual and the process exits 0. A second
SIGTERM, or a SIGINT (Ctrl-C) at any time, shuts down at once as uvicorn would have (live
calls end as ``bridge_shutdown``, their records written); a third signal stops without
waiting for anything.

Once it is listening, the server settles its heap
(:mod:`bridge.heap`), so the garbage collector's full passes stop walking what start-up built.
"""

from __future__ import annotations

import asyncio
import signal
import socket
from types import FrameType

import structlog
import uvicorn
from starlette.applications import Starlette

from bridge.drain import Drain
from bridge.heap import settle_heap

log = structlog.get_logger("bridge.serving")

__all__ = ["DrainingServer", "serve"]


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, drain: Drain, drain_s: float) -> None:
        super().__init__(config)
        self.drain = drain
        self.drain_s = drain_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None
        self._signals = 0

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        try:
            await super().serve(sockets)
        finally:
            if self._draining is not None:
                self._draining.cancel()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            # Listening already: a connection that arrives in these few milliseconds waits
            # for them, once, rather than every call waiting for each full collection later.
            settled = settle_heap()
            log.info(
                "bridge.heap_settled",
                frozen_objects=settled.frozen,
                full_collection_ms=round(settled.full_ms, 1),
                settled_collection_ms=round(settled.settled_full_ms, 2),
            )

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not uvicorn's own: it would re-raise the signal once stopped, and a drained bridge
        # that exits by SIGTERM looks to a supervisor like one that crashed.
        self._signals += 1
        # SIGTERM is a deploy: drain. SIGINT is a person at a terminal: stop now.
        drain = sig == signal.SIGTERM and self._signals == 1
        if drain and self._loop is not None and self.started:
            self._loop.call_soon_threadsafe(self._begin_drain, signal.Signals(sig).name)
            return
        if self._signals >= 3 or self.should_exit:
            self.force_exit = True
        self.should_exit = True

    def _begin_drain(self, name: str) -> None:
        log.info("bridge.stop_requested", signal=name, again="ends the live calls at once")
        self._draining = asyncio.create_task(self._drain_then_stop(), name="drain")

    async def _drain_then_stop(self) -> None:
        try:
            await self.drain.run(self.drain_s)
        finally:
            self.should_exit = True


def serve(
    app: Starlette,
    config: uvicorn.Config,
    drain_s: float,
    sockets: list[socket.socket] | None = None,
) -> int:
    """Run ``app`` until it is stopped; the command's exit status (3: it never started)."""
    server = DrainingServer(config, app.state.drain, drain_s)
    server.run(sockets=sockets)
    return 0 if server.started else 3
