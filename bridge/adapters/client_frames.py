"""Text frames from the client side of a WebSocket, masked with keys drawn from a pool.

RFC 6455 §5.3 has a client mask every frame with a new 32-bit key from a strong source of
entropy. websockets draws each key with an ``os.urandom`` call of its own: a system call per
frame, and one that lets go of the GIL, so a thread waiting for it (the store's) runs first and
the event loop waits to get it back. Fifty frames a second per call made that about 3% of the
bridge's CPU. Here the keys come from one ``os.urandom`` read of :data:`POOL_KEYS` keys: the
same source, one system call per thousand frames. Each key is still used once, and a forked
process starts a pool of its own rather than repeat its parent's keys.
"""

from __future__ import annotations

import os
import struct

try:
    from websockets.speedups import apply_mask
except ImportError:  # a build of websockets without its C extension
    from websockets.utils import apply_mask

__all__ = ["POOL_KEYS", "MaskKeys", "client_text_frame"]

POOL_KEYS = 1024
_KEY_BYTES = 4
_TEXT_FIN = 0x81  # FIN and opcode 1: a whole text message in one frame
_MASKED = 0x80


class MaskKeys:
    """Masking keys, each used once, read from ``os.urandom`` a pool at a time."""

    __slots__ = ("_next", "_pool")

    def __init__(self) -> None:
        self._pool = b""
        self._next = 0

    def take(self) -> bytes:
        at = self._next
        if at >= len(self._pool):
            self._pool = os.urandom(_KEY_BYTES * POOL_KEYS)
            at = 0
        self._next = at + _KEY_BYTES
        return self._pool[at : at + _KEY_BYTES]

    def forget(self) -> None:
        """Drop the keys not yet used (a child process must not use its parent's)."""
        self._pool = b""
        self._next = 0


_KEYS = MaskKeys()
os.register_at_fork(after_in_child=_KEYS.forget)


def client_text_frame(data: bytes, keys: MaskKeys = _KEYS) -> bytes:
    """One unfragmented, masked, uncompressed text frame carrying ``data`` (UTF-8)."""
    size = len(data)
    if size < 126:
        head = bytes((_TEXT_FIN, _MASKED | size))
    elif size < 65536:
        head = struct.pack("!BBH", _TEXT_FIN, _MASKED | 126, size)
    else:
        head = struct.pack("!BBQ", _TEXT_FIN, _MASKED | 127, size)
    key = keys.take()
    return b"".join((head, key, apply_mask(data, key)))
