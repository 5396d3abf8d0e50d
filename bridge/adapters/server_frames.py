"""Whole text frames from a WebSocket client, read without websockets' general parser.

A Twilio media socket brings fifty small text frames a second per call. uvicorn hands every
byte to websockets' sans-I/O parser, a chain of generators that reads each frame's header,
length, mask and payload in separate steps and builds a ``Frame`` for it: about 5.6 µs of
CPU for a 395-byte media frame, where reading the header and unmasking with websockets' own
C helper takes about 0.5 µs.

:class:`LeanWebSocketProtocol` is uvicorn's WebSocket protocol (``ws=`` in its config) with a
shorter road for the one frame that matters: a whole, unfragmented, masked, uncompressed text
frame within the size limit, on an open connection. Such a frame is unmasked here and given to
the application exactly as uvicorn would give it. Everything else (the handshake, control
frames, fragments, binary frames, anything malformed, oversized or invalid UTF-8, and all
that follows a close) goes to websockets unchanged. Bytes are handed over to websockets only
in whole frames, so its parser is always at the start of a frame when the short road is
taken, and both roads read one stream in order.

Two things are done differently from uvicorn. Reading pauses only once several messages wait
for the application, not after each one (see :data:`QUEUED_BEFORE_PAUSE`). And a text frame
of invalid UTF-8 read together with the client's close frame: uvicorn answers the bad text
with a close (1007), which websockets refuses with ``InvalidState`` because it has already
answered the client's close; the error escapes ``data_received``, the event loop logs it with
a traceback and drops the connection. Here the bad message is dropped and the client's close
is honoured, as if it had come alone.

And one thing is added: each ``websocket.receive`` message carries the loop time at which it
was read off the socket (``READ_AT``). On a busy loop the application's task takes a message
some milliseconds after that (4 ms at p99, 13 at most, at 100 calls on two cores); a Twilio
mark echo says the caller had heard up to the mark when it was sent, so the call's playout
clock starts from when it was read, not from when its turn came.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.protocol import State

try:
    from websockets.speedups import apply_mask
except ImportError:  # a build of websockets without its C extension
    from websockets.utils import apply_mask

__all__ = [
    "QUEUED_BEFORE_PAUSE",
    "READ_AT",
    "LeanWebSocketProtocol",
    "frame_extent",
    "has_lean_path",
]

QUEUED_BEFORE_PAUSE = 8
"""Messages waiting for the application before the socket stops being read (uvicorn: 1)."""

READ_AT = "bridge.read_at"
"""Key of a ``websocket.receive`` message: the loop time its frame was read off the socket."""

_TEXT_FIN = 0x81  # FIN, no RSV bits, opcode 1: a whole text message in one frame
_MASKED = 0x80
_MASK_BYTES = 4


def frame_extent(buffer: bytes, at: int) -> tuple[int, int] | None:
    """Where the frame starting at ``buffer[at]`` keeps its payload: ``(payload_start,
    payload_length)``, or None while its header is incomplete."""
    available = len(buffer) - at
    if available < 2:
        return None
    second = buffer[at + 1]
    length = second & 0x7F
    start = at + 2
    if length == 126:
        if available < 4:
            return None
        length = int.from_bytes(buffer[start : start + 2], "big")
        start += 2
    elif length == 127:
        if available < 10:
            return None
        length = int.from_bytes(buffer[start : start + 8], "big")
        start += 8
    if second & _MASKED:
        start += _MASK_BYTES
    return start, length


def has_lean_path(protocol: WebSocketsSansIOProtocol) -> bool:
    """Whether this uvicorn and websockets have what :class:`LeanWebSocketProtocol` uses;
    without it the protocol behaves exactly as uvicorn's own."""
    conn = getattr(protocol, "conn", None)
    return (
        all(
            hasattr(protocol, name)
            for name in (
                "handshake_initiated",
                "handshake_complete",
                "close_sent",
                "queue",  # the short road queues the application's messages itself
                "read_paused",  # and pauses reading as uvicorn's ``receive`` expects
            )
        )
        and conn is not None
        and all(hasattr(conn, name) for name in ("state", "current_size", "extensions"))
        and hasattr(getattr(conn, "reader", None), "buffer")
    )


