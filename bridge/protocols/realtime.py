"""The client side of a realtime speech-to-speech session, sans-I/O.

``RealtimeConnection`` speaks every dialect in ``bridge.protocols.dialects``. Feed it each
text frame the server sends (``receive_text``), take typed events (``events_received``), ask
it to send (``send_session_update``, ``append_audio``, ``create_response``, ...), and write
whatever ``data_to_send`` returns to the WebSocket, in order. It does no I/O and reads no
clock, so the same object runs under the adapter, in tests and in the call simulator.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from bridge.errors import (
    CLOSE_INVALID_PAYLOAD,
    ConfigurationError,
    LocalProtocolError,
    RemoteProtocolError,
)
from bridge.protocols.dialects import (
    BYTES_PER_MS,
    Dialect,
    SessionConfig,
    build_session_update,
)
from bridge.protocols.json_text import parse_json
from bridge.protocols.realtime_events import (
    AssistantItemStarted,
    AudioDelta,
    AudioDone,
    FunctionCallRequested,
    InputCommitted,
    InputTranscriptCompleted,
    InputTranscriptFailed,
    ItemTruncated,
    OutputAudioStarted,
    OutputAudioStopped,
    RealtimeError,
    RealtimeEvent,
    ResponseCreated,
    ResponseDone,
    SessionCreated,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    TranscriptDelta,
    TranscriptDone,
    classify_error,
    clean_id,
    clean_text,
    int_in_range,
    response_reason,
    response_transcripts,
)

__all__ = ["RealtimeConnection", "ResponseState"]

_Message = dict[str, Any]

_ALREADY_ACTIVE = "conversation_already_has_active_response"
_ALREADY_ACTIVE_TEXT = "already has an active response"

# Enough client events to name the cause of any error that can still be in flight.
_RECENT_LIMIT = 64
# Assistant items remembered as announced. Audio only ever comes for the latest few, and a
# server inventing item ids must not grow the connection without bound.
_ANNOUNCED_LIMIT = 32
# Caller items whose cumulative transcript is kept until its .completed arrives.
_PARTIALS_LIMIT = 8
# Tool calls already reported, so the same call seen in two events is run once.
_CALLS_LIMIT = 64
# A tool call's arguments: generous for any real schema, bounded against a runaway model.
_MAX_ARGUMENTS_CHARS = 64 * 1024
# What a tool's output may be when given back; the tool runner cuts longer ones first.
MAX_TOOL_OUTPUT_CHARS = 32 * 1024
# expires_at is epoch seconds, which pass 2**31 in 2038.
_EPOCH_LIMIT = 2**34

# Both spellings are accepted whatever the dialect: "compatible" servers mix them.
_AUDIO_DELTA = ("response.output_audio.delta", "response.audio.delta")
_AUDIO_DONE = ("response.output_audio.done", "response.audio.done")
_TRANSCRIPT_DELTA = ("response.output_audio_transcript.delta", "response.audio_transcript.delta")
_TRANSCRIPT_DONE = ("response.output_audio_transcript.done", "response.audio_transcript.done")
_ITEM_CREATED = ("conversation.item.added", "conversation.item.created")

_APPEND_HEAD = '{"type":"input_audio_buffer.append","audio":"'


class ResponseState(StrEnum):
    """Where the model's current response stands, as far as the client can tell."""

    IDLE = "idle"
    #: ``response.create`` sent, no ``response.created`` yet: another create would fail.
    REQUESTED = "requested"
    #: Between ``response.created`` and ``response.done``.
    ACTIVE = "active"
    #: Active, and this client already sent ``response.cancel``.
    CANCELLING = "cancelling"


