"""Several bridges behind one load balancer share one PostgreSQL database.

Each sees the calls the others served, and when one dies its calls are ended by the others
without any live call elsewhere being touched.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from bridge.codecs.clips import load_clip
from bridge.devtools.simulator import simulate_call

from .conftest import AUTH_TOKEN, REVIEW_TOKEN, RunningBridge
from .test_crash_recovery import abandon, get_call, start_call, wait_for

StartBridge = Callable[[dict[str, str]], RunningBridge]
HEADERS = {"Authorization": f"Bearer {REVIEW_TOKEN}"}


async def listed(bridge: RunningBridge) -> list[str]:
    async with httpx.AsyncClient(base_url=bridge.url, headers=HEADERS, timeout=5) as http:
        answer = await http.get("/api/calls")
    answer.raise_for_status()
    return [call["call_sid"] for call in answer.json()["calls"]]


async def one_exchange(bridge: RunningBridge, call_sid: str) -> Any:
    return await simulate_call(
        bridge.url,
        auth_token=AUTH_TOKEN,
        review_token=REVIEW_TOKEN,
        caller_utterances=[load_clip("caller_1")],
        call_sid=call_sid,
        max_duration_s=30,
    )


async def test_two_bridges_on_one_postgres_list_each_others_calls(
    bridge_factory: StartBridge, pg_database: str
) -> None:
    env = {"BRIDGE_DATABASE_URL": pg_database}
    a, b = bridge_factory(env), bridge_factory(env)
    sid_a, sid_b = "CA" + uuid.uuid4().hex, "CA" + uuid.uuid4().hex
    results = await asyncio.gather(one_exchange(a, sid_a), one_exchange(b, sid_b))
    assert all(result.call_sid for result in results)

    for bridge in (a, b):
        assert sorted(await listed(bridge)) == sorted([sid_a, sid_b])
        for sid in (sid_a, sid_b):
            record = await get_call(bridge, sid)
            assert record is not None and record["status"] == "completed"
            assert [t["role"] for t in record["turns"][:2]] == ["agent", "caller"]


async def test_a_dead_bridges_call_is_ended_by_the_survivor_and_live_calls_are_kept(
    bridge_factory: StartBridge, pg_database: str
) -> None:
    env = {"BRIDGE_DATABASE_URL": pg_database, "BRIDGE_LEASE_S": "3"}
    doomed, survivor = bridge_factory(env), bridge_factory(env)
    sid_dead, sid_live = "CA" + uuid.uuid4().hex, "CA" + uuid.uuid4().hex
    dead_call = start_call(doomed, sid_dead)
    live_call = start_call(survivor, sid_live)
    try:

        async def both_live() -> bool:
            records = [await get_call(survivor, sid) for sid in (sid_dead, sid_live)]
            return all(r is not None and len(r["turns"]) >= 1 for r in records)

        await wait_for(both_live, "both calls to be under way")
        doomed.process.send_signal(signal.SIGKILL)
        doomed.process.wait(timeout=10)
        await abandon(dead_call)

        async def dead_call_ended() -> dict[str, Any] | None:
            record = await get_call(survivor, sid_dead)
            return record if record is not None and record["status"] != "in_progress" else None

        # The survivor sweeps every third of the 3 s lease.
        ended = await wait_for(dead_call_ended, "the dead bridge's call to be ended", 20)
        assert (ended["status"], ended["end_reason"]) == ("failed", "unknown")
        still = await get_call(survivor, sid_live)
        assert still is not None and still["status"] == "in_progress"

        result = await asyncio.wait_for(live_call, timeout=60)
        assert not result.timed_out
    finally:
        await abandon(live_call)
    finished = await get_call(survivor, sid_live)
    assert finished is not None
    assert (finished["status"], finished["end_reason"]) == ("completed", "caller_hangup")
