"""The sockets under the sans-I/O SIP server: one :class:`SipListener` per
``BRIDGE_SIP_LISTEN`` entry, UDP or TCP.

A listener owns its :class:`~bridge.protocols.sip.uas.SipServer`: it feeds it what arrives,
sends what it says to send, runs its timers, and hands its events to the endpoint. Over TCP
a response or the bridge's BYE goes back on the connection the call came in on (RFC 3261
section 18.2.2); a connection that sends what cannot be framed is closed, and one that sits
idle with no call on it is closed too, so a scanner cannot hold sockets open.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import structlog

from bridge.adapters.dual_stack import is_ipv6_socket, peer_address, socket_destination
from bridge.protocols.sip.message import SipParseError
from bridge.protocols.sip.stream import PONG, SipStreamFramer
from bridge.protocols.sip.uas import SipEvent, SipServer

log = structlog.get_logger("bridge.sip")

Address = tuple[str, int]

#: Open TCP connections a listener accepts; more are closed at once, except from an allowed
#: source, for which the longest-idle connection of an outsider with no call makes room.
MAX_TCP_CONNECTIONS = 512
#: Open TCP connections from one host outside ``BRIDGE_SIP_ALLOW``.
MAX_TCP_PER_OUTSIDER = 8
#: A connection with no call on it is closed after this long without a message.
TCP_IDLE_S = 120.0
#: A message begun must be finished within this long (no byte-at-a-time senders).
TCP_MESSAGE_S = 10.0


class SipListener:
    """One SIP transport on one address; subclasses provide the socket."""

    transport_name = "udp"

    def __init__(
        self, server: SipServer, on_event: Callable[[SipListener, SipEvent], None]
    ) -> None:
        self.server = server
        self._on_event = on_event
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None

    async def start(self, host: str, port: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def send(self, data: bytes, to: Address) -> None:
        raise NotImplementedError

    def receive(self, data: bytes, source: Address) -> None:
        self.server.receive_datagram(data, source, self._loop.time())
        self.pump()

    def pump(self) -> None:
        """Send what the server has for the wire, pass on its events, re-arm its timer."""
        for data, to in self.server.datagrams_to_send():
            self.send(data, to)
        for event in self.server.events_received():
            self._on_event(self, event)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if (deadline := self.server.next_deadline()) is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.server.handle_timeout(self._loop.time())
        self.pump()


class UdpSipListener(SipListener, asyncio.DatagramProtocol):
    transport_name = "udp"

    def __init__(
        self, server: SipServer, on_event: Callable[[SipListener, SipEvent], None]
    ) -> None:
        super().__init__(server, on_event)
        self._transport: asyncio.DatagramTransport | None = None
        self._ipv6 = False  # bound to "::": IPv4 peers are sent to as IPv4-mapped

    async def start(self, host: str, port: int) -> None:
        await self._loop.create_datagram_endpoint(lambda: self, local_addr=(host, port))

    def close(self) -> None:
        super().close()
        if self._transport is not None:
            self._transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)
        self._ipv6 = is_ipv6_socket(transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.receive(data, peer_address(addr))

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP "port unreachable" for a peer that went away: the timers cope

    def send(self, data: bytes, to: Address) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.sendto(data, socket_destination(to, self._ipv6))


class TcpSipListener(SipListener):
    transport_name = "tcp"

    def __init__(
        self, server: SipServer, on_event: Callable[[SipListener, SipEvent], None]
    ) -> None:
        super().__init__(server, on_event)
        self._server: asyncio.Server | None = None
        self.connections: dict[Address, _SipConnection] = {}

    async def start(self, host: str, port: int) -> None:
        self._server = await self._loop.create_server(
            lambda: _SipConnection(self), host, port, reuse_address=True
        )

    def close(self) -> None:
        super().close()
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections.values()):
            connection.close()

    def admit(self, peer: Address) -> str | None:
        """Whether a new connection from ``peer`` may stay; if not, why. Anyone may connect,
        but one host outside the allow-list cannot take every slot, and when all are taken
        the bridge's own peers still get in: a PBX must not find it full of scanners."""
        connections = self.connections
        trusted = self.server.allows(peer[0])
        if not trusted and sum(1 for host, _ in connections if host == peer[0]) >= (
            MAX_TCP_PER_OUTSIDER
        ):
            return "per-host limit"
        if len(connections) < MAX_TCP_CONNECTIONS:
            return None
        idle = [
            c
            for c in connections.values()
            if not self.server.allows(c.peer[0]) and not self.server.has_call_from(c.peer)
        ]
        if not trusted or not idle:
            return "connection limit"
        min(idle, key=lambda c: c.last_message).close()
        return None

    def send(self, data: bytes, to: Address) -> None:
        connection = self.connections.get(to)
        if connection is None:
            # The peer closed the connection its call came on; a response or BYE has no
            # other way back that the peer has promised to listen on.
            log.info("sip.tcp_gone", peer=f"{to[0]}:{to[1]}")
            return
        connection.write(data)


class _SipConnection(asyncio.Protocol):
    """One accepted TCP connection: framed messages in, responses and BYEs out."""

    def __init__(self, listener: TcpSipListener) -> None:
        self._listener = listener
        self._loop = listener._loop
        self._framer = SipStreamFramer()
        self._transport: asyncio.Transport | None = None
        self._peer: Address = ("", 0)
        self._last_message = self._loop.time()
        self._message_started: float | None = None
        self._watch: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._peer = peer_address(transport.get_extra_info("peername"))
        refused = self._listener.admit(self._peer)
        if refused is not None:
            log.warning("sip.tcp_refused", reason=refused, peer=self._peer[0])
            self._transport.abort()
            return
        self._listener.connections[self._peer] = self
        self._arm()

    def data_received(self, data: bytes) -> None:
        try:
            chunk = self._framer.feed(data)
        except SipParseError as exc:
            log.warning(
                "sip.tcp_unframeable", peer=f"{self._peer[0]}:{self._peer[1]}", error=str(exc)
            )
            self.close()
            return
        now = self._loop.time()
        if chunk.pings:
            self.write(PONG * chunk.pings)
        if chunk.messages or chunk.pings:
            self._last_message = now
        self._message_started = (self._message_started or now) if self._framer.pending else None
        for message in chunk.messages:
            self._listener.receive(message, self._peer)

    @property
    def peer(self) -> Address:
        return self._peer

    @property
    def last_message(self) -> float:
        return self._last_message

    def write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._listener.connections.get(self._peer) is self:
            del self._listener.connections[self._peer]

    def _arm(self) -> None:
        self._watch = self._loop.call_later(1.0, self._check)

    def _check(self) -> None:
        """Slow senders and idle connections with no call on them are let go."""
        now = self._loop.time()
        if self._message_started is not None and now - self._message_started > TCP_MESSAGE_S:
            log.warning("sip.tcp_slow", peer=f"{self._peer[0]}:{self._peer[1]}")
            self.close()
            return
        idle = now - self._last_message > TCP_IDLE_S
        if idle and not self._listener.server.has_call_from(self._peer):
            self.close()
            return
        self._arm()


__all__ = ["SipListener", "TcpSipListener", "UdpSipListener"]
