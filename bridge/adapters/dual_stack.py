"""Peer addresses on a socket bound to ``::``, which takes IPv4 peers as well as IPv6 ones.

Such a socket names an IPv4 peer by its IPv4-mapped IPv6 address (``::ffff:192.0.2.1``).
Everything above the sockets (the allow-list, a Via's ``received``, RTP latching, the
address an SDP offer gives) speaks of plain IPv4, so an arriving address is unmapped here,
and a plain IPv4 destination is mapped again before it is sent from such a socket: uvloop
refuses to send to a plain IPv4 address from an IPv6 socket.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

__all__ = ["is_ipv6_socket", "peer_address", "socket_destination"]

Address = tuple[str, int]

_MAPPED_PREFIX = "::ffff:"


def peer_address(addr: Any) -> Address:
    """``(host, port)`` of what a socket reports, an IPv4-mapped host as plain IPv4.

    Called for every RTP packet: a plain IPv4 address costs one character search."""
    host = addr[0]
    if ":" in host and host[:7].lower() == _MAPPED_PREFIX:
        try:
            mapped = ipaddress.IPv6Address(host).ipv4_mapped
        except ValueError:
            mapped = None
        if mapped is not None:
            host = str(mapped)
    return host, addr[1]


def socket_destination(to: Address, ipv6_socket: bool) -> Address:
    """``to`` as the socket must be given it: on an IPv6 socket, IPv4 becomes IPv4-mapped."""
    if ipv6_socket and ":" not in to[0]:
        return _MAPPED_PREFIX + to[0], to[1]
    return to


def is_ipv6_socket(transport: Any) -> bool:
    """Whether ``transport``'s socket is IPv6 (and so may be dual-stack)."""
    sock = transport.get_extra_info("socket")
    return sock is not None and sock.family == socket.AF_INET6
