"""What every phone leg (Twilio Media Streams, SIP/RTP) tells the call core, and what the core
asks of it. The call logic sees only these, never a carrier's wire format.

A leg turns its own protocol into these events and keeps ``send_*`` calls in order. A mark
is the leg's promise to report, as :class:`MarkPlayed`, the moment everything sent before it
has been played to the caller (or dropped by a clear): Twilio echoes marks; a leg that paces
its own audio, as SIP/RTP does, reports a mark when the frame before it goes out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeAlias


@dataclass(frozen=True, slots=True)
class MediaReceived:
    """Caller audio: ``payload`` is raw mu-law bytes. ``timestamp_ms`` counts from the start
    of the stream; use it as the call clock."""

    payload: bytes
    timestamp_ms: int
    chunk: int


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    """Everything sent before mark ``name`` has been played, or was dropped by a clear.
    The name may be unknown, late or repeated: the call logic decides what it means."""

    name: str


@dataclass(frozen=True, slots=True)
class DtmfReceived:
    """The caller pressed a key: one of 0-9, *, #, A-D."""

    digit: str


@dataclass(frozen=True, slots=True)
class StreamStopped:
    """The phone leg ended (usually the caller hung up). Finish the call."""


@dataclass(frozen=True, slots=True)
class UnknownEvent:
    """The leg met a message it does not know: log it once, carry on. Produced once per
    distinct name and for the first few names only; ``name`` is short and printable."""

    name: str


PhoneEvent: TypeAlias = MediaReceived | MarkPlayed | DtmfReceived | StreamStopped | UnknownEvent


class PhoneLeg(Protocol):
    """The outbound half of a phone leg, as the call logic drives it."""

    #: True where :class:`MarkPlayed` comes the moment the audio before the mark goes out
    #: and the far end plays all that went out (RTP): what the caller heard is then exactly
    #: what was sent. False where it comes once the far end has played that audio (Twilio):
    #: the audio after the mark is playing from then on, and a clock places the caller in it.
    marks_on_send: bool

    def send_media(self, payload: bytes) -> None:
        """Queue mu-law audio for the caller, in whole 20 ms frames where possible."""

    def send_mark(self, name: str) -> None:
        """Queue a mark; :class:`MarkPlayed` follows once what was sent before it played."""

    def send_clear(self) -> None:
        """Drop every queued frame at once (barge-in); their marks come back as played."""

    @property
    def has_data_to_send(self) -> bool:
        """Whether the leg has output for its writer."""
