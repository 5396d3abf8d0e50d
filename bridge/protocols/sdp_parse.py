"""SDP (RFC 8866) read strictly enough to answer safely: a session description as values.

:func:`parse` takes what a peer sent and returns a :class:`SessionDescription`, or raises
:class:`SdpError` (``status`` 400), never anything else. Offer/answer is in
:mod:`bridge.protocols.sdp`.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import re
from dataclasses import dataclass

from bridge.errors import RemoteProtocolError

__all__ = [
    "MAX_SDP_CHARS",
    "Direction",
    "Media",
    "NoCommonCodec",
    "Origin",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "parse",
]

# A G.711 offer is a few hundred bytes and a busy trunk's (many codecs, ICE, crypto) a few
# KiB; a SIP message over UDP is at most 64 KiB. Anything beyond this is not a phone call.
MAX_SDP_CHARS = 16 * 1024
MAX_LINES = 512
MAX_MEDIA = 16
# 128 RTP payload types exist; a longer list is padding.
MAX_FORMATS = 128
MAX_TOKEN_CHARS = 64
DEFAULT_PTIME = 20
MIN_PTIME, MAX_PTIME = 10, 60
# RFC 4733 events 0-15 are the keypad, 16 is flash: what we can make sense of.
DEFAULT_EVENTS = "0-16"
TELEPHONE_EVENT = "telephone-event"
# Codecs we can carry without an rtpmap: RFC 3551 static payload types.
STATIC_PAYLOAD_TYPES = {0: "PCMU", 8: "PCMA"}
KNOWN_CODECS = frozenset(STATIC_PAYLOAD_TYPES.values())
# RFC 8866 section 5 type letters, in any order: other letters make the description invalid.
_TYPE_LETTERS = frozenset("vosiuepcbtrzkam")
_TOKEN = re.compile(rf"[\x21-\x7e]{{1,{MAX_TOKEN_CHARS}}}")
# Control characters (TAB aside), DEL and lone surrogates never belong in SDP text.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
# ASCII digits only: \d would also match other scripts' digits and put them in our answer.
EVENT_LIST = re.compile(r"[0-9]{1,3}(-[0-9]{1,3})?(,[0-9]{1,3}(-[0-9]{1,3})?){0,15}")


class SdpError(RemoteProtocolError):
    """The peer's SDP cannot be read. Reply with ``status`` (400) and keep the dialog as it was."""

    status = 400


class NoCommonCodec(SdpError):
    """The SDP is readable but offers no usable G.711 audio stream. Reply ``488``."""

    status = 488


class Direction(enum.Enum):
    """A media direction, always from the point of view of whoever wrote the SDP."""

    SENDRECV = "sendrecv"
    SENDONLY = "sendonly"
    RECVONLY = "recvonly"
    INACTIVE = "inactive"

    @property
    def reverse(self) -> Direction:
        """The direction to answer with (RFC 3264 section 6.1)."""
        return _REVERSE[self]

    @property
    def sends(self) -> bool:
        return self in (Direction.SENDRECV, Direction.SENDONLY)

    @property
    def receives(self) -> bool:
        return self in (Direction.SENDRECV, Direction.RECVONLY)


_REVERSE = {
    Direction.SENDRECV: Direction.SENDRECV,
    Direction.SENDONLY: Direction.RECVONLY,
    Direction.RECVONLY: Direction.SENDONLY,
    Direction.INACTIVE: Direction.INACTIVE,
}
_DIRECTIONS = {d.value: d for d in Direction}


@dataclass(frozen=True, slots=True)
class RtpMap:
    """One ``a=rtpmap``: encoding name as sent, clock rate in Hz, channel count."""

    name: str
    clock_rate: int
    channels: int = 1


@dataclass(frozen=True, slots=True)
class Origin:
    """The ``o=`` line. ``version`` rises when the peer's SDP changes."""

    username: str
    session_id: int
    version: int
    address: str


