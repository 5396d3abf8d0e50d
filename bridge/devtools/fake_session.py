"""One connection to the fake realtime server, as a sans-I/O state machine.

:class:`FakeSession` is fed client text with :meth:`~FakeSession.receive_text` and the
passing of time with :meth:`~FakeSession.advance`; it hands back what to write with
:meth:`~FakeSession.data_to_send` (event dicts, or a request to close or drop the socket)
and says when it next needs :meth:`~FakeSession.advance` with
:meth:`~FakeSession.next_deadline`. Everything a test may want to check afterwards lands
in its :class:`FakeSessionRecord`.

Tool calls: a scripted reply's calls end its response; the session then waits, as a real
server does, for the client's ``function_call_output`` items (each must name a call in the
conversation) and its ``response.create``, which the script's next reply answers.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import string
from typing import Any

from bridge.devtools.fake_config import (
    Dialect,
    InvalidRequest,
    default_config,
    missing,
    previous_item_id,
)
from bridge.devtools.fake_items import ConversationItem, FakeConversation, transcription_events
from bridge.devtools.fake_outbox import EventOutbox, rate_limits_event
from bridge.devtools.fake_records import (
    FakeFaults,
    FakeSessionRecord,
    Outgoing,
    ToolCallRecord,
    ToolFollowUp,
    ToolOutputRecord,
    TruncateRecord,
)
from bridge.devtools.fake_response import (
    DEFAULT_DELTA_MS,
    FakeResponse,
    PlannedCall,
    to_output_format,
)
from bridge.devtools.fake_script import FakeScript, ToolCall
from bridge.devtools.fake_update import apply_update, render_session
from bridge.devtools.fake_vad import EnergyVad, SpeechStart, VadParams

__all__ = ["CONVERSATION_DELAY_S", "PING_INTERVAL_S", "FakeSession"]

PING_INTERVAL_S = 2.0
# xAI's conversation.created follows session.created after this gap, so that a client that
# configures at session.created is caught sending its update too early.
CONVERSATION_DELAY_S = 0.05
_PINGING = frozenset({Dialect.INWORLD, Dialect.XAI})
_RATE_LIMITED = frozenset({Dialect.OPENAI, Dialect.OPENAI_BETA})
_SESSION_LIFETIME_S = 3600
_MIN_COMMIT_MS = 100
_CONVERSATION_EVENTS = frozenset(
    {"conversation.item.create", "conversation.item.delete", "conversation.item.retrieve"}
)
_CALL_ID_ALPHABET = string.ascii_letters + string.digits
_CALL_ID_LENGTH = 16  # OpenAI's look like call_Xz0z4X8aSYDdkTf2
_TRANSCRIPT_DONE = "conversation.item.input_audio_transcription.completed"


class FakeSession:
    """The server side of one realtime session: call :meth:`start` first."""

    def __init__(
        self,
        dialect: Dialect,
        record: FakeSessionRecord,
        *,
        script: FakeScript,
        faults: FakeFaults,
        vad: VadParams,
        realtime_factor: float,
        now: float,
        epoch: float,
        tag: str,
        delta_ms: tuple[int, ...] = DEFAULT_DELTA_MS,
        model: str | None = None,
        session_limit_s: float | None = None,
        resume: tuple[int, int] = (0, 0),
    ) -> None:
        self.dialect = dialect
        self.record = record
        self.config = default_config(dialect, vad, model)
        self._script = script
        self._faults = faults
        self._vad_params = vad
        self._factor = realtime_factor
        self._delta_ms = delta_ms
        self._epoch = epoch
        self._tag = tag
        self._out = EventOutbox(dialect, record, tag=tag, noise=faults.noise, now=now, epoch=epoch)
        self._conversation = FakeConversation(dialect, self._out.new_id)
        self._vad = EnergyVad(vad, self.config.input_format)
        self._response: FakeResponse | None = None
        self._late_transcripts: list[dict[str, Any]] = []
        self._responses_started = 0
        # ``resume``: (replies used, caller turns) of the conversation so far, for a session
        # that carries on one a client began in another.
        self._replies_used = resume[0]
        self._outputs_since_response: list[str] = []  # call ids, for ToolFollowUp
        self._caller_turns = resume[1]
        self._buffer_bytes = 0
        self._speech_item: str | None = None
        self._next_ping = now + PING_INTERVAL_S if dialect in _PINGING else None
        # xAI takes session.update only once it has announced the conversation.
        self._conversation_due: float | None = None
        self._ready = dialect is not Dialect.XAI
        self._drop_at = None
        if faults.close_after_ms is not None:
            self._drop_at = now + faults.close_after_ms / 1000
        # A provider's maximum session length (60 min at OpenAI), shortened for tests.
        self._lifetime_s = session_limit_s or _SESSION_LIFETIME_S
        self._expire_at = now + session_limit_s if session_limit_s else None
        #: ``"1011"`` or ``"reset"``: :meth:`drop` the session that way right after its first
        #: caller transcript, before it answers: the worst moment for a client to lose it.
        self.drop_after_transcript: str | None = None
        self._sync_vad()

    # ------------------------------------------------------------ the caller's interface

    @property
    def closed(self) -> bool:
        """True once a close or drop has been queued: nothing more will be produced."""
        return self._out.closed

    def start(self, *, beta_header: bool = False) -> None:
        """Queue ``session.created``; or, for a GA server asked for beta, the refusal."""
        if beta_header and self.dialect is Dialect.OPENAI:
            self._out.error(
                "beta_api_shape_disabled",
                "The Realtime Beta API is no longer supported. Please use /v1/realtime for "
                "the GA API.",
            )
            self._out.close(4000, "beta_api_shape_disabled")
            return
        self._emit_milestone({"type": "session.created", "session": self._render_session()})
        if not self._ready:
            self._conversation_due = self._out.now + CONVERSATION_DELAY_S

    def _conversation_created(self) -> None:
        self._conversation_due = None
        self._ready = True
        conversation = {"id": f"conv_{self._tag}", "object": "realtime.conversation"}
        self._emit_milestone({"type": "conversation.created", "conversation": conversation})

    def _emit_milestone(self, event: dict[str, Any]) -> None:
        self.record.timeline.append(event["type"])
        self._out.emit(event)

    @property
    def progress(self) -> tuple[int, int]:
        """(replies used, caller turns): where this session is in the script."""
        return self._replies_used, self._caller_turns

    def drop(self, how: str) -> None:
        """End the session now as a failing provider does: ``"1011"`` closes the socket with
        1011 (internal error), ``"reset"`` drops the TCP connection without a close frame."""
        if self._out.closed:
            return
        if how == "reset":
            self._out.abort()
        else:
            self._out.close(1011, "internal error")

    def _expire(self) -> None:
        # What OpenAI sends at its session limit: the error, then a 1001 close.
        minutes = round(self._lifetime_s / 60)
        self._out.error(
            "session_expired", f"Your session hit the maximum duration of {minutes} minutes."
        )
        self._out.close(1001, "session_expired")

    def data_to_send(self) -> list[Outgoing]:
        """What to write, in order: event dicts, then possibly a close or drop request."""
        return self._out.take()

    def has_data_to_send(self) -> bool:
        """Whether :meth:`data_to_send` would hand anything over now."""
        return self._out.pending

    def next_deadline(self) -> float | None:
        """The ``now`` at which :meth:`advance` has something to do (``None``: nothing)."""
        if self._out.closed:
            return None
        times = [self._drop_at, self._next_ping, self._expire_at, self._conversation_due]
        if self._response is not None:
            times.append(self._response.next_due())
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def advance(self, now: float) -> None:
        """Emit what has fallen due by ``now``: audio deltas, pings, the fault's drop."""
        self._out.now = now
        if self._out.closed:
            return
        if self._drop_at is not None and now >= self._drop_at:
            self._out.abort()
            return
        if self._expire_at is not None and now >= self._expire_at:
            self._expire()
            return
        if self._conversation_due is not None and now >= self._conversation_due:
            self._conversation_created()
        if self._next_ping is not None and now >= self._next_ping:
            self._out.emit({"type": "ping", "timestamp": self._out.wall_ms(now)})
            self._next_ping = max(self._next_ping + PING_INTERVAL_S, now)
        self._pump(now)

    def receive_bytes(self, data: bytes, now: float) -> None:
        """A binary frame: realtime APIs speak JSON text only, so it earns an error."""
        self.advance(now)
        if not self._out.closed:
            self._out.error("invalid_value", "Binary frames are not supported; send JSON text.")

    def receive_text(self, text: str, now: float) -> None:
        """Handle one client event; then read :meth:`data_to_send`."""
        self.advance(now)
        if self._out.closed:
            return
        try:
            event = json.loads(text)
        except ValueError:
            self._out.error("invalid_json", "The message is not valid JSON: we could not parse it.")
            return
        if not isinstance(event, dict):
            self._out.error("invalid_json", "A client event must be a JSON object.")
            return
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            self._append(event)  # the hot path: counted, not recorded
            return
        self.record.client_events.append(event)
        client_id = event.get("event_id")
        try:
            self._dispatch(kind, event, now)
        except InvalidRequest as exc:
            client_id = client_id if isinstance(client_id, str) else None
            self._out.error(exc.code, exc.message, exc.param, client_id)

    # ------------------------------------------------------------ dispatch

    def _dispatch(self, kind: Any, event: dict[str, Any], now: float) -> None:
        if kind == "session.update":
            self._session_update(event)
        elif kind == "input_audio_buffer.commit":
            self._manual_commit()
        elif kind == "input_audio_buffer.clear":
            self._buffer_bytes = 0
            self._speech_item = None
            self._vad.reset()
            self._out.emit({"type": "input_audio_buffer.cleared"})
        elif kind == "response.create":
            self._response_create(event, now)
        elif kind == "response.cancel":
            self._response_cancel(event)
        elif kind == "conversation.item.truncate":
            self._truncate(event, now)
        elif kind in _CONVERSATION_EVENTS:
            self._conversation_event(kind, event, now)
        elif kind is None:
            raise missing("type")
        else:
            raise InvalidRequest(
                "invalid_value",
                f"Invalid value: '{kind}'. This event type is not supported.",
                "type",
            )

    def _session_update(self, event: dict[str, Any]) -> None:
        if not self._ready:
            self.record.timeline.append("session.update refused")
            raise InvalidRequest(
                None,
                "The conversation is not ready: send session.update after conversation.created.",
            )
        self.record.timeline.append("session.update")
        if self._faults.refuse_session:
            self._out.error(
                "insufficient_quota",
                "You exceeded your current quota, please check your plan and billing details.",
            )
            self._out.close(1008, "session refused")
            return
        if "session" not in event:
            raise missing("session")
        self.config = apply_update(
            self.dialect,
            self.config,
            event["session"],
            self._vad_params,
            audio_produced=self._responses_started > 0,
        )
        self._sync_vad()
        self.record.tools = [dict(tool) for tool in self.config.tools]
        self.record.tool_choice = self.config.tool_choice
        self._emit_milestone({"type": "session.updated", "session": self._render_session()})

    def _conversation_event(self, kind: str, event: dict[str, Any], now: float) -> None:
        events = self._conversation.handle(kind, event)
        item = events[0]["item"] if kind == "conversation.item.create" else None
        if item is not None and item["type"] == "function_call_output":
            call_id = str(item["call_id"])
            call = self._conversation.find_call(call_id)
            name = str(call.extra.get("name", "")) if call is not None else ""
            self.record.tool_outputs.append(
                ToolOutputRecord(call_id, name, str(item["output"]), now)
            )
            self._outputs_since_response.append(call_id)
        self._out.emit_all(events)

    # ------------------------------------------------------------ input audio and turns

    def _append(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            self._out.error("invalid_type", "Invalid type for 'audio': expected a string.", "audio")
            return
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            self._out.error("invalid_value", "Invalid 'audio': not valid base64.", "audio")
            return
        self.record.append_sizes.append(len(data))
        self.record.appended_bytes += len(data)
        self._buffer_bytes += len(data)
        for edge in self._vad.feed(data):
            if self.config.turn_detection is None:
                continue  # manual mode: the input timeline advances, nothing fires
            if isinstance(edge, SpeechStart):
                self._speech_started(edge.audio_start_ms)
            else:
                self._speech_stopped(edge.audio_end_ms)

    def _speech_started(self, audio_start_ms: int) -> None:
        self._speech_item = self._out.new_id("item")
        self._speech_event("started", "audio_start_ms", audio_start_ms, self._speech_item)
        td = self.config.turn_detection
        interrupt = td is not None and td.interrupt_response and not self._faults.no_server_cancel
        if self._response is not None and interrupt:
            self._finish_response("cancelled", "turn_detected")

    def _speech_stopped(self, audio_end_ms: int) -> None:
        item_id = self._speech_item or self._out.new_id("item")
        self._speech_event("stopped", "audio_end_ms", audio_end_ms, item_id)
        transcripts = self._commit(item_id)
        td = self.config.turn_detection
        if td is None or not td.create_response:
            self._emit_transcripts(transcripts)
        elif self._response is not None:
            # interrupt_response off and the model still talking: the automatic create fails
            self._emit_transcripts(transcripts)
            if not self.closed:
                self._already_active(None)
        elif self._faults.late_transcripts:
            self._late_transcripts = transcripts
            self._start_response(greeting=False)
        else:
            self._emit_transcripts(transcripts)
            if not self.closed:
                self._start_response(greeting=False)

    def _emit_transcripts(self, events: list[dict[str, Any]]) -> None:
        """Queue a turn's transcription events; an armed :attr:`drop_after_transcript`
        fires here, so check :attr:`closed` before answering the turn."""
        self._out.emit_all(events)
        how = self.drop_after_transcript
        if how is not None and any(event["type"] == _TRANSCRIPT_DONE for event in events):
            self.drop_after_transcript = None
            self.drop(how)

    def _speech_event(self, edge: str, key: str, ms: int, item_id: str) -> None:
        event: dict[str, Any] = {"type": f"input_audio_buffer.speech_{edge}"}
        if self.dialect is not Dialect.INWORLD:  # Inworld's speech events carry no times
            event[key] = ms
        event["item_id"] = item_id
        self._out.emit(event)

    def _manual_commit(self) -> None:
        buffered_ms = self.config.input_format.duration_ms(self._buffer_bytes)
        if buffered_ms < _MIN_COMMIT_MS:
            raise InvalidRequest(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {buffered_ms:.2f}ms of audio.",
            )
        item_id = self._speech_item or self._out.new_id("item")
        self._vad.reset()
        self._emit_transcripts(self._commit(item_id))

    def _commit(self, item_id: str) -> list[dict[str, Any]]:
        """Commit the buffer as user item ``item_id``; returns its transcription events."""
        seconds = round(self.config.input_format.duration_ms(self._buffer_bytes) / 1000, 3)
        self._buffer_bytes = 0
        self._speech_item = None
        previous = previous_item_id(self.dialect, self._conversation.last_id())
        self._out.emit(
            {
                "type": "input_audio_buffer.committed",
                "previous_item_id": previous,
                "item_id": item_id,
            }
        )
        content: dict[str, Any] = {"type": "input_audio", "transcript": None}
        user = ConversationItem(item_id, "message", "user", "completed", [content])
        self._out.emit_all(self._conversation.insert(user, previous))
        self._caller_turns += 1
        if self.config.transcription is None:
            return []  # transcription is off unless the session configured it
        text = self._script.caller_transcript(self._caller_turns)
        content["transcript"] = text
        model = str(self.config.transcription["model"])
        return transcription_events(self.dialect, item_id, text, model, seconds)

    # ------------------------------------------------------------ responses

    def _response_create(self, event: dict[str, Any], now: float) -> None:
        options = event.get("response") or {}
        if not isinstance(options, dict):
            raise InvalidRequest(
                "invalid_type", "Invalid type for 'response': expected an object.", "response"
            )
        if self._response is not None:
            self._already_active(event.get("event_id"))
            return
        instructions = options.get("instructions")
        answered = tuple(self._outputs_since_response)
        response_id = self._start_response(
            greeting=isinstance(instructions, str) and bool(instructions)
        )
        if answered:
            self.record.responses_after_tools.append(ToolFollowUp(response_id, answered, now))
        self._pump(now)

    def _already_active(self, client_id: Any) -> None:
        active = self._response.response_id if self._response is not None else "?"
        self._out.error(
            "conversation_already_has_active_response",
            f"Conversation already has an active response in progress: {active}. Wait until "
            "the response is finished before creating a new one.",
            None,
            client_id if isinstance(client_id, str) else None,
        )

    def _start_response(self, *, greeting: bool) -> str:
        """Start the next scripted reply; returns its response id."""
        script = self._script
        if greeting and self._responses_started == 0 and script.greeting is not None:
            reply = script.greeting
        else:
            reply = script.reply(self._replies_used)
            self._replies_used += 1
        self._responses_started += 1
        self._outputs_since_response = []
        fmt = self.config.output_format
        response_id = self._out.new_id("resp")
        item_id = self._out.new_id("item") if reply.speaks else None
        response = FakeResponse(
            dialect=self.dialect,
            config=self.config,
            response_id=response_id,
            item_id=item_id,
            conversation_id=f"conv_{self._tag}",
            text=reply.text if reply.speaks else "",
            audio=to_output_format(reply.render(), fmt) if reply.speaks else b"",
            now=self._out.now,
            realtime_factor=self._factor,
            calls=[self._plan_call(call) for call in reply.tool_calls],
            delta_ms=self._delta_ms,
        )
        previous = self._conversation.last_id()
        if item_id is not None:
            item = ConversationItem(item_id, "message", "assistant", "in_progress")
            item.output_format = fmt
            self._conversation.add(item)
            self.record.audio_chunks[item_id] = []
        self._response = response
        self._out.emit_all(response.start_events(previous))
        if response.finished:
            self._pump(self._out.now)  # nothing to pace (only tool calls): end it now
        return response_id

    def _plan_call(self, call: ToolCall) -> PlannedCall:
        call_id = "call_" + "".join(
            secrets.choice(_CALL_ID_ALPHABET) for _ in range(_CALL_ID_LENGTH)
        )
        return PlannedCall(self._out.new_id("item"), call_id, call.name, call.arguments_json)

    def _pump(self, now: float) -> None:
        response = self._response
        if response is None:
            return
        item_id = response.item_id
        item = self._conversation.get(item_id) if item_id is not None else None
        chunks = self.record.audio_chunks.get(item_id, []) if item_id is not None else []
        for event, chunk in response.step(now):
            self._out.emit(event)
            if chunk:
                chunks.append(chunk)
                if item is not None:
                    item.audio_bytes += len(chunk)
        if response.finished:
            self._finish_response("completed", None)

    def _finish_response(self, status: str, reason: str | None) -> None:
        response = self._response
        assert response is not None
        self._response = None
        events = response.end_events(status, reason)
        for rendered in events[-1]["response"]["output"]:
            self._settle_item(response.response_id, rendered)
        self._out.emit_all(events)
        self.record.responses.append((response.response_id, status, reason))
        if self.dialect in _RATE_LIMITED:
            self._out.emit(rate_limits_event())
        late, self._late_transcripts = self._late_transcripts, []
        self._out.emit_all(late)

    def _settle_item(self, response_id: str, rendered: dict[str, Any]) -> None:
        """Bring one output item of a finished response into the conversation."""
        if rendered["type"] == "message":
            item = self._conversation.get(rendered["id"])
            if item is not None:
                item.status = rendered["status"]
                item.content = [dict(part) for part in rendered["content"]]
            return
        keys = ("name", "call_id", "arguments")
        call = ConversationItem(
            rendered["id"], "function_call", None, "completed", extra={k: rendered[k] for k in keys}
        )
        self._conversation.add(call)
        declared = any(tool.get("name") == rendered["name"] for tool in self.config.tools)
        self.record.tool_calls.append(
            ToolCallRecord(
                response_id,
                rendered["id"],
                rendered["call_id"],
                rendered["name"],
                rendered["arguments"],
                declared,
                self._out.now,
            )
        )

    def _response_cancel(self, event: dict[str, Any]) -> None:
        wanted = event.get("response_id")
        active = self._response
        if active is None or (wanted is not None and wanted != active.response_id):
            raise InvalidRequest(
                "response_cancel_not_active", "Cancellation failed: no active response found."
            )
        self._finish_response("cancelled", "client_cancelled")

    def _truncate(self, event: dict[str, Any], now: float) -> None:
        item_id = str(event.get("item_id"))
        end = event.get("audio_end_ms")
        end_ms = end if isinstance(end, int) and not isinstance(end, bool) else -1
        try:
            truncated = self._conversation.truncate(event)
        except InvalidRequest as exc:
            self.record.truncates.append(TruncateRecord(item_id, end_ms, False, exc.message, now))
            raise
        self.record.truncates.append(TruncateRecord(item_id, end_ms, True, None, now))
        self._out.emit(truncated)

    # ------------------------------------------------------------ helpers

    def _render_session(self) -> dict[str, Any]:
        expires = int(self._epoch + self._lifetime_s)
        return render_session(self.dialect, self.config, f"sess_{self._tag}", expires)

    def _sync_vad(self) -> None:
        td = self.config.turn_detection
        fmt = self.config.input_format
        if td is not None and td.type == "server_vad":
            self._vad.configure(td.silence_duration_ms, td.prefix_padding_ms, fmt)
        else:  # semantic VAD has no tuning: the server's own parameters apply
            self._vad.configure(
                self._vad_params.silence_ms, self._vad_params.prefix_padding_ms, fmt
            )
