"""A Twilio Media Streams socket as a phone leg: the ``start`` handshake, the stream's
admission, and the reading and writing that :class:`~bridge.session.CallSession` drives.

Everything Twilio-specific about serving a call lives here; the call itself (the model leg,
the record, recordings, the apology) is the same for every kind of phone leg.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from bridge.adapters.server_frames import READ_AT
from bridge.adapters.stream_admission import Admission
from bridge.call.call_logic import CallLogic
from bridge.call.recording import CallRecorder
from bridge.call.records import EndReason
from bridge.errors import CLOSE_NORMAL, CLOSE_POLICY_VIOLATION, RemoteProtocolError
from bridge.protocols.twilio import (
    MARK_CHUNK_MS,
    MARK_CHUNKS,
    MarkPlayed,
    MediaReceived,
    StreamStarted,
    StreamStopped,
    TwilioMediaStream,
    UnknownEvent,
)
from bridge.session import CallSession, SessionDeps
from bridge.storage.base import NewCall

log = structlog.get_logger("bridge.session")

START_TIMEOUT_S = 10.0  # Twilio sends `start` right after `connected`
CLOSE_SERVICE_RESTART = 1012


async def serve_twilio_stream(ws: WebSocket, deps: SessionDeps) -> None:
    """Serve one accepted media socket: wait for ``start``, admit the stream, run the call."""
    driver = TwilioDriver(ws, deps)
    started = await driver.await_start()
    if started is None:
        return
    driver.log = log.bind(call_sid=started.call_sid, stream_sid=started.stream_sid)
    call_sid = started.call_sid
    token = started.custom_parameters.get("token", "")
    if (refusal := deps.admission.check(call_sid, token)) is not None:
        await driver.refuse(refusal)
        return
    # Live from here: a status callback arriving meanwhile leaves the call to this session.
    deps.live_calls.add(call_sid)
    try:
        new_call = _new_call(started, deps)
        agent = None
        if deps.agent_hub is not None:
            params = started.custom_parameters
            agent = deps.agent_hub.pick(new_call.to_number, params.get("agent"))
            new_call = dataclasses.replace(new_call, agent=agent.name)
        admission = await deps.admission.claim(new_call, driver.log)
        if not admission.admitted:
            await driver.refuse(admission)
            return
        session = CallSession(deps, driver, new_call, driver.log, agent)
        await session.run(create_record=admission is Admission.UNCHECKED)
    finally:
        deps.live_calls.discard(call_sid)


def _new_call(started: StreamStarted, deps: SessionDeps) -> NewCall:
    params = started.custom_parameters
    return NewCall(
        call_sid=started.call_sid,
        stream_sid=started.stream_sid,
        from_number=params.get("from", ""),
        to_number=params.get("to", ""),
        provider=deps.target.provider.value,
        model=deps.target.model_name,
        started_at=datetime.now(UTC),
    )


class TwilioDriver:
    """The I/O of one Twilio media socket (a :class:`~bridge.session.PhoneDriver`)."""

    chunk_ms = MARK_CHUNK_MS
    mark_chunks = MARK_CHUNKS

    def __init__(self, ws: WebSocket, deps: SessionDeps) -> None:
        self.ws = ws
        self.deps = deps
        self.stream = TwilioMediaStream()
        self.log: Any = log
        self._loop = asyncio.get_running_loop()
        self.last_activity = self._loop.time()
        # When the last message taken was read off the socket, if the server says (READ_AT).
        self._read_at: float | None = None
        self.gone = False
        self.bad_input: RemoteProtocolError | None = None
        self._shutdown = False
        self._ready = asyncio.Event()
        self._sending = False
        self.call_sid: str | None = None

    @property
    def leg(self) -> TwilioMediaStream:
        return self.stream

    # -- before the call ----------------------------------------------------------------------

    async def await_start(self) -> StreamStarted | None:
        """Read frames until `start`. Bad input or silence closes the socket; None then."""
        deadline = self._loop.time() + START_TIMEOUT_S
        try:
            while True:
                text = await asyncio.wait_for(self._receive(), deadline - self._loop.time())
                if text is None:
                    return None
                self.stream.receive_text(text)
                for event in self.stream.events_received():
                    if isinstance(event, StreamStarted):
                        self.call_sid = event.call_sid
                        return event
                    if isinstance(event, StreamStopped):
                        return None
                    if isinstance(event, UnknownEvent):
                        self.log.warning("phone.unknown_event", phone_event=event.name)
        except RemoteProtocolError as exc:
            self._reject_input(exc)
            await self.close()
        except TimeoutError:
            self.log.warning("stream.no_start", timeout_s=START_TIMEOUT_S)
            await self._close(CLOSE_POLICY_VIOLATION)
        return None

    async def refuse(self, refusal: Admission) -> None:
        reason = "stream_token" if refusal is Admission.BAD_TOKEN else "second_stream"
        self.deps.metrics.rejected.labels(reason).inc()
        self.log.warning("stream.rejected", reason=refusal.value)
        await self._close(CLOSE_POLICY_VIOLATION)

    # -- the call: what CallSession drives ---------------------------------------------------

    async def read(self, logic: CallLogic, after: Callable[[], Awaitable[None]]) -> None:
        """Feed Twilio's frames to ``logic`` until the call ends on this side."""
        try:
            while True:
                text = await self._receive()
                if text is None:
                    gone = EndReason.BRIDGE_SHUTDOWN if self._shutdown else EndReason.CALLER_HANGUP
                    logic.end(gone)
                    return
                self.last_activity = now = self._loop.time()
                self.stream.receive_text(text)
                logic.receive_phone(self.stream.events_received(), now, self._read_at)
                await after()
                if logic.end_reason is not None:
                    return
        except RemoteProtocolError as exc:
            self._reject_input(exc)
            logic.end(EndReason.UNKNOWN)

    def wake(self) -> None:
        self._ready.set()

    async def write(self) -> None:
        """Write what the stream queued, whenever woken, until the socket is gone."""
        while not self.gone:
            await self._ready.wait()
            self._ready.clear()
            await self.write_now()

    async def write_now(self) -> bool:
        """Write what the stream queued from the calling task; False, writing nothing, when
        another write is under way (it takes what was queued meanwhile too)."""
        if self._sending or self.gone:
            return False
        self._sending = True
        try:
            while self.stream.has_data_to_send:
                for text in self.stream.data_to_send():
                    await self.ws.send_text(text)
        except (OSError, RuntimeError, WebSocketDisconnect):
            # The phone leg is gone. Why (the caller hung up, or this server is stopping) is
            # told by the disconnect the reader is about to receive, so the reader decides.
            self.gone = True
        finally:
            self._sending = False
        return True

    async def play(self, audio: bytes, mark: str, recorder: CallRecorder | None) -> None:
        """Play ``audio`` at once and wait until Twilio says it was heard (bounded)."""
        if self.gone:
            return
        with contextlib.suppress(Exception):
            self.stream.send_clear()
            self.stream.send_media(audio)
            self.stream.send_mark(mark)
            for text in self.stream.data_to_send():
                await self.ws.send_text(text)
            limit = len(audio) / 8000 + 3.0
            await asyncio.wait_for(self._await_mark(mark, recorder), limit)

    async def transfer(self, target: str) -> tuple[bool, str]:
        """Twilio dials ``target`` itself once the stream closes: the ``<Connect>`` action
        URL asks the bridge what comes next, and this is what it will answer."""
        if self.call_sid is None:
            return False, "the stream has no call"
        self.deps.pending_transfers[self.call_sid] = target
        return True, ""

    async def close(self) -> None:
        """Close the socket: normally, or with the code its bad input earned."""
        await self._close(CLOSE_NORMAL if self.bad_input is None else self.bad_input.close_code)

    # -- plumbing ---------------------------------------------------------------------------

    async def _receive(self) -> str | None:
        """The next text frame from Twilio; None when the socket closed."""
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            self.gone = True
            # uvicorn closes open sockets with 1012 when the server itself is stopping.
            self._shutdown = message.get("code") == CLOSE_SERVICE_RESTART
            return None
        self._read_at = message.get(READ_AT)
        text = message.get("text")
        if text is None:
            self.stream.receive_bytes(message.get("bytes") or b"")
        return text

    async def _await_mark(self, name: str, recorder: CallRecorder | None) -> None:
        while True:
            text = await self._receive()
            if text is None:
                return
            self.stream.receive_text(text)
            for event in self.stream.events_received():
                if recorder is not None:
                    if isinstance(event, MediaReceived):
                        recorder.caller_audio(event.payload, event.timestamp_ms)
                    elif isinstance(event, MarkPlayed):
                        recorder.mark_played(event.name)
                if isinstance(event, MarkPlayed) and event.name == name:
                    return
                if isinstance(event, StreamStopped):
                    return

    def _reject_input(self, exc: RemoteProtocolError) -> None:
        self.bad_input = exc
        self.deps.metrics.bad_input.inc()
        self.log.warning("twilio.bad_input", error=str(exc), close_code=exc.close_code)

    async def _close(self, code: int) -> None:
        if self.ws.application_state == WebSocketState.CONNECTED and not self.gone:
            with contextlib.suppress(Exception):
                await self.ws.close(code)
