"""Plain data of the fake realtime server: its fault switches and what each session records.

Tests read :class:`FakeSessionRecord` after (or during) a conversation to check what the
client sent and what the server answered. The server fills it in as it goes; nothing in it
is ever read back by the server.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "AbortConnection",
    "CloseConnection",
    "FakeFaults",
    "FakeSessionRecord",
    "Outgoing",
    "ToolCallRecord",
    "ToolFollowUp",
    "ToolOutputRecord",
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


@dataclass(frozen=True, slots=True)
class ToolCallRecord:
    """One ``function_call`` item the fake model produced.

    ``arguments`` is the JSON text sent; ``declared`` whether ``session.tools`` named the
    tool at the time (the fake calls scripted tools either way, so that a client's handling
    of an unknown tool can be tested). ``at`` is the server's ``time.monotonic()``.
    """

    response_id: str
    item_id: str
    call_id: str
    name: str
    arguments: str
    declared: bool
    at: float


@dataclass(frozen=True, slots=True)
class ToolOutputRecord:
    """One accepted ``function_call_output`` item from the client.

    ``name`` is the tool's name, resolved from the ``function_call`` item with the same
    ``call_id``; ``output`` the text given back. Outputs for an unknown ``call_id`` are
    refused with an error (see ``errors_sent``) and not recorded here.
    """

    call_id: str
    name: str
    output: str
    at: float


@dataclass(frozen=True, slots=True)
class ToolFollowUp:
    """A response the client asked for (``response.create``) after giving tool outputs.

    ``call_ids`` are the calls whose outputs arrived since the previous response began, in
    arrival order.
    """

    response_id: str
    call_ids: tuple[str, ...]
    at: float


@dataclass(slots=True)
class FakeSessionRecord:
    """Everything one accepted connection saw, for tests to inspect.

    ``client_events`` holds every client event except ``input_audio_buffer.append`` (those
    are summed in ``append_sizes``/``appended_bytes``, decoded bytes). ``speech_started_at``
    holds ``time.monotonic()`` right after each ``speech_started`` was written.
    ``responses`` holds ``(response_id, status, reason)`` per ``response.done``;
    ``errors_sent`` the ``error`` object of each error event. ``timeline`` lists the
    session's set-up in order: the server's ``session.created``, ``conversation.created``
    (xAI) and ``session.updated``, and each client ``session.update`` (``session.update
    refused`` when xAI got it before ``conversation.created``).

    Tools: ``tools`` and ``tool_choice`` are what the last accepted ``session.update`` left
    in effect; ``tool_calls`` the function calls the model made, ``tool_outputs`` the
    client's answers to them, and ``responses_after_tools`` each ``response.create`` that
    followed such answers.
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
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: Any = "auto"
    tool_calls: list[ToolCallRecord] = field(default_factory=list)
    tool_outputs: list[ToolOutputRecord] = field(default_factory=list)
    responses_after_tools: list[ToolFollowUp] = field(default_factory=list)
    timeline: list[str] = field(default_factory=list)
    closed: bool = False
    # time.monotonic() when the connection was accepted: how soon a client came back.
    opened_at: float = field(default_factory=time.monotonic)

    @property
    def audio_sent(self) -> dict[str, bytes]:
        """All output audio sent per assistant item id, in the session's output format."""
        return {item_id: b"".join(chunks) for item_id, chunks in self.audio_chunks.items()}

    def client_events_of(self, event_type: str) -> list[dict[str, Any]]:
        """The recorded client events of one type, in order."""
        return [e for e in self.client_events if e.get("type") == event_type]

    @property
    def unanswered_calls(self) -> list[str]:
        """The ``call_id`` s of the model's function calls that have no output yet."""
        answered = {output.call_id for output in self.tool_outputs}
        return [call.call_id for call in self.tool_calls if call.call_id not in answered]


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Close the WebSocket with this code and reason, then stop."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class AbortConnection:
    """Drop the TCP connection without a closing handshake, then stop."""


Outgoing = dict[str, Any] | CloseConnection | AbortConnection