@dataclass(frozen=True, slots=True)
class Media:
    """One ``m=`` section, with session-level ``c=`` and direction already applied.

    ``address`` is a normalised IP address or ``None`` when no ``c=`` covers the section;
    ``formats`` are the ``m=`` tokens as sent (payload type numbers for RTP).
    """

    kind: str
    port: int
    proto: str
    formats: tuple[str, ...]
    address: str | None
    direction: Direction
    rtpmap: dict[int, RtpMap]
    fmtp: dict[int, str]
    ptime: int | None
    maxptime: int | None


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """A parsed SDP body. ``origin`` is ``None`` when the peer left ``o=`` out."""

    origin: Origin | None
    media: tuple[Media, ...]


def bounded_int(text: str, limit: int) -> int | None:
    """``text`` as a non-negative integer no larger than ``limit``, else ``None``.
    Plain ASCII digits only: ``int()`` would also take ``" 5"``, ``"+5"`` and ``"5_0"``."""
    if text.isascii() and text.isdigit() and len(text) <= len(str(limit)):
        value = int(text)
        if value <= limit:
            return value
    return None


def _token(text: str, what: str) -> str:
    if not _TOKEN.fullmatch(text):
        raise SdpError(f"SDP {what} is not a short printable token")
    return text


def _packet_time(text: str) -> int | None:
    """A ``ptime``/``maxptime`` value in whole ms. RFC 8866 allows decimals (``20.0``);
    anything unreadable counts as absent, since the attribute is only advice."""
    if len(text) > 12:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    if not math.isfinite(value) or value <= 0 or value > 10_000:
        return None
    return max(1, round(value))


def _connection(value: str) -> str:
    parts = value.split()
    if len(parts) != 3 or parts[0].upper() != "IN" or parts[1].upper() not in ("IP4", "IP6"):
        raise SdpError("SDP c= line is not 'IN IP4|IP6 <address>'")
    # A multicast TTL/count suffix ("/127") is allowed by the grammar; the base is what counts.
    text = parts[2].split("/", 1)[0]
    # ipaddress accepts IPv6 zone ids ("%eth0"), which mean nothing to the peer's RTP.
    if "%" in text or len(text) > MAX_TOKEN_CHARS:
        raise SdpError("SDP c= address is not an IP address")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise SdpError("SDP c= address is not an IP address") from None
    if f"IP{address.version}" != parts[1].upper():
        raise SdpError("SDP c= address does not match its address type")
    return str(address)


def _origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpError("SDP o= line does not have six fields")
    session_id, version = bounded_int(parts[1], 2**64 - 1), bounded_int(parts[2], 2**64 - 1)
    if session_id is None or version is None:
        raise SdpError("SDP o= session id or version is not a 64-bit number")
    return Origin(_token(parts[0], "o= user"), session_id, version, _token(parts[5], "o= host"))


class _Section:
    """The mutable state of one level (session or media) while its lines are read."""

    __slots__ = ("address", "direction", "fmtp", "maxptime", "media_line", "ptime", "rtpmap")

    def __init__(self, media_line: tuple[str, int, str, tuple[str, ...]] | None) -> None:
        self.media_line = media_line
        self.address: str | None = None
        self.direction: Direction | None = None
        self.rtpmap: dict[int, RtpMap] = {}
        self.fmtp: dict[int, str] = {}
        self.ptime: int | None = None
        self.maxptime: int | None = None

    def attribute(self, value: str) -> None:
        # Unknown and malformed attributes are ignored: attributes are SDP's extension point.
        name, _, rest = value.partition(":")
        name = name.strip().lower()
        if name in _DIRECTIONS:
            self.direction = _DIRECTIONS[name]
        elif name == "ptime":
            self.ptime = _packet_time(rest.strip())
        elif name == "maxptime":
            self.maxptime = _packet_time(rest.strip())
        elif name in ("rtpmap", "fmtp"):
            parts = rest.split(None, 1)  # "96 0-15"; peers differ in spacing
            pt = bounded_int(parts[0], 127) if len(parts) == 2 else None
            if pt is None:
                return
            if name == "fmtp":
                self.fmtp[pt] = parts[1].strip()
                return
            fields = parts[1].strip().split("/")  # name/rate[/channels]
            if len(fields) not in (2, 3) or not _TOKEN.fullmatch(fields[0]):
                return
            rate = bounded_int(fields[1], 10**6)
            channels = bounded_int(fields[2], 255) if len(fields) == 3 else 1
            if rate and channels:
                self.rtpmap[pt] = RtpMap(fields[0], rate, channels)


