"""Instance leases: a call whose bridge died is ended as ``unknown``; live ones never are.

Two stores over the same storage play two bridge instances (each its own ``Instance``).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from bridge.call.records import CallEvent, CallStatus, EndReason
from bridge.storage import CallStore, Instance, InstanceLease, SqlCallStore
from bridge.storage.leases import LeaseKeeper, dead_instances
from tests.storage.conftest import A, B, Backend, as_instance
from tests.storage.samples import T0, caller, new_call

LEASE = timedelta(seconds=30)


async def _status(store: CallStore, sid: str) -> tuple[CallStatus, EndReason | None]:
    record = await store.get_call(sid)
    assert record is not None
    return record.status, record.end_reason


async def test_lapsed_instance_calls_are_ended_unknown_at_their_last_sign_of_life(
    pair: tuple[SqlCallStore, SqlCallStore],
) -> None:
    a, b = pair
    await a.renew_lease(T0)
    await a.create_call(new_call("CA01", T0))
    await a.append_turn("CA01", caller(1, "hello", 200, 1500))
    await a.append_event("CA01", CallEvent("dtmf", 2100, {"digit": "4"}))
    await b.renew_lease(T0 + LEASE * 2)

    # Within the lease: a's call is left alone.
    assert await b.end_orphaned_calls(T0 + LEASE / 2, T0 + LEASE / 2 - LEASE) == []
    assert await _status(a, "CA01") == (CallStatus.IN_PROGRESS, None)

    now = T0 + LEASE * 2
    assert await b.end_orphaned_calls(now, now - LEASE) == ["CA01"]
    record = await b.get_call("CA01")
    assert record is not None
    assert (record.status, record.end_reason) == (CallStatus.FAILED, EndReason.UNKNOWN)
    # Ended at the last thing heard from it, not at the time of the sweep.
    assert record.ended_at == T0 + timedelta(milliseconds=2100)
    assert len(record.turns) == 1
    # Once ended it stays ended, and the stale lease is gone.
    assert await b.end_orphaned_calls(now, now - LEASE) == []
    assert [lease.instance for lease in await b.list_leases()] == [B]


async def test_live_calls_of_a_fresh_instance_and_own_calls_are_never_touched(
    pair: tuple[SqlCallStore, SqlCallStore],
) -> None:
    a, b = pair
    await a.renew_lease(T0)
    await b.renew_lease(T0)
    await a.create_call(new_call("CA01", T0))
    await b.create_call(new_call("CA02", T0))
    assert await b.end_orphaned_calls(T0, T0 - LEASE) == []
    # b's own call, even with b's lease lapsed from its own point of view.
    assert await b.end_orphaned_calls(T0 + LEASE * 9, T0 + LEASE * 8) == ["CA01"]
    assert await _status(b, "CA02") == (CallStatus.IN_PROGRESS, None)


async def test_a_dead_instance_is_swept_before_its_lease_lapses(
    pair: tuple[SqlCallStore, SqlCallStore],
) -> None:
    a, b = pair
    await a.renew_lease(T0)
    await a.create_call(new_call("CA01", T0))
    assert await b.end_orphaned_calls(T0, T0 - LEASE, frozenset({"instance-a"})) == ["CA01"]
    assert await _status(b, "CA01") == (CallStatus.FAILED, EndReason.UNKNOWN)


async def test_calls_without_any_lease_are_orphans(
    pair: tuple[SqlCallStore, SqlCallStore],
) -> None:
    a, b = pair
    # a never took a lease (a bridge that crashed at start-up, or a pre-lease database).
    await a.create_call(new_call("CA01", T0))
    assert await b.end_orphaned_calls(T0, T0 - LEASE) == ["CA01"]


async def test_finished_calls_keep_their_own_end(pair: tuple[SqlCallStore, SqlCallStore]) -> None:
    a, b = pair
    await a.create_call(new_call("CA01", T0))
    await a.finish_call("CA01", CallStatus.COMPLETED, EndReason.CALLER_HANGUP, T0 + LEASE)
    assert await b.end_orphaned_calls(T0 + LEASE * 9, T0 + LEASE * 8) == []
    assert await _status(b, "CA01") == (CallStatus.COMPLETED, EndReason.CALLER_HANGUP)


async def test_renew_and_release(pair: tuple[SqlCallStore, SqlCallStore]) -> None:
    a, b = pair
    await a.renew_lease(T0)
    await a.renew_lease(T0 + LEASE)
    await b.renew_lease(T0)
    leases = {lease.instance.instance_id: lease for lease in await b.list_leases()}
    assert leases["instance-a"].renewed_at == T0 + LEASE
    assert leases["instance-a"].instance == A
    await a.release_lease()
    assert [lease.instance for lease in await b.list_leases()] == [B]


# -- the keeper's judgement of which instances are dead -----------------------------------


def _lease(instance: Instance) -> InstanceLease:
    return InstanceLease(instance, T0)


def test_dead_instances_are_only_same_host_processes_that_are_gone() -> None:
    me = Instance("me", "host-1", 500)
    leases = [
        _lease(me),
        _lease(Instance("gone", "host-1", 111)),
        _lease(Instance("running", "host-1", 222)),
        _lease(Instance("my-earlier-life", "host-1", 500)),
        _lease(Instance("elsewhere", "host-2", 111)),
    ]
    alive = {222, 500}
    assert dead_instances(leases, me, lambda pid: pid in alive) == {"gone", "my-earlier-life"}


async def test_keeper_start_cleans_up_a_crashed_previous_life(backend: Backend) -> None:
    if not backend.durable:
        pytest.skip(f"{backend.name} cannot be shared by two stores")
    # The previous process on this host, same PID slot (a restarted container's PID 1).
    before = Instance("before", "host-1", 1)
    old = as_instance(backend, before)
    await old.open()
    await old.renew_lease(T0)
    await old.create_call(new_call("CA01", T0))
    await old.close()  # SIGKILL would not even get this far

    now = T0 + timedelta(seconds=1)  # well inside the old lease
    new = as_instance(backend, Instance("after", "host-1", 1))
    await new.open()
    try:
        keeper = LeaseKeeper(new, new.instance, lease_s=30, now=lambda: now)  # type: ignore[arg-type]
        assert await keeper.start() == ["CA01"]
        assert await _status(new, "CA01") == (CallStatus.FAILED, EndReason.UNKNOWN)
        await keeper.stop()
        assert await new.list_leases() == []
    finally:
        await new.close()