class RealtimeConnection:
    """One realtime session, seen from the bridge.

    After connecting, feed every server text frame to :meth:`receive_text`; on
    ``SessionCreated`` (raised at the dialect's ``configure_after`` event) call
    :meth:`send_session_update`. Then stream the caller's audio with
    :meth:`append_audio` (in ``audio_format``: ``"pcmu"`` or ``"pcm24k"``). After every call,
    write :meth:`data_to_send` to the socket and handle :meth:`events_received`.
    """

    def __init__(self, dialect: Dialect, audio_format: str) -> None:
        if audio_format not in BYTES_PER_MS:
            raise ConfigurationError(f"unknown audio format {audio_format!r}")
        self.dialect = dialect
        self.audio_format = audio_format
        self._bytes_per_ms = BYTES_PER_MS[audio_format]
        self._min_append_bytes = dialect.min_append_ms * self._bytes_per_ms
        self._pending = bytearray()
        self._appended_bytes = 0
        self._events: list[RealtimeEvent] = []
        self._outgoing: list[str] = []
        self._last_event_number = 0
        # event_id -> (client event type, instructions of a response.create)
        self._recent: dict[str, tuple[str, str | None]] = {}
        self._state = ResponseState.IDLE
        self._response_id: str | None = None
        self._queued = False
        self._queued_instructions: str | None = None
        self._announced: dict[str, None] = {}  # insertion-ordered, so the oldest goes first
        # call_id -> None for tool calls reported; item_id -> name for calls announced
        # (Inworld may leave ``name`` out of function_call_arguments.done).
        self._calls_seen: dict[str, None] = {}
        self._call_names: dict[str, str] = {}
        self._expires_at: int | None = None
        # item_id -> the latest cumulative transcript of a caller turn (xAI's .updated)
        self._partials: dict[str, str] = {}
        handlers: dict[str, Callable[[_Message], None]] = {
            "session.created": self._on_session_created,
            "session.updated": self._on_session_updated,
            "input_audio_buffer.speech_started": self._on_speech_started,
            "input_audio_buffer.speech_stopped": self._on_speech_stopped,
            "input_audio_buffer.committed": self._on_committed,
            "response.created": self._on_response_created,
            "response.output_item.added": self._on_output_item_added,
            "response.output_item.done": self._on_output_item_done,
            "response.function_call_arguments.done": self._on_arguments_done,
            "conversation.item.input_audio_transcription.updated": self._on_input_partial,
            "conversation.item.input_audio_transcription.completed": self._on_input_transcript,
            "conversation.item.input_audio_transcription.failed": self._on_input_failed,
            "conversation.item.truncated": self._on_truncated,
            "response.done": self._on_response_done,
            "error": self._on_error,
            # Only where the provider plays the audio itself (SIP, WebRTC).
            "output_audio_buffer.started": self._on_playout_started,
            "output_audio_buffer.stopped": self._on_playout_stopped,
            "output_audio_buffer.cleared": self._on_playout_stopped,
        }
        for name in _ITEM_CREATED:
            handlers[name] = self._on_item_created
        if dialect.configure_after != "session.created":
            # Only the dialect's own ready event opens the session; the same event from
            # another server means nothing here.
            handlers[dialect.configure_after] = self._on_ready
        for names, handler in (
            (_AUDIO_DELTA, self._on_audio_delta),
            (_AUDIO_DONE, self._on_audio_done),
            (_TRANSCRIPT_DELTA, self._on_transcript_delta),
            (_TRANSCRIPT_DONE, self._on_transcript_done),
        ):
            for name in names:
                handlers[name] = handler
        self._handlers = handlers

    # -- state ---------------------------------------------------------------------------

    @property
    def appended_ms(self) -> float:
        """Ms of input audio sent since the session opened: the model's input timeline."""
        return self._appended_bytes / self._bytes_per_ms

    @property
    def response_state(self) -> ResponseState:
        return self._state

    @property
    def response_in_flight(self) -> bool:
        """True between ``response.created`` and ``response.done``."""
        return self._state is ResponseState.ACTIVE or self._state is ResponseState.CANCELLING

    @property
    def active_response_id(self) -> str | None:
        return self._response_id if self.response_in_flight else None

    def partial_input_transcript(self, item_id: str) -> str | None:
        """The latest cumulative transcript of caller item ``item_id`` while it is still
        being transcribed (xAI's ``.updated`` events); ``None`` once it completed. It may
        still change: only ``InputTranscriptCompleted`` makes the caller's turn."""
        return self._partials.get(item_id)

    # -- receiving -----------------------------------------------------------------------

    def receive_text(self, text: str) -> None:
        """Take one server event. Then handle ``events_received()``.

        Raises ``RemoteProtocolError`` (close code 1007) when the text is not a JSON object
        or a known event lacks what it must carry (audio that is not base64, say): close the
        session with that code. A refused frame leaves the connection as it was. Unknown
        event types are ignored. Values out of range in optional fields count as absent.
        """
        try:
            message = parse_json(text)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the stack
            raise RemoteProtocolError(
                "realtime server sent text that is not JSON", CLOSE_INVALID_PAYLOAD
            ) from None
        if type(message) is not dict:
            raise RemoteProtocolError(
                "realtime server sent JSON that is not an object", CLOSE_INVALID_PAYLOAD
            )
        kind = message.get("type")
        if type(kind) is str:
            handler = self._handlers.get(kind)
            if handler is not None:
                handler(message)

    def events_received(self) -> list[RealtimeEvent]:
        """The events decoded since the last call, oldest first."""
        events, self._events = self._events, []
        return events

    def _on_session_created(self, message: _Message) -> None:
        session = message.get("session")
        expires = (
            int_in_range(session.get("expires_at"), _EPOCH_LIMIT) if type(session) is dict else None
        )
        self._expires_at = expires
        if self.dialect.configure_after == "session.created":
            self._events.append(SessionCreated(expires))

    def _on_ready(self, message: _Message) -> None:
        # The session was announced earlier, but only now takes a configuration (xAI's
        # conversation.created); the expiry comes from that earlier session.created.
        self._events.append(SessionCreated(self._expires_at))

    def _on_session_updated(self, message: _Message) -> None:
        self._events.append(SessionUpdated())

    def _on_speech_started(self, message: _Message) -> None:
        self._events.append(
            SpeechStarted(
                clean_id(message.get("item_id")), int_in_range(message.get("audio_start_ms"))
            )
        )

    def _on_speech_stopped(self, message: _Message) -> None:
        self._events.append(
            SpeechStopped(
                clean_id(message.get("item_id")), int_in_range(message.get("audio_end_ms"))
            )
        )

    def _on_committed(self, message: _Message) -> None:
        self._events.append(InputCommitted(clean_id(message.get("item_id"))))

    def _on_playout_started(self, message: _Message) -> None:
        self._events.append(OutputAudioStarted(clean_id(message.get("response_id"))))

    def _on_playout_stopped(self, message: _Message) -> None:
        self._events.append(OutputAudioStopped(clean_id(message.get("response_id"))))

    def _on_response_created(self, message: _Message) -> None:
        response = message.get("response")
        response_id = clean_id(response.get("id")) if type(response) is dict else None
        self._state = ResponseState.ACTIVE
        self._response_id = response_id
        self._events.append(ResponseCreated(response_id or ""))

    def _on_output_item_added(self, message: _Message) -> None:
        item = message.get("item")
        if type(item) is dict and item.get("type") == "function_call":
            item_id, name = clean_id(item.get("id")), clean_id(item.get("name"))
            if item_id is not None and name is not None:
                self._call_names[item_id] = name
                if len(self._call_names) > _CALLS_LIMIT:
                    del self._call_names[next(iter(self._call_names))]
            return
        self._announce(item, clean_id(message.get("response_id")))

    def _on_output_item_done(self, message: _Message) -> None:
        item = message.get("item")
        if type(item) is dict and item.get("type") == "function_call":
            self._function_call(clean_id(message.get("response_id")), item)

    def _on_arguments_done(self, message: _Message) -> None:
        # Some servers finish a call here before (or without) output_item.done.
        self._function_call(clean_id(message.get("response_id")), message)

    def _function_call(self, response_id: str | None, fields: _Message) -> None:
        call_id = clean_id(fields.get("call_id"))
        item_id = clean_id(fields.get("item_id", fields.get("id")))
        name = clean_id(fields.get("name")) or self._call_names.get(item_id or "")
        arguments = fields.get("arguments")
        if call_id is None or name is None or call_id in self._calls_seen:
            return  # nothing to answer, or already reported
        if type(arguments) is not str or len(arguments) > _MAX_ARGUMENTS_CHARS:
            arguments = ""  # not JSON: the tool's output will say so to the model
        seen = self._calls_seen
        seen[call_id] = None
        if len(seen) > _CALLS_LIMIT:
            del seen[next(iter(seen))]
        self._events.append(FunctionCallRequested(response_id, item_id, call_id, name, arguments))

    def _on_item_created(self, message: _Message) -> None:
        # These carry no response id; an assistant item belongs to the active response.
        self._announce(message.get("item"), self.active_response_id)

    def _announce(self, item: object, response_id: str | None) -> None:
        if type(item) is not dict or item.get("role") != "assistant":
            return
        if item.get("type", "message") != "message":
            return  # function calls and their outputs carry no speech
        item_id = clean_id(item.get("id"))
        if item_id is not None and item_id not in self._announced:
            self._start_item(response_id, item_id)

    def _start_item(self, response_id: str | None, item_id: str) -> None:
        announced = self._announced
        announced[item_id] = None
        if len(announced) > _ANNOUNCED_LIMIT:
            del announced[next(iter(announced))]
        self._events.append(AssistantItemStarted(response_id, item_id))

    def _on_audio_delta(self, message: _Message) -> None:
        # The hot path (50+ per second): type checks and dict lookups, one decode, one event.
        # Ids are checked in full only when new: a known item id was checked when it came.
        item_id = message.get("item_id")
        delta = message.get("delta")
        if type(item_id) is not str or type(delta) is not str:
            raise RemoteProtocolError("audio delta without item_id or delta", CLOSE_INVALID_PAYLOAD)
        new_item = item_id not in self._announced
        if new_item and clean_id(item_id) is None:
            raise RemoteProtocolError("audio delta with a malformed item_id", CLOSE_INVALID_PAYLOAD)
        try:
            audio = binascii.a2b_base64(delta, strict_mode=True)
        except ValueError:
            raise RemoteProtocolError(
                "audio delta is not valid base64", CLOSE_INVALID_PAYLOAD
            ) from None
        response_id = message.get("response_id")
        if response_id != self._response_id:
            response_id = clean_id(response_id)
        if new_item:
            # A server that skipped the item events: the audio itself starts the item.
            self._start_item(response_id, item_id)
        self._events.append(AudioDelta(response_id, item_id, audio))

    def _on_audio_done(self, message: _Message) -> None:
        item_id = _required_id(message, "item_id")
        self._events.append(AudioDone(clean_id(message.get("response_id")), item_id))

    def _on_transcript_delta(self, message: _Message) -> None:
        item_id = _required_id(message, "item_id")
        delta = _required_text(message, "delta")
        self._events.append(TranscriptDelta(clean_id(message.get("response_id")), item_id, delta))

    def _on_transcript_done(self, message: _Message) -> None:
        item_id = _required_id(message, "item_id")
        text = clean_text(message.get("transcript"))
        if text is None:
            # Not every server repeats the text here (xAI, by one client's model of it): the
            # deltas already hold it, so this is no reason to drop the session.
            return
        self._events.append(TranscriptDone(clean_id(message.get("response_id")), item_id, text))

    def _on_input_partial(self, message: _Message) -> None:
        # Cumulative and revisable, so it raises no event: the turn is made by .completed.
        # Kept (bounded) only so that a caller can show the words heard so far.
        item_id = clean_id(message.get("item_id"))
        text = clean_text(message.get("transcript"))
        if item_id is None or text is None:
            return  # informational only: a malformed one is not worth closing over
        partials = self._partials
        partials.pop(item_id, None)
        partials[item_id] = text
        if len(partials) > _PARTIALS_LIMIT:
            del partials[next(iter(partials))]

    def _on_input_transcript(self, message: _Message) -> None:
        text = _required_text(message, "transcript")
        item_id = clean_id(message.get("item_id"))
        if item_id is not None:
            self._partials.pop(item_id, None)
        self._events.append(InputTranscriptCompleted(item_id, text))

    def _on_input_failed(self, message: _Message) -> None:
        error = message.get("error")
        text = clean_text(error.get("message")) if type(error) is dict else None
        self._events.append(
            InputTranscriptFailed(clean_id(message.get("item_id")), text or "transcription failed")
        )

    def _on_truncated(self, message: _Message) -> None:
        item_id = _required_id(message, "item_id")
        end = int_in_range(message.get("audio_end_ms"))
        if end is None:
            raise RemoteProtocolError(
                "conversation.item.truncated without a valid audio_end_ms", CLOSE_INVALID_PAYLOAD
            )
        self._events.append(ItemTruncated(item_id, end))

    def _on_response_done(self, message: _Message) -> None:
        response = message.get("response")
        if type(response) is not dict:
            response = {}
        status = clean_id(response.get("status")) or "unknown"
        self._state = ResponseState.IDLE
        self._response_id = None
        self._events.append(
            ResponseDone(
                clean_id(response.get("id")),
                status,
                response_reason(response.get("status_details")),
                response_transcripts(response.get("output")),
            )
        )
        if self._queued:
            self._send_queued()

    def _send_queued(self) -> None:
        self._queued = False
        self._send_create(self._queued_instructions)

    def _on_error(self, message: _Message) -> None:
        error = message.get("error")
        if type(error) is not dict:
            error = {}
        code = clean_id(error.get("code"))
        text = clean_text(error.get("message")) or ""
        cause_id = clean_id(error.get("event_id"))
        cause = self._recent.get(cause_id) if cause_id is not None else None
        caused_by = cause[0] if cause is not None else None
        benign, fatal = classify_error(code, text, caused_by)
        self._events.append(
            RealtimeError(code, text, clean_id(error.get("param")), caused_by, benign, fatal)
        )
        if caused_by == "response.create" and cause is not None:
            self._create_failed(
                cause[1], code == _ALREADY_ACTIVE or _ALREADY_ACTIVE_TEXT in text.lower()
            )

    def _create_failed(self, instructions: str | None, already_active: bool) -> None:
        if already_active and not self._queued:
            # Another response (the server's VAD) won the race: ask again when it ends.
            self._queued = True
            self._queued_instructions = instructions
        if self._state is ResponseState.REQUESTED:
            self._state = ResponseState.IDLE  # no response.created will follow
            if self._queued and not already_active:
                self._send_queued()

    # -- sending -------------------------------------------------------------------------

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._outgoing)

    def data_to_send(self) -> list[str]:
        """The JSON texts to write to the WebSocket, in order; the list is drained."""
        outgoing, self._outgoing = self._outgoing, []
        return outgoing

    def send_session_update(self, config: SessionConfig) -> None:
        """Configure the session; send it after ``SessionCreated``. Expect ``SessionUpdated``,
        or a fatal ``RealtimeError`` if the provider refuses the configuration."""
        if config.audio_format != self.audio_format:
            raise LocalProtocolError(
                f"session format {config.audio_format!r} differs from the connection's "
                f"{self.audio_format!r}"
            )
        update = build_session_update(self.dialect, config)
        self._send("session.update", {"session": update["session"]})

    def append_audio(self, audio: bytes) -> None:
        """Queue caller audio (session format). An append goes out once at least
        ``dialect.min_append_ms`` is buffered; call :meth:`flush_audio` to send the rest."""
        pending = self._pending
        if not pending and len(audio) >= self._min_append_bytes:
            self._emit_append(audio)
            return
        pending += audio
        if len(pending) >= self._min_append_bytes:
            self._emit_append(pending)
            pending.clear()

    def flush_audio(self) -> None:
        """Send whatever caller audio is buffered (before a pause, a commit or a close)."""
        if self._pending:
            self._emit_append(self._pending)
            self._pending.clear()

    def _emit_append(self, audio: bytes | bytearray) -> None:
        encoded = binascii.b2a_base64(audio, newline=False).decode("ascii")
        # Base64 needs no JSON escaping, so the frame is built without json.dumps.
        self._outgoing.append(_APPEND_HEAD + encoded + '"}')
        self._appended_bytes += len(audio)

    def create_response(self, instructions: str | None = None) -> None:
        """Ask the model to speak (a greeting, say). While a response is requested or in
        flight, the request waits and goes out at ``response.done``; only the latest
        waiting request is kept."""
        if self._state is ResponseState.IDLE:
            self._send_create(instructions)
        else:
            self._queued = True
            self._queued_instructions = instructions

    def _send_create(self, instructions: str | None) -> None:
        body: _Message = (
            {} if instructions is None else {"response": {"instructions": instructions}}
        )
        self._send("response.create", body, instructions)
        self._state = ResponseState.REQUESTED

    def cancel_response(self) -> None:
        """Stop the response in flight (a barge-in the bridge decided itself). A no-op when
        none is in flight or a cancel was already sent; ``response.done`` follows."""
        if self._state is not ResponseState.ACTIVE:
            return
        body: _Message = {} if self._response_id is None else {"response_id": self._response_id}
        self._send("response.cancel", body)
        self._state = ResponseState.CANCELLING

    def truncate(self, item_id: str, audio_end_ms: int) -> None:
        """Tell the server the caller heard only ``audio_end_ms`` of assistant item
        ``item_id``, so its context holds nothing unheard. Expect ``ItemTruncated`` or a
        benign error ("already shorter")."""
        self._send(
            "conversation.item.truncate",
            {"item_id": item_id, "content_index": 0, "audio_end_ms": max(0, int(audio_end_ms))},
        )

    def delete_item(self, item_id: str) -> None:
        """Remove an item the caller never heard (the later items of a cut response) from
        the model's conversation. Expect ``conversation.item.deleted``, or a benign error
        when the server has already dropped it."""
        self._send("conversation.item.delete", {"item_id": item_id})

    def send_function_output(self, call_id: str, output: str) -> None:
        """Give a tool's result back for ``call_id``; then :meth:`create_response` so the
        model can speak about it (once every call of the response has its output)."""
        if len(output) > MAX_TOOL_OUTPUT_CHARS:
            raise LocalProtocolError("tool output longer than MAX_TOOL_OUTPUT_CHARS")
        item = {"type": "function_call_output", "call_id": call_id, "output": output}
        self._send("conversation.item.create", {"item": item})

    def add_user_text(self, text: str) -> None:
        """Add a user text message to the conversation (context, or a prompt to answer with
        :meth:`create_response`)."""
        item = {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": text}],
        }
        self._send("conversation.item.create", {"item": item})

    def add_context(self, role: str, text: str) -> None:
        """Add an earlier turn of the call as a text item (``role`` ``"user"`` or
        ``"assistant"``): how a fresh session learns what was said before it. Assistant audio
        items cannot be created, so the agent's words go in as the dialect's text part."""
        part = "input_text" if role == "user" else self.dialect.assistant_text_content
        item = {"type": "message", "role": role, "content": [{"type": part, "text": text}]}
        self._send("conversation.item.create", {"item": item})

    def _send(self, kind: str, body: _Message, instructions: str | None = None) -> None:
        self._last_event_number += 1
        event_id = f"evt_{self._last_event_number}"
        self._outgoing.append(
            json.dumps({"type": kind, "event_id": event_id, **body}, separators=(",", ":"))
        )
        recent = self._recent
        recent[event_id] = (kind, instructions)
        if len(recent) > _RECENT_LIMIT:
            del recent[next(iter(recent))]


def _required_id(message: _Message, key: str) -> str:
    value = clean_id(message.get(key))
    if value is None:
        raise RemoteProtocolError(
            f"{_kind(message)} without a valid {key!r}", CLOSE_INVALID_PAYLOAD
        )
    return value


def _required_text(message: _Message, key: str) -> str:
    value = clean_text(message.get(key))
    if value is None:
        raise RemoteProtocolError(
            f"{_kind(message)} without a string {key!r}", CLOSE_INVALID_PAYLOAD
        )
    return value


def _kind(message: _Message) -> str:
    # Only known types reach a handler, so the type tag is one of ours and safe to log.
    return str(message.get("type"))
