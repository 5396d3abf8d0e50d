"""One connection to the fake realtime server, as a sans-I/O state machine.

:class:`FakeSession` is fed client text with :meth:`~FakeSession.receive_text` and the
passing of time with :meth:`~FakeSession.advance`; it hands back what to write with
:meth:`~FakeSession.data_to_send` (event dicts, or a request to close or drop the socket)
and says when it next needs :meth:`~FakeSession.advance` with
:meth:`~FakeSession.next_deadline`. Everything a test may want to check afterwards lands
in its :class:`FakeSessionRecord`. Conversation items and client events other than audio
and responses live in ``fake_items``.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any

from bridge.devtools.fake_config import Dialect, InvalidRequest, default_config
from bridge.devtools.fake_items import ConversationItem, FakeConversation
from bridge.devtools.fake_records import (
    AbortConnection,
    CloseConnection,
    FakeFaults,
    FakeSessionRecord,
    Outgoing,
)
from bridge.devtools.fake_response import FakeResponse, to_output_format
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.fake_update import apply_update, render_session
from bridge.devtools.fake_vad import EnergyVad, SpeechStart, VadParams

__all__ = ["PING_INTERVAL_S", "FakeSession"]

PING_INTERVAL_S = 2.0
_SESSION_LIFETIME_S = 3600
_MIN_COMMIT_MS = 100
# Inworld documents that error.code may be null; its fake sends null for runtime errors so
# that clients learn to match on the message, as the reference tells them to.
_INWORLD_NULL_CODES = frozenset(
    {
        "conversation_already_has_active_response", "response_cancel_not_active",
        "item_truncate_invalid_item_id", "invalid_value",
    }
)  # fmt: skip
_NOISE = ("ping", "rate_limits.updated", "conversation.vendor_extension")


@dataclass(slots=True)
class _Turn:
    """Transcription events of a committed caller turn that wait for a response's end."""

    events: list[dict[str, Any]] = field(default_factory=list)


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
        model: str | None = None,
    ) -> None:
        self.dialect = dialect
        self.record = record
        self._script = script
        self._faults = faults
        self._vad_params = vad
        self._factor = realtime_factor
        self._t0 = now
        self._epoch = epoch
        self._tag = tag
        self.config = default_config(dialect, vad, model)
        self._vad = EnergyVad(vad, self.config.input_format)
        self._conversation = FakeConversation(dialect, self._new_id)
        self._outbox: list[Outgoing] = []
        self._counters: dict[str, int] = {}
        self._response: FakeResponse | None = None
        self._late: _Turn | None = None
        self._responses_started = 0
        self._replies_used = 0
        self._caller_turns = 0
        self._buffer_bytes = 0
        self._speech_item: str | None = None
        self._closed = False
        self._sent = 0
        self._next_ping = now + PING_INTERVAL_S if dialect is Dialect.INWORLD else None
        self._drop_at = None if faults.close_after_ms is None else now + faults.close_after_ms / 1000
        self._sync_vad()

    # ------------------------------------------------------------ the caller's interface

    @property
    def closed(self) -> bool:
        """True once a close or drop has been queued: stop reading after writing it."""
        return self._closed

    def start(self, *, beta_header: bool = False) -> None:
        """Queue ``session.created``; or, for a GA server asked for beta, the refusal."""
        if beta_header and self.dialect is Dialect.OPENAI:
            self._error(
                "beta_api_shape_disabled",
                "The Realtime Beta API is no longer supported. Please use /v1/realtime for "
                "the GA API.",
            )
            self._close(4000, "beta_api_shape_disabled")
            return
        self._emit({"type": "session.created", "session": self._render_session()})

    def data_to_send(self) -> list[Outgoing]:
        """What to write, in order; the list is handed over and the outbox emptied."""
        out, self._outbox = self._outbox, []
        return out

    def next_deadline(self) -> float | None:
        """The ``now`` at which :meth:`advance` has something to do (``None``: nothing)."""
        if self._closed:
            return None
        times = [self._drop_at, self._next_ping]
        if self._response is not None:
            times.append(self._response.next_due())
        due = [t for t in times if t is not None]
        return min(due) if due else None

    def advance(self, now: float) -> None:
        """Emit what has fallen due by ``now``: audio deltas, pings, the fault's drop."""
        if self._closed:
            return
        if self._drop_at is not None and now >= self._drop_at:
            self._outbox.append(AbortConnection())
            self._closed = True
            return
        if self._next_ping is not None and now >= self._next_ping:
            self._emit({"type": "ping", "timestamp": self._wall_ms(now)})
            self._next_ping = max(self._next_ping + PING_INTERVAL_S, now)
        self._pump(now)

    def receive_bytes(self, data: bytes, now: float) -> None:
        """A binary frame: realtime APIs speak JSON text only, so it earns an error."""
        self.advance(now)
        if not self._closed:
            self._error("invalid_value", "Binary frames are not supported; send JSON text.")

    def receive_text(self, text: str, now: float) -> None:
        """Handle one client event; then read :meth:`data_to_send`."""
        self.advance(now)
        if self._closed:
            return
        try:
            event = json.loads(text)
        except ValueError:
            self._error("invalid_json", "The message is not valid JSON: we could not parse it.")
            return
        if not isinstance(event, dict):
            self._error("invalid_json", "A client event must be a JSON object.")
            return
        kind = event.get("type")
        if kind == "input_audio_buffer.append":
            self._append(event)  # the hot path: not recorded, not logged
            return
        self.record.client_events.append(event)
        client_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        try:
            self._dispatch(kind, event, now)
        except InvalidRequest as exc:
            self._error(exc.code, exc.message, exc.param, client_id)

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
            self._emit({"type": "input_audio_buffer.cleared"})
        elif kind == "response.create":
            self._response_create(event, now)
        elif kind == "response.cancel":
            self._response_cancel(event)
        elif kind == "conversation.item.truncate":
            self._truncate(event, now)
        elif kind in ("conversation.item.create", "conversation.item.delete",
                      "conversation.item.retrieve"):  # fmt: skip
            for out in self._conversation.handle(kind, event):
                self._emit(out)
        elif kind is None:
            raise InvalidRequest(
                "missing_required_parameter", "Missing required parameter: 'type'.", "type"
            )
        else:
            raise InvalidRequest(
                "invalid_value", f"Invalid value: '{kind}'. This event type is not supported.",
                "type",
            )  # fmt: skip

    def _session_update(self, event: dict[str, Any]) -> None:
        if self._faults.refuse_session:
            self._error("insufficient_quota", "You exceeded your current quota, please check "
                        "your plan and billing details.")  # fmt: skip
            self._close(1008, "session refused")
            return
        if "session" not in event:
            raise InvalidRequest(
                "missing_required_parameter", "Missing required parameter: 'session'.", "session"
            )
        self.config = apply_update(
            self.dialect, self.config, event["session"], self._vad_params,
            audio_produced=self._responses_started > 0,
        )  # fmt: skip
        self._sync_vad()
        self._emit({"type": "session.updated", "session": self._render_session()})

    # ------------------------------------------------------------ input audio and turns

    def _append(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            self._error("invalid_type", "Invalid type for 'audio': expected a base64 string.",
                        "audio")  # fmt: skip
            return
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            self._error("invalid_value", "Invalid 'audio': not valid base64.", "audio")
            return
        self.record.append_sizes.append(len(data))
        self.record.appended_bytes += len(data)
        self._buffer_bytes += len(data)
        for edge in self._vad.feed(data):
            if self.config.turn_detection is None:
                continue  # manual mode: the timeline still advances, nothing fires
            if isinstance(edge, SpeechStart):
                self._speech_started(edge.audio_start_ms)
            else:
                self._speech_stopped(edge.audio_end_ms)

    def _speech_started(self, audio_start_ms: int) -> None:
        item_id = self._new_id("item")
        self._speech_item = item_id
        event: dict[str, Any] = {"type": "input_audio_buffer.speech_started"}
        if self.dialect is not Dialect.INWORLD:
            event["audio_start_ms"] = audio_start_ms
        event["item_id"] = item_id
        self._emit(event)
        td = self.config.turn_detection
        interrupt = td is not None and td.interrupt_response and not self._faults.no_server_cancel
        if self._response is not None and interrupt:
            self._finish_response("cancelled", "turn_detected")

    def _speech_stopped(self, audio_end_ms: int) -> None:
        item_id = self._speech_item or self._new_id("item")
        event: dict[str, Any] = {"type": "input_audio_buffer.speech_stopped"}
        if self.dialect is not Dialect.INWORLD:
            event["audio_end_ms"] = audio_end_ms
        event["item_id"] = item_id
        self._emit(event)
        transcripts = self._commit(item_id)
        td = self.config.turn_detection
        if td is None or not td.create_response:
            self._emit_all(transcripts)
        elif self._response is not None:
            self._emit_all(transcripts)
            self._already_active(None)
        elif self._faults.late_transcripts:
            self._late = _Turn(transcripts)
            self._start_response(greeting=False)
        else:
            self._emit_all(transcripts)
            self._start_response(greeting=False)

    def _manual_commit(self) -> None:
        buffered_ms = self.config.input_format.duration_ms(self._buffer_bytes)
        if buffered_ms < _MIN_COMMIT_MS:
            raise InvalidRequest(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {buffered_ms:.2f}ms of audio.",
            )
        item_id = self._speech_item or self._new_id("item")
        self._vad.reset()
        self._emit_all(self._commit(item_id))

    def _commit(self, item_id: str) -> list[dict[str, Any]]:
        """Commit the buffer as user item ``item_id``; returns its transcription events."""
        seconds = round(self.config.input_format.duration_ms(self._buffer_bytes) / 1000, 3)
        self._buffer_bytes = 0
        self._speech_item = None
        previous = self._conversation.last_id()
        self._emit({"type": "input_audio_buffer.committed", "previous_item_id": previous,
                    "item_id": item_id})  # fmt: skip
        content: dict[str, Any] = {"type": "input_audio", "transcript": None}
        user = ConversationItem(item_id, "message", "user", "completed", [content])
        self._emit_all(self._conversation.insert(user, previous))
        self._caller_turns += 1
        if self.config.transcription is None:
            return []
        text = self._script.caller_transcript(self._caller_turns)
        content["transcript"] = text
        ids = {"item_id": item_id, "content_index": 0}
        events: list[dict[str, Any]] = []
        if not str(self.config.transcription["model"]).startswith("whisper"):
            kind = "conversation.item.input_audio_transcription.delta"
            events.append({"type": kind, **ids, "delta": text})
        done: dict[str, Any] = {
            "type": "conversation.item.input_audio_transcription.completed", **ids,
            "transcript": text,
        }  # fmt: skip
        if self.dialect is Dialect.OPENAI:
            tokens = max(1, len(text) // 4)
            done["usage"] = {"type": "tokens", "total_tokens": 16 + tokens, "input_tokens": 16,
                             "input_token_details": {"text_tokens": 0, "audio_tokens": 16},
                             "output_tokens": tokens}  # fmt: skip
        elif self.dialect is Dialect.OPENAI_BETA:
            done["usage"] = {"type": "duration", "seconds": seconds}
        events.append(done)
        return events

    # ------------------------------------------------------------ responses

    def _response_create(self, event: dict[str, Any], now: float) -> None:
        options = event.get("response") or {}
        if not isinstance(options, dict):
            raise InvalidRequest("invalid_type", "Invalid type for 'response': expected an "
                                 "object.", "response")  # fmt: skip
        if self._response is not None:
            self._already_active(event.get("event_id"))
            return
        instructions = options.get("instructions")
        self._start_response(greeting=isinstance(instructions, str) and bool(instructions))
        self._pump(now)

    def _already_active(self, client_id: Any) -> None:
        active = self._response.response_id if self._response is not None else "?"
        self._error(
            "conversation_already_has_active_response",
            f"Conversation already has an active response in progress: {active}. Wait until "
            "the response is finished before creating a new one.",
            None, client_id if isinstance(client_id, str) else None,
        )  # fmt: skip

    def _start_response(self, *, greeting: bool) -> None:
        reply: Reply
        if greeting and self._responses_started == 0 and self._script.greeting is not None:
            reply = self._script.greeting
        else:
            reply = self._script.reply(self._replies_used)
            self._replies_used += 1
        self._responses_started += 1
        response = FakeResponse(
            dialect=self.dialect, config=self.config, response_id=self._new_id("resp"),
            item_id=self._new_id("item"), conversation_id=f"conv_{self._tag}",
            text=reply.text, audio=to_output_format(reply.render(), self.config.output_format),
            now=self._last_now, realtime_factor=self._factor,
        )  # fmt: skip
        previous = self._conversation.last_id()
        item = ConversationItem(response.item_id, "message", "assistant", "in_progress", [])
        item.output_format = self.config.output_format
        item.full_text = reply.text
        self._conversation.add(item)
        self._response = response
        self.record.audio_chunks.setdefault(response.item_id, [])
        self._emit_all(response.start_events(previous))

    def _pump(self, now: float) -> None:
        self._last_now = now
        response = self._response
        if response is None:
            return
        item = self._conversation.get(response.item_id)
        for event, chunk in response.step(now):
            self._emit(event)
            if chunk:
                self.record.audio_chunks[response.item_id].append(chunk)
                if item is not None:
                    item.audio_bytes += len(chunk)
        if response.finished:
            self._finish_response("completed", None)

    def _finish_response(self, status: str, reason: str | None) -> None:
        response = self._response
        assert response is not None
        self._response = None
        events = response.end_events(status, reason)
        item = self._conversation.get(response.item_id)
        if item is not None:
            item.status = "completed" if status == "completed" else "incomplete"
            item.content = list(events[-1]["response"]["output"][0]["content"])
        self._emit_all(events)
        self.record.responses.append((response.response_id, status, reason))
        if self.dialect is not Dialect.INWORLD:
            self._emit(self._rate_limits())
        if self._late is not None:
            late, self._late = self._late, None
            self._emit_all(late.events)

    def _response_cancel(self, event: dict[str, Any]) -> None:
        wanted = event.get("response_id")
        active = self._response
        if active is None or (wanted is not None and wanted != active.response_id):
            raise InvalidRequest(
                "response_cancel_not_active", "Cancellation failed: no active response found."
            )
        self._finish_response("cancelled", "client_cancelled")

    def _truncate(self, event: dict[str, Any], now: float) -> None:
        item_id = event.get("item_id")
        raw_end = event.get("audio_end_ms")
        end_ms = raw_end if isinstance(raw_end, int) and not isinstance(raw_end, bool) else -1
        try:
            truncated = self._conversation.truncate(event)
        except InvalidRequest as exc:
            self.record.truncates.append(
                self._truncate_record(item_id, end_ms, False, exc.message, now)
            )
            raise
        self.record.truncates.append(self._truncate_record(item_id, end_ms, True, None, now))
        self._emit(truncated)

    # ------------------------------------------------------------ output helpers

    def _emit(self, event: dict[str, Any]) -> None:
        if self._faults.noise and self._sent and self._sent % 3 == 0:
            self._outbox.append(self._stamp(self._noise_event()))
        self._sent += 1
        self._outbox.append(self._stamp(event))

    def _emit_all(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self._emit(event)

    def _stamp(self, event: dict[str, Any]) -> dict[str, Any]:
        return {"type": event["type"], "event_id": self._new_id("event"), **event}

    def _error(
        self,
        code: str | None,
        message: str,
        param: str | None = None,
        client_id: str | None = None,
    ) -> None:
        if self.dialect is Dialect.INWORLD and code in _INWORLD_NULL_CODES:
            code = None
        error = {"type": "invalid_request_error", "code": code, "message": message,
                 "param": param, "event_id": client_id}  # fmt: skip
        self.record.errors_sent.append(error)
        self._emit({"type": "error", "error": error})

    def _close(self, code: int, reason: str) -> None:
        self._outbox.append(CloseConnection(code, reason))
        self._closed = True

    def _noise_event(self) -> dict[str, Any]:
        kind = _NOISE[(self._sent // 3) % len(_NOISE)]
        if kind == "ping":
            return {"type": "ping", "timestamp": self._wall_ms(self._last_now)}
        if kind == "rate_limits.updated":
            return self._rate_limits()
        return {"type": kind, "note": "an event type this client has never seen"}

    def _rate_limits(self) -> dict[str, Any]:
        return {"type": "rate_limits.updated", "rate_limits": [
            {"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60.0},
            {"name": "tokens", "limit": 50000, "remaining": 49747, "reset_seconds": 60.0},
        ]}  # fmt: skip

    def _render_session(self) -> dict[str, Any]:
        expires = int(self._epoch) + _SESSION_LIFETIME_S
        return render_session(self.dialect, self.config, f"sess_{self._tag}", expires)

    def _sync_vad(self) -> None:
        td = self.config.turn_detection
        server = td is not None and td.type == "server_vad"
        self._vad.silence_ms = td.silence_duration_ms if td and server else self._vad_params.silence_ms
        self._vad.prefix_padding_ms = (
            td.prefix_padding_ms if td and server else self._vad_params.prefix_padding_ms
        )
        self._vad.set_format(self.config.input_format)

    def _new_id(self, prefix: str) -> str:
        n = self._counters.get(prefix, 0) + 1
        self._counters[prefix] = n
        return f"{prefix}_{self._tag}{n:04d}"

    def _wall_ms(self, now: float) -> int:
        return int((self._epoch + (now - self._t0)) * 1000)

    @staticmethod
    def _truncate_record(
        item_id: Any, end_ms: int, accepted: bool, error: str | None, now: float
    ) -> Any:
        from bridge.devtools.fake_records import TruncateRecord

        return TruncateRecord(str(item_id), end_ms, accepted, error, now)
