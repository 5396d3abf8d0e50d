"""What can still be answered in a request the parser refused.

RFC 3261 section 18.3: a request whose datagram ends before its body does SHOULD get a 400,
and one too large gets 513 (section 21.5.14), so the sender learns why instead of resending
into silence. That needs the headers a response is built from (Via, From, To, Call-ID,
CSeq); when those read cleanly without the body, the request can be answered.
"""

from __future__ import annotations

import re

from bridge.protocols.sip.message import (
    MAX_LINE_CHARS,
    MAX_MESSAGE_BYTES,
    SipParseError,
    SipRequest,
    parse_message,
)

__all__ = ["REASONS", "answerable_request"]

#: Reason phrases for the statuses :class:`SipParseError` carries.
REASONS = {400: "Bad Request", 505: "Version Not Supported", 513: "Message Too Large"}

_LENGTH_LINE = re.compile(rb"^(?:content-length|l)[ \t]*:", re.IGNORECASE)


def answerable_request(data: bytes) -> SipRequest | None:
    """The request's head, with no body, if it parses on its own; else None."""
    data = data[:MAX_MESSAGE_BYTES].lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None  # the head itself is cut short: nothing in it can be trusted
    # Without its length and any over-long line (what made a 513), the head may parse.
    lines = [
        line
        for line in data[:end].split(b"\r\n")
        if not _LENGTH_LINE.match(line) and len(line) <= MAX_LINE_CHARS
    ]
    try:
        message = parse_message(b"\r\n".join(lines) + b"\r\n\r\n")
    except SipParseError:
        return None
    return message if isinstance(message, SipRequest) else None
