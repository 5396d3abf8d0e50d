"""OpenAI's SIP connector: calls that reach OpenAI over SIP directly, steered by the bridge.

OpenAI carries the call's audio. The bridge hears of a call from the ``realtime.call.incoming``
webhook (``bridge.openai_webhook`` checks it), then :class:`OpenAiSipConnector` picks the agent
by the dialed number, accepts the call over REST with that agent's session (or rejects it when
the bridge is full), joins the call's session over the sideband WebSocket and serves it with
the one call core every channel uses: a :class:`~bridge.session.CallSession` whose phone leg,
:class:`OpenAiSipDriver`, carries no media. Transcripts, tools and the call record come out as
for any other call; a transfer is a REST ``refer`` and hanging up a REST ``hangup``.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from bridge.adapters.openai_calls import OpenAiCalls, Outcome
from bridge.adapters.realtime_target import RealtimeTarget
from bridge.agent_hub import CallAgent
from bridge.call.call_logic import CallLogic
from bridge.call.recording import CallRecorder
from bridge.call.records import EndReason
from bridge.call.tools import ToolPolicy
from bridge.errors import RemoteProtocolError
from bridge.protocols.dialects import DIALECTS
from bridge.protocols.openai_sip import IncomingCall, accept_session, refer_uri
from bridge.session import CallSession, SessionDeps
from bridge.settings import Provider, Settings
from bridge.storage.base import NewCall

log = structlog.get_logger("bridge.openai_sip")

CHANNEL = "openai-sip"
# SIP statuses for a call the bridge will not take: full (try elsewhere), or stopping.
BUSY_STATUS = 503


class NoMediaLeg:
    """The phone leg of a call whose audio never reaches the bridge: there is nothing to
    send, so whatever the call logic asks to play (it never does: no audio arrives) is
    dropped, and no mark will ever come back."""

    marks_on_send = True  # nothing is sent, so nothing is heard between marks

    def send_media(self, payload: bytes) -> None:
        pass

    def send_mark(self, name: str) -> None:
        pass

    def send_clear(self) -> None:
        pass

    @property
    def has_data_to_send(self) -> bool:
        return False


class OpenAiSipDriver:
    """One OpenAI SIP call as a :class:`~bridge.session.PhoneDriver`. The caller's side of
    the call lives at OpenAI: the call ends when the sideband closes (the session sees to
    that) or when the bridge hangs up over REST (:meth:`close`)."""

    # No audio passes through the bridge on these calls.
    chunk_ms = 20
    mark_chunks = 1

    def __init__(self, calls: OpenAiCalls, call_id: str, log: Any) -> None:
        self.calls = calls
        self.call_id = call_id
        self.log = log
        self._leg = NoMediaLeg()
        self._loop = asyncio.get_running_loop()
        #: Set once the call has left OpenAI (transferred, already gone): no hang-up then.
        self.gone = False
        self.bad_input: RemoteProtocolError | None = None
        self._logic: CallLogic | None = None
        self._closed = False

    @property
    def leg(self) -> NoMediaLeg:
        return self._leg

    @property
    def last_activity(self) -> float:
        # No media flows here to go quiet; a dead call shows as its sideband closing.
        return self._loop.time()

    async def read(self, logic: CallLogic, after: Callable[[], Awaitable[None]]) -> None:
        """Nothing arrives on this leg: wait for the call to end elsewhere (the session
        cancels this). ``after`` runs once first, so the greeting the logic queued goes out
        now rather than with the sideband's first event."""
        self._logic = logic
        await after()
        await asyncio.Event().wait()

    def wake(self) -> None:
        pass

    async def write_now(self) -> bool:
        return False  # nothing is ever sent on this leg

    async def write(self) -> None:
        """Nothing is ever sent on this leg."""

    async def play(self, audio: bytes, mark: str, recorder: CallRecorder | None) -> None:
        """The bridge has no way to play audio into this call (the apology is not heard)."""

    async def transfer(self, target: str) -> tuple[bool, str]:
        """A blind transfer: OpenAI sends the trunk a SIP REFER to ``target``."""
        outcome = await self.calls.refer(self.call_id, refer_uri(target))
        if outcome is Outcome.DONE:
            self.gone = True  # the trunk takes the caller on; OpenAI ends its side
            return True, ""
        if outcome is Outcome.GONE:
            self.gone = True
            return False, "the call has already ended"
        return False, "OpenAI did not transfer the call"

    async def close(self) -> None:
        """Hang up at OpenAI unless the call is over there already (the caller hung up,
        which closed the sideband, or it was transferred)."""
        if self._closed:
            return
        self._closed = True
        ended = self._logic.end_reason if self._logic is not None else None
        if self.gone or ended is EndReason.CALLER_HANGUP:
            return
        await self.calls.hangup(self.call_id)


