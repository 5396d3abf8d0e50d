"""SIP server transactions (RFC 3261 §17.2, as amended by RFC 6026) and the client
transaction of the bridge's own requests (§17.1.2), sans-I/O.

A transaction holds what must be sent again, and when. It knows nothing of message syntax:
the transport layer matches a request to its transaction (top Via branch, sent-by, method),
tells it what happened, and writes out the bytes it hands back. Time comes in as ``now``;
after every call, ask :meth:`next_deadline` and call :meth:`handle_timeout` once it has
passed.

Over a reliable transport (TCP) nothing is retransmitted and the waiting states end at once,
as §17.2 says; the 2xx to an INVITE is the exception, which the UAS core must resend until
the ACK on any transport where the peer may not have seen it (§13.3.1.4). Here that duty is
folded into the INVITE transaction's Accepted state, so a call has one place that knows
whether its ACK came.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bridge.errors import LocalProtocolError

T1 = 0.5  # round-trip estimate
T2 = 4.0  # cap on the retransmission interval
T4 = 5.0  # longest a message may live in the network


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261's timer base values; tests shrink them."""

    t1: float = T1
    t2: float = T2
    t4: float = T4


class InviteState(enum.Enum):
    PROCEEDING = "proceeding"  # provisional responses only, so far
    ACCEPTED = "accepted"  # 2xx sent: resend it until the ACK (RFC 6026)
    COMPLETED = "completed"  # 3xx-6xx sent: resend it until the ACK
    CONFIRMED = "confirmed"  # the ACK for a 3xx-6xx came: absorb its retransmissions
    TERMINATED = "terminated"


class InviteOutcome(enum.Enum):
    """How an INVITE transaction ended, for the call to act on."""

    ACKED = "acked"  # the 2xx was acknowledged: the call is up
    NO_ACK = "no_ack"  # no ACK for the 2xx within 64·T1: end the call (send BYE)
    REJECTED = "rejected"  # a 3xx-6xx was sent (and acknowledged, or given up on)


class InviteServerTransaction:
    """One incoming INVITE. Call :meth:`respond` with each response's bytes, in order,
    feed it :meth:`receive_retransmission` and :meth:`receive_ack`, and write out whatever
    those and :meth:`handle_timeout` return. :attr:`outcome` is set once the call can act."""

    def __init__(self, now: float, *, reliable: bool = False, timers: Timers = Timers()) -> None:
        self.state = InviteState.PROCEEDING
        self.outcome: InviteOutcome | None = None
        self._reliable = reliable
        self._timers = timers
        self._last: bytes | None = None
        self._status = 0
        self._resend_at: float | None = None  # Timer G, or the 2xx resend timer
        self._interval = timers.t1
        self._give_up_at: float | None = None  # Timer H, or 64·T1 without an ACK for the 2xx
        self._end_at: float | None = None  # Timer I or Timer L

    @property
    def status(self) -> int:
        """The status code of the last response handed in; 0 before any."""
        return self._status

    def respond(self, status: int, data: bytes, now: float) -> list[bytes]:
        """Hand in a response to send; returns what to write now (the response itself)."""
        if not 100 <= status <= 699:
            raise LocalProtocolError(f"status {status} is not a SIP status code")
        if self.state is not InviteState.PROCEEDING:
            raise LocalProtocolError(f"respond() in state {self.state.name}")
        self._last, self._status = data, status
        if status < 200:
            return [data]
        wait = 64 * self._timers.t1
        if 200 <= status < 300:
            # The 2xx is resent until the ACK, on any transport: a proxy may have lost it.
            self.state = InviteState.ACCEPTED
            self._resend_at = now + self._timers.t1
            self._give_up_at = now + wait
            self._end_at = now + wait  # Timer L: absorb INVITE retransmissions meanwhile
        else:
            self.state = InviteState.COMPLETED
            self._resend_at = None if self._reliable else now + self._timers.t1
            self._give_up_at = now + wait  # Timer H
        self._interval = self._timers.t1
        return [data]

    def receive_retransmission(self, now: float) -> list[bytes]:
        """The same INVITE came again: the peer missed our last response; resend it."""
        if self.state in (InviteState.PROCEEDING, InviteState.ACCEPTED, InviteState.COMPLETED):
            return [self._last] if self._last is not None else []
        return []  # CONFIRMED, TERMINATED: absorbed

    def receive_ack(self, now: float) -> None:
        """The ACK for our final response (a 2xx's ACK is matched by dialog, a non-2xx's by
        this transaction's branch: the caller knows which it has)."""
        if self.state is InviteState.ACCEPTED:
            if self.outcome is None:
                self.outcome = InviteOutcome.ACKED
            self._resend_at = self._give_up_at = None  # Timer L still absorbs retransmissions
        elif self.state is InviteState.COMPLETED:
            self.state = InviteState.CONFIRMED
            self.outcome = InviteOutcome.REJECTED
            self._resend_at = self._give_up_at = None
            self._end_at = now + (0.0 if self._reliable else self._timers.t4)  # Timer I
            if self._reliable:
                self.state = InviteState.TERMINATED

    def next_deadline(self) -> float | None:
        """When :meth:`handle_timeout` must next run, or None when nothing is pending."""
        pending = [t for t in (self._resend_at, self._give_up_at, self._end_at) if t is not None]
        return min(pending) if pending else None

    def handle_timeout(self, now: float) -> list[bytes]:
        """Run the timers due at ``now``; returns what to write."""
        out: list[bytes] = []
        if self._give_up_at is not None and now >= self._give_up_at:
            self._resend_at = self._give_up_at = None
            if self.state is InviteState.ACCEPTED:
                self.outcome = InviteOutcome.NO_ACK
            elif self.state is InviteState.COMPLETED:
                self.outcome = InviteOutcome.REJECTED
                self.state = InviteState.TERMINATED
                self._end_at = None
        if self._resend_at is not None and now >= self._resend_at and self._last is not None:
            out.append(self._last)
            self._interval = min(self._interval * 2, self._timers.t2)
            self._resend_at = now + self._interval
        if self._end_at is not None and now >= self._end_at:
            self._end_at = None
            if self.state in (InviteState.ACCEPTED, InviteState.CONFIRMED):
                self.state = InviteState.TERMINATED
        return out

    @property
    def terminated(self) -> bool:
        """The transaction can be forgotten."""
        return self.state is InviteState.TERMINATED


