"""RTP media (RFC 3550) with RFC 4733 DTMF for one SIP call, as sans-I/O objects: packets
(:mod:`~bridge.protocols.rtp_packet`), the inbound stream
(:mod:`~bridge.protocols.rtp_receiver`) and the outbound one
(:mod:`~bridge.protocols.rtp_sender`), gathered here.

The adapter that owns a call's RTP socket drives one :class:`RtpReceiver` and one
:class:`RtpSender`:

1. feed every datagram read from the socket to :meth:`RtpReceiver.receive_datagram` with
   its source address and the current time, then handle :meth:`RtpReceiver.events_received`
   (``match`` on :class:`AudioReceived` and :class:`DtmfDigit`). Garbage never raises there:
   it is counted in :attr:`RtpReceiver.stats`, so a port scanner cannot flood the log;
2. whenever :meth:`RtpReceiver.get_timer` returns a time, call
   :meth:`RtpReceiver.handle_timer` once that time has come: out-of-order packets held
   for reordering are released then;
3. sleep until :meth:`RtpSender.next_send_at`, then send every packet of
   :meth:`RtpSender.data_to_send` to :attr:`RtpReceiver.remote_addr`, from the socket the
   call receives on (symmetric RTP, RFC 4961).

Nothing here awaits, reads a clock or touches a socket. Inbound, a packet costs one
``struct`` unpack, one payload slice, one :class:`RtpPacket` and one event; outbound, one
pack and one concatenation.
"""

from __future__ import annotations

from bridge.protocols.rtp_packet import (
    COMFORT_NOISE,
    MAX_PACKET_SIZE,
    Address,
    RtpError,
    RtpPacket,
    build_packet,
    parse_packet,
)
from bridge.protocols.rtp_receiver import (
    REORDER_HOLD,
    SSRC_SWITCH_GAP,
    AudioReceived,
    DtmfDigit,
    ReceiverStats,
    RtpEvent,
    RtpReceiver,
)
from bridge.protocols.rtp_sender import BYTES_PER_MS, MAX_LAG_FRAMES, Codec, RtpSender

__all__ = [
    "BYTES_PER_MS",
    "COMFORT_NOISE",
    "MAX_LAG_FRAMES",
    "MAX_PACKET_SIZE",
    "REORDER_HOLD",
    "SSRC_SWITCH_GAP",
    "Address",
    "AudioReceived",
    "Codec",
    "DtmfDigit",
    "ReceiverStats",
    "RtpError",
    "RtpEvent",
    "RtpPacket",
    "RtpReceiver",
    "RtpSender",
    "build_packet",
    "parse_packet",
]
