"""A SIP call's media as a phone leg: RTP in and out, seen by the call logic exactly like a
Twilio stream (:mod:`bridge.protocols.phone`). Pure: datagrams and ``now`` in, events and
datagrams out.

The bridge paces RTP itself, so it knows what the caller has heard: a mark counts as played
the moment the last frame queued before it goes out, not when a far end says so. That makes
barge-in exact: ``send_clear`` drops every queued frame before the next one is due, and the
marks still pending come back as played, as Twilio echoes them after a ``clear``.

The call logic works in mu-law. A PCMA call is converted here, one table lookup per byte.
"""

from __future__ import annotations

from collections import deque

from bridge.codecs.g711 import alaw_to_ulaw, ulaw_to_alaw
from bridge.protocols.phone import (
    DtmfReceived,
    MarkPlayed,
    MediaReceived,
    PhoneEvent,
    StreamStopped,
)
from bridge.protocols.rtp import (
    BYTES_PER_MS,
    AudioReceived,
    Codec,
    DtmfDigit,
    RtpReceiver,
    RtpSender,
)

_TS_MOD = 1 << 32  # RTP timestamps wrap at 32 bits


class RtpPhoneLeg:
    """One call's RTP as a :class:`~bridge.protocols.phone.PhoneLeg`.

    Inbound: feed :meth:`receive_datagram` (and :meth:`handle_timer` at
    :meth:`next_deadline`), then hand :meth:`events_received` to the call logic. Outbound:
    at :meth:`next_deadline` call :meth:`datagrams_due` and send each to
    :attr:`remote_addr`; its marks come out of :meth:`events_received` next.
    """

    # The phone plays every frame it gets, however late the bridge learns of a barge-in.
    marks_on_send = True

    def __init__(self, receiver: RtpReceiver, sender: RtpSender) -> None:
        self.receiver = receiver
        self.sender = sender
        self._alaw = sender.codec is Codec.PCMA
        self._events: list[PhoneEvent] = []
        self._marks: deque[tuple[int, str]] = deque()  # (bytes queued before it, name)
        self._queued = 0  # agent bytes queued since the last clear
        self._first_ts: int | None = None
        self._chunk = 0
        self._stopped = False

    @property
    def remote_addr(self) -> tuple[str, int] | None:
        """Where to send: where the caller's packets come from (symmetric RTP)."""
        return self.receiver.remote_addr

    # -- inbound ----------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float) -> None:
        """A datagram on the call's RTP port. Never raises: garbage is counted and dropped."""
        self.receiver.receive_datagram(data, addr, now)
        self._take_received()

    def handle_timer(self, now: float) -> None:
        """Release what the reordering buffer held past its wait."""
        self.receiver.handle_timer(now)
        self._take_received()

    def receive_dtmf(self, digit: str) -> None:
        """A keypress that came by signalling (SIP INFO) rather than RFC 4733."""
        self._events.append(DtmfReceived(digit))

    def stop(self) -> None:
        """The caller hung up (BYE): the call logic ends the call as ``caller_hangup``."""
        if not self._stopped:
            self._stopped = True
            self._events.append(StreamStopped())

    @property
    def has_events(self) -> bool:
        """Whether :meth:`events_received` has anything (so a reader is worth waking)."""
        return bool(self._events)

    def events_received(self) -> list[PhoneEvent]:
        """Return, and forget, the events since the last call, in order."""
        events, self._events = self._events, []
        return events

    def _take_received(self) -> None:
        for event in self.receiver.events_received():
            if isinstance(event, AudioReceived):
                self._events.append(self._media(event))
            elif isinstance(event, DtmfDigit):
                self._events.append(DtmfReceived(event.digit))

    def _media(self, event: AudioReceived) -> MediaReceived:
        # The stream clock: RTP time since the first packet (wrapping at 2**32), in ms.
        if self._first_ts is None:
            self._first_ts = event.timestamp
        # G.711 runs an 8 kHz clock: one timestamp unit per byte, BYTES_PER_MS per ms.
        elapsed = (event.timestamp - self._first_ts) % _TS_MOD // BYTES_PER_MS
        self._chunk += 1
        payload = alaw_to_ulaw(event.payload) if self._alaw else event.payload
        return MediaReceived(payload, elapsed, self._chunk)

    # -- outbound: the PhoneLeg the call logic drives -----------------------------------------

    def send_media(self, payload: bytes) -> None:
        """Queue mu-law agent audio; it goes out frame by frame from :meth:`datagrams_due`."""
        self.sender.send_audio(ulaw_to_alaw(payload) if self._alaw else payload)
        self._queued += len(payload)

    def send_mark(self, name: str) -> None:
        """Played once every byte queued before it has gone out."""
        self._marks.append((self._queued, name))

    def send_clear(self) -> None:
        """Drop every queued frame now; pending marks come back as played (dropped)."""
        self.sender.flush()
        self._queued = 0
        while self._marks:
            self._events.append(MarkPlayed(self._marks.popleft()[1]))

    @property
    def has_data_to_send(self) -> bool:
        """RTP flows on the pacer's clock whatever is queued: ask :meth:`next_deadline`."""
        return False

    def next_deadline(self, now: float) -> float:
        """When to next call :meth:`datagrams_due` (and :meth:`handle_timer`)."""
        send_at = self.sender.next_send_at(now)
        timer = self.receiver.get_timer()
        return send_at if timer is None else min(send_at, timer)

    def datagrams_due(self, now: float) -> list[bytes]:
        """The RTP packets due at ``now``, in order; marks they complete become events."""
        packets = self.sender.data_to_send(now)
        if packets and self._marks:
            sent = self.sender.audio_sent_bytes
            while self._marks and self._marks[0][0] <= sent:
                self._events.append(MarkPlayed(self._marks.popleft()[1]))
        return packets
