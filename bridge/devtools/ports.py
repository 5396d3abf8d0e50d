"""A free TCP port on 127.0.0.1 for a server a tool or test is about to start.

The port is only known to be free when this returns; the server binds it a moment later. The
kernel's own ephemeral ports (``bind(..., 0)``, outgoing connections) are taken from
``ip_local_port_range``, so a port found that way can be handed to something else in that
moment (the bridge's own in-process agent, say). Ports are therefore drawn from below that
range, where only explicit binds land.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 20000
_TRIES = 200


def _ephemeral_start() -> int:
    try:
        return int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port that nothing on 127.0.0.1 listens on, outside the ephemeral range when it can."""
    top = _ephemeral_start()
    for _ in range(_TRIES if top - _LOWEST > 1000 else 0):
        port = random.randrange(_LOWEST, top)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        found: int = s.getsockname()[1]
        return found


def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_block(count: int, *, even: bool = False) -> int:
    """The first of ``count`` consecutive ports on 127.0.0.1 free for UDP, the first of them
    for TCP too (SIP and RTP: ``even`` starts the block on an even port, as RTP wants)."""
    for _ in range(_TRIES):
        first = free_port() & ~1 if even else free_port()
        if all(_udp_free(port) for port in range(first, first + count)):
            return first
    raise RuntimeError("no free UDP ports on 127.0.0.1")
