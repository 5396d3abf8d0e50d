"""RTP media (RFC 3550) with RFC 4733 DTMF for one SIP call, as sans-I/O objects.

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

import enum
import math
import struct
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

from bridge.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "COMFORT_NOISE",
    "MAX_PACKET_SIZE",
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
_FIXED = struct.Struct(">BBHII")
_U16 = struct.Struct(">H")

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

_SEQ_MOD = 0x10000
_TS_MOD = 0x1_0000_0000
_MASK64 = (1 << 64) - 1

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
    first, second, sequence, timestamp, ssrc = _FIXED.unpack_from(data)
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
        and 0 <= sequence < _SEQ_MOD
        and 0 <= timestamp < _TS_MOD
        and 0 <= ssrc < _TS_MOD
        and len(csrcs) < 16
        and all(0 <= c < _TS_MOD for c in csrcs)
        and 0 <= padding < 256
    ):
        raise LocalProtocolError("RTP header field out of range")
    first = 0x80 | len(csrcs) | (0x20 if padding else 0) | (0x10 if extension else 0)
    parts = [_FIXED.pack(first, payload_type | (0x80 if marker else 0), sequence, timestamp, ssrc)]
    parts += [c.to_bytes(4, "big") for c in csrcs]
    if extension is not None:
        profile, data = extension
        if not 0 <= profile < _SEQ_MOD or len(data) % 4 or len(data) // 4 >= _SEQ_MOD:
            raise LocalProtocolError("RTP extension profile or length out of range")
        parts += [_U16.pack(profile), _U16.pack(len(data) // 4), data]
    parts.append(payload)
    if padding:
        parts.append(bytes(padding - 1) + bytes((padding,)))
    return b"".join(parts)


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
        delta = (seq - expected) % _SEQ_MOD
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
        elif delta >= _SEQ_MOD - MAX_MISORDER:
            back = _SEQ_MOD - 1 - delta  # 0 = the packet released last
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
            self._bad_seq = (seq + 1) % _SEQ_MOD
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
        seq = min(self._held, key=lambda s: (s - expected) % _SEQ_MOD)
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
            step = (seq - self._expected) % _SEQ_MOD + 1
            self.stats.lost += step - 1
            self._released = (self._released << step | 1) & _MASK64 if step < 64 else 1
        self._expected = (seq + 1) % _SEQ_MOD
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
        past = (timestamp - self._dtmf_ts - self._dtmf_units) % _TS_MOD
        if self._dtmf_stale_units <= past < _TS_MOD // 2:
            self._finish_dtmf()

    def _finish_dtmf(self) -> None:
        if self._dtmf_done:
            return
        self._dtmf_done = True
        if self._dtmf_event < len(_DTMF_DIGITS):
            duration_ms = self._dtmf_units * 1000 // self._clock_rate
            self._events.append(DtmfDigit(_DTMF_DIGITS[self._dtmf_event], duration_ms))


class Codec(enum.Enum):
    """The G.711 codecs the bridge sends; the value is the static RTP payload type."""

    PCMU = 0
    PCMA = 8

    @property
    def silence_byte(self) -> int:
        # Zero amplitude: mu-law 0xFF; A-law 0xD5 (0x80 with the even bits inverted).
        return 0xFF if self is Codec.PCMU else 0xD5


BYTES_PER_MS = 8  # G.711: one byte per sample at 8000 Hz
# Further behind than this, the sender skips frames instead of bursting them to catch up.
MAX_LAG_FRAMES = 5
# Tolerance, in frames, for a `now` that lands a hair before a deadline by float rounding.
_EPSILON_FRAMES = 1e-6


class RtpSender:
    """The outbound RTP stream of one call: G.711 frames paced on a fixed clock.

    Frame ``n`` is due at ``start + n * ptime``: the grid never drifts, whatever the
    caller's sleep error. The caller supplies the randomness (``ssrc``, ``sequence``,
    ``timestamp``, e.g. from ``secrets.randbits``) so this object stays pure. When no agent
    audio is queued, frames of silence go out, because many PBXs hang up when RTP stops.
    """

    def __init__(
        self,
        codec: Codec,
        *,
        ssrc: int,
        sequence: int,
        timestamp: int,
        start: float,
        ptime_ms: int = 20,
    ) -> None:
        if not (0 <= ssrc < _TS_MOD and 0 <= sequence < _SEQ_MOD and 0 <= timestamp < _TS_MOD):
            raise LocalProtocolError("ssrc, sequence or timestamp out of range")
        if not 10 <= ptime_ms <= 200 or ptime_ms % 10:
            raise LocalProtocolError(f"ptime of {ptime_ms} ms is not a multiple of 10 in 10-200")
        self.codec = codec
        self.ssrc = ssrc
        self._pt = codec.value
        self._seq0 = sequence
        self._ts0 = timestamp
        self._start = start
        self._period = ptime_ms / 1000
        self._frame_bytes = ptime_ms * BYTES_PER_MS
        self._silence = bytes((codec.silence_byte,)) * self._frame_bytes
        self._queue = bytearray()
        self._frame = 0  # index on the clock grid of the next frame to send
        self.packets_sent = 0
        #: Frames the pacer skipped because the caller fell too far behind.
        self.frames_skipped = 0
        self._talking = False
        self._audio_sent = 0  # agent bytes sent since the last flush

    def silence_frame(self) -> bytes:
        """One frame of silence in this codec, as sent while the agent is quiet."""
        return self._silence

    def send_audio(self, payload: bytes) -> None:
        """Queue agent audio (any length) in this codec; it goes out a frame at a time from
        :meth:`data_to_send`. A final partial frame is completed with silence."""
        self._queue += payload

    @property
    def queued_ms(self) -> int:
        """Agent audio queued and not yet sent, in ms."""
        return len(self._queue) // BYTES_PER_MS

    @property
    def audio_sent_bytes(self) -> int:
        """Agent audio sent since the last flush, in bytes of the codec."""
        return self._audio_sent

    @property
    def audio_sent_ms(self) -> int:
        """Agent audio sent (so heard: the bridge owns the clock) since the last flush."""
        return self._audio_sent // BYTES_PER_MS

    def flush(self) -> int:
        """Barge-in: drop all queued agent audio so the next frame is silence. Returns the
        ms of agent audio sent since the previous flush (or since the start); subtract
        where the interrupted item began in that same count to get ``audio_end_ms`` for
        the truncate. The next agent audio starts a new talkspurt (marker bit)."""
        sent_ms = self._audio_sent // BYTES_PER_MS
        self._queue.clear()
        self._audio_sent = 0
        self._talking = False
        return sent_ms

    # ---------------------------------------------------------------- pacing

    def _frames_elapsed(self, now: float) -> int:
        """How many frames of the grid have their deadline at or before ``now``."""
        return math.floor((now - self._start) / self._period + _EPSILON_FRAMES) + 1

    def next_send_at(self, now: float) -> float:
        """The absolute time to sleep until before calling :meth:`data_to_send`; at or
        before ``now`` means at once. Always a point of the fixed grid."""
        frame = self._frame
        elapsed = self._frames_elapsed(now)
        if elapsed - frame > MAX_LAG_FRAMES:
            frame = elapsed - 1  # what due() will skip to
        return self._start + frame * self._period

    def due(self, now: float) -> int:
        """How many frames to send now. When the caller has fallen more than
        ``MAX_LAG_FRAMES`` behind (a stalled loop, a suspended host), the missed frames are
        skipped, not burst: timestamps jump with wall time and only the current frame is due."""
        due = self._frames_elapsed(now) - self._frame
        if due <= 0:
            return 0
        if due > MAX_LAG_FRAMES:
            self._frame += due - 1
            self.frames_skipped += due - 1
            self._talking = False  # the timestamp gap starts a new talkspurt
            return 1
        return due

    def data_to_send(self, now: float) -> list[bytes]:
        """The packets due at ``now``, in order: send each to the latched address."""
        return [self.next_packet() for _ in range(self.due(now))]

    def next_packet(self) -> bytes:
        """Build the next frame's packet (agent audio, else silence) and advance; prefer
        :meth:`data_to_send`, which keeps to the clock."""
        size = self._frame_bytes
        queue = self._queue
        payload: bytes | bytearray
        if queue:
            payload = queue[:size]
            del queue[:size]
            sent = len(payload)
            self._audio_sent += sent
            if sent < size:
                payload += self._silence[sent:]
            marker = not self._talking or self.packets_sent == 0
            self._talking = True
        else:
            payload = self._silence
            marker = self.packets_sent == 0
            self._talking = False
        header = _FIXED.pack(
            0x80,
            self._pt | 0x80 if marker else self._pt,
            (self._seq0 + self.packets_sent) % _SEQ_MOD,
            (self._ts0 + self._frame * self._frame_bytes) % _TS_MOD,
            self.ssrc,
        )
        self.packets_sent += 1
        self._frame += 1
        return header + payload
