"""A deploy that drops no call: SIGTERM to a real ``bridge serve`` in the middle of a call.

The bridge stops taking calls at once (``/readyz`` 503, a new caller is sent elsewhere, a
SIP INVITE gets 503), lets the live call go on to its natural end, and exits 0 once its
record is written. With a short ``BRIDGE_DRAIN_S`` the call still going hears the agent's
goodbye and is recorded as ended by ``bridge_shutdown``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from bridge.call.limits import SHUTTING_DOWN
from bridge.codecs.clips import load_clip
from bridge.devtools.fake_script import FakeScript, Reply
from bridge.devtools.simulator import sign, simulate_call
from bridge.devtools.sip_phone import SipCallError
from bridge.devtools.sip_simulator import simulate_sip_call

from .conftest import AUTH_TOKEN, RunningBridge, fake_server, provider_env
from .raw_sip import sip_env

StartBridge = Callable[..., RunningBridge]

GREETING = "Thanks for calling the bakery."
ANSWERS = ["We open at seven.", "We close at six."]
GOODBYE = "I'm sorry, I have to end the call now. Please call back. Goodbye."


def _record(bridge: RunningBridge, call_sid: str) -> dict[str, Any]:
    """The call's record, read from the store once the bridge has gone."""
    shown = subprocess.run(
        [sys.executable, "-m", "bridge", "calls", "show", call_sid, "--json"],
        env={"BRIDGE_DATABASE_URL": f"sqlite:///{bridge.db_path}", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    record: dict[str, Any] = json.loads(shown.stdout)
    return record


async def _wait_for(check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("the condition never came true")
        await asyncio.sleep(0.02)


async def _exit_status(bridge: RunningBridge, timeout_s: float) -> int:
    return await asyncio.to_thread(bridge.process.wait, timeout_s)


async def test_sigterm_mid_call_lets_the_call_finish_and_takes_no_new_ones(
    bridge_factory: StartBridge,
) -> None:
    script = FakeScript(
        greeting=Reply(GREETING, duration_ms=1500),
        replies=[Reply(text, duration_ms=1200) for text in ANSWERS],
    )
    async with fake_server("openai", script=script) as fake:
        env, sip_port = sip_env(fake, BRIDGE_DRAIN_S="60", BRIDGE_GREETING=GREETING)
        listen = env.pop("BRIDGE_SIP_LISTEN")
        bridge = bridge_factory(env, ("--sip", listen))  # the flag, as CONTRACT.md has it
        call = asyncio.create_task(
            simulate_call(
                bridge.url,
                auth_token=AUTH_TOKEN,
                caller_utterances=[load_clip("caller_1")],
                max_duration_s=40,
                # The bridge is gone once the call's record is written: read it from the store.
                fetch_record=False,
                send_status_callback=False,
            )
        )
        # SIGTERM while the greeting plays, before the caller has said anything.
        await _wait_for(lambda: bool(fake.sessions and fake.sessions[0].responses), 15)
        bridge.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()

        async with httpx.AsyncClient(base_url=bridge.url, timeout=2) as client:
            while (await client.get("/readyz")).status_code != 503:
                assert time.monotonic() - signalled < 1.0, "/readyz still says ready"
                await asyncio.sleep(0.02)
            # A new call is not served here: it is sent back through the public URL.
            form = {"CallSid": "CA" + "7" * 32, "From": "+15550001111", "To": "+15557650000"}
            signature = sign(AUTH_TOKEN, bridge.url + "/twilio/voice", form)
            answer = await client.post(
                "/twilio/voice", data=form, headers={"X-Twilio-Signature": signature}
            )
            assert answer.status_code == 200
            assert "<Redirect" in answer.text and "<Stream" not in answer.text
        # A SIP INVITE is refused with 503, for a dispatcher to try another bridge.
        with pytest.raises(SipCallError) as refused:
            await simulate_sip_call(
                f"sip:+15557650000@127.0.0.1:{sip_port}", caller_utterances=[], max_duration_s=5
            )
        assert refused.value.status == 503

        # The live call carries on through another turn and ends as the caller hangs up.
        result = await asyncio.wait_for(call, 45)
        assert not result.timed_out and result.protocol_problems == []
        status = await _exit_status(bridge, 20)

    assert status == 0, bridge.log()[-3000:]
    record = _record(bridge, result.call_sid)
    assert (record["status"], record["end_reason"]) == ("completed", "caller_hangup")
    agent_said = [t["text"] for t in record["turns"] if t["role"] == "agent"]
    assert agent_said == [GREETING, ANSWERS[0]]
    assert [t["role"] for t in record["turns"]].count("caller") == 1
    # Only the live call was served: the late caller left no record.
    assert len(_list_calls(bridge).splitlines()) == 1


def _list_calls(bridge: RunningBridge) -> str:
    shown = subprocess.run(
        [sys.executable, "-m", "bridge", "calls", "export"],
        env={"BRIDGE_DATABASE_URL": f"sqlite:///{bridge.db_path}", "PATH": ""},
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return shown.stdout


async def test_a_call_outliving_the_drain_hears_a_goodbye_and_ends_as_bridge_shutdown(
    bridge_factory: StartBridge,
) -> None:
    script = FakeScript(
        greeting=Reply(GREETING, duration_ms=2500),
        replies=[Reply(GOODBYE, duration_ms=1500)],
    )
    async with fake_server("openai", script=script) as fake:
        bridge = bridge_factory(
            provider_env(fake, "openai", BRIDGE_DRAIN_S="1", BRIDGE_GREETING=GREETING)
        )
        call = asyncio.create_task(
            simulate_call(
                bridge.url,
                auth_token=AUTH_TOKEN,
                # A caller who would stay on the line for a long while yet.
                caller_utterances=[load_clip("caller_1")],
                initial_silence_s=30,
                max_duration_s=40,
                fetch_record=False,
                send_status_callback=False,
            )
        )
        await _wait_for(lambda: bool(fake.sessions and fake.sessions[0].responses), 15)
        bridge.process.send_signal(signal.SIGTERM)
        result = await asyncio.wait_for(call, 30)
        status = await _exit_status(bridge, 20)
        [session] = fake.sessions

    assert status == 0, bridge.log()[-3000:]
    assert result.closed_by_bridge and not result.timed_out
    # The bridge asked the model for the goodbye, after the greeting had finished.
    asked = [
        e
        for e in session.client_events_of("response.create")
        if e.get("response", {}).get("instructions") == SHUTTING_DOWN
    ]
    assert len(asked) == 1
    record = _record(bridge, result.call_sid)
    assert (record["status"], record["end_reason"]) == ("completed", "bridge_shutdown")
    assert [(t["role"], t["text"]) for t in record["turns"]] == [
        ("agent", GREETING),
        ("agent", GOODBYE),
    ]
    goodbye = record["turns"][1]
    assert not goodbye.get("interrupted")
    # It was heard to its end: the stream closed only after the goodbye's last mark.
    assert result.last_mark_at is not None and result.closed_at is not None
    assert result.closed_at >= result.last_mark_at
    assert "bridge_shutdown" in [e["type"] for e in record["events"]]
