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
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

try:
    from websockets.speedups import apply_mask
except ImportError:  # a build of websockets without its C extension
    from websockets.utils import apply_mask

__all__ = ["LeanWebSocketProtocol", "frame_extent", "has_lean_path"]

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


def has_lean_path() -> bool:
    """Whether this uvicorn and websockets have what :class:`LeanWebSocketProtocol` uses;
    without it the protocol behaves exactly as uvicorn's own."""
    names = ("conn", "handshake_complete", "close_sent", "frames", "curr_msg_data_type")
    probe = WebSocketsSansIOProtocol.__init__.__code__.co_names
    return (
        all(name in probe for name in names)
        and hasattr(WebSocketsSansIOProtocol, "send_receive_event_to_app")
        and hasattr(State, "OPEN")
    )


_LEAN = has_lean_path()


class LeanWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol with a short road for whole text frames."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._partial = b""  # the start of a frame whose end has not arrived
        self._max_size: int | None = self.config.ws_max_size

    def _lean(self) -> bool:
        conn = self.conn
        return (
            self.handshake_complete
            and not self.close_sent
            and conn.state is State.OPEN
            and conn.current_size is None  # not inside a fragmented message
            and not conn.extensions
            and not conn.reader.buffer  # websockets' parser waits at a frame's start
        )

    def data_received(self, data: bytes) -> None:
        if not (_LEAN and self._lean()):
            if self._partial:  # it starts at a frame's start, where websockets' parser waits
                data, self._partial = self._partial + data, b""
            super().data_received(data)
            return
        buffer = self._partial + data if self._partial else data
        self._partial = b""
        at, end = 0, len(buffer)
        while at < end:
            extent = frame_extent(buffer, at)
            if extent is None:
                self._partial = buffer[at:]
                return
            start, length = extent
            if self._max_size is not None and length > self._max_size:
                break  # websockets refuses it (1009) from its header alone
            stop = start + length
            if stop > end:
                self._partial = buffer[at:]
                return
            if buffer[at] == _TEXT_FIN and buffer[at + 1] & _MASKED:
                payload = apply_mask(buffer[start:stop], buffer[start - _MASK_BYTES : start])
                try:
                    payload.decode()
                except UnicodeDecodeError:
                    break  # uvicorn closes with 1007, answering what came in the same read
                # uvicorn's own step: queue the text for the application, and pause reading
                # until the application takes it.
                self.curr_msg_data_type = "text"
                self.frames = [payload]
                self.send_receive_event_to_app()
                at = stop
                continue
            else:
                super().data_received(buffer[at:stop])
                at = stop
                if self._lean():
                    continue
            break
        if at < end:
            super().data_received(buffer[at:])