class OpenAiSipConnector:
    """Serves the calls OpenAI offers. The webhook route :meth:`claim`s a call, then spawns
    :meth:`serve` for it; ``aclose()`` at shutdown, after the calls have ended."""

    def __init__(self, settings: Settings, deps: SessionDeps, calls: OpenAiCalls) -> None:
        # No fallback: another provider's session could not take over a call whose audio
        # is at OpenAI, so the session must never try one.
        self.deps = dataclasses.replace(deps, fallback=None)
        self.calls = calls
        self.max_calls = settings.openai_sip_max_calls
        self._api_base = settings.openai_api_base
        key = settings.openai_api_key
        self._api_key = key.get_secret_value() if key is not None else None
        # The model is chosen at accept: the configured one when OpenAI is the provider.
        model = settings.realtime_model if settings.effective_provider is Provider.OPENAI else None
        self.model = model or DIALECTS["openai"].default_model
        # Calls claimed and not yet finished: accepting, rejecting or being served.
        self._calls: set[str] = set()

    @property
    def active_calls(self) -> int:
        return len(self._calls)

    def claim(self, call_id: str) -> bool:
        """Take ``call_id`` for this instance; False when it is already being handled (the
        same call offered twice must never be accepted twice)."""
        if call_id in self._calls:
            return False
        self._calls.add(call_id)
        return True

    def release(self, call_id: str) -> None:
        self._calls.discard(call_id)

    async def serve(
        self, call: IncomingCall, *, draining: bool = False, overloaded: bool = False
    ) -> None:
        """Accept (or reject) a claimed call and serve it to its end."""
        call_log = log.bind(call_sid=call.call_id, sip_call_id=call.sip_call_id)
        try:
            full = len(self._calls) > self.max_calls
            if draining or overloaded or full:
                reason = "draining" if draining else "overloaded" if overloaded else "capacity"
                call_log.warning(
                    "openai_sip.rejected", reason=reason,
                    active=len(self._calls) - 1, max_calls=self.max_calls,
                )  # fmt: skip
                label = "overloaded" if reason == "overloaded" else "openai_sip_capacity"
                self.deps.metrics.rejected.labels(label).inc()
                await self.calls.reject(call.call_id, BUSY_STATUS)
                return
            await self._answer(call, call_log)
        finally:
            self.release(call.call_id)

    async def _answer(self, call: IncomingCall, call_log: Any) -> None:
        hub, deps = self.deps.agent_hub, self.deps
        agent = hub.pick(call.to_user) if hub is not None else None
        if hub is not None and agent is not None:
            call_agent = await hub.prepare(agent, call.call_id)
        else:
            call_agent = CallAgent("default", deps.session_config, deps.greeting, ToolPolicy())
        accepted = await self.calls.accept(
            call.call_id, accept_session(call_agent.session, self.model)
        )
        if accepted is not Outcome.DONE:
            # Gone: the caller hung up while it rang. Failed: OpenAI refused our session.
            level = "info" if accepted is Outcome.GONE else "error"
            call_log.log(_LEVELS[level], "openai_sip.not_accepted", outcome=accepted.value)
            return
        sideband = RealtimeTarget(
            provider=Provider.OPENAI,
            dialect=DIALECTS["openai"],
            api_key=self._api_key,
            model=self.model,
            url_override=self._api_base,
            azure_endpoint=None,
            call_id=call.call_id,
        )
        call_agent = dataclasses.replace(call_agent, target=sideband)
        new_call = NewCall(
            call_sid=call.call_id,
            stream_sid="",
            from_number=call.from_user,
            to_number=call.to_user,
            provider=Provider.OPENAI.value,
            model=self.model,
            started_at=datetime.now(UTC),
            channel=CHANNEL,
            agent=call_agent.name,
            sip_call_id=call.sip_call_id,
        )
        driver = OpenAiSipDriver(self.calls, call.call_id, call_log)
        call_log.info("openai_sip.accepted", agent=call_agent.name)
        deps.live_calls.add(call.call_id)
        try:
            session = CallSession(
                deps, driver, new_call, call_log, agent, call_agent=call_agent, media=False
            )
            await session.run(create_record=True)
        finally:
            deps.live_calls.discard(call.call_id)

    async def aclose(self) -> None:
        await self.calls.aclose()


_LEVELS = {"info": 20, "error": 40}

__all__ = ["OpenAiSipConnector", "OpenAiSipDriver"]
