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

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.errors import LocalProtocolError
from bridge.protocols.sdp_parse import (
    DEFAULT_EVENTS,
    DEFAULT_PTIME,
    EVENT_LIST,
    KNOWN_CODECS,
    MAX_PTIME,
    MAX_SDP_CHARS,
    MIN_PTIME,
    STATIC_PAYLOAD_TYPES,
    TELEPHONE_EVENT,
    Direction,
    Media,
    NoCommonCodec,
    Origin,
    RtpMap,
    SdpError,
    SessionDescription,
    bounded_int,
    parse,
)

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


@dataclass(frozen=True, slots=True)
class _Choice:
    """What we picked from one usable audio section."""

    codec: str
    payload_type: int
    telephone_event: int | None
    events: str
    ptime: int


def _choose(media: Media, prefer: Sequence[str], family: int | None = None) -> _Choice | None:
    """Our codec and DTMF payload types for ``media``, or ``None`` when it is no use to us.
    With ``family`` (4 or 6, that of our own RTP address), a stream on the other family is
    no use either: our RTP could not reach it, nor its RTP ours."""
    # Only plain RTP: RTP/SAVP needs SRTP keys we do not have, and a zero port is a stream
    # the peer has turned off (RFC 3264 section 8.2).
    if media.kind != "audio" or media.port == 0 or media.proto.upper() != "RTP/AVP":
        return None
    codecs: dict[str, int] = {}
    telephone_event: int | None = None
    for fmt in media.formats:
        pt = bounded_int(fmt, 127)
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
    remote = ipaddress.ip_address(media.address)
    if remote.is_multicast:
        return None
    # An unspecified address is a hold (nothing is sent to it), whatever its family.
    if family is not None and remote.version != family and not remote.is_unspecified:
        return None
    events = DEFAULT_EVENTS
    if telephone_event is not None:
        offered = media.fmtp.get(telephone_event, "")
        # RFC 3264: answer the event range the offer used (0-15 or 0-16), if it is readable.
        if EVENT_LIST.fullmatch(offered):
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
    usable (one on the other IP family than ``address`` is not), :class:`SdpError` (400)
    when the offer is unreadable, and :class:`~bridge.errors.LocalProtocolError` when our
    own arguments are wrong.
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
        choice = None if used else _choose(media, prefer, ip.version)
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
        raise NoCommonCodec(
            f"SDP offer has no plain RTP audio stream with PCMU or PCMA on IPv{ip.version}"
        )
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
