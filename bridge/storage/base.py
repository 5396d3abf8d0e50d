"""The call store's interface and the values it hands back.

A ``CallStore`` keeps what every call leaves behind: one row per call, its finished turns and
its events. The call session writes to it as the call goes (``create_call`` when the stream
starts, ``append_turn`` when a turn finishes, ``finish_call`` once at the end) and the review
API, pages and ``bridge calls`` read from it. Every backend passes the one contract suite in
``tests/storage/``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bridge.call.records import CallEvent, CallStatus, EndReason, Turn
from bridge.errors import BridgeError, LocalProtocolError


class StoreUnavailableError(BridgeError):
    """The store could not do the work: the file cannot be opened, the disk is full, the
    database stayed locked, the server went away. The caller logs it and carries on: a call
    keeps going even when its transcript cannot be written."""


class RefusedValueError(LocalProtocolError):
    """The database refused a value for good: too long for its column, out of its range, or
    not valid in its encoding. Waiting changes nothing, so it is not an outage; and a value
    the database cannot hold is in none of its rows."""


class UnknownCallError(LocalProtocolError):
    """A turn or event was written for a call the store has never seen.

    The session must ``create_call`` before it writes anything else for that call.
    """


def require_aware(value: datetime, name: str) -> datetime:
    """Return ``value`` in UTC; raise ``ValueError`` for a naive datetime.

    A naive time would be read as the machine's local time by some code and as UTC by
    other code, so the store refuses it rather than guessing.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime")
    return value.astimezone(UTC)


def format_timestamp(value: datetime) -> str:
    """``2026-11-21T10:00:00.000Z``: UTC, milliseconds, the form every JSON answer uses."""
    utc = require_aware(value, "timestamp")
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + f".{utc.microsecond // 1000:03d}Z"


_MILLISECOND = timedelta(milliseconds=1)


def _duration_ms(started_at: datetime, ended_at: datetime | None) -> int | None:
    if ended_at is None:
        return None
    return (ended_at - started_at) // _MILLISECOND


@dataclass(frozen=True, slots=True)
class NewCall:
    """What is known about a call when its media stream starts. ``started_at`` is UTC-aware."""

    call_sid: str
    stream_sid: str
    from_number: str
    to_number: str
    provider: str
    model: str
    started_at: datetime
    channel: str = "twilio"  # twilio, sip or openai-sip: the kind of phone leg
    agent: str = "default"
    sip_call_id: str | None = None


@dataclass(frozen=True, slots=True)
class CallFilter:
    """What the call list is narrowed to; a field left ``None`` matches every call.

    ``number`` matches part of the caller's or the called number; when it holds digits only
    its digits count, so ``(555) 123`` finds ``+15551230000``. ``text`` matches part of any
    turn's text, heard or unheard, ignoring case. ``started_from`` is inclusive and
    ``started_until`` exclusive (both UTC-aware).
    """

    number: str | None = None
    text: str | None = None
    started_from: datetime | None = None
    started_until: datetime | None = None
    status: CallStatus | None = None


@dataclass(frozen=True, slots=True)
class Instance:
    """One running bridge process, as the lease table knows it."""

    instance_id: str
    host: str
    pid: int


@dataclass(frozen=True, slots=True)
class InstanceLease:
    """An instance's row in the lease table: who it is and when it last renewed."""

    instance: Instance
    renewed_at: datetime


@dataclass(frozen=True, slots=True)
class CallSummary:
    """One line of the call log: a call without its turns and events."""

    call_sid: str
    stream_sid: str
    from_number: str
    to_number: str
    provider: str
    model: str
    started_at: datetime
    ended_at: datetime | None
    status: CallStatus
    end_reason: EndReason | None
    turn_count: int
    channel: str = "twilio"
    agent: str = "default"
    sip_call_id: str | None = None

    @property
    def duration_ms(self) -> int | None:
        """Milliseconds from start to end; ``None`` while the call is live."""
        return _duration_ms(self.started_at, self.ended_at)

    def to_json(self) -> dict[str, Any]:
        """The CONTRACT.md call shape without ``turns``/``events``, plus ``duration_ms`` and
        ``turn_count``."""
        return {
            **_header_json(self),
            "duration_ms": self.duration_ms,
            "turn_count": self.turn_count,
        }


@dataclass(frozen=True, slots=True)
class CallRecord:
    """A whole call: the summary fields, the turns ordered by ``seq`` and the events ordered
    by ``at_ms`` (then by the order they were written)."""

    call_sid: str
    stream_sid: str
    from_number: str
    to_number: str
    provider: str
    model: str
    started_at: datetime
    ended_at: datetime | None
    status: CallStatus
    end_reason: EndReason | None
    turns: list[Turn]
    events: list[CallEvent]
    channel: str = "twilio"
    agent: str = "default"
    sip_call_id: str | None = None

    @property
    def duration_ms(self) -> int | None:
        """Milliseconds from start to end; ``None`` while the call is live."""
        return _duration_ms(self.started_at, self.ended_at)

    @property
    def summary(self) -> CallSummary:
        return CallSummary(
            call_sid=self.call_sid,
            stream_sid=self.stream_sid,
            from_number=self.from_number,
            to_number=self.to_number,
            provider=self.provider,
            model=self.model,
            started_at=self.started_at,
            ended_at=self.ended_at,
            status=self.status,
            end_reason=self.end_reason,
            turn_count=len(self.turns),
            channel=self.channel,
            agent=self.agent,
            sip_call_id=self.sip_call_id,
        )

    @property
    def providers(self) -> list[str]:
        """The providers that served the call, in order: ``provider``, then each one the
        call moved to (its ``provider_fallback`` events). A provider that failed before it
        said a word is left out."""
        served = [self.provider]
        for event in self.events:
            if event.type != "provider_fallback":
                continue
            if not event.data.get("from_served", True) and served == [event.data.get("from")]:
                served = []
            served.append(str(event.data.get("to")))
        return served

    def to_json(self) -> dict[str, Any]:
        """Exactly the call record of CONTRACT.md (``GET /api/calls/{call_sid}``), and
        ``providers`` (which served it, in order)."""
        return {
            **_header_json(self),
            "providers": self.providers,
            "turns": [turn.to_json() for turn in self.turns],
            "events": [event.to_json() for event in self.events],
        }