class _ReadTimeQueue(asyncio.Queue[Any]):
    """uvicorn's queue of messages for the application, each received one stamped with the
    time it was queued: when its frame was read (READ_AT)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._home = loop
        self._clock = loop.time

    def put_nowait(self, item: Any) -> None:
        if item["type"] == "websocket.receive":
            item[READ_AT] = self._clock()
        super().put_nowait(item)

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        # asyncio.Queue looks up the running loop each time the application waits for a
        # message, and on CPython 3.11 that lookup makes a getpid() system call: one per
        # caller frame. The queue serves only the loop its connection was accepted on.
        return self._home


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol with a short road for whole text frames.

    Once the upgrade request is read, websockets is given only whole frames, so its parser
    always waits at the start of one: the frames are cut here, from their headers. It is
    given raw bytes again only once the connection is closing, never to open again."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = _ReadTimeQueue(self.loop)
        self._partial = b""  # the start of a frame whose end has not arrived
        self._max_size: int | None = self.config.ws_max_size
        # None until the request is read; then whether frames are cut here at all.
        self._cutting: bool | None = None if has_lean_path(self) else False

    def data_received(self, data: bytes) -> None:
        if not self._cutting:
            super().data_received(data)
            if self._cutting is None and self.handshake_initiated:
                # uvicorn hands over the upgrade request alone; anything after it in the same
                # bytes may have left websockets' parser inside a frame.
                self._cutting = (
                    data.find(b"\r\n\r\n") == len(data) - 4 and not self.conn.reader.buffer
                )
            return
        buffer = self._partial + data if self._partial else data
        self._partial = b""
        at, end = 0, len(buffer)
        # Only a frame handed to websockets can change this: the short road changes nothing.
        road = self._short_road()
        while at < end:
            extent = frame_extent(buffer, at)
            if extent is None:
                break
            start, length = extent
            if self._max_size is not None and length > self._max_size:
                self._give_up(buffer[at:])  # websockets refuses it (1009) from its header
                return
            stop = start + length
            if stop > end:
                break
            if road and buffer[at] == _TEXT_FIN and buffer[at + 1] & _MASKED:
                payload = apply_mask(buffer[start:stop], buffer[start - _MASK_BYTES : start])
                try:
                    text = payload.decode()
                except UnicodeDecodeError:
                    self._give_up(buffer[at:])  # uvicorn closes with 1007
                    return
                self._queue_text(text)
            else:
                super().data_received(buffer[at:stop])
                if self._closing():
                    self._give_up(buffer[stop:])
                    return
                road = self._short_road()
            at = stop
        self._partial = buffer[at:]

    def _queue_text(self, text: str) -> None:
        """uvicorn's step for a text message, but for when reading pauses: uvicorn pauses
        after every message until the application takes it, and its ``receive`` resumes:
        two changes to the socket's epoll registration per media frame, which libuv hands
        the kernel in batches (2,268 ``io_uring_enter`` calls a second at 100 calls), and
        about 3 µs of the 14 it cost to read one. A call's task takes each frame long
        before the next arrives, so reading pauses only once :data:`QUEUED_BEFORE_PAUSE`
        wait untaken: an application that stops taking them still stops the reading, one
        read later."""
        queue = self.queue
        queue.put_nowait({"type": "websocket.receive", "text": text})
        if not self.read_paused and queue.qsize() >= QUEUED_BEFORE_PAUSE:
            self.read_paused = True
            self.transport.pause_reading()

    def send_receive_event_to_app(self) -> None:
        try:
            super().send_receive_event_to_app()
        except InvalidState:
            # Only a message uvicorn refuses (invalid UTF-8) can raise here, when its close
            # would follow one websockets already sent in reply to the client's, read in the
            # same bytes: that close frame is the next event, and handling it ends the
            # connection with the client's code.
            return

    def _short_road(self) -> bool:
        """Whether a whole text frame may skip websockets: the socket open, no fragmented
        message under way (a text frame inside one is websockets' error to report)."""
        conn = self.conn
        return (
            self.handshake_complete
            and not self.close_sent
            and conn.state is State.OPEN
            and conn.current_size is None
            and not conn.extensions
        )

    def _closing(self) -> bool:
        return self.close_sent or self.conn.state in (State.CLOSING, State.CLOSED)

    def _give_up(self, rest: bytes) -> None:
        """From here on everything goes to websockets as it comes: the connection is closing."""
        self._cutting = False
        if rest:
            super().data_received(rest)
