"""The kept replies of a SIP listener and their timers, in deadline order: what is resent
when, what is forgotten when, and deadlines that move."""

from __future__ import annotations

from bridge.protocols.sip.server_transactions import (
    InviteReply,
    NonInviteReply,
    ServerTransactions,
    TxKey,
)
from bridge.protocols.sip.transaction import T1, T4, Timers

PEER = ("192.0.2.7", 5060)


def _kept_reply(table: ServerTransactions, name: str, now: float, reliable: bool = False) -> None:
    tx = NonInviteReply(now, reliable, Timers(), PEER)
    tx.respond(200, name.encode(), now)
    table.add((name, "192.0.2.7:5060", "OPTIONS"), tx)


def test_replies_are_forgotten_in_deadline_order_at_timer_j() -> None:
    table = ServerTransactions()
    for n, at in enumerate([3.0, 1.0, 2.0]):
        _kept_reply(table, f"b{n}", at)
    assert table.next_deadline() == 1.0 + 64 * T1
    out: list[tuple[bytes, tuple[str, int]]] = []
    table.run_due(2.0 + 64 * T1, out)
    assert out == [] and len(table) == 1
    assert table.get(("b0", "192.0.2.7:5060", "OPTIONS")) is not None
    assert table.next_deadline() == 3.0 + 64 * T1


def _kept_invite_reply(
    table: ServerTransactions, branch: str, status: int
) -> tuple[TxKey, InviteReply]:
    key = (branch, "192.0.2.7:5060", "INVITE")
    tx = InviteReply(0.0, False, Timers(), PEER)
    tx.respond(status, str(status).encode(), 0.0)
    table.add(key, tx)
    return key, tx


def test_a_refused_invite_is_resent_until_its_ack_then_absorbs_for_timer_i() -> None:
    table = ServerTransactions()
    key, tx = _kept_invite_reply(table, "z9hG4bK-1", 403)
    out: list[tuple[bytes, tuple[str, int]]] = []
    table.run_due(T1, out)  # Timer G
    assert out == [(b"403", PEER)] and table.next_deadline() == 3 * T1
    tx.receive_ack(0.7)
    table.reschedule(key)
    # The resend planned at 3·T1 is superseded: Timer I is all that is left.
    assert table.next_deadline() == 0.7 + T4
    table.run_due(3 * T1, out)
    assert len(out) == 1
    table.run_due(0.7 + T4, out)
    assert len(table) == 0 and table.next_deadline() is None


def test_a_deadline_that_moved_later_is_found_when_the_old_one_comes_up() -> None:
    table = ServerTransactions()
    _, tx = _kept_invite_reply(table, "z9hG4bK-2", 200)
    tx.receive_ack(0.1)  # not rescheduled: Timer L at 64·T1 is all that is left
    out: list[tuple[bytes, tuple[str, int]]] = []
    table.run_due(T1, out)  # the old resend deadline comes up and finds nothing to do
    assert out == [] and table.next_deadline() == 64 * T1
    table.run_due(64 * T1, out)
    assert out == [] and len(table) == 0


def test_over_tcp_a_non_invite_reply_is_not_kept_at_all() -> None:
    table = ServerTransactions()
    _kept_reply(table, "b1", 0.0, reliable=True)
    assert len(table) == 0 and table.next_deadline() is None