def _header_json(call: CallSummary | CallRecord) -> dict[str, Any]:
    # Key order follows CONTRACT.md so that the JSON reads the same as the documentation.
    # CONTRACT.md's "Channels" section adds channel and agent (and a SIP call's Call-ID).
    sip = {} if call.sip_call_id is None else {"sip_call_id": call.sip_call_id}
    return {
        "call_sid": call.call_sid,
        "stream_sid": call.stream_sid,
        "from": call.from_number,
        "to": call.to_number,
        "provider": call.provider,
        "model": call.model,
        "started_at": format_timestamp(call.started_at),
        "ended_at": None if call.ended_at is None else format_timestamp(call.ended_at),
        "status": call.status.value,
        "end_reason": None if call.end_reason is None else call.end_reason.value,
        "channel": call.channel,
        **sip,
        "agent": call.agent,
    }


class CallStore(Protocol):
    """Where calls are kept. Await ``open()`` before anything else and ``close()`` at the end.

    Every write is committed by the time its method returns, so a crash loses at most the
    turn still in progress. Methods may be awaited concurrently from many calls.
    """

    async def open(self) -> None:
        """Connect and create the schema if needed. Call once, before any other method."""

    async def close(self) -> None:
        """Finish pending work and release the connection. Safe to call twice."""

    async def ping(self) -> bool:
        """``True`` when the store answers a trivial query (for ``/readyz``); never raises."""

    async def create_call(self, call: NewCall) -> None:
        """Record a call as ``in_progress``. A second create for the same sid is a no-op."""

    async def claim_call(self, call: NewCall) -> bool:
        """Create the call for this store's instance and the stream ``call.stream_sid``, as
        ``create_call`` does; False when the call already exists for another stream or another
        instance. Twilio opens one stream per call, so a second is a replay: refuse it. A
        repeated claim of the same stream by the same instance (a retry) is True."""

    async def append_turn(self, call_sid: str, turn: Turn) -> None:
        """Write a finished turn. Writing the same ``seq`` again replaces it (an agent turn
        later cut by barge-in). Raises ``UnknownCallError`` if the call was never created."""

    async def append_event(self, call_sid: str, event: CallEvent) -> None:
        """Write an event. Raises ``UnknownCallError`` if the call was never created."""

    async def finish_call(
        self, call_sid: str, status: CallStatus, end_reason: EndReason, ended_at: datetime
    ) -> None:
        """End an ``in_progress`` call. Only the first finish counts; later ones, and a finish
        for a call never created (a status callback for a call whose stream never started),
        are no-ops."""

    async def finish_unowned_call(
        self,
        call_sid: str,
        status: CallStatus,
        end_reason: EndReason,
        ended_at: datetime,
        lapsed_before: datetime,
    ) -> bool:
        """``finish_call``, unless another instance whose lease was renewed at or after
        ``lapsed_before`` serves the call: then nothing is written and the answer is False
        (its own session will say how the call ended). This store's own calls count as
        unowned: the caller knows which of them still have a live session."""

    async def get_call(self, call_sid: str) -> CallRecord | None:
        """The whole call, or ``None`` if there is no such call."""

    async def list_calls(
        self,
        limit: int = 50,
        before: datetime | None = None,
        filters: CallFilter | None = None,
    ) -> list[CallSummary]:
        """Up to ``limit`` calls matching ``filters``, newest first by ``started_at``; with
        ``before``, only calls started strictly before it (pass the last row's
        ``started_at`` for the next page)."""

    async def purge_calls(self, started_before: datetime) -> list[str]:
        """Delete finished calls started before ``started_before``, with their turns and
        events; return their SIDs (so their recordings can go too). Live calls are kept."""

    async def renew_lease(self, now: datetime) -> None:
        """Record that this store's instance is alive at ``now``. Calls it creates carry its
        ``instance_id``; an instance that stops renewing has its live calls ended."""

    async def list_leases(self) -> list[InstanceLease]:
        """Every instance that holds a lease, live or lapsed."""

    async def end_orphaned_calls(
        self, now: datetime, lapsed_before: datetime, dead: frozenset[str] = frozenset()
    ) -> list[str]:
        """End as ``failed``/``unknown`` (at ``now``) the live calls of other instances whose
        lease was last renewed before ``lapsed_before``, that are in ``dead``, or that hold
        no lease at all. Never touches this store's own calls. Returns the SIDs ended."""

    async def release_lease(self) -> None:
        """Drop this instance's lease at a clean shutdown, once its calls have finished."""
