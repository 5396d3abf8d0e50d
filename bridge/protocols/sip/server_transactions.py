"""The server transactions of a SIP listener's replies, each with where its response goes,
and their timers in deadline order.

Every final response the bridge keeps lives here for up to 64·T1 (32 s) so that a
retransmitted request gets the same answer. Anyone on the network can make the bridge hold
thousands of them, so nothing here walks them all: the soonest deadline is the top of a heap,
and a timer run touches only the transactions that are due. (Walking them all after every
datagram cost 6 ms a datagram at 60,000 held, which stalled every call on the event loop.)
"""

from __future__ import annotations

import heapq
import itertools
from typing import TypeAlias

from bridge.protocols.sip.message import SipRequest
from bridge.protocols.sip.transaction import (
    InviteServerTransaction,
    NonInviteServerTransaction,
    Timers,
)

__all__ = ["InviteReply", "NonInviteReply", "ServerTransactions", "ServerTx", "TxKey", "tx_key"]

Address = tuple[str, int]
TxKey = tuple[str, str, str]


class InviteReply(InviteServerTransaction):
    """An INVITE answered outside any call (refused), or a re-INVITE's answer."""

    def __init__(self, now: float, reliable: bool, timers: Timers, destination: Address) -> None:
        super().__init__(now, reliable=reliable, timers=timers)
        self.destination = destination


class NonInviteReply(NonInviteServerTransaction):
    def __init__(self, now: float, reliable: bool, timers: Timers, destination: Address) -> None:
        super().__init__(now, reliable=reliable, timers=timers)
        self.destination = destination


ServerTx: TypeAlias = InviteReply | NonInviteReply


def tx_key(request: SipRequest, method: str) -> TxKey:
    """What matches a request to its server transaction (RFC 3261 §17.2.3)."""
    via = request.top_via
    return via.branch or "", f"{via.host}:{via.port}", method


class ServerTransactions:
    """Transactions by key, with their deadlines in a heap.

    A heap entry is current only while it holds the deadline last scheduled for its key;
    the others are skipped when they come up. A deadline that moved later leaves an earlier
    entry behind: it comes up early, finds nothing due and schedules the real one. Call
    :meth:`reschedule` after anything that may move a transaction's deadline earlier.
    """

    def __init__(self) -> None:
        self._by_key: dict[TxKey, ServerTx] = {}
        self._due: dict[TxKey, float] = {}  # the deadline scheduled for each key
        self._heap: list[tuple[float, int, TxKey]] = []
        self._order = itertools.count()  # ties never compare keys

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, key: TxKey) -> ServerTx | None:
        return self._by_key.get(key)

    def add(self, key: TxKey, tx: ServerTx) -> None:
        """Keep ``tx`` (already responded to) until it terminates (over TCP, most never
        start: nothing is retransmitted there)."""
        self._by_key[key] = tx
        self.reschedule(key)

    def reschedule(self, key: TxKey) -> None:
        tx = self._by_key.get(key)
        if tx is not None and tx.terminated:
            del self._by_key[key]
            tx = None
        due = None if tx is None else tx.next_deadline()
        if due is None:
            self._due.pop(key, None)
        elif self._due.get(key) != due:
            self._due[key] = due
            heapq.heappush(self._heap, (due, next(self._order), key))

    def next_deadline(self) -> float | None:
        heap, due = self._heap, self._due
        while heap and due.get(heap[0][2]) != heap[0][0]:
            heapq.heappop(heap)  # superseded
        return heap[0][0] if heap else None

    def run_due(self, now: float, out: list[tuple[bytes, Address]]) -> None:
        """Run the timers due at ``now``, appending what to send; forget what terminated."""
        heap, due = self._heap, self._due
        while heap and heap[0][0] <= now:
            deadline, _, key = heapq.heappop(heap)
            if due.get(key) != deadline:
                continue  # superseded
            del due[key]
            tx = self._by_key[key]
            for data in tx.handle_timeout(now):
                out.append((data, tx.destination))
            self.reschedule(key)
