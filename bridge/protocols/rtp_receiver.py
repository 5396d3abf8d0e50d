"""The inbound RTP stream of one call: latching, reordering, RFC 4733 keypresses.

Feed :meth:`RtpReceiver.receive_datagram` every datagram with its source and the time,
call :meth:`RtpReceiver.handle_timer` when :meth:`RtpReceiver.get_timer` says, and handle
:meth:`RtpReceiver.events_received`. Garbage never raises here: it is counted in
:attr:`RtpReceiver.stats`, so a port scanner cannot flood the log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeAlias

from bridge.errors import LocalProtocolError
from bridge.protocols.rtp_packet import (
    SEQ_MOD,
    TS_MOD,
    Address,
    RtpError,
    RtpPacket,
    parse_packet,
)

__all__ = [
    "DTMF_STALE_SECONDS",
    "MAX_DROPOUT",
    "MAX_MISORDER",
    "REORDER_HOLD",
    "REORDER_PACKETS",
    "SSRC_SWITCH_GAP",
    "AudioReceived",
    "DtmfDigit",
    "ReceiverStats",
    "RtpEvent",
    "RtpReceiver",
]

# Reordering: hold at most this many packets, each for at most this long, waiting for a gap.
REORDER_PACKETS = 3
REORDER_HOLD = 0.060
# RFC 3550 appendix A.1: larger jumps are not reordering but a restart or an attack.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
# A new SSRC is taken over only once the current one has been quiet this long: a PBX
# switches SSRC on re-INVITE or transfer, but two interleaved streams must not flap.
SSRC_SWITCH_GAP = 0.060
# An event whose end packets were all lost is reported once audio runs this far past it.
DTMF_STALE_SECONDS = 0.2
_DTMF_DIGITS = "0123456789*#ABCD"  # RFC 4733 events 0-15; 16 (flash) and up are not digits
_MASK64 = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class AudioReceived:
    """Caller audio in the negotiated codec, in sequence order. ``timestamp`` is in RTP
    clock units (8 per ms for G.711); ``at`` is the ``now`` at which the packet arrived.
    Payloads are whatever the peer's ptime makes them: re-chunk before use if 20 ms matters."""

    payload: bytes
    timestamp: int
    at: float


@dataclass(frozen=True, slots=True)
class DtmfDigit:
    """The caller pressed a key (RFC 4733); reported once per event."""

    digit: str
    duration_ms: int


RtpEvent: TypeAlias = AudioReceived | DtmfDigit


@dataclass(slots=True)
class ReceiverStats:
    """Counters of an :class:`RtpReceiver`, for metrics and the call log."""

    packets: int = 0  # accepted into the call's stream
    malformed: int = 0  # not RTP, or a telephone-event payload too short
    rtcp: int = 0
    foreign: int = 0  # unlatched source, other SSRC, or an unexpected PT before latching
    duplicates: int = 0
    late: int = 0  # older than what was already released, or too far out of sequence
    lost: int = 0  # sequence numbers skipped over when a gap could not be waited for
    ignored: int = 0  # comfort noise and payload types not negotiated
    ssrc_changes: int = 0
    looped: int = 0  # our own packets coming back (an echoing peer, a media loop)


