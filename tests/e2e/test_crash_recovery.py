"""A bridge killed mid-call loses nothing it had written, and its call does not stay "live".

SIGKILL gives the process no chance to flush or finish anything: what is found afterwards is
exactly what the store had committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from bridge.codecs.clips import load_clip
from bridge.devtools.simulator import simulate_call

from .conftest import AUTH_TOKEN, REVIEW_TOKEN, RunningBridge

StartBridge = Callable[[dict[str, str]], RunningBridge]
HEADERS = {"Authorization": f"Bearer {REVIEW_TOKEN}"}


async def get_call(bridge: RunningBridge, call_sid: str) -> dict[str, Any] | None:
    async with httpx.AsyncClient(base_url=bridge.url, headers=HEADERS, timeout=5) as http:
        answer = await http.get(f"/api/calls/{call_sid}")
    if answer.status_code == 404:
        return None
    answer.raise_for_status()
    record: dict[str, Any] = answer.json()
    return record


async def wait_for(
    check: Callable[[], Any], what: str, timeout_s: float = 30.0, interval_s: float = 0.1
) -> Any:
    """Poll ``check`` (async) until it returns something truthy; fail after ``timeout_s``."""
    for _ in range(int(timeout_s / interval_s)):
        value = await check()
        if value:
            return value
        await asyncio.sleep(interval_s)
    raise AssertionError(f"timed out waiting for {what}")


def start_call(bridge: RunningBridge, call_sid: str) -> asyncio.Task[Any]:
    """A three-exchange call with the local agent, running in the background."""
    return asyncio.create_task(
        simulate_call(
            bridge.url,
            auth_token=AUTH_TOKEN,
            review_token=REVIEW_TOKEN,
            caller_utterances=[load_clip(f"caller_{n}") for n in (1, 2, 3)],
            call_sid=call_sid,
            max_duration_s=60,
            send_status_callback=False,
        )
    )


async def abandon(call: asyncio.Task[Any]) -> None:
    """The simulated caller of a killed bridge: stop it, whatever state it is in."""
    call.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.wait_for(call, timeout=10)


async def test_sigkill_mid_call_keeps_every_finished_turn_and_ends_the_call_on_restart(
    bridge_factory: StartBridge,
) -> None:
    first = bridge_factory({})  # the built-in local agent, a SQLite file
    call_sid = "CA" + uuid.uuid4().hex
    call = start_call(first, call_sid)

    async def three_turns() -> dict[str, Any] | None:
        record = await get_call(first, call_sid)
        return record if record is not None and len(record["turns"]) >= 3 else None

    try:
        seen = await wait_for(three_turns, "three finished turns")
        assert seen["status"] == "in_progress"
        first.process.send_signal(signal.SIGKILL)
        assert first.process.wait(timeout=10) == -signal.SIGKILL
    finally:
        await abandon(call)

    # Restart on the same database file.
    second = bridge_factory({"BRIDGE_DATABASE_URL": f"sqlite:///{first.db_path}"})
    after = await get_call(second, call_sid)
    assert after is not None
    assert (after["status"], after["end_reason"]) == ("failed", "unknown")
    assert after["ended_at"] is not None and after["ended_at"] >= after["started_at"]
    # Every turn that was finished before the kill is there, word for word.
    by_seq = {turn["seq"]: turn for turn in after["turns"]}
    for turn in seen["turns"]:
        assert by_seq.get(turn["seq"]) == turn
    assert [t["role"] for t in after["turns"][:3]] == ["agent", "caller", "agent"]
    assert "calls.orphans_ended" in second.log()
