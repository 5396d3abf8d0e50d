"""SIP over a byte stream (TCP): where one message ends and the next begins.

On a stream the only frame is ``Content-Length`` (RFC 3261 section 18.3), so it is required
here, and a message whose framing cannot be trusted ends the connection: after it, no byte
on that connection can be known to start a message. Bare CRLFs between messages are
allowed (section 7.5); a double CRLF is an RFC 5626 keep-alive ping, answered with a single
CRLF pong.

Sans-I/O: bytes in, whole messages out; the adapter owns the socket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge.protocols.sip.message import MAX_MESSAGE_BYTES, SipParseError

__all__ = ["PONG", "SipStreamFramer", "StreamChunk"]

#: The answer to an RFC 5626 keep-alive ping.
PONG = b"\r\n"

_HEAD_END = b"\r\n\r\n"
# Content-Length in full or compact form, at the start of a header line, any case.
_LENGTH = re.compile(rb"\r\n(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class StreamChunk:
    """What one read of the stream yielded: whole messages, and pings to answer."""

    messages: list[bytes]
    pings: int


class SipStreamFramer:
    """Split a connection's bytes into SIP messages. :meth:`feed` raises
    :class:`SipParseError` when the stream can no longer be framed; close it then."""

    def __init__(self, max_message: int = MAX_MESSAGE_BYTES) -> None:
        self._max = max_message
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of an unfinished message held (for a slow-sender deadline)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> StreamChunk:
        buffer = self._buffer
        buffer += data
        messages: list[bytes] = []
        pings = 0
        while buffer:
            # Keep-alives and stray line ends between messages.
            if buffer.startswith(_HEAD_END):
                del buffer[:4]
                pings += 1
                continue
            if buffer.startswith(b"\r\n"):
                if len(buffer) < 4 and _HEAD_END.startswith(bytes(buffer)):
                    break  # maybe the first half of a ping
                del buffer[:2]
                continue
            end = buffer.find(_HEAD_END)
            if end < 0:
                if len(buffer) > self._max:
                    raise SipParseError("SIP header section too large", status=513)
                break
            head = bytes(buffer[: end + 2])
            lengths = {m[1].strip() for m in _LENGTH.finditer(head)}
            if not lengths:
                raise SipParseError("no Content-Length on a stream transport")
            if len(lengths) > 1:
                raise SipParseError("conflicting Content-Length values")
            (text,) = lengths
            if not text.isdigit() or len(text) > 9:
                raise SipParseError("malformed Content-Length")
            total = end + 4 + int(text)
            if total > self._max:
                raise SipParseError("SIP message too large", status=513)
            if len(buffer) < total:
                break
            messages.append(bytes(buffer[:total]))
            del buffer[:total]
        return StreamChunk(messages, pings)