def _media_line(value: str) -> tuple[str, int, str, tuple[str, ...]]:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError("SDP m= line needs media, port, proto and at least one format")
    if len(parts) - 3 > MAX_FORMATS:
        raise SdpError("SDP m= line lists too many formats")
    port_text = parts[1].split("/", 1)[0]  # "port/count": we only ever use the base port
    port = bounded_int(port_text, 65535)
    if port is None:
        raise SdpError("SDP m= port is not a number from 0 to 65535")
    formats = tuple(_token(f, "m= format") for f in parts[3:])
    return _token(parts[0], "m= media").lower(), port, _token(parts[2], "m= proto"), formats


def parse(body: str | bytes) -> SessionDescription:
    """Read an SDP body (CRLF or LF line ends). Raises :class:`SdpError` when it is not SDP.

    Tolerant where real peers differ: blank lines, missing ``o=``/``s=``/``t=``, unknown or
    malformed attributes, ``a=ptime`` at session level. Strict where acting on it would be
    wrong: the first line must be ``v=0``, every line ``<letter>=<value>``, ``c=`` a literal
    IP address and ``m=`` well formed.
    """
    if len(body) > MAX_SDP_CHARS:
        raise SdpError(f"SDP body of {len(body)} characters exceeds {MAX_SDP_CHARS}")
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise SdpError("SDP body is not UTF-8") from None
    lines = [line.rstrip("\r \t") for line in body.split("\n")]
    lines = [line for line in lines if line]
    if len(lines) > MAX_LINES:
        raise SdpError(f"SDP body has more than {MAX_LINES} lines")
    if not lines or lines[0] != "v=0":
        raise SdpError("SDP body does not start with v=0")
    session = _Section(None)
    sections: list[_Section] = []
    origin: Origin | None = None
    for line in lines[1:]:
        if len(line) < 2 or line[1] != "=" or line[0] not in _TYPE_LETTERS:
            raise SdpError("SDP line is not <type>=<value>")
        if _FORBIDDEN.search(line):
            raise SdpError("SDP line contains a control character")
        kind, value = line[0], line[2:]
        current = sections[-1] if sections else session
        if kind == "m":
            if len(sections) == MAX_MEDIA:
                raise SdpError(f"SDP body has more than {MAX_MEDIA} m= lines")
            sections.append(_Section(_media_line(value)))
        elif kind == "c":
            current.address = _connection(value)
        elif kind == "a":
            current.attribute(value)
        elif kind == "o" and not sections:
            origin = _origin(value)
        elif kind == "v":
            raise SdpError("SDP body has a second v= line")
    if not sections:
        raise SdpError("SDP body has no m= line")
    media = []
    for section in sections:
        assert section.media_line is not None
        kind, port, proto, formats = section.media_line
        media.append(
            Media(
                kind=kind,
                port=port,
                proto=proto,
                formats=formats,
                address=section.address or session.address,
                direction=section.direction or session.direction or Direction.SENDRECV,
                rtpmap=section.rtpmap,
                fmtp=section.fmtp,
                ptime=section.ptime or session.ptime,
                maxptime=section.maxptime or session.maxptime,
            )
        )
    return SessionDescription(origin, tuple(media))


# --------------------------------------------------------------------------- negotiation
