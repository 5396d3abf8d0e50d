"""Stopping the server at once (a second SIGTERM) mid-call ends the call cleanly and
records why. Draining, the first SIGTERM, is tests/e2e/test_drain.py."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Callable

from bridge.codecs.clips import load_clip
from bridge.devtools.simulator import simulate_call

from .conftest import AUTH_TOKEN, REVIEW_TOKEN, RunningBridge

StartBridge = Callable[[dict[str, str]], RunningBridge]


async def test_a_second_sigterm_mid_call_records_bridge_shutdown(
    bridge_factory: StartBridge,
) -> None:
    bridge = bridge_factory({})  # the built-in local agent
    call = asyncio.create_task(
        simulate_call(
            bridge.url,
            auth_token=AUTH_TOKEN,
            review_token=REVIEW_TOKEN,
            caller_utterances=[load_clip("caller_1"), load_clip("caller_2")],
            max_duration_s=30,
        )
    )
    await asyncio.sleep(3.0)  # the greeting is playing
    # The first SIGTERM starts a drain (the call may finish); a second one ends it now.
    bridge.process.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.3)
    bridge.process.send_signal(signal.SIGTERM)
    result = await asyncio.wait_for(call, timeout=30)
    assert bridge.process.wait(timeout=15) == 0
    assert result.closed_by_bridge

    shown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bridge", "calls", "show", result.call_sid, "--json"],
        env={"BRIDGE_DATABASE_URL": f"sqlite:///{bridge.db_path}", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    record = json.loads(shown.stdout)
    assert (record["status"], record["end_reason"]) == ("completed", "bridge_shutdown")
    assert record["ended_at"] is not None
    assert record["turns"] and record["turns"][0]["role"] == "agent"
