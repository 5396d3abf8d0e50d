"""A bridge whose event loop runs late takes no new calls until it has caught up.

A real ``bridge serve`` is held up as a bridge short of CPU would be: stopped (SIGSTOP) for
most of every second with a moment to run in between, until its own loop-lag reader says
so. Then a new Twilio caller is sent elsewhere, a SIP INVITE gets 503 and OpenAI's SIP
connector rejects its call; once it runs freely again it takes calls as before.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from bridge.devtools.fake_openai_sip import FakeOpenAiSip
from bridge.devtools.simulator import sign
from bridge.devtools.sip_phone import SipCallError
from bridge.devtools.sip_simulator import simulate_sip_call

from .conftest import AUTH_TOKEN, RunningBridge, fake_server, sample, scrape
from .raw_sip import sip_env
from .test_openai_sip import API_KEY, FRONT_DESK, env, incoming, new_call_id, post_webhook

StartBridge = Callable[..., RunningBridge]

# The loop-lag reader sleeps 0.5 s from when it last woke, which is always just after a
# stop ends: a stop longer than that has every reading wake about 0.3 s late.
STOPPED_S = 0.8
RUNNING_S = 0.05
STALL_LIMIT_S = 20.0


def _hold_up_until_overloaded(bridge: RunningBridge) -> None:
    """Stop and continue the bridge by its PID until it logs that it is overloaded (bounded);
    it is left running."""
    deadline = time.monotonic() + STALL_LIMIT_S
    pid = bridge.process.pid
    try:
        while '"bridge.overloaded"' not in bridge.log():
            assert time.monotonic() < deadline, f"never overloaded:\n{bridge.log()[-3000:]}"
            os.kill(pid, signal.SIGSTOP)
            time.sleep(STOPPED_S)
            os.kill(pid, signal.SIGCONT)
            time.sleep(RUNNING_S)
    finally:
        os.kill(pid, signal.SIGCONT)


async def _voice(client: httpx.AsyncClient, bridge: RunningBridge, call_sid: str) -> str:
    form = {"CallSid": call_sid, "From": "+15550001111", "To": "+15557650000"}
    signature = sign(AUTH_TOKEN, bridge.url + "/twilio/voice", form)
    answer = await client.post(
        "/twilio/voice", data=form, headers={"X-Twilio-Signature": signature}
    )
    assert answer.status_code == 200
    return answer.text


async def test_a_bridge_held_up_refuses_new_calls_until_it_catches_up(
    bridge_factory: StartBridge,
) -> None:
    async with fake_server("openai") as fake:
        env, sip_port = sip_env(fake)
        bridge = bridge_factory(env)
        await asyncio.to_thread(_hold_up_until_overloaded, bridge)
        async with httpx.AsyncClient(base_url=bridge.url, timeout=5) as client:
            # Right away, while its last readings are still late.
            twiml = await _voice(client, bridge, "CA" + "8" * 32)
            assert "<Redirect" in twiml and "busy=1" in twiml and "<Stream" not in twiml
            with pytest.raises(SipCallError) as refused:
                await simulate_sip_call(
                    f"sip:+15557650000@127.0.0.1:{sip_port}", caller_utterances=[], max_duration_s=5
                )
            assert refused.value.status == 503
            # Running freely, it catches up within a few readings and takes calls again.
            deadline = time.monotonic() + 15
            while '"bridge.caught_up"' not in bridge.log():
                assert time.monotonic() < deadline, bridge.log()[-3000:]
                await asyncio.sleep(0.1)
            assert "<Stream" in await _voice(client, bridge, "CA" + "9" * 32)
            assert (await client.get("/readyz")).status_code == 200
        samples = await scrape(bridge)
    assert sample(samples, "bridge_requests_rejected_total", reason="overloaded") == 2
    assert not fake.sessions  # nothing refused cost a model session


async def test_a_bridge_held_up_rejects_the_openai_sip_connectors_call(
    bridge_factory: StartBridge, tmp_path: Path
) -> None:
    async with FakeOpenAiSip(api_key=API_KEY, script=[]) as fake:
        bridge = bridge_factory(env(fake, tmp_path))
        await asyncio.to_thread(_hold_up_until_overloaded, bridge)
        busy = new_call_id()
        assert (await post_webhook(bridge, incoming(busy, FRONT_DESK))).status_code == 200
        await fake.until(lambda: "reject" in fake.actions(busy))
        samples = await scrape(bridge)
    assert fake.actions(busy) == ["reject"]
    assert fake.request(busy, "reject").body == {"status_code": 503}
    assert not fake.sidebands  # no model session was opened for it
    assert sample(samples, "bridge_requests_rejected_total", reason="overloaded") == 1
