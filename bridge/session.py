"""``CallSession``: one phone call, from the media socket's first frame to the last write.

It is the thin asyncio shell around the pure call logic: it reads both sockets, feeds the
frames in with the time they arrived, writes out what the protocol objects queue, and hands
finished turns to the store. One ``TaskGroup`` holds a reader and a writer per leg; when
either leg ends, the group ends the other, and nothing outlives the call.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from bridge.adapters.realtime_socket import RealtimeSocket
from bridge.adapters.realtime_target import RealtimeTarget
from bridge.adapters.recording_writer import RecordingWriter
from bridge.adapters.stream_admission import Admission, StreamAdmission
from bridge.call.call_logic import CallConfig, CallLogic, Notice, TurnReady
from bridge.call.recording import CallRecorder
from bridge.call.records import CallStatus, EndReason
from bridge.errors import (
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    ProviderError,
    RemoteProtocolError,
)
from bridge.metrics import BridgeMetrics
from bridge.protocols.dialects import SessionConfig
from bridge.protocols.realtime import RealtimeConnection
from bridge.protocols.twilio import (
    MarkPlayed,
    MediaReceived,
    StreamStarted,
    StreamStopped,
    TwilioMediaStream,
    UnknownEvent,
)
from bridge.storage.base import CallStore, NewCall
from bridge.storage.record_writer import CallRecordWriter
from bridge.storage.recordings import RecordingFiles

log = structlog.get_logger("bridge.session")

START_TIMEOUT_S = 10.0  # Twilio sends `start` right after `connected`
TRANSCRIPT_GRACE_S = 1.5  # after hang-up, how long the last caller words may take to arrive
# How long a finished call waits for its record to be written (the store may be failing over).
RECORD_CLOSE_TIMEOUT_S = 15.0
APOLOGY_MARK = "apology"
CLOSE_SERVICE_RESTART = 1012


class _CallOver(Exception):
    """Raised inside the task group by whichever task saw the call end."""


@dataclass
class SessionDeps:
    """What every call shares, built once by the app."""

    store: CallStore
    target: RealtimeTarget
    session_config: SessionConfig
    greeting: str | None
    token_secret: bytes
    apology: bytes
    metrics: BridgeMetrics
    # Calls with a live session on this instance: a status callback leaves them to it.
    live_calls: set[str] = field(default_factory=set)
    idle_timeout_s: float = 15.0
    clock: Callable[[], float] = field(default=time.time)
    recordings: RecordingFiles | None = None  # None: calls are not recorded
    admission: StreamAdmission = field(init=False)

    def __post_init__(self) -> None:
        self.admission = StreamAdmission(self.store, self.token_secret, self.clock)


class CallSession:
    """Serves one accepted Twilio media socket. Call ``run()`` once."""

    def __init__(self, ws: WebSocket, deps: SessionDeps) -> None:
        self.ws = ws
        self.deps = deps
        self.twilio = TwilioMediaStream()
        self.log = log
        self._loop = asyncio.get_running_loop()
        self._twilio_ready = asyncio.Event()
        self._model_ready = asyncio.Event()
        self._record: CallRecordWriter | None = None
        self._bad_input: RemoteProtocolError | None = None
        self._close_code = CLOSE_NORMAL
        self._twilio_gone = False
        self._shutdown = False
        self._last_frame_at = self._loop.time()
        self._recording: RecordingWriter | None = None
        self._recorder: CallRecorder | None = None

    # -- entry ------------------------------------------------------------------------------

    async def run(self) -> None:
        started = await self._await_start()
        if started is None:
            return
        self.log = log.bind(call_sid=started.call_sid, stream_sid=started.stream_sid)
        call_sid = started.call_sid
        token = started.custom_parameters.get("token", "")
        if (refusal := self.deps.admission.check(call_sid, token)) is not None:
            await self._refuse(refusal)
            return
        # Live from here: a status callback arriving meanwhile leaves the call to this session.
        self.deps.live_calls.add(call_sid)
        try:
            await self._claim_and_serve(started)
        finally:
            self.deps.live_calls.discard(call_sid)

    async def _refuse(self, refusal: Admission) -> None:
        reason = "stream_token" if refusal is Admission.BAD_TOKEN else "second_stream"
        self.deps.metrics.rejected.labels(reason).inc()
        self.log.warning("stream.rejected", reason=refusal.value)
        await self._close(CLOSE_POLICY_VIOLATION)

    async def _claim_and_serve(self, started: StreamStarted) -> None:
        new_call = self._new_call(started)
        admission = await self.deps.admission.claim(new_call, self.log)
        if not admission.admitted:
            await self._refuse(admission)
            return
        record = self._record = CallRecordWriter(self.deps.store, started.call_sid, self.log)
        record.start()
        if admission is Admission.UNCHECKED:
            # Queued, not awaited: the caller is answered even while the store is down.
            record.create(new_call)
        if (recordings := self.deps.recordings) is not None:
            self._recording = RecordingWriter.start(recordings, started.call_sid, self.log)
            self._recorder = self._recording.recorder if self._recording else None
        status, reason = CallStatus.COMPLETED, EndReason.UNKNOWN
        self.deps.metrics.calls_started.inc()
        self.deps.metrics.calls_active.inc()
        try:
            status, reason = await self._serve(started)
        except asyncio.CancelledError:
            status, reason = CallStatus.COMPLETED, EndReason.BRIDGE_SHUTDOWN
            raise
        finally:
            self.deps.metrics.calls_active.dec()
            self.deps.metrics.calls_finished.labels(status.value, reason.value).inc()
            ended_at = datetime.now(UTC)
            # Let the phone go first: the record may take a while to land (a store outage,
            # a burst of writes) and Twilio must not wait on it.
            await self._close(self._close_code)
            await record.close(status, reason, ended_at, RECORD_CLOSE_TIMEOUT_S)
            if self._recording is not None:
                await self._recording.close()
            self.log.info("call.ended", status=status.value, end_reason=reason.value)

    async def _serve(self, started: StreamStarted) -> tuple[CallStatus, EndReason]:
        started_at = self._loop.time()
        url, headers = self.deps.target.endpoint()
        try:
            socket = await RealtimeSocket.open(url, headers)
        except ProviderError as exc:
            self.log.error("realtime.unreachable", error=str(exc))
            await self._apologize(round((self._loop.time() - started_at) * 1000))
            return CallStatus.FAILED, EndReason.PROVIDER_ERROR
        async with socket:
            realtime = RealtimeConnection(
                self.deps.target.dialect, self.deps.session_config.audio_format
            )
            config = CallConfig(
                session=self.deps.session_config,
                greeting=self.deps.greeting,
                server_cancels=self.deps.target.dialect.server_cancels_on_speech,
                vad_padding_ms=300 if self.deps.target.dialect.name != "inworld" else 0,
                vad_silence_ms=500 if self.deps.target.dialect.name != "inworld" else 0,
            )
            logic = CallLogic(self.twilio, realtime, config, started_at, self._recorder)
            self.log.info(
                "call.started",
                provider=self.deps.target.provider.value,
                dialect=self.deps.target.dialect.name,
            )
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._read_twilio(logic))
                    tg.create_task(self._read_model(logic, socket))
                    tg.create_task(self._write_twilio(logic))
                    tg.create_task(self._write_model(logic, socket))
                    tg.create_task(self._watch_idle(logic))
            except* _CallOver:
                pass
            except* Exception as group:
                # A bug, not the caller's fault: end this call cleanly, keep the server up.
                self.log.error("call.internal_error", exc_info=group.exceptions[0])
                logic.end(EndReason.UNKNOWN)
            self.deps.metrics.barge_ins.inc(logic.barge_ins)
            if logic.end_reason is EndReason.CALLER_HANGUP and logic.awaiting_caller_text:
                await self._await_last_words(logic, socket)
            logic.finish(self._loop.time())
            self._drain(logic)
        if self._bad_input is not None:
            # Twilio sent something no real call sends: the call cannot be served.
            self._close_code = self._bad_input.close_code
            return CallStatus.FAILED, EndReason.UNKNOWN
        reason = logic.end_reason or EndReason.UNKNOWN
        if reason is EndReason.PROVIDER_ERROR:
            await self._apologize(logic.stream_ms(self._loop.time()))
            return CallStatus.FAILED, reason
        return CallStatus.COMPLETED, reason

    # -- before the call --------------------------------------------------------------------

    async def _await_start(self) -> StreamStarted | None:
        """Read frames until `start`. Bad input or silence closes the socket; None then."""
        deadline = self._loop.time() + START_TIMEOUT_S
        try:
            while True:
                text = await asyncio.wait_for(self._receive(), deadline - self._loop.time())
                if text is None:
                    return None
                self.twilio.receive_text(text)
                for event in self.twilio.events_received():
                    if isinstance(event, StreamStarted):
                        return event
                    if isinstance(event, StreamStopped):
                        return None
                    if isinstance(event, UnknownEvent):
                        self.log.warning("phone.unknown_event", phone_event=event.name)
        except RemoteProtocolError as exc:
            self._reject_input(exc)
            await self._close(exc.close_code)
        except TimeoutError:
            self.log.warning("stream.no_start", timeout_s=START_TIMEOUT_S)
            await self._close(CLOSE_POLICY_VIOLATION)
        return None

    def _new_call(self, started: StreamStarted) -> NewCall:
        params = started.custom_parameters
        return NewCall(
            call_sid=started.call_sid,
            stream_sid=started.stream_sid,
            from_number=params.get("from", ""),
            to_number=params.get("to", ""),
            provider=self.deps.target.provider.value,
            model=self.deps.target.model_name,
            started_at=datetime.now(UTC),
        )

    # -- the call ---------------------------------------------------------------------------

    async def _receive(self) -> str | None:
        """The next text frame from Twilio; None when the socket closed."""
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            self._twilio_gone = True
            # uvicorn closes open sockets with 1012 when the server itself is stopping.
            self._shutdown = message.get("code") == CLOSE_SERVICE_RESTART
            return None
        text = message.get("text")
        if text is None:
            self.twilio.receive_bytes(message.get("bytes") or b"")
        return text

    async def _read_twilio(self, logic: CallLogic) -> None:
        try:
            while True:
                text = await self._receive()
                if text is None:
                    gone = EndReason.BRIDGE_SHUTDOWN if self._shutdown else EndReason.CALLER_HANGUP
                    logic.end(gone)
                    raise _CallOver
                self._last_frame_at = now = self._loop.time()
                self.twilio.receive_text(text)
                logic.receive_phone(self.twilio.events_received(), now)
                self._after(logic)
                if logic.end_reason is not None:
                    raise _CallOver
        except RemoteProtocolError as exc:
            self._reject_input(exc)
            logic.end(EndReason.UNKNOWN)
            raise _CallOver from None

    async def _read_model(self, logic: CallLogic, socket: RealtimeSocket) -> None:
        try:
            async for text in socket.frames():
                logic.receive_realtime(text, self._loop.time())
                self._after(logic)
                if logic.end_reason is not None:
                    raise _CallOver
        except RemoteProtocolError as exc:
            self.log.error("realtime.protocol_error", error=str(exc))
        if logic.end_reason is None:
            self.log.error("realtime.closed", close_code=socket.close_code)
            logic.end(EndReason.PROVIDER_ERROR)
        raise _CallOver

    async def _write_twilio(self, logic: CallLogic) -> None:
        try:
            while True:
                await self._twilio_ready.wait()
                self._twilio_ready.clear()
                for text in self.twilio.data_to_send():
                    await self.ws.send_text(text)
        except (OSError, RuntimeError, WebSocketDisconnect):
            # The phone leg is gone. Why (the caller hung up, or this server is stopping) is
            # told by the disconnect the reader is about to receive, so the reader decides.
            self._twilio_gone = True

    async def _write_model(self, logic: CallLogic, socket: RealtimeSocket) -> None:
        try:
            while True:
                await self._model_ready.wait()
                self._model_ready.clear()
                for text in logic.realtime.data_to_send():
                    await socket.send(text)
        except ProviderError:
            self.log.error("realtime.closed", close_code=socket.close_code)
            logic.end(EndReason.PROVIDER_ERROR)
            raise _CallOver from None

    async def _watch_idle(self, logic: CallLogic) -> None:
        """Twilio sends media every 20 ms for the whole call; a silent socket is a dead one,
        and a dead call must not keep a paid model session open."""
        while True:
            await asyncio.sleep(1.0)
            if self._loop.time() - self._last_frame_at > self.deps.idle_timeout_s:
                self.log.warning("twilio.idle", idle_s=self.deps.idle_timeout_s)
                logic.end(EndReason.TIMEOUT)
                raise _CallOver

    def _after(self, logic: CallLogic) -> None:
        """Wake the writers and pass on what the logic produced."""
        if self.twilio.has_data_to_send:
            self._twilio_ready.set()
        if logic.realtime.has_data_to_send:
            self._model_ready.set()
        self._drain(logic)

    def _drain(self, logic: CallLogic) -> None:
        for output in logic.outputs():
            if isinstance(output, Notice):
                self.log.log(_LEVELS.get(output.level, 20), output.name, **output.fields)
            elif self._record is not None:
                if isinstance(output, TurnReady):
                    self._record.turn(output.turn)
                else:
                    self._record.event(output.event)

    async def _await_last_words(self, logic: CallLogic, socket: RealtimeSocket) -> None:
        """The caller hung up mid-sentence: give its transcription a moment to arrive."""
        logic.realtime.flush_audio()
        for text in logic.realtime.data_to_send():
            with contextlib.suppress(Exception):
                await socket.send(text)

        async def read() -> None:
            async for text in socket.frames():
                logic.receive_realtime(text, self._loop.time())
                self._drain(logic)
                if not logic.awaiting_caller_text:
                    return

        with contextlib.suppress(TimeoutError, RemoteProtocolError):
            await asyncio.wait_for(read(), TRANSCRIPT_GRACE_S)

    async def _apologize(self, at_ms: int) -> None:
        """Play the apology clip, wait until it has been heard (bounded), then let go.
        ``at_ms`` is the stream time now, for the recording."""
        if self._twilio_gone or not self.deps.apology:
            return
        with contextlib.suppress(Exception):
            self.twilio.send_clear()
            self.twilio.send_media(self.deps.apology)
            self.twilio.send_mark(APOLOGY_MARK)
            if self._recorder is not None:
                self._recorder.clear()
                self._recorder.agent_sent(APOLOGY_MARK, self.deps.apology, at_ms)
            for text in self.twilio.data_to_send():
                await self.ws.send_text(text)
            limit = len(self.deps.apology) / 8000 + 3.0
            await asyncio.wait_for(self._await_mark(APOLOGY_MARK), limit)

    async def _await_mark(self, name: str) -> None:
        while True:
            text = await self._receive()
            if text is None:
                return
            self.twilio.receive_text(text)
            for event in self.twilio.events_received():
                if self._recorder is not None:
                    if isinstance(event, MediaReceived):
                        self._recorder.caller_audio(event.payload, event.timestamp_ms)
                    elif isinstance(event, MarkPlayed):
                        self._recorder.mark_played(event.name)
                if isinstance(event, MarkPlayed) and event.name == name:
                    return
                if isinstance(event, StreamStopped):
                    return

    # -- the end ----------------------------------------------------------------------------

    def _reject_input(self, exc: RemoteProtocolError) -> None:
        self._bad_input = exc
        self.deps.metrics.bad_input.inc()
        self.log.warning("twilio.bad_input", error=str(exc), close_code=exc.close_code)

    async def _close(self, code: int) -> None:
        if self.ws.application_state == WebSocketState.CONNECTED and not self._twilio_gone:
            with contextlib.suppress(Exception):
                await self.ws.close(code)


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