class NonInviteState(enum.Enum):
    TRYING = "trying"
    PROCEEDING = "proceeding"
    COMPLETED = "completed"
    TERMINATED = "terminated"


class NonInviteServerTransaction:
    """One incoming BYE, OPTIONS, CANCEL, INFO, … Call :meth:`respond` with the response's
    bytes; a retransmitted request gets the cached response again until Timer J, so a BYE
    resent after its 200 is answered 200 rather than 481."""

    def __init__(self, now: float, *, reliable: bool = False, timers: Timers = Timers()) -> None:
        self.state = NonInviteState.TRYING
        self._reliable = reliable
        self._timers = timers
        self._last: bytes | None = None
        self._end_at: float | None = None

    def respond(self, status: int, data: bytes, now: float) -> list[bytes]:
        """Hand in a response to send; returns what to write now."""
        if not 100 <= status <= 699:
            raise LocalProtocolError(f"status {status} is not a SIP status code")
        if self.state in (NonInviteState.COMPLETED, NonInviteState.TERMINATED):
            raise LocalProtocolError(f"respond() in state {self.state.name}")
        self._last = data
        if status < 200:
            self.state = NonInviteState.PROCEEDING
        elif self._reliable:
            self.state = NonInviteState.TERMINATED
        else:
            self.state = NonInviteState.COMPLETED
            self._end_at = now + 64 * self._timers.t1  # Timer J
        return [data]

    def receive_retransmission(self, now: float) -> list[bytes]:
        """The same request came again: resend the last response, if any."""
        if self.state in (NonInviteState.PROCEEDING, NonInviteState.COMPLETED):
            return [self._last] if self._last is not None else []
        return []

    def next_deadline(self) -> float | None:
        return self._end_at

    def handle_timeout(self, now: float) -> list[bytes]:
        if self._end_at is not None and now >= self._end_at:
            self._end_at = None
            self.state = NonInviteState.TERMINATED
        return []

    @property
    def terminated(self) -> bool:
        return self.state is NonInviteState.TERMINATED


class NonInviteClientTransaction:
    """A request of the bridge's own (a BYE): resent T1, 2·T1 … up to T2 until a final
    response, for at most 64·T1 (RFC 3261 §17.1.2, Timers E and F); over TCP sent once.
    Set :attr:`done` when the final response comes."""

    def __init__(
        self,
        branch: str,
        data: bytes,
        to: tuple[str, int],
        now: float,
        reliable: bool,
        timers: Timers,
    ) -> None:
        self.branch = branch
        self.data = data
        self.to = to
        self.done = False
        self._timers = timers
        self._interval = timers.t1
        self._give_up = now + 64 * timers.t1
        self.resend_at: float | None = None if reliable else now + timers.t1

    def handle_timeout(self, now: float, out: list[tuple[bytes, tuple[str, int]]]) -> None:
        if self.done or now >= self._give_up:
            self.done = True
            return
        if self.resend_at is not None and now >= self.resend_at:
            out.append((self.data, self.to))
            self._interval = min(self._interval * 2, self._timers.t2)
            self.resend_at = now + self._interval
