"""SDP offer/answer (RFC 8866 syntax, RFC 3264 rules) for the bridge's SIP endpoint, sans-I/O.

The SIP layer uses it like this:

1. on an INVITE (or re-INVITE) with a body, call :func:`answer` on the body with our public
   RTP address and port. :class:`NoCommonCodec` means reply ``488``; any other
   :class:`SdpError` means reply ``400``; both carry the code as ``status``.
2. put :attr:`Answer.sdp` in the ``200 OK`` and hand the :class:`Answer` to the RTP layer:
   where to send, which payload types to send and expect, the packet time, and whether to
   send at all (:attr:`Answer.direction`, :attr:`Answer.on_hold`).
3. on a re-INVITE call :func:`reanswer` with the previous :class:`Answer`: it is :func:`answer`
   again, with the ``o=`` version raised by one only when our SDP actually changes
   (RFC 3264 section 8). Re-latch RTP when the remote address or port changed.

To place a call ourselves (the simulator's client mode), send :func:`build_offer` and read
the peer's answer with :func:`answer_received`.

Nothing here reads a clock or touches a socket. Only :class:`SdpError` (and its subclass)
escapes for anything a peer sends; misuse of our own parameters is a
:class:`~bridge.errors.LocalProtocolError`.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_SDP_CHARS",
    "Answer",
    "Direction",
    "Media",
    "NoCommonCodec",
    "Origin",
    "RtpMap",
    "SdpError",
    "SessionDescription",
    "answer",
    "answer_received",
    "build_offer",
    "parse",
    "reanswer",
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
_EVENT_LIST = re.compile(r"[0-9]{1,3}(-[0-9]{1,3})?(,[0-9]{1,3}(-[0-9]{1,3})?){0,15}")


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


@dataclass(frozen=True, slots=True)
class Answer:
    """The outcome of one offer/answer exchange: what to send back and how to run RTP.

    Send RTP to ``remote_address:remote_port`` (then latch) with ``payload_type`` carrying
    ``codec`` (``"PCMU"`` passes through, ``"PCMA"`` needs converting) in ``ptime`` ms
    packets, and RFC 4733 digits on ``telephone_event`` (``None``: not negotiated).
    ``direction`` is ours: send only if ``direction.sends and not on_hold``, expect audio
    only if ``direction.receives``. ``on_hold`` is true when the peer put the call on hold
    (``sendonly``/``inactive``, or the legacy unspecified address ``0.0.0.0`` / ``::``):
    keep the dialog, stop sending. ``sdp`` is empty when this describes a received answer.
    """

    sdp: str
    remote_address: str
    remote_port: int
    codec: str
    payload_type: int
    telephone_event: int | None
    ptime: int
    direction: Direction
    on_hold: bool
    session_id: int
    version: int


# ------------------------------------------------------------------------------- parsing


def _digits(text: str, limit: int) -> int | None:
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
    session_id, version = _digits(parts[1], 2**64 - 1), _digits(parts[2], 2**64 - 1)
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
            pt = _digits(parts[0], 127) if len(parts) == 2 else None
            if pt is None:
                return
            if name == "fmtp":
                self.fmtp[pt] = parts[1].strip()
                return
            fields = parts[1].strip().split("/")  # name/rate[/channels]
            if len(fields) not in (2, 3) or not _TOKEN.fullmatch(fields[0]):
                return
            rate = _digits(fields[1], 10**6)
            channels = _digits(fields[2], 255) if len(fields) == 3 else 1
            if rate and channels:
                self.rtpmap[pt] = RtpMap(fields[0], rate, channels)


def _media_line(value: str) -> tuple[str, int, str, tuple[str, ...]]:
    parts = value.split()
    if len(parts) < 4:
        raise SdpError("SDP m= line needs media, port, proto and at least one format")
    if len(parts) - 3 > MAX_FORMATS:
        raise SdpError("SDP m= line lists too many formats")
    port_text = parts[1].split("/", 1)[0]  # "port/count": we only ever use the base port
    port = _digits(port_text, 65535)
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


@dataclass(frozen=True, slots=True)
class _Choice:
    """What we picked from one usable audio section."""

    codec: str
    payload_type: int
    telephone_event: int | None
    events: str
    ptime: int


def _choose(media: Media, prefer: Sequence[str]) -> _Choice | None:
    """Our codec and DTMF payload types for ``media``, or ``None`` when it is no use to us."""
    # Only plain RTP: RTP/SAVP needs SRTP keys we do not have, and a zero port is a stream
    # the peer has turned off (RFC 3264 section 8.2).
    if media.kind != "audio" or media.port == 0 or media.proto.upper() != "RTP/AVP":
        return None
    codecs: dict[str, int] = {}
    telephone_event: int | None = None
    for fmt in media.formats:
        pt = _digits(fmt, 127)
        if pt is None:
            continue
        rtpmap = media.rtpmap.get(pt)
        if rtpmap is None and pt in STATIC_PAYLOAD_TYPES:
            rtpmap = RtpMap(STATIC_PAYLOAD_TYPES[pt], 8000)
        if rtpmap is None or rtpmap.clock_rate != 8000 or rtpmap.channels != 1:
            continue
        name = rtpmap.name.upper()
        if name in KNOWN_CODECS:
            codecs.setdefault(name, pt)
        elif name == TELEPHONE_EVENT.upper() and 96 <= pt <= 127 and telephone_event is None:
            telephone_event = pt
    codec = next((name for name in prefer if name in codecs), None)
    if codec is None:
        return None
    if media.address is None:
        raise SdpError("SDP has no c= line for the audio stream")
    if ipaddress.ip_address(media.address).is_multicast:
        return None
    events = DEFAULT_EVENTS
    if telephone_event is not None:
        offered = media.fmtp.get(telephone_event, "")
        # RFC 3264: answer the event range the offer used (0-15 or 0-16), if it is readable.
        if _EVENT_LIST.fullmatch(offered):
            events = offered
    ptime = DEFAULT_PTIME
    if media.ptime is not None and MIN_PTIME <= media.ptime <= MAX_PTIME:
        ptime = media.ptime
    if media.maxptime is not None:
        ptime = min(ptime, max(media.maxptime, MIN_PTIME))
    return _Choice(codec, codecs[codec], telephone_event, events, ptime)


def _local_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise LocalProtocolError(f"our RTP address {address!r} is not an IP address") from None
    if ip.is_unspecified or ip.is_multicast or "%" in address:
        raise LocalProtocolError(f"our RTP address {address!r} cannot receive RTP")
    return ip


def _check_local(port: int, session_id: int, version: int, prefer: Sequence[str]) -> None:
    if not 0 < port <= 65535:
        raise LocalProtocolError(f"our RTP port {port} is not 1-65535")
    if not (0 <= session_id < 2**64 and 0 <= version < 2**64):
        raise LocalProtocolError("o= session id and version must be 64-bit unsigned")
    if not prefer or not set(prefer) <= KNOWN_CODECS:
        raise LocalProtocolError(f"codec preference {prefer!r} names no known codec")


def _header(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, sid: int, ver: int) -> list[str]:
    family = f"IP{ip.version}"
    return [
        "v=0",
        f"o=bridge {sid} {ver} IN {family} {ip}",
        "s=bridge",
        f"c=IN {family} {ip}",
        "t=0 0",
    ]


def answer(
    offer: SessionDescription | str | bytes,
    *,
    address: str,
    port: int,
    session_id: int,
    version: int,
    prefer: Sequence[str] = ("PCMU", "PCMA"),
) -> Answer:
    """Answer ``offer`` (parsed, or the raw body) with one G.711 codec on ``address:port``.

    The first ``m=audio`` section we can use gets the first codec of ``prefer`` it offers,
    plus the offer's own telephone-event payload type; every other section is refused with
    port 0 in the same place, as RFC 3264 requires. Put :attr:`Answer.sdp` in the 200 and
    configure RTP from the rest. Raises :class:`NoCommonCodec` (488) when no section is
    usable, :class:`SdpError` (400) when the offer is unreadable, and
    :class:`~bridge.errors.LocalProtocolError` when our own arguments are wrong.
    A re-INVITE is answered by calling this again with the same ``session_id`` and
    ``version + 1`` (the same ``version`` if the answer text would not change);
    :func:`reanswer` does exactly that.
    """
    ip = _local_address(address)
    _check_local(port, session_id, version, prefer)
    if not isinstance(offer, SessionDescription):
        offer = parse(offer)
    lines = _header(ip, session_id, version)
    used: tuple[Media, _Choice] | None = None
    for media in offer.media:
        choice = None if used else _choose(media, prefer)
        if choice is None:
            lines.append(f"m={media.kind} 0 {media.proto} {media.formats[0]}")
            continue
        used = media, choice
        te = choice.telephone_event
        pts = f"{choice.payload_type}" if te is None else f"{choice.payload_type} {te}"
        lines += [
            f"m=audio {port} RTP/AVP {pts}",
            f"a=rtpmap:{choice.payload_type} {choice.codec}/8000",
        ]
        if te is not None:
            lines += [f"a=rtpmap:{te} {TELEPHONE_EVENT}/8000", f"a=fmtp:{te} {choice.events}"]
        lines += [f"a=ptime:{choice.ptime}", f"a={media.direction.reverse.value}"]
    if used is None:
        raise NoCommonCodec("SDP offer has no plain RTP audio stream with PCMU or PCMA")
    media, choice = used
    return _result(media, choice, "\r\n".join(lines) + "\r\n", session_id, version)


def _result(media: Media, choice: _Choice, sdp: str, session_id: int, version: int) -> Answer:
    assert media.address is not None  # _choose refuses a section without one
    return Answer(
        sdp=sdp,
        remote_address=media.address,
        remote_port=media.port,
        codec=choice.codec,
        payload_type=choice.payload_type,
        telephone_event=choice.telephone_event,
        ptime=choice.ptime,
        direction=media.direction.reverse,
        on_hold=media.direction in (Direction.SENDONLY, Direction.INACTIVE)
        or ipaddress.ip_address(media.address).is_unspecified,
        session_id=session_id,
        version=version,
    )


def reanswer(
    offer: SessionDescription | str | bytes,
    previous: Answer,
    *,
    address: str,
    port: int,
    prefer: Sequence[str] = ("PCMU", "PCMA"),
) -> Answer:
    """Answer a re-INVITE's ``offer`` in the dialog whose last answer was ``previous``.

    This is :func:`answer` again with the same session id. The codec in use stays preferred
    so a hold/resume does not switch codecs, and the ``o=`` version goes up by one only when
    the SDP text changes (RFC 3264 section 8): an unchanged answer is ``previous`` itself.
    Keep the returned answer for the next re-INVITE.
    """
    prefer = (previous.codec, *(name for name in prefer if name != previous.codec))
    same = answer(
        offer,
        address=address,
        port=port,
        session_id=previous.session_id,
        version=previous.version,
        prefer=prefer,
    )
    if same.sdp == previous.sdp:
        return previous
    return answer(
        offer,
        address=address,
        port=port,
        session_id=previous.session_id,
        version=previous.version + 1,
        prefer=prefer,
    )


def build_offer(
    *,
    address: str,
    port: int,
    session_id: int,
    version: int,
    direction: Direction = Direction.SENDRECV,
) -> str:
    """Our own offer, for calls we place: PCMU, PCMA, telephone-event 101, 20 ms.
    Send it in the INVITE, then read the peer's answer with :func:`answer_received`."""
    ip = _local_address(address)
    _check_local(port, session_id, version, ("PCMU",))
    lines = [
        *_header(ip, session_id, version),
        f"m=audio {port} RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        f"a=rtpmap:101 {TELEPHONE_EVENT}/8000",
        f"a=fmtp:101 {DEFAULT_EVENTS}",
        f"a=ptime:{DEFAULT_PTIME}",
        f"a={direction.value}",
    ]
    return "\r\n".join(lines) + "\r\n"


def answer_received(body: str | bytes) -> Answer:
    """Read the peer's answer to :func:`build_offer` and say how to run RTP.

    The first usable audio section counts; its codec is PCMU if the peer kept it, else PCMA.
    ``sdp`` is empty and ``session_id``/``version`` are the peer's (0 without ``o=``).
    Raises :class:`NoCommonCodec` when the peer refused our audio (end the call) and
    :class:`SdpError` when the answer is unreadable.
    """
    description = parse(body)
    for media in description.media:
        choice = _choose(media, ("PCMU", "PCMA"))
        if choice is not None:
            origin = description.origin
            sid, ver = (origin.session_id, origin.version) if origin else (0, 0)
            return _result(media, choice, "", sid, ver)
    raise NoCommonCodec("SDP answer accepted no audio stream with PCMU or PCMA")
