"""The model leg's socket: a thin websockets client that speaks only text frames.

Third-party exceptions stop here: failing to connect becomes ``ProviderError``; a closed
socket ends iteration.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.connection import Connection
from websockets.protocol import Side, State
from websockets.proxy import get_proxy
from websockets.uri import parse_uri

from bridge.adapters.client_frames import client_text_frame
from bridge.errors import ProviderError

__all__ = [
    "CONNECT_TIMEOUT_S",
    "MAX_FRAME_BYTES",
    "RealtimeSocket",
    "proxy_for",
    "tls_context",
    "write_now",
]

CONNECT_TIMEOUT_S = 10.0
MAX_FRAME_BYTES = 16 * 1024 * 1024  # a generous bound: one audio delta is a few KiB


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The TLS context of every ``wss://`` realtime connection this process opens. Left to
    itself, each connection would build its own, reading the whole system trust store: about
    30 ms of CPU on the event loop that carries every live call's audio, at each call's
    start, reconnect and rollover. The same verification, built once."""
    return ssl.create_default_context()


@functools.lru_cache(maxsize=64)  # a bridge connects to a handful of URLs, one per model
def proxy_for(url: str) -> str | None:
    """The proxy a connection to ``url`` goes through (``None``: straight there), as
    websockets reads it from the environment (``wss_proxy``, ``https_proxy``, ``no_proxy``
    and the rest). Left to itself, websockets reads it again for every connection, walking
    the whole environment twice on the event loop: about 80 us here, and ten times that
    where an orchestrator puts hundreds of variables in each container's environment.
    Raises ``websockets.InvalidURI`` for a URL websockets cannot connect to."""
    return get_proxy(parse_uri(url))


def _has_direct_path(conn: Connection) -> bool:
    """Whether this websockets release has what :func:`write_now` relies on."""
    return all(
        hasattr(conn, name)
        for name in ("protocol", "transport", "paused", "send_data", "send_in_progress")
    ) and all(
        hasattr(conn.protocol, name)
        for name in ("side", "extensions", "writes", "expect_continuation_frame")
    )


def write_now(conn: Connection, text: str) -> bool:
    """Write one text frame at once if the connection can take it without waiting: open,
    its buffer drained, no other send under way. False when it cannot (then ``await
    conn.send(text)``, which waits its turn).

    The usual case, 50 times a second per call for caller audio. websockets' own ``send()``
    does the same write inside a context manager whose bookkeeping costs more than the write
    itself; here the frame goes straight through its sans-I/O protocol, or, from a client with
    no extension and nothing else queued, is framed here with a pooled mask key
    (:mod:`bridge.adapters.client_frames`). A write that fills the buffer pauses the
    transport, so the next frame takes the waiting path."""
    protocol = conn.protocol
    if (
        protocol.state is State.OPEN
        and not conn.paused
        and conn.send_in_progress is None
        and not conn.transport.is_closing()
    ):
        data = text.encode()
        if (
            protocol.side is Side.CLIENT
            and not protocol.extensions
            and not protocol.writes
            and not protocol.expect_continuation_frame
        ):
            conn.transport.write(client_text_frame(data))
        else:
            protocol.send_text(data)
            conn.send_data()
        return True
    return False


class RealtimeSocket:
    """An open connection to a realtime server. Use ``async with`` or call ``close()``."""

    def __init__(self, conn: ClientConnection) -> None:
        self._conn = conn
        self._direct = _has_direct_path(conn)

    @classmethod
    async def open(
        cls, url: str, headers: Mapping[str, str], timeout_s: float = CONNECT_TIMEOUT_S
    ) -> RealtimeSocket:
        """Connect, or raise ``ProviderError`` saying why (never the credentials)."""
        tls: dict[str, Any] = {"ssl": tls_context()} if urlsplit(url).scheme == "wss" else {}
        try:
            conn = await connect(
                url,
                proxy=proxy_for(url),
                additional_headers=dict(headers),
                open_timeout=timeout_s,
                max_size=MAX_FRAME_BYTES,
                compression=None,
                ping_interval=20,
                ping_timeout=20,
                **tls,
            )
        except websockets.InvalidStatus as exc:
            status = exc.response.status_code
            raise ProviderError(f"realtime handshake refused: HTTP {status}", status) from exc
        except (OSError, TimeoutError, websockets.WebSocketException) as exc:
            raise ProviderError(f"realtime server unreachable: {type(exc).__name__}") from exc
        return cls(conn)

    async def send(self, text: str) -> None:
        """Send one event; ``ProviderError`` when the connection is gone."""
        conn = self._conn
        if self._direct and write_now(conn, text):
            return
        try:
            await conn.send(text)
        except (websockets.ConnectionClosed, OSError) as exc:
            raise ProviderError("realtime connection closed") from exc

    async def frames(self) -> AsyncIterator[str]:
        """Text frames until the server closes; binary frames are decoded leniently."""
        try:
            async for message in self._conn:
                yield message if isinstance(message, str) else message.decode("utf-8", "replace")
        except websockets.ConnectionClosed:
            return

    @property
    def close_code(self) -> int | None:
        return self._conn.close_code

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError, websockets.WebSocketException, OSError):
            await asyncio.wait_for(self._conn.close(), timeout=2.0)

    async def __aenter__(self) -> RealtimeSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
