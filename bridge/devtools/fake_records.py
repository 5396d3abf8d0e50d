"""Plain data of the fake realtime server: its fault switches and what each session records.

Tests read :class:`FakeSessionRecord` after (or during) a conversation to check what the
client sent and what the server answered. The server fills it in as it goes; nothing in it
is ever read back by the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AbortConnection",
    "CloseConnection",
    "FakeFaults",
    "FakeSessionRecord",
    "Outgoing",
    "TruncateRecord",
]


@dataclass(frozen=True, slots=True)
class FakeFaults:
    """Misbehaviours to switch on, each mimicking something real servers do.

    ``reject_auth``: the handshake is answered 401. ``refuse_session``: the first
    ``session.update`` earns an error and the socket is closed 1008. ``close_after_ms``:
    the TCP connection is dropped without a close frame that long after it opened.
    ``late_transcripts``: a caller turn's transcription arrives only after the response's
    ``response.done``. ``noise``: ``ping``, ``rate_limits.updated`` and an unknown event
    type are slipped between the other events. ``no_server_cancel``: speech during a
    response does not cancel it; only the client's ``response.cancel`` does.
    """

    reject_auth: bool = False
    refuse_session: bool = False
    close_after_ms: int | None = None
    late_transcripts: bool = False
    noise: bool = False
    no_server_cancel: bool = False


@dataclass(frozen=True, slots=True)
class TruncateRecord:
    """One ``conversation.item.truncate`` and how the server judged it.

    ``at`` is the server's ``time.monotonic()`` when it arrived; ``error`` the message of the
    error sent back when ``accepted`` is false.
    """

    item_id: str
    audio_end_ms: int
    accepted: bool
    error: str | None
    at: float


@dataclass(slots=True)
class FakeSessionRecord:
    """Everything one accepted connection saw, for tests to inspect.

    ``client_events`` holds every client event except ``input_audio_buffer.append`` (those
    are summed in ``append_sizes``/``appended_bytes``, decoded bytes). ``speech_started_at``
    holds ``time.monotonic()`` right after each ``speech_started`` was written.
    ``responses`` holds ``(response_id, status, reason)`` per ``response.done``;
    ``errors_sent`` the ``error`` object of each error event.
    """

    dialect: str
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    client_events: list[dict[str, Any]] = field(default_factory=list)
    append_sizes: list[int] = field(default_factory=list)
    appended_bytes: int = 0
    truncates: list[TruncateRecord] = field(default_factory=list)
    speech_started_at: list[float] = field(default_factory=list)
    audio_chunks: dict[str, list[bytes]] = field(default_factory=dict)
    responses: list[tuple[str, str, str | None]] = field(default_factory=list)
    errors_sent: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False

    @property
    def audio_sent(self) -> dict[str, bytes]:
        """All output audio sent per assistant item id, in the session's output format."""
        return {item_id: b"".join(chunks) for item_id, chunks in self.audio_chunks.items()}

    def client_events_of(self, event_type: str) -> list[dict[str, Any]]:
        """The recorded client events of one type, in order."""
        return [e for e in self.client_events if e.get("type") == event_type]


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Close the WebSocket with this code and reason, then stop."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class AbortConnection:
    """Drop the TCP connection without a closing handshake, then stop."""


Outgoing = dict[str, Any] | CloseConnection | AbortConnection
