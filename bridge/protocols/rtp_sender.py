"""The outbound RTP stream of one call: G.711 frames on a clock that never drifts."""

from __future__ import annotations

import enum
import math

from bridge.errors import LocalProtocolError
from bridge.protocols.rtp_packet import FIXED_HEADER, SEQ_MOD, TS_MOD

__all__ = ["BYTES_PER_MS", "MAX_LAG_FRAMES", "Codec", "RtpSender"]


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
        if not (0 <= ssrc < TS_MOD and 0 <= sequence < SEQ_MOD and 0 <= timestamp < TS_MOD):
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

    def restart_clock(self, now: float) -> None:
        """Put frame 0 at ``now`` if nothing has been sent yet: a stream created some time
        before its pacer first runs would otherwise open with a burst of catch-up frames."""
        if self.packets_sent == 0:
            self._start = now
            self._frame = 0

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
        header = FIXED_HEADER.pack(
            0x80,
            self._pt | 0x80 if marker else self._pt,
            (self._seq0 + self.packets_sent) % SEQ_MOD,
            (self._ts0 + self._frame * self._frame_bytes) % TS_MOD,
            self.ssrc,
        )
        self.packets_sent += 1
        self._frame += 1
        return header + payload
