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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
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
    LatencyReady,
    Notice,
    RolloverReady,
    TransferReady,
    TurnReady,
)
from bridge.call.limits import LimitPolicy
from bridge.call.recording import CallRecorder
from bridge.call.records import CallStatus, EndReason
from bridge.call.tools import ToolCallReady, ToolPolicy
from bridge.drain import Drain
from bridge.errors import ProviderError, RemoteProtocolError
from bridge.metrics import BridgeMetrics
from bridge.overload import Overload
from bridge.protocols.dialects import Dialect, SessionConfig
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
# When a model session is lost: tries of the same provider, each after this long (all within
# about a second), then the fallback provider's.
RETRY_DELAYS_S = (0.0, 0.25, 0.75)
FALLBACK_DELAYS_S = (0.0, 0.5)
# A mid-call connect waits this long at most: the caller is waiting.
RECONNECT_TIMEOUT_S = 3.0
# A provider whose sessions keep failing soon after they open (it accepts, then drops) is not
# asked again after this many in a row: the fallback, or the apology, beats dead air.
SHORT_SESSION_S = 5.0
MAX_QUICK_FAILURES = 3
# Model sessions one call may open in all, whatever happens: a bound, not a policy.
MAX_MODEL_SESSIONS = 100


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
    # BRIDGE_FALLBACK_PROVIDER: where a call goes when its provider cannot serve it.
    fallback: RealtimeTarget | None = None
    # The live calls of this process, and whether it still takes new ones (SIGTERM).
    drain: Drain = field(default_factory=Drain)
    # Whether the event loop runs too late to take another call.
    overload: Overload = field(default_factory=Overload)
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
    #: Agent audio goes to this leg in chunks of this many ms, each followed by a mark.
    chunk_ms: int
    #: ...or up to this many chunks of one item under one mark (where marks are messages).
    mark_chunks: int

    async def read(self, logic: CallLogic, after: Callable[[], Awaitable[None]]) -> None:
        """Feed the leg's events to ``logic`` (calling ``after`` after each batch) until the
        call ends on this side; return once ``logic.end`` has been called."""

    def wake(self) -> None:
        """The leg has output queued: let :meth:`write` send it."""

    async def write_now(self) -> bool:
        """Send the leg's output from the calling task if the leg sends as it is asked and no
        send is under way; False if it left it to :meth:`write`."""

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
        *,
        call_agent: CallAgent | None = None,
        media: bool = True,
    ) -> None:
        self.deps = deps
        self.driver = driver
        self.call = call
        self.log = log
        self.agent = agent
        # Prepared already (OpenAI SIP: the accept needed it); media=False: see CallConfig.
        self._prepared = call_agent
        self._media = media
        self._call_agent: CallAgent | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._loop = asyncio.get_running_loop()
        self._model_ready = asyncio.Event()
        self._record = CallRecordWriter(deps.store, call.call_sid, log, metrics=deps.metrics)
        self._recording: RecordingWriter | None = None
        self._recorder: CallRecorder | None = None
        # The model leg as it stands: its socket, whom it goes to, how many were opened.
        self._socket: RealtimeSocket | None = None
        self._target: RealtimeTarget = deps.target
        self._primary: RealtimeTarget = deps.target
        self._sessions_opened = 0
        self._session_began = 0.0
        self._model_sending = False
        self._quick_failures = 0
        # Set when the bridge, stopping, asks this call to end with a goodbye.
        self._shutdown = asyncio.Event()

    def end_for_shutdown(self) -> None:
        """The bridge is stopping and this call outlived the drain: the agent says a short
        goodbye and the call ends as ``bridge_shutdown``. Returns at once."""
        self._shutdown.set()

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
        metrics, channel = self.deps.metrics, self.call.channel
        metrics.calls_started.labels(channel).inc()
        metrics.calls_active.labels(channel).inc()
        # Live until its record is written: a draining bridge exits only after that.
        self.deps.drain.add(self)
        try:
            status, reason = await self._serve()
        except asyncio.CancelledError:
            status, reason = CallStatus.COMPLETED, EndReason.BRIDGE_SHUTDOWN
            raise
        finally:
            try:
                metrics.calls_active.labels(channel).dec()
                metrics.calls_finished.labels(status.value, reason.value).inc()
                ended_at = datetime.now(UTC)
                # Let the phone go first: the record may take a while to land (a store
                # outage, a burst of writes) and the phone leg must not wait on it.
                await self.driver.close()
                await record.close(status, reason, ended_at, RECORD_CLOSE_TIMEOUT_S)
                if self._recording is not None:
                    await self._recording.close()
                self.log.info("call.ended", status=status.value, end_reason=reason.value)
            finally:
                self.deps.drain.discard(self)

    async def _prepare_agent(self) -> CallAgent:
        if self._prepared is not None:
            return self._prepared
        hub, deps = self.deps.agent_hub, self.deps
        if hub is not None and self.agent is not None:
            return await hub.prepare(self.agent, self.call.call_sid)
        return CallAgent(self.call.agent, deps.session_config, deps.greeting, ToolPolicy())

    async def _serve(self) -> tuple[CallStatus, EndReason]:
        started_at = self._loop.time()
        agent = self._call_agent = await self._prepare_agent()
        self._primary = agent.target or self.deps.target
        opened = await self._connect(self._plan(self._primary, retry=True), "call_start")
        if opened is None:
            await self._apologize(round((self._loop.time() - started_at) * 1000))
            return CallStatus.FAILED, EndReason.PROVIDER_ERROR
        self._socket, self._target = opened
        try:
            return await self._serve_opened(agent, started_at)
        finally:
            if self._socket is not None:
                await self._socket.close()

    def _call_config(self, agent: CallAgent, target: RealtimeTarget) -> CallConfig:
        """The call's configuration for a session with ``target``. The agent's voice and
        transcription model are its provider's names; another provider gets its defaults."""
        dialect: Dialect = target.dialect
        session = agent.session
        if target is not self._primary:
            same = dialect.name == self._primary.dialect.name
            session = replace(
                session,
                model=target.model,
                voice=session.voice if same else None,
                transcription_model=session.transcription_model if same else None,
            )
        return CallConfig(
            session=session,
            greeting=agent.greeting,
            server_cancels=dialect.server_cancels_on_speech,
            # What server VAD folds into its speech times; semantic VAD folds in nothing.
            vad_padding_ms=int(dialect.turn_detection.get("prefix_padding_ms", 0)),
            vad_silence_ms=int(dialect.turn_detection.get("silence_duration_ms", 0)),
            tools=agent.policy,
            limits=LimitPolicy(agent.max_duration_s, agent.silence_timeout_s),
            chunk_ms=self.driver.chunk_ms,
            mark_chunks=self.driver.mark_chunks,
            media=self._media,
        )

    async def _serve_opened(
        self, agent: CallAgent, started_at: float
    ) -> tuple[CallStatus, EndReason]:
        target = self._target
        dialect = target.dialect
        realtime = RealtimeConnection(dialect, agent.session.audio_format)
        config = self._call_config(agent, target)
        logic = CallLogic(self.driver.leg, realtime, config, started_at, self._recorder)
        logic.wall_offset = time.time() - self._loop.time()
        if target is not self._primary:  # the primary could not be reached at all
            self._note_fallback(logic, self._primary, target, served=False)
        self.log.info(
            "call.started", provider=target.provider.value, dialect=dialect.name, agent=agent.name
        )
        try:
            async with asyncio.TaskGroup() as tg:
                self._tasks = tg
                tg.create_task(self._read_phone(logic))
                tg.create_task(self._model_leg(logic))
                tg.create_task(self.driver.write())
                tg.create_task(self._write_model(logic))
                tg.create_task(self._watch_idle(logic))
                tg.create_task(self._await_shutdown(logic))
        except* _CallOver:
            pass
        except* Exception as group:
            # A bug, not the caller's fault: end this call cleanly, keep the server up.
            self.log.error("call.internal_error", exc_info=group.exceptions[0])
            logic.end(EndReason.UNKNOWN)
        self._tasks = None
        self.deps.metrics.barge_ins.inc(logic.barge_ins)
        if logic.end_reason is EndReason.CALLER_HANGUP and logic.awaiting_caller_text:
            await self._await_last_words(logic)
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

    # -- the model leg: one socket at a time, replaced when it fails ------------------------

    def _plan(
        self, current: RealtimeTarget, *, retry: bool
    ) -> list[tuple[RealtimeTarget, Sequence[float]]]:
        """Whom to try, in order, with the delay before each try: ``current`` again (unless
        it refused or is over its limits), then the other provider, if there is one."""
        plan: list[tuple[RealtimeTarget, Sequence[float]]] = []
        if retry:
            plan.append((current, RETRY_DELAYS_S))
        other = self.deps.fallback if current is self._primary else self._primary
        if other is not None and other is not current:
            plan.append((other, FALLBACK_DELAYS_S))
        return plan

    async def _connect(
        self, plan: list[tuple[RealtimeTarget, Sequence[float]]], why: str
    ) -> tuple[RealtimeSocket, RealtimeTarget] | None:
        """The first socket that opens, going down ``plan``; ``None`` when none did."""
        timeout = RECONNECT_TIMEOUT_S if why != "call_start" else 10.0
        for target, delays in plan:
            for delay in delays:
                if self._sessions_opened >= MAX_MODEL_SESSIONS:
                    self.log.error("realtime.too_many_sessions", sessions=self._sessions_opened)
                    return None
                if delay:
                    await asyncio.sleep(delay)
                url, headers = target.endpoint()
                try:
                    socket = await RealtimeSocket.open(url, headers, timeout_s=timeout)
                except ProviderError as exc:
                    limited = exc.status == 429
                    kind = "limit" if limited else "unreachable"
                    self.deps.metrics.provider_errors.labels(target.provider.value, kind).inc()
                    self.log.error(
                        "realtime.provider_limit" if limited else "realtime.unreachable",
                        provider=target.provider.value,
                        error=str(exc),
                    )
                    if limited:
                        break  # over its limits: more tries only add to the caller's wait
                    continue
                self._sessions_opened += 1
                self._session_began = self._loop.time()
                return socket, target
        return None

    async def _model_leg(self, logic: CallLogic) -> None:
        """Read the model's socket; when it is lost, put a fresh session in its place."""
        while True:
            socket = self._socket
            assert socket is not None
            lost = await self._read_model(logic, socket)
            if socket is not self._socket:
                continue  # replaced on purpose (a rollover): read the new one
            if not self._media:
                # OpenAI's SIP sideband closes when the call ends there (the caller hung
                # up); no other session could take over a call whose audio is OpenAI's.
                failed = lost != "dropped"
                logic.end(EndReason.PROVIDER_ERROR if failed else EndReason.CALLER_HANGUP)
                raise _CallOver
            await self._replace_model(logic, lost)

    async def _read_model(self, logic: CallLogic, socket: RealtimeSocket) -> str:
        """Feed the model's events to ``logic`` until the socket ends or the session fails;
        returns why (``dropped``, ``expired``, ``limit``, ``refused``). Raises ``_CallOver``
        when the call ends."""
        try:
            async for text in socket.frames():
                if socket is not self._socket:
                    return "replaced"
                logic.receive_realtime(text, self._loop.time())
                if self.driver.leg.has_data_to_send:  # an answer's audio, a clear: _after_phone
                    await self.driver.write_now()
                self._after(logic)
                if logic.end_reason is not None:
                    raise _CallOver
                if logic.model_failure is not None:
                    return logic.model_failure.kind
        except RemoteProtocolError as exc:
            self.log.error("realtime.protocol_error", error=str(exc))
        if logic.end_reason is not None:
            raise _CallOver
        if socket is self._socket:
            self.log.warning("realtime.closed", close_code=socket.close_code)
        return "dropped"

    async def _replace_model(self, logic: CallLogic, lost: str) -> None:
        """The model session is gone (``lost`` says how): carry the call on in a fresh one,
        or, when none can be had, end it with the apology."""
        target = self._target
        provider = target.provider.value
        failure = logic.model_failure
        self.deps.metrics.provider_errors.labels(provider, lost).inc()
        if lost == "limit":
            self.log.error(
                "realtime.provider_limit",
                provider=provider,
                code=failure.code if failure else None,
                error=failure.message if failure else None,
            )
        began = self._loop.time()
        logic.model_lost(began)
        self._after(logic)
        short = began - self._session_began < SHORT_SESSION_S
        self._quick_failures = self._quick_failures + 1 if short and lost != "expired" else 0
        # A provider that refused the call, is over its limits or keeps failing at once is
        # not asked again.
        retry = lost in ("dropped", "expired") and self._quick_failures < MAX_QUICK_FAILURES
        opened = await self._connect(self._plan(target, retry=retry), lost)
        if logic.end_reason is not None:
            if opened is not None:
                await opened[0].close()
            raise _CallOver
        if opened is None:
            self.log.error("realtime.gave_up", provider=provider, reason=lost)
            logic.end(EndReason.PROVIDER_ERROR)
            raise _CallOver
        await self._switch(logic, *opened, lost, began)

    async def _roll_over(self, logic: CallLogic) -> None:
        """Move to a fresh session of the same provider before this one's limit."""
        began = self._loop.time()
        opened = await self._connect([(self._target, (0.0,))], "rollover")
        if opened is None or logic.end_reason is not None:
            if opened is not None:
                await opened[0].close()
            return  # the old session serves on; at its limit it is replaced like a drop
        await self._switch(logic, *opened, "rollover", began)

    async def _switch(
        self,
        logic: CallLogic,
        socket: RealtimeSocket,
        target: RealtimeTarget,
        reason: str,
        began: float,
    ) -> None:
        old, previous = self._socket, self._target
        self._socket, self._target = socket, target
        agent = self._call_agent
        assert agent is not None
        config = self._call_config(agent, target) if target is not previous else None
        now = self._loop.time()
        realtime = RealtimeConnection(target.dialect, agent.session.audio_format)
        logic.switch_model(realtime, now, config)
        gap_ms = round((now - began) * 1000)
        logic.note_event("reconnect", now, reason=reason, provider=target.provider.value)
        self.deps.metrics.reconnects.labels(reason).inc()
        self.log.info(
            "realtime.reconnected", reason=reason, provider=target.provider.value, ms=gap_ms
        )
        if target is not previous:
            self._note_fallback(logic, previous, target, served=logic.has_turns)
        self._after(logic)
        if old is not None:
            await old.close()

    def _note_fallback(
        self, logic: CallLogic, old: RealtimeTarget, new: RealtimeTarget, *, served: bool
    ) -> None:
        """The call moved to another provider: in the record, the metrics and the log."""
        moved = {"from": old.provider.value, "to": new.provider.value}
        logic.note_event("provider_fallback", self._loop.time(), **moved, from_served=served)
        self.deps.metrics.fallbacks.labels(moved["from"], moved["to"]).inc()
        self.log.warning("realtime.fallback", from_provider=moved["from"], to_provider=moved["to"])

    # -- the call ---------------------------------------------------------------------------

    async def _read_phone(self, logic: CallLogic) -> None:
        await self.driver.read(logic, lambda: self._after_phone(logic))
        raise _CallOver

    async def _after_phone(self, logic: CallLogic) -> None:
        """After each batch from the phone leg. Caller audio, 50 frames a second, goes to
        the model from this task when no send is under way: waking the writer for every
        frame would cost a task switch each, the largest single cost of a call."""
        if logic.realtime.has_data_to_send and not self._model_sending:
            await self._send_model(logic)
        # Likewise what was queued for the caller (here the chunks an echo let out; from the
        # model's reader an answer's audio or a clear) goes out from the task that queued
        # it, where the leg allows: waking the writer would wait for the next turn of the
        # event loop. Checked here, not in a helper: this runs for every frame.
        if self.driver.leg.has_data_to_send:
            await self.driver.write_now()
        self._after(logic)

    async def _send_model(self, logic: CallLogic) -> None:
        """Send all the model leg has queued, including what queues meanwhile. One sender
        at a time, so events keep their order."""
        self._model_sending = True
        try:
            while logic.realtime.has_data_to_send:
                socket = self._socket
                for text in logic.realtime.data_to_send():
                    if socket is not None:
                        await socket.send(text)
        except ProviderError:
            pass  # the reader sees the socket end and puts a fresh session in its place
        finally:
            self._model_sending = False

    async def _write_model(self, logic: CallLogic) -> None:
        while True:
            await self._model_ready.wait()
            self._model_ready.clear()
            if not self._model_sending:  # else the sender at work takes this too
                await self._send_model(logic)

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

    async def _await_shutdown(self, logic: CallLogic) -> None:
        """When the bridge asks this call to end, hand it to the call logic's goodbye."""
        await self._shutdown.wait()
        self.log.info("call.shutdown_requested")
        logic.shut_down(self._loop.time())
        self._after(logic)
        if logic.end_reason is not None:
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
            elif isinstance(output, LatencyReady):
                histogram = (
                    self.deps.metrics.turn_latency
                    if output.kind == "turn"
                    else self.deps.metrics.clear_latency
                )
                histogram.labels(self.call.channel).observe(output.seconds)
            elif self._tasks is not None:  # a tool to run, a transfer to make, a rollover
                if isinstance(output, RolloverReady):
                    self._tasks.create_task(self._roll_over(logic))
                elif isinstance(output, ToolCallReady):
                    self._tasks.create_task(self._run_tool(logic, output))
                else:
                    self._tasks.create_task(self._transfer(logic, output))

    async def _run_tool(self, logic: CallLogic, ready: ToolCallReady) -> None:
        """One HTTP/MCP tool, in a task of its own so the call's audio never waits on it."""
        runner = self._call_agent.runner if self._call_agent is not None else None
        began = self._loop.time()
        try:
            if runner is None:
                raise LookupError(ready.name)
            outcome = await runner.run(ready.name, ready.arguments)
        except Exception:  # a bug in a runner must not end the call
            self.log.exception("tool.failed", tool=ready.name)
            outcome = ToolOutcome(False, '{"error": "the tool failed"}')
        metrics = self.deps.metrics
        metrics.tool_latency.labels(ready.name).observe(self._loop.time() - began)
        metrics.tool_calls.labels(ready.name, "ok" if outcome.ok else "error").inc()
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

    async def _await_last_words(self, logic: CallLogic) -> None:
        """The caller hung up mid-sentence: give its transcription a moment to arrive."""
        socket = self._socket
        if socket is None:
            return
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
