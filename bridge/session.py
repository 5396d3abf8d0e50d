"""``CallSession``: one admitted phone call, from its first frame to the last write.

It is the thin asyncio shell around the pure call logic: it reads both legs, feeds what
arrived in with the time it arrived, writes out what the protocol objects queue, and hands
finished turns to the store. One ``TaskGroup`` holds a reader and a writer per leg; when
either leg ends, the group ends the other, and nothing outlives the call.

The phone leg comes as a :class:`PhoneDriver` (``bridge.twilio_session`` for Twilio Media
Streams): everything else (the model leg, the record, recordings, the apology, the idle
watchdog) is the same for every kind of phone leg.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from bridge.adapters.http_tools import ToolOutcome
from bridge.adapters.realtime_socket import RealtimeSocket
from bridge.adapters.realtime_target import RealtimeTarget
from bridge.adapters.recording_writer import RecordingWriter
from bridge.adapters.stream_admission import StreamAdmission
from bridge.agent_hub import AgentHub, CallAgent
from bridge.agents.models import Agent
from bridge.call.call_logic import (
    CallConfig,
    CallLogic,
    EventReady,
    Notice,
    TransferReady,
    TurnReady,
)
from bridge.call.limits import LimitPolicy
from bridge.call.recording import CallRecorder
from bridge.call.records import CallStatus, EndReason
from bridge.call.tools import ToolCallReady, ToolPolicy
from bridge.errors import ProviderError, RemoteProtocolError
from bridge.metrics import BridgeMetrics
from bridge.protocols.dialects import SessionConfig
from bridge.protocols.phone import PhoneLeg
from bridge.protocols.realtime import RealtimeConnection
from bridge.storage.base import CallStore, NewCall
from bridge.storage.record_writer import CallRecordWriter
from bridge.storage.recordings import RecordingFiles

log = structlog.get_logger("bridge.session")

TRANSCRIPT_GRACE_S = 1.5  # after hang-up, how long the last caller words may take to arrive
# How long a finished call waits for its record to be written (the store may be failing over).
RECORD_CLOSE_TIMEOUT_S = 15.0
APOLOGY_MARK = "apology"


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
    # The agents, their tools and clients; None: every call is the settings' one agent.
    agent_hub: AgentHub | None = None
    # Twilio calls whose stream ended for a transfer: call SID -> where the <Connect>
    # action's answer dials.
    pending_transfers: dict[str, str] = field(default_factory=dict)
    admission: StreamAdmission = field(init=False)

    def __post_init__(self) -> None:
        self.admission = StreamAdmission(self.store, self.token_secret, self.clock)


class PhoneDriver(Protocol):
    """The I/O half of one phone leg (a Twilio socket, a SIP call's RTP), as a
    :class:`CallSession` drives it. ``leg`` is the sans-I/O side the call logic talks to."""

    @property
    def leg(self) -> PhoneLeg:
        """The sans-I/O phone leg the call logic sends to."""

    @property
    def last_activity(self) -> float:
        """Loop time of the last inbound frame: a leg that goes quiet is dead."""

    #: The leg's transport is gone: nothing more can be played to the caller.
    gone: bool
    #: What the far end sent that no real call sends, if anything: the call failed on it.
    bad_input: RemoteProtocolError | None

    async def read(self, logic: CallLogic, after: Callable[[], None]) -> None:
        """Feed the leg's events to ``logic`` (calling ``after`` after each batch) until the
        call ends on this side; return once ``logic.end`` has been called."""

    def wake(self) -> None:
        """The leg has output queued: let :meth:`write` send it."""

    async def write(self) -> None:
        """Send the leg's output, whenever woken, until the transport is gone."""

    async def play(self, audio: bytes, mark: str, recorder: CallRecorder | None) -> None:
        """Play ``audio`` at once, dropping anything queued, and return once it has been
        heard (or could not be); bounded in time."""

    async def close(self) -> None:
        """Let the phone leg go (with the close code its bad input earned, if any)."""

    async def transfer(self, target: str) -> tuple[bool, str]:
        """Hand the caller to ``target`` (a number or SIP URI); (done, why not). On success
        the call ends; the leg's own way does the rest (a REFER, a ``<Dial>``)."""


class CallSession:
    """Serves one admitted call on any phone leg. Call ``run()`` once."""

    def __init__(
        self,
        deps: SessionDeps,
        driver: PhoneDriver,
        call: NewCall,
        log: Any,
        agent: Agent | None = None,
    ) -> None:
        self.deps = deps
        self.driver = driver
        self.call = call
        self.log = log
        self.agent = agent
        self._call_agent: CallAgent | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._loop = asyncio.get_running_loop()
        self._model_ready = asyncio.Event()
        self._record = CallRecordWriter(deps.store, call.call_sid, log)
        self._recording: RecordingWriter | None = None
        self._recorder: CallRecorder | None = None

    async def run(self, *, create_record: bool) -> None:
        """Serve the call to its end. ``create_record``: the store does not hold the call yet
        (its claim could not be checked); the record writer creates it first."""
        record = self._record
        record.start()
        if create_record:
            # Queued, not awaited: the caller is answered even while the store is down.
            record.create(self.call)
        if (recordings := self.deps.recordings) is not None:
            self._recording = RecordingWriter.start(recordings, self.call.call_sid, self.log)
            self._recorder = self._recording.recorder if self._recording else None
        status, reason = CallStatus.COMPLETED, EndReason.UNKNOWN
        self.deps.metrics.calls_started.inc()
        self.deps.metrics.calls_active.inc()
        try:
            status, reason = await self._serve()
        except asyncio.CancelledError:
            status, reason = CallStatus.COMPLETED, EndReason.BRIDGE_SHUTDOWN
            raise
        finally:
            self.deps.metrics.calls_active.dec()
            self.deps.metrics.calls_finished.labels(status.value, reason.value).inc()
            ended_at = datetime.now(UTC)
            # Let the phone go first: the record may take a while to land (a store outage,
            # a burst of writes) and the phone leg must not wait on it.
            await self.driver.close()
            await record.close(status, reason, ended_at, RECORD_CLOSE_TIMEOUT_S)
            if self._recording is not None:
                await self._recording.close()
            self.log.info("call.ended", status=status.value, end_reason=reason.value)

    async def _prepare_agent(self) -> CallAgent:
        hub, deps = self.deps.agent_hub, self.deps
        if hub is not None and self.agent is not None:
            return await hub.prepare(self.agent, self.call.call_sid)
        return CallAgent(self.call.agent, deps.session_config, deps.greeting, ToolPolicy())

    async def _serve(self) -> tuple[CallStatus, EndReason]:
        started_at = self._loop.time()
        agent = self._call_agent = await self._prepare_agent()
        target = agent.target or self.deps.target
        url, headers = target.endpoint()
        try:
            socket = await RealtimeSocket.open(url, headers)
        except ProviderError as exc:
            self.log.error("realtime.unreachable", error=str(exc))
            await self._apologize(round((self._loop.time() - started_at) * 1000))
            return CallStatus.FAILED, EndReason.PROVIDER_ERROR
        async with socket:
            dialect = target.dialect
            realtime = RealtimeConnection(dialect, agent.session.audio_format)
            config = CallConfig(
                session=agent.session,
                greeting=agent.greeting,
                server_cancels=dialect.server_cancels_on_speech,
                vad_padding_ms=300 if dialect.name != "inworld" else 0,
                vad_silence_ms=500 if dialect.name != "inworld" else 0,
                tools=agent.policy,
                limits=LimitPolicy(agent.max_duration_s, agent.silence_timeout_s),
            )
            logic = CallLogic(self.driver.leg, realtime, config, started_at, self._recorder)
            self.log.info(
                "call.started",
                provider=target.provider.value,
                dialect=dialect.name,
                agent=agent.name,
            )
            try:
                async with asyncio.TaskGroup() as tg:
                    self._tasks = tg
                    tg.create_task(self._read_phone(logic))
                    tg.create_task(self._read_model(logic, socket))
                    tg.create_task(self.driver.write())
                    tg.create_task(self._write_model(logic, socket))
                    tg.create_task(self._watch_idle(logic))
            except* _CallOver:
                pass
            except* Exception as group:
                # A bug, not the caller's fault: end this call cleanly, keep the server up.
                self.log.error("call.internal_error", exc_info=group.exceptions[0])
                logic.end(EndReason.UNKNOWN)
            self._tasks = None
            self.deps.metrics.barge_ins.inc(logic.barge_ins)
            if logic.end_reason is EndReason.CALLER_HANGUP and logic.awaiting_caller_text:
                await self._await_last_words(logic, socket)
            logic.finish(self._loop.time())
            self._drain(logic)
        if self.driver.bad_input is not None:
            # The far end sent something no real call sends: the call cannot be served.
            return CallStatus.FAILED, EndReason.UNKNOWN
        reason = logic.end_reason or EndReason.UNKNOWN
        if reason is EndReason.PROVIDER_ERROR:
            await self._apologize(logic.stream_ms(self._loop.time()))
            return CallStatus.FAILED, reason
        return CallStatus.COMPLETED, reason

    # -- the call ---------------------------------------------------------------------------

    async def _read_phone(self, logic: CallLogic) -> None:
        await self.driver.read(logic, lambda: self._after(logic))
        raise _CallOver

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
        """A phone leg carries media every 20 ms for the whole call; a silent one is dead,
        and a dead call must not keep a paid model session open."""
        while True:
            await asyncio.sleep(1.0)
            logic.tick(self._loop.time())  # the agent's time and silence limits
            self._after(logic)
            if logic.end_reason is not None:
                raise _CallOver
            if self._loop.time() - self.driver.last_activity > self.deps.idle_timeout_s:
                self.log.warning("phone.idle", idle_s=self.deps.idle_timeout_s)
                logic.end(EndReason.TIMEOUT)
                raise _CallOver

    def _after(self, logic: CallLogic) -> None:
        """Wake the writers and pass on what the logic produced."""
        if self.driver.leg.has_data_to_send:
            self.driver.wake()
        if logic.realtime.has_data_to_send:
            self._model_ready.set()
        self._drain(logic)

    def _drain(self, logic: CallLogic) -> None:
        for output in logic.outputs():
            if isinstance(output, Notice):
                self.log.log(_LEVELS.get(output.level, 20), output.name, **output.fields)
            elif isinstance(output, TurnReady):
                self._record.turn(output.turn)
            elif isinstance(output, EventReady):
                self._record.event(output.event)
            elif self._tasks is not None:  # a tool to run, a transfer to make
                if isinstance(output, ToolCallReady):
                    self._tasks.create_task(self._run_tool(logic, output))
                else:
                    self._tasks.create_task(self._transfer(logic, output))

    async def _run_tool(self, logic: CallLogic, ready: ToolCallReady) -> None:
        """One HTTP/MCP tool, in a task of its own so the call's audio never waits on it."""
        runner = self._call_agent.runner if self._call_agent is not None else None
        try:
            if runner is None:
                raise LookupError(ready.name)
            outcome = await runner.run(ready.name, ready.arguments)
        except Exception:  # a bug in a runner must not end the call
            self.log.exception("tool.failed", tool=ready.name)
            outcome = ToolOutcome(False, '{"error": "the tool failed"}')
        logic.tool_finished(ready.call_id, outcome.ok, outcome.output, self._loop.time())
        self._after(logic)
        if logic.end_reason is not None:
            raise _CallOver

    async def _transfer(self, logic: CallLogic, ready: TransferReady) -> None:
        targets = self._call_agent.transfer_targets if self._call_agent is not None else {}
        target = targets.get(ready.target)
        if target is None or self.driver.gone:
            ok, detail = False, "no such target" if target is None else "the caller is gone"
        else:
            ok, detail = await self.driver.transfer(target)
        self.log.info("call.transfer", target=ready.target, ok=ok, detail=detail)
        logic.transfer_finished(ok, detail, self._loop.time())
        self._after(logic)
        if logic.end_reason is not None:
            raise _CallOver

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
        """Play the apology clip and wait until it has been heard (bounded). ``at_ms`` is the
        stream time now, for the recording."""
        if self.driver.gone or not self.deps.apology:
            return
        if self._recorder is not None:
            self._recorder.clear()
            self._recorder.agent_sent(APOLOGY_MARK, self.deps.apology, at_ms)
        await self.driver.play(self.deps.apology, APOLOGY_MARK, self._recorder)


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
