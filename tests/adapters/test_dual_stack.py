"""A UDP socket bound to ``::`` on uvloop, the bridge's event loop, with a plain IPv4 peer on
loopback: what arrives is named as plain IPv4, and a reply to that plain IPv4 address gets
there (uvloop refuses it as given)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import uvloop

from bridge.adapters.dual_stack import is_ipv6_socket, peer_address, socket_destination


class Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.put_nowait((data, addr))


@pytest.mark.parametrize(
    ("reported", "plain"),
    [
        (("::ffff:192.0.2.1", 5060, 0, 0), ("192.0.2.1", 5060)),
        (("::FFFF:10.0.0.7", 7078), ("10.0.0.7", 7078)),
        (("2001:db8::1", 5060, 0, 0), ("2001:db8::1", 5060)),
        (("192.0.2.1", 5060), ("192.0.2.1", 5060)),
        (("::ffff:zz", 1), ("::ffff:zz", 1)),  # not an address at all: left as it is
    ],
)
def test_a_peer_is_named_as_plain_ipv4_when_it_is_ipv4(reported: Any, plain: Any) -> None:
    assert peer_address(reported) == plain


def test_only_an_ipv6_socket_is_given_an_ipv4_peer_mapped() -> None:
    assert socket_destination(("192.0.2.1", 5060), True) == ("::ffff:192.0.2.1", 5060)
    assert socket_destination(("2001:db8::1", 5060), True) == ("2001:db8::1", 5060)
    assert socket_destination(("192.0.2.1", 5060), False) == ("192.0.2.1", 5060)


def test_an_ipv4_peer_of_a_dual_stack_socket_is_heard_and_answered() -> None:
    async def exchange() -> tuple[Any, bytes, bool, bool]:
        loop = asyncio.get_running_loop()
        peer = Inbox()
        peer_t, _ = await loop.create_datagram_endpoint(lambda: peer, local_addr=("127.0.0.1", 0))
        bridge = Inbox()
        bridge_t, _ = await loop.create_datagram_endpoint(lambda: bridge, local_addr=("::", 0))
        try:
            port = bridge_t.get_extra_info("sockname")[1]
            peer_t.sendto(b"ping", ("127.0.0.1", port))
            _, source = await asyncio.wait_for(bridge.received.get(), 5)
            sender = peer_address(source)
            with pytest.raises(ValueError):
                bridge_t.sendto(b"lost", sender)  # what uvloop says to plain IPv4 here
            bridge_t.sendto(b"pong", socket_destination(sender, is_ipv6_socket(bridge_t)))
            reply, _ = await asyncio.wait_for(peer.received.get(), 5)
            return sender, reply, is_ipv6_socket(bridge_t), is_ipv6_socket(peer_t)
        finally:
            peer_t.close()
            bridge_t.close()

    sender, reply, bridge_v6, peer_v6 = uvloop.run(exchange())
    assert sender[0] == "127.0.0.1" and reply == b"pong"
    assert bridge_v6 and not peer_v6
