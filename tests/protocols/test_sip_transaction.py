"""SIP server transactions with a hand-driven clock: what is resent, when, and how each ends
(RFC 3261 §17.2 as amended by RFC 6026, values from the reference's timer table)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.errors import LocalProtocolError
from bridge.protocols.sip.transaction import (
    InviteOutcome,
    InviteServerTransaction,
    InviteState,
    NonInviteServerTransaction,
    NonInviteState,
)

RINGING, OK, BUSY = b"SIP/2.0 180 Ringing", b"SIP/2.0 200 OK", b"SIP/2.0 486 Busy Here"


def _run(tx: InviteServerTransaction | NonInviteServerTransaction, until: float) -> list[float]:
    """Drive the timers to ``until``; the times at which something was written."""
    sent: list[float] = []
    while (deadline := tx.next_deadline()) is not None and deadline <= until:
        if tx.handle_timeout(deadline):
            sent.append(round(deadline, 3))
    return sent


def test_a_2xx_is_resent_doubling_to_t2_until_the_ack() -> None:
    tx = InviteServerTransaction(0.0)
    assert tx.respond(180, RINGING, 0.0) == [RINGING]
    assert tx.respond(200, OK, 0.1) == [OK]
    assert tx.state is InviteState.ACCEPTED
    # T1 = 0.5: resent at +0.5, +1.5, +3.5, +7.5, then every T2 = 4 s.
    assert _run(tx, 12.0) == [0.6, 1.6, 3.6, 7.6, 11.6]
    tx.receive_ack(12.0)
    assert tx.outcome is InviteOutcome.ACKED
    assert _run(tx, 20.0) == []  # nothing more is resent
    # A late retransmitted INVITE is absorbed quietly until Timer L ends the transaction.
    assert tx.receive_retransmission(20.0) == [OK]
    _run(tx, 40.0)
    assert tx.terminated


def test_a_2xx_never_acknowledged_ends_the_call_after_64_t1() -> None:
    tx = InviteServerTransaction(0.0)
    tx.respond(200, OK, 0.0)
    sent = _run(tx, 100.0)
    assert tx.outcome is InviteOutcome.NO_ACK and tx.terminated
    assert sent[-1] < 32.0 and len(sent) == 10  # 0.5 1.5 3.5 7.5 11.5 … 31.5


def test_a_2xx_is_resent_even_over_tcp() -> None:
    tx = InviteServerTransaction(0.0, reliable=True)
    tx.respond(200, OK, 0.0)
    assert _run(tx, 2.0) == [0.5, 1.5]


def test_a_retransmitted_invite_gets_the_last_response_again() -> None:
    tx = InviteServerTransaction(0.0)
    assert tx.receive_retransmission(0.1) == []  # nothing sent yet
    tx.respond(100, b"SIP/2.0 100 Trying", 0.0)
    tx.respond(180, RINGING, 0.2)
    assert tx.receive_retransmission(0.3) == [RINGING]


def test_a_rejection_is_resent_until_acked_then_lingers_for_t4() -> None:
    tx = InviteServerTransaction(0.0)
    tx.respond(486, BUSY, 0.0)
    assert tx.state is InviteState.COMPLETED
    assert _run(tx, 2.0) == [0.5, 1.5]
    tx.receive_ack(2.0)
    assert tx.state is InviteState.CONFIRMED and tx.outcome is InviteOutcome.REJECTED
    assert tx.receive_retransmission(3.0) == []  # absorbed
    assert _run(tx, 6.0) == [] and not tx.terminated
    _run(tx, 7.1)
    assert tx.terminated


def test_a_rejection_never_acked_gives_up_at_timer_h() -> None:
    tx = InviteServerTransaction(0.0)
    tx.respond(488, b"SIP/2.0 488 Not Acceptable Here", 0.0)
    _run(tx, 40.0)
    assert tx.terminated and tx.outcome is InviteOutcome.REJECTED


def test_over_tcp_a_rejection_is_not_resent_and_ends_at_its_ack() -> None:
    tx = InviteServerTransaction(0.0, reliable=True)
    tx.respond(603, b"SIP/2.0 603 Decline", 0.0)
    assert _run(tx, 2.0) == []
    tx.receive_ack(2.0)
    assert tx.terminated


def test_misuse_is_a_local_error() -> None:
    tx = InviteServerTransaction(0.0)
    with pytest.raises(LocalProtocolError):
        tx.respond(99, b"x", 0.0)
    tx.respond(200, OK, 0.0)
    with pytest.raises(LocalProtocolError):
        tx.respond(200, OK, 0.1)


def test_a_non_invite_keeps_its_response_for_timer_j() -> None:
    tx = NonInviteServerTransaction(0.0)
    assert tx.receive_retransmission(0.0) == []
    assert tx.respond(200, OK, 0.0) == [OK]
    assert tx.state is NonInviteState.COMPLETED
    # A BYE resent after its 200 gets the 200 again, not a 481.
    assert tx.receive_retransmission(10.0) == [OK]
    _run(tx, 31.9)
    assert not tx.terminated
    _run(tx, 32.1)
    assert tx.terminated and tx.receive_retransmission(33.0) == []


def test_a_non_invite_over_tcp_ends_with_its_response() -> None:
    tx = NonInviteServerTransaction(0.0, reliable=True)
    tx.respond(200, OK, 0.0)
    assert tx.terminated


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["respond", "retransmit", "ack", "tick"]),
            st.sampled_from([100, 180, 200, 486]),
            st.floats(min_value=0.0, max_value=5.0),
        ),
        max_size=30,
    ),
    st.booleans(),
)
def test_any_sequence_of_events_keeps_the_invite_transaction_sane(
    steps: list[tuple[str, int, float]], reliable: bool
) -> None:
    tx = InviteServerTransaction(0.0, reliable=reliable)
    now = 0.0
    for action, status, step in steps:
        now += step
        if action == "respond":
            try:
                tx.respond(status, b"r%d" % status, now)
            except LocalProtocolError:
                assert tx.state is not InviteState.PROCEEDING
        elif action == "retransmit":
            assert len(tx.receive_retransmission(now)) <= 1
        elif action == "ack":
            tx.receive_ack(now)
        else:
            tx.handle_timeout(now)
            # Whatever was overdue has run: nothing is left in the past.
            deadline = tx.next_deadline()
            assert deadline is None or deadline > now
    # Whatever happened, the transaction ends by itself within 64·T1 + T4 of the last event.
    _run(tx, now + 40.0)
    assert tx.terminated or tx.state is InviteState.PROCEEDING
