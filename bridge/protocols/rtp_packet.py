"""RTP packets (RFC 3550): parse one datagram, build one packet. Pure functions, no state.

RTCP (RFC 5761 multiplexing) is recognised and reported as ``None`` so a caller can ignore
it; anything else that is not RTP raises :class:`RtpError`, never another exception.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple, TypeAlias

from bridge.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "COMFORT_NOISE",
    "FIXED_HEADER",
    "MAX_PACKET_SIZE",
    "SEQ_MOD",
    "TS_MOD",
    "Address",
    "RtpError",
    "RtpPacket",
    "build_packet",
    "parse_packet",
]

RTP_VERSION = 2
HEADER_SIZE = 12
# G.711 at the longest ptime a PBX offers (a=maxptime:150 or so) is well under 1.5 kB; a
# larger datagram is not media we negotiated, and refusing it early bounds the work.
MAX_PACKET_SIZE = 4096
# RFC 5761 section 4: a second byte of 192-223 is an RTCP packet type (SR=200 ... XR=207),
# which reads as marker + PT 64-95 in RTP; no one may use those PTs for media.
_RTCP_FIRST = 192
_RTCP_LAST = 223
COMFORT_NOISE = 13  # RFC 3389; the bridge never offers it, so it is dropped
FIXED_HEADER = struct.Struct(">BBHII")
_U16 = struct.Struct(">H")

SEQ_MOD = 0x10000
TS_MOD = 0x1_0000_0000

Address: TypeAlias = tuple[Any, ...]
"""A socket address as the datagram transport reports it: ``(host, port)`` or IPv6's 4-tuple."""


class RtpError(RemoteProtocolError):
    """A datagram that is not a valid RTP packet. Drop it; the call goes on."""


class RtpPacket(NamedTuple):
    """One parsed RTP packet; ``payload`` excludes CSRCs, extension and padding.

    A named tuple rather than a frozen dataclass: it is built for every packet, and a
    tuple costs a fraction of a frozen dataclass's ``__init__``."""

    payload_type: int
    marker: bool
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes


def parse_packet(data: bytes) -> RtpPacket | None:
    """Parse one datagram. Returns ``None`` for RTCP, which the caller must ignore.

    Raises :class:`RtpError` for anything that is not a version-2 RTP packet of sane size
    whose CSRCs, extension and padding fit inside it; nothing else escapes.
    """
    size = len(data)
    if size < HEADER_SIZE:
        # The shortest RTCP packet (an empty receiver report or BYE) is 4 or 8 bytes.
        if size >= 4 and data[0] >> 6 == RTP_VERSION and _RTCP_FIRST <= data[1] <= _RTCP_LAST:
            return None
        raise RtpError(f"datagram of {size} bytes is shorter than an RTP header")
    if size > MAX_PACKET_SIZE:
        raise RtpError(f"datagram of {size} bytes exceeds {MAX_PACKET_SIZE}")
    first, second, sequence, timestamp, ssrc = FIXED_HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise RtpError(f"RTP version {first >> 6}, expected 2")
    if _RTCP_FIRST <= second <= _RTCP_LAST:
        return None
    offset = HEADER_SIZE + (first & 0x0F) * 4
    if first & 0x10:
        # The extension's own 16-bit profile is of no use to us; skip the whole block.
        if offset + 4 > size:
            raise RtpError("RTP extension header runs past the end of the datagram")
        offset += 4 + _U16.unpack_from(data, offset + 2)[0] * 4
    end = size
    if first & 0x20:
        padding = data[-1]
        if padding == 0:
            raise RtpError("RTP padding count of zero")  # the count octet pads itself
        end -= padding
    if offset > end:
        raise RtpError("RTP header, CSRCs, extension and padding exceed the datagram")
    return RtpPacket(second & 0x7F, second >= 0x80, sequence, timestamp, ssrc, data[offset:end])


def build_packet(
    payload_type: int,
    sequence: int,
    timestamp: int,
    ssrc: int,
    payload: bytes,
    *,
    marker: bool = False,
    csrcs: tuple[int, ...] = (),
    extension: tuple[int, bytes] | None = None,
    padding: int = 0,
) -> bytes:
    """Build one RTP packet. ``extension`` is ``(profile, data)`` with ``len(data)`` a
    multiple of 4; ``padding`` is the total number of padding bytes (0-255).

    Raises :class:`LocalProtocolError` for out-of-range fields. :class:`RtpSender` builds its
    own packets more cheaply; this is for tests, tools and one-off packets.
    """
    if not (
        0 <= payload_type < 128
        and 0 <= sequence < SEQ_MOD
        and 0 <= timestamp < TS_MOD
        and 0 <= ssrc < TS_MOD
        and len(csrcs) < 16
        and all(0 <= c < TS_MOD for c in csrcs)
        and 0 <= padding < 256
    ):
        raise LocalProtocolError("RTP header field out of range")
    first = 0x80 | len(csrcs) | (0x20 if padding else 0) | (0x10 if extension else 0)
    parts = [
        FIXED_HEADER.pack(first, payload_type | (0x80 if marker else 0), sequence, timestamp, ssrc)
    ]
    parts += [c.to_bytes(4, "big") for c in csrcs]
    if extension is not None:
        profile, data = extension
        if not 0 <= profile < SEQ_MOD or len(data) % 4 or len(data) // 4 >= SEQ_MOD:
            raise LocalProtocolError("RTP extension profile or length out of range")
        parts += [_U16.pack(profile), _U16.pack(len(data) // 4), data]
    parts.append(payload)
    if padding:
        parts.append(bytes(padding - 1) + bytes((padding,)))
    return b"".join(parts)
