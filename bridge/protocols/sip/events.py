"""What the SIP server tells the bridge about calls, and how it is configured.

See :mod:`bridge.protocols.sip.uas` for the server that emits these events.
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field
from typing import TypeAlias

from bridge.protocols import sdp
from bridge.protocols.sip.transaction import Timers

__all__ = [
    "Address",
    "CallEnded",
    "CallEstablished",
    "CallOffered",
    "DtmfInfo",
    "MediaChanged",
    "Network",
    "SipEvent",
    "TransferAnswered",
    "UasConfig",
]

Address: TypeAlias = tuple[str, int]
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class UasConfig:
    """Who may call, how many at once, and where the bridge says it is (Contact and SDP)."""

    advertise_host: str
    port: int
    transport: str = "UDP"
    allow: tuple[Network, ...] = (
        ipaddress.ip_network("127.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )
    username: str | None = None
    password: str | None = None
    realm: str = "bridge"
    nonce_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    max_calls: int = 200
    timers: Timers = field(default_factory=Timers)


# -- events ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallOffered:
    """Answer with :meth:`SipServer.answer` once an RTP port is bound, or reject."""

    call_id: str
    source: Address
    from_user: str
    to_user: str
    offer: sdp.SessionDescription


@dataclass(frozen=True, slots=True)
class CallEstablished:
    call_id: str


@dataclass(frozen=True, slots=True)
class CallEnded:
    """``reason``: ``caller_hangup`` (BYE), ``cancelled`` (CANCEL before the answer),
    ``no_ack`` (the answer was never acknowledged) or ``session_expired`` (the caller's side
    stopped refreshing its RFC 4028 session timer); for the last two the server sent a BYE."""

    call_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class DtmfInfo:
    call_id: str
    digit: str


@dataclass(frozen=True, slots=True)
class MediaChanged:
    """A re-INVITE changed the media (hold, resume, a new address): re-latch the RTP."""

    call_id: str
    answer: sdp.Answer


@dataclass(frozen=True, slots=True)
class TransferAnswered:
    """The caller's side answered the bridge's REFER: 2xx means it is placing the new call
    (hang up now); anything else (408 when it never answered) means the call stays."""

    call_id: str
    status: int


SipEvent: TypeAlias = (
    CallOffered | CallEstablished | CallEnded | DtmfInfo | MediaChanged | TransferAnswered
)
