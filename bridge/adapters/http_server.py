"""uvicorn's HTTP protocol with the two guards against slow clients it lacks, and the
process's descriptor limit.

uvicorn has no deadline for request headers: its keep-alive timer is armed only after a
response and is cancelled by any byte, so a client that connects and sends nothing, or sends
its headers a byte at a time, keeps its socket for as long as it likes. A thousand of those
use up the descriptors, and then /healthz and Twilio's webhooks cannot connect at all.

``configure_server_limits()`` gives uvicorn a protocol class (``http=``) that closes a
connection whose request headers are not complete within the header timeout of its accept,
or of its previous response, and that keeps the open connections, HTTP and upgraded
WebSocket alike, at or under a cap. At the cap the connection that has waited longest for its
headers is dropped, because under a slowloris that is an attacker's and a real webhook then
still gets in; a newcomer is refused only when no connection is waiting. Both are logged as
counts, at most one line per ``REPORT_INTERVAL_S``: a flood must not become a log flood.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sized
from dataclasses import dataclass
from typing import ClassVar

import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = structlog.get_logger("bridge.server")

REPORT_INTERVAL_S = 5.0
# The first line after a quiet spell waits this long, so that a burst is one line, not two.
REPORT_GATHER_S = 1.0
# Descriptors left outside the cap for what is not a client connection: the interpreter's own,
# the listening socket, the event loop, the database pool, log and recording files.
FD_HEADROOM = 64
# Beyond this one process cannot serve its connections well anyway; more instances can.
MAX_CONNECTIONS_CEILING = 4096
UVICORN_BACKLOG = 2048  # uvicorn's default


class ConnectionGuard:
    """What every connection of one server shares: who is waiting for headers (oldest
    first) and the closes not yet logged."""

    def __init__(self, header_timeout_s: float, max_connections: int) -> None:
        self.header_timeout_s = header_timeout_s
        self.max_connections = max_connections
        # A dict keeps insertion order: its first key has waited longest.
        self.waiting: dict[GuardedHttpProtocol, None] = {}
        self._dropped = self._refused = self._timed_out = 0
        self._connections: Sized = ()
        self._report: asyncio.TimerHandle | None = None
        self._last_report = float("-inf")

    def count(
        self,
        loop: asyncio.AbstractEventLoop,
        connections: Sized,
        *,
        dropped: int = 0,
        refused: int = 0,
        timed_out: int = 0,
    ) -> None:
        """Add closes to the next report, logged shortly, and never sooner than the report
        interval after the previous one."""
        self._dropped += dropped
        self._refused += refused
        self._timed_out += timed_out
        self._connections = connections
        if self._report is None:
            delay = max(REPORT_GATHER_S, self._last_report + REPORT_INTERVAL_S - loop.time())
            self._report = loop.call_later(delay, self._log, loop)

    def _log(self, loop: asyncio.AbstractEventLoop) -> None:
        self._report = None
        self._last_report = loop.time()
        if self._dropped or self._refused:
            log.warning(
                "server.connection_cap",
                dropped_waiting=self._dropped,
                refused=self._refused,
                open_connections=len(self._connections),
                max_connections=self.max_connections,
            )
        if self._timed_out:
            log.info(
                "server.header_timeout",
                closed=self._timed_out,
                header_timeout_s=self.header_timeout_s,
            )
        self._dropped = self._refused = self._timed_out = 0


class GuardedHttpProtocol(HttpToolsProtocol):
    """Use a subclass made by ``guarded_protocol()``, which supplies the shared guard."""

    guard: ClassVar[ConnectionGuard]
    _header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # Counted before this one joins, so the cap bounds the connections kept open.
        at_cap = len(self.connections) >= self.guard.max_connections
        super().connection_made(transport)
        if at_cap:
            oldest = next(iter(self.guard.waiting), None)
            if oldest is None:
                transport.close()
                self.guard.count(self.loop, self.connections, refused=1)
                return
            oldest._stop_waiting()
            oldest.transport.close()
            self.guard.count(self.loop, self.connections, dropped=1)
        self._wait_for_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        # Also reached just before a WebSocket upgrade hands the socket to another protocol.
        self._stop_waiting()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # A pipelined request already has its headers: it starts now and needs no deadline.
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if not pipelined and not self.transport.is_closing():
            self._wait_for_headers()

    def _wait_for_headers(self) -> None:
        self._stop_waiting()
        self._header_deadline = self.loop.call_later(
            self.guard.header_timeout_s, self._headers_too_late
        )
        self.guard.waiting[self] = None

    def _stop_waiting(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None
            self.guard.waiting.pop(self, None)

    def _headers_too_late(self) -> None:
        self._header_deadline = None
        self.guard.waiting.pop(self, None)
        if not self.transport.is_closing():
            self.transport.close()
            self.guard.count(self.loop, self.connections, timed_out=1)


def guarded_protocol(header_timeout_s: float, max_connections: int) -> type[GuardedHttpProtocol]:
    """A protocol class for one server, with its own guard."""

    class Protocol(GuardedHttpProtocol):
        guard = ConnectionGuard(header_timeout_s, max_connections)

    return Protocol


def raise_fd_limit() -> int | None:
    """Lift the soft RLIMIT_NOFILE to the hard limit where the system allows it; returns the
    soft limit in force afterwards, or None when it is unlimited or unknown."""
    try:
        import resource
    except ImportError:  # not a Unix
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    # An unlimited hard limit cannot be the soft one on every system (macOS refuses it).
    target = 65536 if hard == resource.RLIM_INFINITY else hard
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.info("server.fd_limit_kept", fd_limit=soft, hard_limit=hard, reason=str(exc))
    return soft


def default_max_connections(fd_limit: int | None) -> int:
    """Half of what the headroom leaves: a call's media socket brings its realtime socket."""
    if fd_limit is None:
        return MAX_CONNECTIONS_CEILING
    return max(16, min(MAX_CONNECTIONS_CEILING, (fd_limit - FD_HEADROOM) // 2))


def accept_backlog(fd_limit: int | None, max_connections: int) -> int:
    """The listen backlog. It is also how many connections asyncio's event loop accepts in one
    go before the cap sees any of them, so it is kept to what the descriptors beyond the cap
    can hold about three times over; past that, accept() fails with EMFILE and the loop logs
    an error and stops accepting for a second."""
    if fd_limit is None:
        return UVICORN_BACKLOG
    spare = fd_limit - FD_HEADROOM - max_connections
    return max(16, min(UVICORN_BACKLOG, spare // 3))


@dataclass(frozen=True)
class ServerLimits:
    """What to pass to ``uvicorn.run``: ``http=protocol, backlog=backlog``."""

    protocol: type[GuardedHttpProtocol]
    backlog: int


def configure_server_limits(header_timeout_s: float, max_connections: int | None) -> ServerLimits:
    """Raise the descriptor limit, choose the cap (``max_connections``, else one that fits the
    limit) and log them once, at start-up."""
    fd_limit = raise_fd_limit()
    cap = max_connections or default_max_connections(fd_limit)
    if fd_limit is not None and cap + FD_HEADROOM > fd_limit:
        log.warning("server.max_connections_above_fd_limit", max_connections=cap, fd_limit=fd_limit)
    backlog = accept_backlog(fd_limit, cap)
    log.info(
        "server.limits",
        fd_limit=fd_limit,
        max_connections=cap,
        header_timeout_s=header_timeout_s,
        backlog=backlog,
    )
    return ServerLimits(guarded_protocol(header_timeout_s, cap), backlog)
