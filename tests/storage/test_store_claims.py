"""One stream per call across instances, and status callbacks that leave a live session's
call to that session. Two stores over the same storage play two bridge instances."""

from __future__ import annotations

from datetime import timedelta

from bridge.call.records import CallStatus, EndReason
from bridge.storage import CallStore, SqlCallStore
from tests.storage.samples import T0, new_call
from tests.storage.test_store_leases import LEASE, _status


async def test_a_call_is_claimed_by_its_first_stream_only(
    pair: tuple[SqlCallStore, SqlCallStore],
) -> None:
    a, b = pair
    assert await a.claim_call(new_call("CA01"))
    record = await a.get_call("CA01")
    assert record is not None and record.status is CallStatus.IN_PROGRESS
    # A replayed webhook's second stream, on this instance or another, finds the call taken.
    assert not await a.claim_call(new_call("CA01", stream_sid="MZreplayed"))
    assert not await b.claim_call(new_call("CA01", stream_sid="MZreplayed"))
    # Even with the same stream SID, another instance cannot take it over.
    assert not await b.claim_call(new_call("CA01"))
    # A retry of the very claim that landed (its answer was lost) is still ours.
    assert await a.claim_call(new_call("CA01"))


async def test_a_call_made_by_create_cannot_be_claimed_again(store: CallStore) -> None:
    await store.create_call(new_call("CA02"))
    assert not await store.claim_call(new_call("CA02", stream_sid="MZother"))


async def test_a_status_callback_leaves_a_call_live_elsewhere_to_its_session(
    pair: tuple[SqlCallStore, SqlCallStore],
) -> None:
    a, b = pair
    await a.renew_lease(T0)
    await b.renew_lease(T0)
    assert await a.claim_call(new_call("CA03"))
    done = CallStatus.COMPLETED, EndReason.CALLER_HANGUP
    # b gets Twilio's callback while a's lease is fresh: a's session decides.
    assert not await b.finish_unowned_call("CA03", *done, T0 + LEASE / 2, T0 - LEASE / 2)
    assert await _status(a, "CA03") == (CallStatus.IN_PROGRESS, None)
    # a's session writes what really happened; a late callback changes nothing.
    await a.finish_call("CA03", CallStatus.FAILED, EndReason.PROVIDER_ERROR, T0 + LEASE / 2)
    assert await b.finish_unowned_call("CA03", *done, T0 + LEASE, T0 - LEASE / 2)
    assert await _status(a, "CA03") == (CallStatus.FAILED, EndReason.PROVIDER_ERROR)


async def test_a_status_callback_finishes_calls_nobody_live_serves(
    pair: tuple[SqlCallStore, SqlCallStore],
) -> None:
    a, b = pair
    await a.renew_lease(T0)
    await b.renew_lease(T0 + LEASE * 2)
    for sid in ("CA04", "CA05"):
        assert await a.claim_call(new_call(sid))
    done = CallStatus.COMPLETED, EndReason.CALLER_HANGUP
    # a's lease has lapsed by the time b hears of CA04.
    later = T0 + LEASE * 2
    assert await b.finish_unowned_call("CA04", *done, later, later - LEASE)
    assert await _status(a, "CA04") == done
    # On its own instance a call without a live session (the caller checks) is finished.
    assert await a.finish_unowned_call("CA05", *done, T0, T0 - LEASE)
    assert await _status(a, "CA05") == done
    # An unknown call is nothing to do, not someone else's.
    assert await a.finish_unowned_call("CAnever", *done, T0, T0 - LEASE)


async def test_unowned_finish_of_an_unleased_call(store: CallStore) -> None:
    await store.create_call(new_call("CA06"))
    done = CallStatus.COMPLETED, EndReason.CALLER_HANGUP
    assert await store.finish_unowned_call("CA06", *done, T0, T0 - timedelta(seconds=30))
    assert await _status(store, "CA06") == done