class RtpReceiver:
    """The inbound RTP stream of one call.

    Latches onto the source address and SSRC of the first packet with a negotiated payload
    type; later packets from elsewhere are dropped (RFC 7362: never latch arbitrary
    sources). A new SSRC from the latched address is taken over once the current one has
    been quiet for ``SSRC_SWITCH_GAP``. Packets are released in sequence order through a
    small reordering buffer; payload sizes may vary from packet to packet.
    """

    def __init__(
        self,
        audio_payload_type: int,
        dtmf_payload_type: int | None = None,
        *,
        remote_addr: Address | None = None,
        clock_rate: int = 8000,
        own_ssrc: int | None = None,
    ) -> None:
        if clock_rate <= 0:
            raise LocalProtocolError("clock_rate must be positive")
        self._audio_pt = audio_payload_type
        self._dtmf_pt = dtmf_payload_type
        self._clock_rate = clock_rate
        # RFC 3550 §8.2: a packet carrying the SSRC we send with is our own, looped back;
        # latching onto it would feed the agent its own voice.
        self._own_ssrc = own_ssrc
        self._dtmf_stale_units = int(clock_rate * DTMF_STALE_SECONDS)
        #: Where to send this call's RTP: the SDP address until a packet latches it.
        self.remote_addr: Address | None = remote_addr
        self._latched = False
        self._ssrc: int | None = None
        self._last_at = -math.inf
        # Sequencing: the next sequence number to release, a bitmask of the 64 before it
        # that were released (bit 0 = expected - 1), and held out-of-order packets.
        self._expected: int | None = None
        self._released = 0
        self._held: dict[int, tuple[RtpPacket, float]] = {}
        self._bad_seq: int | None = None
        # The current telephone event, keyed by its RTP timestamp.
        self._dtmf_ts: int | None = None
        self._dtmf_event = 0
        self._dtmf_units = 0
        self._dtmf_done = True
        self._events: list[RtpEvent] = []
        self.stats = ReceiverStats()

    def relatch(self, remote_addr: Address | None = None) -> None:
        """Call after a re-INVITE changed the peer's ``c=`` or ``m=`` line: the next packet
        with a negotiated payload type sets :attr:`remote_addr` and the SSRC again. Until
        then RTP goes to ``remote_addr``, the new SDP address, when one is given."""
        self._latched = False
        if remote_addr is not None:
            self.remote_addr = remote_addr

    # ------------------------------------------------------------------ inbound

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        """Take one datagram from the call's RTP socket; then call :meth:`events_received`
        and re-arm the timer from :meth:`get_timer`. Never raises for what a peer sends."""
        try:
            packet = parse_packet(data)
        except RtpError:
            self.stats.malformed += 1
            return
        if packet is None:
            self.stats.rtcp += 1
            return
        if packet.ssrc == self._own_ssrc:
            self.stats.looped += 1
            return
        in_stream = self._latched and packet.ssrc == self._ssrc and addr == self.remote_addr
        if not in_stream and not self._admit(packet, addr, now):
            self.stats.foreign += 1
            return
        self._last_at = now
        self.stats.packets += 1
        self._sequence(packet, now)
        if self._held:
            self.handle_timer(now)

    def _admit(self, packet: RtpPacket, addr: Address, now: float) -> bool:
        """Whether a packet outside the latched stream may (re)latch it."""
        if packet.payload_type != self._audio_pt and packet.payload_type != self._dtmf_pt:
            return False
        if self._latched and (addr != self.remote_addr or now - self._last_at < SSRC_SWITCH_GAP):
            return False
        self._latched = True
        self.remote_addr = addr
        if packet.ssrc != self._ssrc:
            if self._ssrc is not None:
                self.stats.ssrc_changes += 1
            self._release_all()
            self._finish_dtmf()
            self._ssrc = packet.ssrc
            self._expected = None
            self._released = 0
            self._bad_seq = None
            self._dtmf_ts = None
        return True

    def _sequence(self, packet: RtpPacket, now: float) -> None:
        seq = packet.sequence
        expected = self._expected
        if expected is None:  # first packet of this SSRC
            self._release(packet, now)
            return
        delta = (seq - expected) % SEQ_MOD
        if delta == 0:
            self._release(packet, now)
            if self._held:
                self._drain()
        elif delta < MAX_DROPOUT:
            if seq in self._held:
                self.stats.duplicates += 1
                return
            self._held[seq] = (packet, now)
            while len(self._held) > REORDER_PACKETS:
                self._release_lowest()
        elif delta >= SEQ_MOD - MAX_MISORDER:
            back = SEQ_MOD - 1 - delta  # 0 = the packet released last
            if back < 64 and self._released >> back & 1:
                self.stats.duplicates += 1
            else:
                self.stats.late += 1
        elif seq == self._bad_seq:
            # Two packets in a row far from the expected number: the peer restarted its
            # sequence (RFC 3550 A.1). Start over from here rather than drop everything.
            self._release_all()
            self._expected = None
            self._bad_seq = None
            self._release(packet, now)
        else:
            self._bad_seq = (seq + 1) % SEQ_MOD
            self.stats.late += 1

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must be called next, or ``None`` if nothing waits."""
        if not self._held:
            return None
        return min(at for _, at in self._held.values()) + REORDER_HOLD

    def handle_timer(self, now: float) -> None:
        """Release held packets that have waited long enough (the gap before them is given
        up as lost); then call :meth:`events_received`."""
        while self._held and any(now >= at + REORDER_HOLD for _, at in self._held.values()):
            self._release_lowest()

    def events_received(self) -> list[RtpEvent]:
        """Return, and forget, the events produced so far, in sequence order."""
        events = self._events
        self._events = []
        return events

    def _release_lowest(self) -> None:
        expected = self._expected or 0
        seq = min(self._held, key=lambda s: (s - expected) % SEQ_MOD)
        packet, at = self._held.pop(seq)
        self._release(packet, at)
        self._drain()

    def _drain(self) -> None:
        while self._expected in self._held:
            packet, at = self._held.pop(self._expected)
            self._release(packet, at)

    def _release_all(self) -> None:
        while self._held:
            self._release_lowest()

    def _release(self, packet: RtpPacket, at: float) -> None:
        seq = packet.sequence
        if self._expected is None:
            self._released = 1
        else:
            step = (seq - self._expected) % SEQ_MOD + 1
            self.stats.lost += step - 1
            self._released = (self._released << step | 1) & _MASK64 if step < 64 else 1
        self._expected = (seq + 1) % SEQ_MOD
        pt = packet.payload_type
        if pt == self._audio_pt:
            if not self._dtmf_done:
                self._expire_dtmf(packet.timestamp)
            if packet.payload:
                self._events.append(AudioReceived(packet.payload, packet.timestamp, at))
        elif pt == self._dtmf_pt:
            self._receive_dtmf(packet)
        else:
            self.stats.ignored += 1

    # --------------------------------------------------------------------- DTMF

    def _receive_dtmf(self, packet: RtpPacket) -> None:
        payload = packet.payload
        if len(payload) < 4:
            self.stats.malformed += 1
            return
        end = payload[1] & 0x80
        units = payload[2] << 8 | payload[3]
        if packet.timestamp == self._dtmf_ts:
            # An update or a retransmitted end of the current event: one event, one digit.
            if not self._dtmf_done:
                self._dtmf_units = max(units, self._dtmf_units)
                if end:
                    self._finish_dtmf()
            return
        self._finish_dtmf()  # a new event began before the previous one's end arrived
        self._dtmf_ts = packet.timestamp
        self._dtmf_event = payload[0]
        self._dtmf_units = units
        self._dtmf_done = False
        if end:
            self._finish_dtmf()

    def _expire_dtmf(self, timestamp: int) -> None:
        # Senders update a held key every 50 ms or so; audio far past the last update
        # means every end packet was lost.
        assert self._dtmf_ts is not None
        past = (timestamp - self._dtmf_ts - self._dtmf_units) % TS_MOD
        if self._dtmf_stale_units <= past < TS_MOD // 2:
            self._finish_dtmf()

    def _finish_dtmf(self) -> None:
        if self._dtmf_done:
            return
        self._dtmf_done = True
        if self._dtmf_event < len(_DTMF_DIGITS):
            duration_ms = self._dtmf_units * 1000 // self._clock_rate
            self._events.append(DtmfDigit(_DTMF_DIGITS[self._dtmf_event], duration_ms))
